#pragma once
// `vmmu run`: a workload replayed under several MMUs, compared, and summarized side by side.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "vm/vm.hpp"

namespace vmmu::tools {

struct RunOptions {
  std::string workload;  // a .vmt file; empty: the guest OS model's built-in scenario
  uint64_t seed = 1;     // the scenario's seed
  bool json = false;     // one JSON object instead of the table
  bool progress = false;  // a line on stderr as each mode starts
};

// Replays the workload under each (name, config) in turn and prints the table (or JSON).
// Returns 0, 1 when results differ between modes or an audit failed, 2 for bad input, 3 when
// the host ran out of memory.
int run_main(const RunOptions& options, const std::vector<std::pair<std::string, VmConfig>>& modes);

}  // namespace vmmu::tools
