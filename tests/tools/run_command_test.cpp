// `vmmu run`: the built-in scenario under none, tdp and shadow, compared and tabulated; and a
// .vmt workload through --workload, with --json.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/tools/vmmu_cli.hpp"

namespace {

using Output = vmmu::test::CliResult;
Output vmmu(const std::string& args) { return vmmu::test::run_vmmu(args); }

TEST(VmmuRun, TheBuiltInScenarioGivesTheSameResultsInEveryMode) {
  const Output r = vmmu("run");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("results: identical in every mode"), std::string::npos) << r.out;
  for (const char* row : {"exits to the hypervisor", "emulated PTE writes", "TLB misses (hardware walks)", "walk references",
                          "metadata (mapping_total)", "KVM's layout today", "ops per second"})
    EXPECT_NE(r.out.find(row), std::string::npos) << row;
  // The shipped real trace runs as one of the scenario's processes, every access of it.
  EXPECT_NE(r.out.find("the real program traced in sort.lackey.xz (1335193 traced accesses)"), std::string::npos) << r.out;
}

TEST(VmmuRun, TheTraceCanBeCutShortOrLeftOut) {
  const Output cut = vmmu("run --trace-accesses 1000 --modes=none");
  ASSERT_EQ(cut.status, 0) << cut.out;
  EXPECT_NE(cut.out.find("(1000 traced accesses)"), std::string::npos) << cut.out;
  const Output none = vmmu("run --no-trace --modes=none");
  ASSERT_EQ(none.status, 0) << none.out;
  EXPECT_EQ(none.out.find("traced"), std::string::npos) << none.out;
  const Output missing = vmmu("run --trace /nonexistent.lackey --modes=none");
  EXPECT_EQ(missing.status, 2);
  EXPECT_NE(missing.err.find("/nonexistent.lackey"), std::string::npos) << missing.err;
}

TEST(VmmuRun, JsonHasEveryModesFigures) {
  const Output r = vmmu("run --workload " + std::string(VMMU_SOURCE_DIR) + "/workloads/examples/pse36.vmt --json --modes=none,shadow");
  ASSERT_EQ(r.status, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["identical_results"].get<bool>());
  EXPECT_TRUE(j["modes"].contains("none"));
  EXPECT_GT(j["modes"]["shadow"]["stats"]["pf_fixed"].get<uint64_t>(), 0u);
  EXPECT_TRUE(j["modes"]["shadow"]["memory"].contains("mapping_total"));
}

// A workload that breaks the cached-translation rule (VMT-FORMAT.md): the guest rewrites a PTE
// and reads through it again with no invlpg. `none` walks every time; tdp's software TLB keeps the
// old translation, as a hardware TLB may. `run` names the first result that differs, counted
// across the batches it compares in (the stale read comes after more than one batch).
TEST(VmmuRun, TheFirstDifferenceIsNamedExactly) {
  const std::string path = vmmu::test::temp_path("stale.vmt");
  std::FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("vmt 1\nmemslot 0 0 4M\nvcpu 0\n", f);
  std::fputs("poke 0x10000 4 0x11003\npoke 0x11004 4 0x101003\npoke 0x11044 4 0x11003\n", f);  // 0x11000: the PT itself
  std::fputs("regs 0 cr0=0x80000001 cr3=0x10000\n", f);
  for (int i = 0; i < 5000; ++i) std::fputs("read 0 0x1000 4\n", f);
  std::fputs("write 0 0x11004 4 0x102003\nread 0 0x1000 4\n", f);  // line 5009, its 5002nd result
  std::fclose(f);

  const Output r = vmmu("run --modes=none,tdp --workload " + path);
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("results: --mmu=tdp DIFFERS from --mmu=none at result 5002:\n"
                       "  none: {\"line\":5009,\"op\":\"read\",\"ok\":true,\"gpa\":\"0x102000\",\"value\":\"0x0\"}\n"
                       "  tdp: {\"line\":5009,\"op\":\"read\",\"ok\":true,\"gpa\":\"0x101000\",\"value\":\"0x0\"}"),
            std::string::npos)
      << r.out;
  std::remove(path.c_str());
}

TEST(VmmuRun, BadInputIsRefused) {
  EXPECT_EQ(vmmu("run --workload /nonexistent.vmt").status, 2);
  EXPECT_EQ(vmmu("run --modes=none,bogus").status, 2);
  EXPECT_EQ(vmmu("run --modes=").status, 2);
  EXPECT_EQ(vmmu("run --jobs=0").status, 2);  // a value CLI11 refuses: the project's status, not CLI11's
}

}  // namespace
