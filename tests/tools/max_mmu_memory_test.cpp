// `vmmu replay --max-mmu-memory=BYTES` end to end: under a budget small enough to recycle, each
// engine prints what --mmu=none prints (stats apart), reports its metadata within the budget and
// what it recycled; a budget below the minimum is refused.
#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/tools/vmmu_cli.hpp"

namespace {

using Output = vmmu::test::CliResult;
// What vmmu printed on stdout, then what it printed on stderr.
Output vmmu(const std::string& args) {
  Output r = vmmu::test::run_vmmu(args);
  r.out += r.err;
  return r;
}

// The lines without their "stats" objects, and the last stats line's JSON.
std::string results(const std::string& out, nlohmann::json* last_stats = nullptr) {
  std::istringstream in(out);
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"op\":\"stats\"") != std::string::npos) {
      if (last_stats) *last_stats = nlohmann::json::parse(line);
      continue;
    }
    kept += line + "\n";
  }
  return kept;
}

TEST(VmmuReplayMaxMmuMemory, RecyclesAndPrintsWhatNonePrints) {
  const std::string workload = std::string(VMMU_SOURCE_DIR) + "/workloads/default.vmt";
  const Output none = vmmu("replay --mmu=none " + workload);
  ASSERT_EQ(none.status, 0);
  for (const char* mmu : {"tdp", "shadow"}) {
    SCOPED_TRACE(mmu);
    const Output r = vmmu(std::string("replay --mmu=") + mmu + " --max-mmu-memory=128K " + workload);
    ASSERT_EQ(r.status, 0) << r.out.substr(0, 500);
    nlohmann::json stats;
    EXPECT_EQ(results(r.out, &stats), results(none.out));
    ASSERT_TRUE(stats.contains("memory"));
    EXPECT_LE(stats["memory"]["mmu_memory"].get<uint64_t>(), 128u * 1024);
    EXPECT_GT(stats["stats"]["mmu_recycled"].get<uint64_t>(), 0u);
  }
}

TEST(VmmuReplayMaxMmuMemory, ABudgetBelowTheMinimumOrMalformedIsRefused) {
  const std::string workload = std::string(VMMU_SOURCE_DIR) + "/workloads/default.vmt";
  for (const char* bad : {"100K", "12x", "K", "99999999999999999G"}) {
    const Output r = vmmu(std::string("replay --mmu=shadow --max-mmu-memory=") + bad + " " + workload);
    EXPECT_NE(r.status, 0) << bad;
    EXPECT_NE(r.out.find("--max-mmu-memory"), std::string::npos) << r.out;
  }
  EXPECT_EQ(vmmu("replay --mmu=tdp --max-mmu-memory=131072 " + workload).status, 0);
  EXPECT_EQ(vmmu("replay --mmu=tdp --max-mmu-memory=0 " + workload).status, 0);
}

}  // namespace
