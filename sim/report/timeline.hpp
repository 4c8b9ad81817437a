#pragma once
// Samples of a replay over time, for the report's charts: every K ops the engine's memory by
// category and the cumulative fault and exit counters. The length of the replay need not be
// known: K starts at 1 and doubles, every other sample dropped, whenever the samples reach twice
// the target, so a run ends with between one and two times the target.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "sim/replayer.hpp"
#include "vm/vm.hpp"

namespace vmmu::sim::report {

struct NamedSeries {
  std::string name;
  std::vector<double> values;  // one per sample
};

struct Timeline {
  std::string mode;
  std::vector<double> ops;           // ops replayed at each sample
  std::vector<NamedSeries> memory;   // bytes the VM holds, by category (Vm::stats()["memory"])
  std::vector<NamedSeries> events;   // cumulative counts: guest page faults, exits, emulated writes...
  double sampling_seconds = 0;       // time spent sampling (kept under ~10% of the replay)
};

class TimelineRecorder {
 public:
  // Sampling may take up to `max_sampling_share` of the time since construction (see sample()).
  explicit TimelineRecorder(std::string mode, unsigned target_samples = 200, double max_sampling_share = 0.1);

  // Whether a sample is due after `ops_done` ops: an integer compare, cheap enough per op.
  bool due(uint64_t ops_done) const { return ops_done >= next_; }
  // Records one sample. Sampling reads every engine counter (the shadow engine scans its
  // SPTEs for aliases), so when sampling has cost more than its share of the time so far the
  // interval doubles.
  void sample(uint64_t ops_done, const Vm& vm, const ReplaySummary& summary);

  const Timeline& timeline() const { return timeline_; }
  Timeline take() { return std::move(timeline_); }

 private:
  static void put(std::vector<NamedSeries>& series, size_t index, const std::string& name, double value);
  void drop_every_other_sample();

  Timeline timeline_;
  unsigned target_;
  double max_sampling_share_;
  uint64_t interval_ = 1, next_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace vmmu::sim::report
