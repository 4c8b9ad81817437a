#pragma once
// What the shadow engine's source files share: the per-vCPU state, small helpers about entries
// and rights, and the member templates that iterate pages, parents and reverse maps.
#include <algorithm>
#include <string>
#include <vector>

#include "mmu/shadow_mmu.hpp"
#include "mmu/spte.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::mmu {

namespace shadow {

inline constexpr uint16_t PAGE_ALIVE = 1;         // in the hash and the active list
inline constexpr uint16_t PAGE_MORE_PARENTS = 2;  // parents beyond parent_spte in extra_parents_
inline constexpr unsigned FAULT_PAGES = 6;        // a fault builds at most a root and one page per level
// What one fault may add to the metadata besides its pages: a reverse-map hint region and
// group (5 KiB), hash and list nodes, a bucket array growing.
inline constexpr uint64_t FAULT_BYTES = FAULT_PAGES * PagePool::PAGE_BYTES + 16 * 1024;

// Appends to the list at `key`, leaving no empty list behind if the host refuses.
template <class Map, class V>
void push_back_or_erase(Map& m, uint64_t key, V value) {
  auto& list = m[key];
  try {
    list.push_back(value);
  } catch (...) {
    if (list.empty()) m.erase(key);
    throw;
  }
}

constexpr unsigned guest_root_level(x86::PagingMode m) {
  switch (m) {
    case x86::PagingMode::Off: return 0;
    case x86::PagingMode::Bits32: return 2;
    case x86::PagingMode::Pae: return 3;
    case x86::PagingMode::Level4: return 4;
    case x86::PagingMode::Level5: return 5;
  }
  return 0;
}

constexpr uint64_t level_bytes(unsigned level) { return uint64_t{x86::PAGE_SIZE} << (LEVEL_BITS * (level - 1)); }

// The entry of a shadow table at `level` that `gva` uses; the four PAE-style root entries are
// indexed by gva bits 31:30 (such guests have no higher bits).
inline unsigned entry_index(uint64_t gva, unsigned level, unsigned root_level) {
  if (level == 3 && root_level == 3) return static_cast<unsigned>((gva >> 30) & 3);
  return spte_index(gva >> x86::PAGE_SHIFT, level);
}

// Whether the shadow tables can be walked for `gva` (a non-canonical one gets #GP from the walk).
inline bool gva_walkable(const x86::PagingContext& c, uint64_t gva) {
  const bool long_mode = c.mode() == x86::PagingMode::Level4 || c.mode() == x86::PagingMode::Level5;
  return !long_mode || x86::is_canonical(gva, c.linear_width());
}

// The rights (acc::U|W|X) one guest entry grants.
inline uint8_t entry_rights(uint64_t e, bool nxe) {
  uint8_t acc = static_cast<uint8_t>(e & (x86::acc::W | x86::acc::U)) | x86::acc::X;
  if (nxe && (e & x86::pte::XD)) acc &= static_cast<uint8_t>(~x86::acc::X);
  return acc;
}

// Which part of a 4-byte guest table a shadow page at `level` holds: half a page table (gva bit
// 21), a quarter of the page directory (gva bits 31:30).
inline unsigned quadrant_of(uint64_t gva, unsigned level) {
  return static_cast<unsigned>(level == 1 ? (gva >> 21) & 1 : (gva >> 30) & 3);
}

// The guest's rights as leaf SPTE bits, and back.
inline uint64_t rights_bits(uint8_t acc, unsigned pkey) {
  uint64_t s = uint64_t{pkey} << spte::PKEY_SHIFT;
  if (acc & x86::acc::U) s |= spte::US;
  if (acc & x86::acc::W) s |= spte::GUEST_WRITABLE;
  if (!(acc & x86::acc::X)) s |= spte::XD;
  return s;
}
inline uint8_t spte_rights(uint64_t s) {
  uint8_t acc = 0;
  if (s & spte::US) acc |= x86::acc::U;
  if (s & spte::GUEST_WRITABLE) acc |= x86::acc::W;
  if (!(s & spte::XD)) acc |= x86::acc::X;
  return acc;
}
inline unsigned spte_pkey(uint64_t s) { return static_cast<unsigned>((s & spte::PKEY_MASK) >> spte::PKEY_SHIFT); }

// The simulated hardware's check of a leaf: the guest's rights in the guest's context, then the
// host's write permission.
inline bool hardware_allows(const VcpuContext& vcpu, uint64_t s, x86::AccessKind kind) {
  const x86::PagingContext& c = vcpu.paging;
  if (c.mode() != x86::PagingMode::Off) {
    const bool user = vcpu.state.cpl == 3;
    const uint8_t acc = spte_rights(s);
    if (c.permission_fault(kind, user, vcpu.state.ac, acc)) return false;
    if (c.pkey_fault(kind, user, acc, vcpu.state.pkru, spte_pkey(s))) return false;
  }
  return kind != x86::AccessKind::Write || (s & spte::RW);
}

}  // namespace shadow

struct ShadowMmu::VcpuState : VcpuMmuState {
  static constexpr unsigned PREVIOUS_ROOTS = 3;
  unsigned root_level = 0;   // 0: loaded at the next access; 3: pae_root; 4, 5: the page `root`
  uint32_t root = 0;         // pool index of the root page
  uint64_t pae_root[4] = {};  // PAE, 32-bit and unpaged guests: one entry per GiB
  uint32_t prev[PREVIOUS_ROOTS] = {};  // KVM's prev_roots, most recent first (pool indexes)
  // The memslot whose host range held the last frame a hit resolved.
  guest::Memslot* slot = nullptr;
  uintptr_t slot_lo = 0, slot_hi = 0;
  uint64_t slot_generation = ~0ull;
};

inline ShadowMmu::VcpuState& ShadowMmu::state(VcpuContext& vcpu) { return static_cast<VcpuState&>(*vcpu.mmu_state); }

template <class F>
void ShadowMmu::for_each_parent(const ShadowPage* sp, F&& f) const {
  if (sp->parent_spte) f(sp->parent_spte);
  if (sp->flags & shadow::PAGE_MORE_PARENTS) {
    for (uint64_t* p : extra_parents_.at(pool_.index(sp))) f(p);
  }
}

template <class F>
void ShadowMmu::for_each_page_of(uint64_t gfn, F&& f) {
  std::vector<uint32_t> pages;
  if (const GfnInfo* gi = gfn_info(gfn)) {
    for (uint32_t i = gi->head; i; i = pool_.header_at(i)->hash_next) pages.push_back(i);
  }
  for (uint32_t i : pages) {  // f may zap pages, so the chain is read first
    ShadowPage* sp = pool_.header_at(i);
    if (alive(sp) && sp->gfn == gfn) f(sp);
  }
}

template <class F>
void ShadowMmu::for_each_spte_of(uint64_t gfn, F&& f) {
  guest::Memslot* slot = slots_.find(gfn);
  if (!slot) return;
  const uint64_t target = reinterpret_cast<uintptr_t>(slot->host_page(gfn)) | spte::P;
  constexpr uint64_t KEY = spte::FRAME_MASK | spte::P;
  if (RmapHints* h = hints(*slot, false)) {
    const uint64_t page = gfn - slot->base_gfn();
    const uint16_t hint = h->get(page);
    if (hint != RmapHints::NONE) {
      ++n_.rmap_scans;
      uint16_t found = RmapHints::NONE;
      auto scan = [&](ShadowPage* sp) {
        if (!alive(sp) || sp->role.level() != 1) return;
        uint64_t* t = pool_.table(sp);
        const uint16_t tag = RmapHints::tag(pool_.index(sp));
        for (unsigned i = 0; i < SPTE_PER_PAGE; ++i) {
          if ((t[i] & KEY) != target) continue;
          f(&t[i], 1u);
          if ((t[i] & KEY) == target) found = (found == RmapHints::NONE || found == tag) ? tag : RmapHints::ANY;
        }
      };
      if (hint == RmapHints::ANY) {
        for (uint32_t i = lru_head_; i;) {
          ShadowPage* sp = pool_.header_at(i);
          i = sp->next;
          scan(sp);
        }
      } else {
        RmapHints::for_each_index_of_tag(hint, pool_.high_water(), [&](uint32_t i) { scan(pool_.header_at(i)); });
      }
      h->reset(page, found);
    }
  }
  for (unsigned level = 2; level <= 3; ++level) {
    auto it = huge_rmap_.find(huge_key(level, gfn));
    if (it == huge_rmap_.end()) continue;
    const std::vector<uint64_t*> leaves(it->second.begin(), it->second.end());  // f may drop them
    for (uint64_t* p : leaves) f(p, level);
  }
}

template <class F>
void ShadowMmu::for_each_spte_in(const guest::Memslot& slot, uint64_t gfn, uint64_t npages, F&& f) {
  const uint64_t end = gfn + npages;
  if (npages <= 64) {
    std::vector<uint64_t*> huge_seen;
    for (uint64_t g = gfn; g < end; ++g) {
      for_each_spte_of(g, [&](uint64_t* p, unsigned level) {
        if (level > 1) {
          if (std::find(huge_seen.begin(), huge_seen.end(), p) != huge_seen.end()) return;
          huge_seen.push_back(p);
        }
        f(p, level, g & ~(frames_per_entry(level) - 1));
      });
    }
    return;
  }
  // Many gfns: one pass over every leaf page, each SPTE's gfn found from its frame.
  for (uint32_t i = lru_head_; i;) {
    ShadowPage* sp = pool_.header_at(i);
    i = sp->next;
    if (sp->role.level() != 1) continue;
    uint64_t* t = pool_.table(sp);
    for (unsigned j = 0; j < SPTE_PER_PAGE; ++j) {
      if (!spte::is_present(t[j])) continue;
      uint64_t g = 0;
      guest::Memslot* s = nullptr;
      if (gfn_of_leaf(t[j], g, &s) && s == &slot && g >= gfn && g < end) f(&t[j], 1u, g);
    }
  }
  struct Huge {
    uint64_t* p;
    unsigned level;
    uint64_t first;
  };
  std::vector<Huge> huge;
  for (const auto& [key, leaves] : huge_rmap_) {
    const unsigned level = static_cast<unsigned>(key >> 56);
    const uint64_t first = (key & ((1ull << 56) - 1)) << (LEVEL_BITS * (level - 1));
    if (first + frames_per_entry(level) <= gfn || first >= end) continue;
    for (uint64_t* p : leaves) huge.push_back({p, level, first});
  }
  for (const Huge& h : huge) f(h.p, h.level, h.first);
}

}  // namespace vmmu::mmu
