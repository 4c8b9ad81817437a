#pragma once
// A cost model of one vCPU's address translation hardware: L1 instruction and data TLBs by page
// size, a shared STLB, paging-structure caches, and under TDP the nested (EPT) paging-structure
// caches keyed by gpa. It only counts (hits, walks, the memory references of each walk); it never
// changes a result. Hardware semantics (SDM vol. 3A 4.10, and 29.4 for EPT):
// - a TLB entry caches the combined translation: the smaller of the guest page and the host
//   mapping under TDP, the shadow leaf under shadow paging; large pages of 32-bit guests (4 MiB)
//   are cached as the 2 MiB half that was used;
// - MOV CR3 drops non-global entries (global ones are filled only when CR4.PGE=1) and every
//   paging-structure-cache entry; INVLPG drops the address's entries of every size and every
//   paging-structure-cache entry; a full flush drops everything but the nested caches (guest-
//   physical mappings go only with INVEPT: `flush_all`);
// - a page fault drops the address's entries; an access that does not complete through a
//   translation (fault, MMIO, read-only memory) creates no entry;
// - a write that hits an entry cached by a read walks again to set the dirty bit.
#include <cstdint>

#include "sim/tlb_cache.hpp"
#include "sim/tlb_config.hpp"
#include "sim/tlb_counters.hpp"
#include "x86/access.hpp"

namespace vmmu::sim {

// What a walk for one missed access read, learnt without side effects (sim/tlb_probe.hpp).
struct WalkFacts {
  bool translated = false;  // the access completed through a translation: entries are filled
  // The 1-D tables (guest tables natively and under TDP, the shadow tables under shadow).
  uint8_t top_level = 0;    // level of the first entry read from memory; 0: none (paging off)
  uint8_t end_level = 1;    // level of the last entry read: the leaf, or where the walk stopped
  uint8_t index_bits = 9;   // 10 for 32-bit guest tables (4 MiB large pages)
  uint8_t page_level = 1;   // size of the entry to fill: 1 4 KiB, 2 2 MiB, 3 1 GiB
  bool global = false;
  // TDP: every 1-D entry read is a gpa translated by a nested walk, and so is the data's gpa.
  bool nested = false;
  uint8_t nested_root_level = 0;
  uint64_t table_gpa[6] = {};         // by 1-D level: gpa of the entry read there
  uint8_t table_nested_level[6] = {};  // level of the nested leaf (or where it stopped) for it
  bool data_nested = false;           // the data's gpa was reached: one more nested walk
  uint64_t data_gpa = 0;
  uint8_t data_nested_level = 1;
};

class TlbModel {
 public:
  static constexpr unsigned GLOBAL = 1, DIRTY = 2;  // entry flags

  // Throws std::invalid_argument for a bad geometry.
  TlbModel(const TlbConfig& config, TlbCounters& counters);

  // The hot path: true (and counted) when a TLB holds the translation; false when a walk is due:
  // the caller then learns the walk's facts and calls walk().
  bool lookup(uint64_t gva, x86::AccessKind kind) {
    const bool write = kind == x86::AccessKind::Write;
    const bool fetch = kind == x86::AccessKind::Fetch;
    const uint64_t page = gva >> SIZE_SHIFT[0];
    LastHit& last = last_hit_[fetch];
    if (last.page == page && (!write || (last.flags & DIRTY))) [[likely]] {
      ++counters_.l1_hits;
      return true;
    }
    Level1& l1 = fetch ? itlb_ : dtlb_;
    for (unsigned c = 0; c < 3; ++c) {
      if (!(sizes_used_ >> c & 1)) continue;  // no entry of this size anywhere (most traces: 4 KiB only)
      const uint64_t vpn = gva >> SIZE_SHIFT[c];
      const int f = l1.by_size[c].find(vpn, vpn);
      if (f < 0) continue;
      if (write && !(f & DIRTY)) return dirty_walk_due();
      last = LastHit{page, static_cast<unsigned>(f)};
      ++counters_.l1_hits;
      return true;
    }
    for (unsigned c = 0; c < 3; ++c) {
      if (!(sizes_used_ >> c & 1)) continue;
      TlbCache& s = c < 2 ? stlb_ : stlb_1g_;
      const uint64_t vpn = gva >> SIZE_SHIFT[c];
      const int f = s.find(vpn << 2 | c, vpn);
      if (f < 0) continue;
      if (write && !(f & DIRTY)) return dirty_walk_due();
      l1.by_size[c].insert(vpn, vpn, static_cast<unsigned>(f));
      last = LastHit{page, static_cast<unsigned>(f)};
      ++counters_.stlb_hits;
      return true;
    }
    return false;
  }

  // Counts the walk lookup() asked for, and fills the TLBs and caches when it translated.
  // Returns its memory references.
  unsigned walk(uint64_t gva, x86::AccessKind kind, const WalkFacts& f);

  void new_cr3();               // MOV CR3: non-global entries, every paging-structure-cache entry
  void invlpg(uint64_t gva);    // INVLPG: the address's entries, every paging-structure-cache entry
  void flush_guest();           // every TLB and paging-structure-cache entry; nested ones stay
  void flush_all();             // everything (INVEPT, or KVM's remote flush under shadow)
  void drop_address(uint64_t gva);  // a page fault: the address's entries and cached prefixes

  // For tests: entries held, summed over the TLBs.
  unsigned tlb_entries() const;

 private:
  static constexpr unsigned SIZE_SHIFT[3] = {12, 21, 30};
  struct Level1 {
    TlbCache by_size[3];
  };

  // The 4 KiB page of each side's last L1 hit (0 data, 1 instruction) and its entry's flags. The
  // entry is then first in its set, so a lookup of the same page would find it again and move
  // nothing: it is counted without one, until that L1 TLB changes (forget_last_hits).
  struct LastHit {
    uint64_t page = NO_PAGE;
    unsigned flags = 0;
  };
  static constexpr uint64_t NO_PAGE = ~uint64_t{0};
  LastHit last_hit_[2];
  void forget_last_hits() { last_hit_[0] = last_hit_[1] = LastHit{}; }

  bool dirty_walk_due() {
    ++counters_.dirty_walks;
    return false;
  }
  unsigned nested_walk(uint64_t gpa, unsigned end_level, unsigned root_level);
  void clear_pscs();

  TlbCounters& counters_;
  uint8_t sizes_used_ = 0;  // bit c: an entry of size c may be held (set by fills, cleared by full flushes)
  Level1 dtlb_, itlb_;
  TlbCache stlb_, stlb_1g_;
  TlbCache psc_[6], nested_psc_[6];
};

}  // namespace vmmu::sim
