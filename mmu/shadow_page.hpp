#pragma once
// A shadow page (KVM's struct kvm_mmu_page): the header of one 4 KiB table of 512 SPTEs.
// Direct pages map a linear gfn range and keep no per-entry gfn array: gfn_at(i) is computed
// from the base gfn, which is rounded down to the span of the level when the page is created
// (the 2010 "reduce 50% memory usage" idea, with the large-SPTE and quadrant traps closed by
// the rounding). Indirect pages (shadowing a guest table) keep none either: a present leaf
// SPTE holds a host frame, and the memslot that contains the frame gives its gfn back; a table
// SPTE's gfn is its child's. The table itself lives in the PagePool's arena; the header is
// found from the table's address without any per-page pointer.
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
  uint64_t gfn = 0;                 // direct: base gfn, aligned to frames_per_page(level); else the guest table's gfn
  uint64_t* parent_spte = nullptr;  // an SPTE pointing at this page (null for a root); more in the engine's list
  uint32_t prev = 0, next = 0;      // active list links (pool indexes; 0 = none)
  uint32_t hash_next = 0;           // next page with the same gfn (shadow engine)
  Role role{};
  uint32_t root_count = 0;          // vCPUs using the page as their current root
  uint16_t flags = 0;               // engine-specific
  uint16_t write_flooding = 0;      // emulated writes since a fault last went through the page

  // The first gfn that entry `index` of a direct page maps (a leaf) or covers (a table).
  uint64_t gfn_at(unsigned index) const {
    assert(role.direct() && "an indirect page's gfns come from its SPTEs");
    return gfn + (uint64_t{index} << (LEVEL_BITS * (role.level() - 1)));
  }
  // Checks that entry `index` of a direct page maps `g`: the formula must hold (debug builds).
  void set_gfn([[maybe_unused]] unsigned index, [[maybe_unused]] uint64_t g) const {
    assert(g == gfn_at(index) && "direct shadow page: computed gfn differs from the gfn mapped");
  }
};

static_assert(sizeof(ShadowPage) <= 64, "headers are counted in mapping_total: keep them small");

}  // namespace vmmu::mmu
