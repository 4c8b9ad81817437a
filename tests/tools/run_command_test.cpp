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

TEST(VmmuRun, BadInputIsRefused) {
  EXPECT_EQ(vmmu("run --workload /nonexistent.vmt").status, 2);
  EXPECT_EQ(vmmu("run --modes=none,bogus").status, 2);
  EXPECT_EQ(vmmu("run --modes=").status, 2);
  EXPECT_EQ(vmmu("run --jobs=0").status, 2);  // a value CLI11 refuses: the project's status, not CLI11's
}

}  // namespace
