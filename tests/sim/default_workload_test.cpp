// `vmmu run`'s built-in workload: the guest OS scenario with the shipped real trace running as one
// of its processes replays the same under none, tdp and shadow, audits passing, and the trace's
// accesses are really in it.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "sim/default_workload.hpp"
#include "sim/guest_os/vmt_stream_writer.hpp"
#include "sim/trace_import/trace_error.hpp"
#include "tests/sim/replay_support.hpp"

namespace vmmu::sim {
namespace {

const std::string SHIPPED_TRACE = std::string(VMMU_SOURCE_DIR) + "/workloads/traces/sort.lackey.xz";

DefaultWorkloadParams small(x86::PagingMode mode, uint64_t trace_accesses) {
  DefaultWorkloadParams p;
  p.scenario.os.mode = mode;
  p.scenario.os.memory = 128ull << 20;
  p.scenario.os.page_copy_words = 8;
  p.scenario.rounds = 3;
  p.scenario.slice = 100;
  p.scenario.program_share = 3000;  // the rounds take 9,000 accesses of it; the rest runs after them
  p.trace = SHIPPED_TRACE;
  p.trace_accesses = trace_accesses;
  return p;
}

TEST(DefaultWorkload, TheShippedTraceRunsBesideTheWorkersInEveryMode) {
  for (x86::PagingMode mode : {x86::PagingMode::Level4, x86::PagingMode::Level5}) {
    std::ostringstream out;
    guest_os::VmtStreamWriter writer(out, "default workload");
    const DefaultWorkloadCounts c = run_default_workload(small(mode, 20000), [&](const Op& op) { writer(op); });
    EXPECT_EQ(c.traced_accesses, 20000u);
    EXPECT_GE(c.trace_guest_accesses, c.traced_accesses);  // `M` is a read and a write
    EXPECT_GT(c.os.forks, 0u);
    EXPECT_GT(c.os.demand_pages, 0u);
    test::expect_same_in_every_mode(out.str());
  }
}

TEST(DefaultWorkload, TheWholeShippedTraceIsReadable) {
  // Every line of the trace parses and fits a 4-level guest's user space (nothing is replayed).
  size_t ops = 0;
  DefaultWorkloadParams p = small(x86::PagingMode::Level4, 0);
  p.scenario.os.audits = false;
  const DefaultWorkloadCounts c = run_default_workload(p, [&](const Op&) { ++ops; });
  // 924,127 I + 258,168 L + 146,716 S + 2 x 3,091 M lines (a modify is a load and a store).
  EXPECT_EQ(c.traced_accesses, 1335193u);
  EXPECT_GT(ops, c.trace_guest_accesses);
}

TEST(DefaultWorkload, ThirtyTwoBitGuestsRunWithoutTheTrace) {
  std::ostringstream out;
  guest_os::VmtStreamWriter writer(out, "default workload");
  const DefaultWorkloadCounts c = run_default_workload(small(x86::PagingMode::Pae, 20000), [&](const Op& op) { writer(op); });
  EXPECT_TRUE(c.trace_left_out);
  EXPECT_EQ(c.traced_accesses, 0u);
  EXPECT_GT(c.os.forks, 0u);
}

TEST(DefaultWorkload, AMissingTraceIsReportedBeforeAnyOp) {
  DefaultWorkloadParams p = small(x86::PagingMode::Level4, 10);
  p.trace = "/nonexistent/trace.lackey";
  size_t ops = 0;
  EXPECT_THROW(run_default_workload(p, [&](const Op&) { ++ops; }), trace_import::TraceError);
  EXPECT_EQ(ops, 0u);
}

}  // namespace
}  // namespace vmmu::sim
