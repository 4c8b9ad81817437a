// vmmu against QEMU (docs/ORACLES.md): random cases in every paging mode and the shipped example
// workloads, for every --mmu mode vmmu can construct. Skips without qemu-system-x86_64.
// VMMU_ORACLE_CASES=N changes the number of random cases per mode (default 1000).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "oracle/check.hpp"
#include "oracle/qemu_runner.hpp"
#include "oracle/random_cases.hpp"

#include <sys/wait.h>

namespace vmmu::oracle {
namespace {

namespace fs = std::filesystem;

const std::vector<MmuKind> kAll = {MmuKind::None, MmuKind::Tdp, MmuKind::Shadow};

unsigned cases() {
  const char* s = std::getenv("VMMU_ORACLE_CASES");
  return s && *s ? unsigned(std::strtoul(s, nullptr, 10)) : 1000;
}

#define REQUIRE_QEMU()                                                                      \
  const auto qemu = find_qemu();                                                            \
  if (!qemu) GTEST_SKIP() << "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"

struct ModeCase {
  const char* name;
  HarnessMode mode;
  bool pse;
};

class QemuRandom : public ::testing::TestWithParam<ModeCase> {};

TEST_P(QemuRandom, NoDifference) {
  REQUIRE_QEMU();
  const ModeCase mc = GetParam();
  const RandomBatch b = random_batch(20261125, 0, mc.mode, mc.pse, cases());
  std::istringstream in(b.vmt);
  const auto ops = parse_vmt(in, "random");
  const CheckReport r = check_with_qemu(ops, kAll, *qemu);
  std::string repro;
  if (r.difference) repro = reproducer(b, r.difference->line);
  EXPECT_TRUE(r.ok()) << describe(r) << "\nreproducer:\n" << repro;
  EXPECT_GT(r.compared, cases());
  RecordProperty("oracle_seconds", fmt::format("{:.2f}", r.oracle_seconds));
}

INSTANTIATE_TEST_SUITE_P(Modes, QemuRandom,
                         ::testing::Values(ModeCase{"bits32", HarnessMode::Bits32, false},
                                           ModeCase{"pse", HarnessMode::Bits32, true},
                                           ModeCase{"pae", HarnessMode::Pae, false},
                                           ModeCase{"level4", HarnessMode::Level4, false},
                                           ModeCase{"level5", HarnessMode::Level5, false}),
                         [](const auto& info) { return std::string(info.param.name); });

// The shipped workloads: each must show no difference on the part the harness can run.
class QemuWorkload : public ::testing::TestWithParam<std::string> {};

TEST_P(QemuWorkload, NoDifference) {
  REQUIRE_QEMU();
  const fs::path p = fs::path(VMMU_SOURCE_DIR) / "workloads" / GetParam();
  std::ifstream in(p);
  ASSERT_TRUE(in) << p;
  const auto ops = parse_vmt(in, p.string());
  const CheckReport r = check_with_qemu(ops, kAll, *qemu);
  EXPECT_TRUE(r.ok()) << describe(r);
}

INSTANTIATE_TEST_SUITE_P(Examples, QemuWorkload,
                         ::testing::Values("default.vmt", "examples/host-ops.vmt", "examples/la57.vmt",
                                           "examples/pae.vmt", "examples/permissions-4level.vmt",
                                           "examples/pse36.vmt"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

// The comparison does find differences: a workload that breaks the contract's rule on cached
// translations (a present PTE changed without INVLPG) reads the new page in --mmu=none, which
// walks every time, and the old one in QEMU, whose TLB still holds the translation.
TEST(QemuCompare, FindsATlbDependentDifference) {
  REQUIRE_QEMU();
  std::istringstream in(
      "vmt 1\nmemslot 0 0 16M\nvcpu 0\n"
      "poke 0x10000 8 0x11007\npoke 0x11000 8 0x12007\npoke 0x12000 8 0x13007\n"
      "poke 0x13008 8 0x101007\npoke 0x101000 8 0xaaaa\npoke 0x102000 8 0xbbbb\n"
      "regs 0 cr0=0x80010001 cr3=0x10000 cr4=0x20 efer=0x900\n"
      "read 0 0x1000\n"              // line 11: 0xaaaa everywhere
      "poke 0x13008 8 0x102007\n"    // line 12: no invlpg follows
      "read 0 0x1000\n");            // line 13: none reads 0xbbbb, QEMU's TLB 0xaaaa
  const CheckReport r = check_with_qemu(parse_vmt(in, "tlb"), {MmuKind::None}, *qemu);
  ASSERT_TRUE(r.difference.has_value()) << describe(r);
  EXPECT_EQ(r.difference->line, 13u);
  EXPECT_EQ(r.difference->field, "value");
  EXPECT_EQ(r.difference->vmmu, "0xbbbb");
  EXPECT_EQ(r.difference->oracle, "0xaaaa");
}

// The command line: `vmmu kvm-check FILE` exits 0 with the summary line.
TEST(KvmCheckCli, FileWithoutDifferenceExitsZero) {
  REQUIRE_QEMU();
  const std::string cmd = fmt::format("{} kvm-check {}/workloads/examples/permissions-4level.vmt --oracle=qemu --mmu=all",
                                      VMMU_BINARY, VMMU_SOURCE_DIR);
  std::FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find(", 0 differences"), std::string::npos) << out;
}

TEST(KvmCheckCli, CleanRandomRunExitsZero) {
  REQUIRE_QEMU();
  const std::string cmd = fmt::format("{} kvm-check --random 200 --seed 3 --mode=pae --mmu=none", VMMU_BINARY);
  EXPECT_EQ(std::system((cmd + " > /dev/null").c_str()), 0);
}

}  // namespace
}  // namespace vmmu::oracle
