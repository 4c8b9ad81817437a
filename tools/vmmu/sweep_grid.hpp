#pragma once
// The grid of `vmmu run --sweep key=v1,v2,...`: each --sweep names one key and its values, and
// the grid is their cross product, the first key outermost (docs/RUN.md, "Sweeps").
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "sim/guest_os/scenario.hpp"
#include "vm/vm.hpp"

namespace vmmu::tools {

// The keys, in the order of the output's columns.
inline constexpr const char* SWEEP_KEYS[] = {"memory", "processes", "page_size", "mode", "mmu", "max_mmu_pages", "seed"};

// A bad --sweep: what() names the key and the value.
class SweepError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One configuration: the built-in scenario's parameters, and the MMU that replays it.
struct SweepPoint {
  uint64_t memory = 4ull << 30;   // guest memory, bytes
  uint32_t processes = 3;         // workers init starts
  std::string page_size = "largest";  // the guest kernel's direct-map leaves and THP: largest, 4k, 2m, 1g
  std::string mode = "4level";    // guest paging mode: 32bit, pae, 4level, 5level
  std::string mmu = "none";       // none, tdp, shadow
  uint64_t max_mmu_pages = 0;     // shadow: at most this many shadow pages (0: no limit)
  uint64_t seed = 1;

  sim::guest_os::ScenarioParams scenario() const;
  // `base` (the engine options given on the command line) with this point's MMU and limit.
  VmConfig config(const VmConfig& base) const;
  // Equal for points that replay the same ops (they differ only in mmu or max_mmu_pages).
  std::string scenario_key() const;
  // The value of `key` as the output writes it (memory in bytes).
  std::string value(const std::string& key) const;
};

// The grid in order. `defaults` holds the values of keys not swept; `default_mmus` is the mmu
// dimension (innermost) when mmu is not swept. With `builtin_scenario` false (a --workload),
// only mmu and max_mmu_pages may be swept. Throws SweepError.
std::vector<SweepPoint> sweep_grid(const std::vector<std::string>& specs, const SweepPoint& defaults,
                                   const std::vector<std::string>& default_mmus, bool builtin_scenario);

}  // namespace vmmu::tools
