#pragma once
// `vmmu run`'s replay: one workload under several MMUs at once, batch by batch, each batch's
// results compared across the modes and then dropped. Memory stays flat however long the
// workload (a trace of a billion accesses streams through), and the first result where a mode
// differs is still reported exactly.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "sim/op.hpp"
#include "sim/replayer.hpp"
#include "sim/report/timeline.hpp"
#include "tools/vmmu/progress_bar.hpp"
#include "vm/vm.hpp"

namespace vmmu::tools {

// What one mode did and cost.
struct ModeRun {
  std::string name;
  sim::ReplaySummary summary;
  nlohmann::ordered_json stats;   // {"stats": ..., "memory": ...} at the end
  double seconds = 0;             // replaying: the Vm's creation and the ops, not the comparing or sampling
  sim::report::Timeline timeline;  // samples over time (only when recorded)
};

class LockstepReplay {
 public:
  // Throws what Vm's constructor throws for a bad config.
  LockstepReplay(const std::vector<std::pair<std::string, VmConfig>>& modes, ProgressBar& bar, bool record_timeline);
  ~LockstepReplay();
  LockstepReplay(const LockstepReplay&) = delete;
  LockstepReplay& operator=(const LockstepReplay&) = delete;

  // Takes the workload's next op; every BATCH ops, replays them under each mode and compares.
  // Throws sim::ReplayError (and UsageError) as Replayer::apply does.
  void push(const sim::Op& op) {
    batch_.push_back(op);
    if (batch_.size() == BATCH) run_batch();
  }
  // After the last op: replays what is left and returns each mode's figures.
  std::vector<ModeRun> finish();

  uint64_t results_compared() const { return compared_; }
  // The first result where a mode differs from the first mode, described; "" when none does.
  const std::string& difference() const { return difference_; }

 private:
  static constexpr size_t BATCH = 4096;
  struct Mode;

  void run_batch();
  void compare_batch();

  std::vector<std::unique_ptr<Mode>> modes_;
  ProgressBar& bar_;
  std::vector<sim::Op> batch_;
  uint64_t done_ = 0;       // ops replayed in every mode
  uint64_t compared_ = 0;   // results compared so far (the first mode's, `stats` left out)
  std::string difference_;
  std::string progress_label_;
};

}  // namespace vmmu::tools
