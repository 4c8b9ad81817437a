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
  std::string trace;     // a lackey trace the built-in scenario runs as a process; empty: none
  uint64_t trace_accesses = 0;  // traced accesses to take from it; 0: all
  bool json = false;     // one JSON object instead of the table
  bool progress = false;  // a progress bar on stderr (for runs over a second; main sets it when stderr is a terminal)
  std::string report;     // an HTML report to write there (--report); empty: none
  std::vector<std::string> sweep;  // --sweep key=v1,v2,... (each one key): run a grid instead (sweep_command.hpp)
  std::string output;              // --sweep: the rows go to this .csv or .jsonl file; empty: stdout
  unsigned jobs = 0;               // --sweep: runs at once; 0: one per core
};

// Replays the workload under each (name, config) in turn and prints the table (or JSON).
// Returns 0, 1 when results differ between modes or an audit failed, 2 for bad input, 3 when
// the host ran out of memory.
int run_main(const RunOptions& options, const std::vector<std::pair<std::string, VmConfig>>& modes);

}  // namespace vmmu::tools
