#pragma once
// Where `vmmu run` finds the real trace its built-in workload runs (workloads/traces/): beside
// an installed vmmu, or in the source tree it was built from.
#include <string>

namespace vmmu::tools {

// The trace's path: $VMMU_DATA_DIR/traces/sort.lackey.xz when VMMU_DATA_DIR is set, else the
// installed copy, else the source tree's; empty when none exists.
std::string shipped_trace_path();

}  // namespace vmmu::tools
