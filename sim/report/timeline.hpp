#pragma once
// Samples of a replay over time, for the report's charts: every K ops (about 200 samples per
// run) the engine's memory by category and the cumulative fault and exit counters.
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
  TimelineRecorder(std::string mode, uint64_t total_ops, unsigned target_samples = 200);

  // Whether a sample is due after `ops_done` ops: an integer compare, cheap enough per op.
  bool due(uint64_t ops_done) const { return ops_done >= next_; }
  // Records one sample. Sampling reads every engine counter (the shadow engine scans its
  // SPTEs for aliases), so when sampling has cost more than a tenth of the replay so far the
  // interval doubles.
  void sample(uint64_t ops_done, const Vm& vm, const ReplaySummary& summary);

  const Timeline& timeline() const { return timeline_; }
  Timeline take() { return std::move(timeline_); }

 private:
  static void put(std::vector<NamedSeries>& series, size_t index, const std::string& name, double value);

  Timeline timeline_;
  uint64_t interval_, next_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace vmmu::sim::report
