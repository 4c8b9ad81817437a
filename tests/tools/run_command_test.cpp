// `vmmu run`: the built-in scenario under none, tdp and shadow, compared and tabulated; and a
// .vmt workload through --workload, with --json.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace {

struct Output {
  int status = -1;
  std::string out;
};

Output vmmu(const std::string& args) {
  Output r;
  std::FILE* p = ::popen((std::string(VMMU_BINARY) + " " + args + " 2>/dev/null").c_str(), "r");
  if (!p) return r;
  char buf[1 << 16];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(VmmuRun, TheBuiltInScenarioGivesTheSameResultsInEveryMode) {
  const Output r = vmmu("run");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("results: identical in every mode"), std::string::npos) << r.out;
  for (const char* row : {"exits to the hypervisor", "emulated PTE writes", "metadata (mapping_total)", "KVM's layout today", "ops per second"})
    EXPECT_NE(r.out.find(row), std::string::npos) << row;
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
}

}  // namespace
