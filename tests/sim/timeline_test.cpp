// The report's timeline sampler: it does not know how long the replay will be, yet ends with
// between one and two times its target of samples, spread over the whole replay.
#include "sim/report/timeline.hpp"

#include <gtest/gtest.h>

#include "vm/vm.hpp"

namespace vmmu::sim::report {
namespace {

// Samples whenever the recorder says one is due, as `vmmu run` does after each op. Sampling is
// all this loop does, so it is allowed all the time: the spacing must not depend on the clock.
Timeline record(uint64_t ops, unsigned target) {
  Vm vm(VmConfig{});
  const ReplaySummary summary;
  TimelineRecorder r("none", target, /*max_sampling_share=*/2.0);
  for (uint64_t done = 1; done <= ops; ++done)
    if (r.due(done)) r.sample(done, vm, summary);
  return r.take();
}

TEST(TimelineRecorder, EndsWithOneToTwoTimesTheTargetSpreadEvenly) {
  for (const uint64_t ops : {50ull, 399ull, 400ull, 12345ull, 1000000ull}) {
    const unsigned target = 100;
    const Timeline t = record(ops, target);
    if (ops < 2 * target) {
      EXPECT_EQ(t.ops.size(), ops) << "a short replay is sampled after every op";
      continue;
    }
    EXPECT_GE(t.ops.size(), target) << ops;
    EXPECT_LT(t.ops.size(), 2u * target) << ops;
    // Evenly spaced, and the last sample within one interval of the end.
    const double step = t.ops[1] - t.ops[0];
    for (size_t i = 1; i < t.ops.size(); ++i) EXPECT_EQ(t.ops[i] - t.ops[i - 1], step) << ops << " sample " << i;
    EXPECT_GT(t.ops.back(), double(ops) - step) << ops;
    // Every series keeps one value per sample.
    for (const auto* group : {&t.memory, &t.events})
      for (const NamedSeries& s : *group) EXPECT_EQ(s.values.size(), t.ops.size()) << s.name;
    EXPECT_FALSE(t.events.empty());
  }
}

}  // namespace
}  // namespace vmmu::sim::report
