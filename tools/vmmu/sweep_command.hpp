#pragma once
// `vmmu run --sweep key=v1,v2,...`: one run per point of a grid of configurations, in parallel
// on every core, one CSV or JSON Lines row per run in grid order (docs/RUN.md, "Sweeps").
#include <string>
#include <vector>

#include "tools/vmmu/run_command.hpp"
#include "vm/vm.hpp"

namespace vmmu::tools {

// `base` holds the engine options given (--dirty-log, --max-mmu-pages, ...); `default_mmus`
// is --modes, the mmu dimension when mmu is not swept. Returns 0; 1 when an audit failed; 2
// for a bad --sweep or --output, or when some run could not be done (its row says why); 3
// when the host ran out of memory.
int sweep_main(const RunOptions& options, const VmConfig& base, const std::vector<std::string>& default_mmus);

}  // namespace vmmu::tools
