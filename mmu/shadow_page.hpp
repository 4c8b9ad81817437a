#pragma once
// A shadow page (KVM's struct kvm_mmu_page): the header of one 4 KiB table of 512 SPTEs.
// Direct pages map a linear gfn range and keep no per-entry gfn array: gfn_at(i) is computed
// from the base gfn, which is rounded down to the span of the level when the page is created
// (the 2010 "reduce 50% memory usage" idea, with the large-SPTE and quadrant traps closed by
// the rounding). The table itself lives in the PagePool's arena; the header is found from the
// table's address without any per-page pointer.
#include <cassert>
#include <cstdint>

#include "mmu/role.hpp"

namespace vmmu::mmu {

inline constexpr unsigned SPTE_PER_PAGE = 512;
inline constexpr unsigned LEVEL_BITS = 9;

// Number of 4 KiB frames one entry at `level` spans (1, 512, 512^2, ...).
constexpr uint64_t frames_per_entry(unsigned level) { return 1ull << (LEVEL_BITS * (level - 1)); }
// Number of frames a whole table at `level` spans.
constexpr uint64_t frames_per_page(unsigned level) { return frames_per_entry(level) * SPTE_PER_PAGE; }
constexpr unsigned spte_index(uint64_t gfn, unsigned level) {
  return static_cast<unsigned>((gfn >> (LEVEL_BITS * (level - 1))) & (SPTE_PER_PAGE - 1));
}

struct ShadowPage {
  uint64_t gfn = 0;                   // base gfn; direct pages: aligned to frames_per_page(level)
  uint64_t* translations = nullptr;   // per-entry gfns; never allocated for direct pages
  uint64_t* parent_spte = nullptr;    // the SPTE pointing at this page (null for a root)
  uint32_t prev = 0, next = 0;        // active list links (pool indexes; 0 = none)
  Role role{};
  uint32_t root_count = 0;            // references to a root from vCPUs / the MMU
  uint32_t flags = 0;

  // The gfn that entry `index` maps (for a leaf) or covers the start of (for a table).
  uint64_t gfn_at(unsigned index) const {
    if (role.direct()) return gfn + (uint64_t{index} << (LEVEL_BITS * (role.level() - 1)));
    return translations[index];
  }
  // Records that entry `index` maps `g`. Direct pages check it instead: the formula must hold.
  void set_gfn(unsigned index, uint64_t g) {
    if (role.direct()) {
      assert(g == gfn_at(index) && "direct shadow page: computed gfn differs from the gfn mapped");
      (void)g;
      return;
    }
    translations[index] = g;
  }
};

static_assert(sizeof(ShadowPage) <= 64, "headers are counted in mapping_total: keep them small");

}  // namespace vmmu::mmu
