// vmmu against real KVM (long mode only, docs/ORACLES.md). Skips where /dev/kvm is absent.
// VMMU_ORACLE_CASES=N changes the number of random cases per mode (default 1000).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "oracle/check.hpp"
#include "oracle/kvm_runner.hpp"
#include "oracle/random_cases.hpp"

namespace vmmu::oracle {
namespace {

#define REQUIRE_KVM()                                                          \
  if (const auto why = kvm_unavailable()) GTEST_SKIP() << "no KVM oracle: " << *why

unsigned cases() {
  const char* s = std::getenv("VMMU_ORACLE_CASES");
  return s && *s ? unsigned(std::strtoul(s, nullptr, 10)) : 1000;
}

const std::vector<MmuKind> kAll = {MmuKind::None, MmuKind::Tdp, MmuKind::Shadow};

TEST(KvmOracle, Random4Level) {
  REQUIRE_KVM();
  const RandomBatch b = random_batch(20261125, 0, HarnessMode::Level4, false, cases(), /*pke=*/false);
  std::istringstream in(b.vmt);
  const CheckReport r = check_with_kvm(parse_vmt(in, "random"), kAll);
  EXPECT_TRUE(r.ok()) << describe(r) << "\nreproducer:\n" << (r.difference ? reproducer(b, r.difference->line) : "");
}

TEST(KvmOracle, PermissionsExample) {
  REQUIRE_KVM();
  std::ifstream in(std::filesystem::path(VMMU_SOURCE_DIR) / "workloads/examples/permissions-4level.vmt");
  const CheckReport r = check_with_kvm(parse_vmt(in, "permissions-4level.vmt"), kAll);
  EXPECT_TRUE(r.ok()) << describe(r);
}

TEST(KvmOracle, NonLongModeIsRefusedWithAReason) {
  REQUIRE_KVM();
  const RandomBatch b = random_batch(1, 0, HarnessMode::Pae, false, 10);
  std::istringstream in(b.vmt);
  const CheckReport r = check_with_kvm(parse_vmt(in, "random"), kAll);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("long mode only"), std::string::npos) << r.error;
}

TEST(KvmOracle, CliWithoutKvmExits77) {
  if (!kvm_unavailable()) GTEST_SKIP() << "/dev/kvm is available: nothing to refuse";
  const std::string cmd = fmt::format("{} kvm-check {}/workloads/examples/permissions-4level.vmt --oracle=kvm > /dev/null 2>&1",
                                      VMMU_BINARY, VMMU_SOURCE_DIR);
  const int st = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 77);
}

}  // namespace
}  // namespace vmmu::oracle
