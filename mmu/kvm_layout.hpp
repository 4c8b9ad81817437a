#pragma once
// What Linux KVM's data structures would hold for the same shadow-page population, so a run shows
// the seed's "50%" next to vmmu's own bytes. Per-structure sizes (x86-64):
//  - struct kvm_mmu_page: ~184 B (pahole on a 6.x kernel; the 2010 layout was of the same order)
//  - the 4 KiB table (spt) of every shadow page, and before 2010 a second 4 KiB gfns array
//    for every page; after "kvm mmu: reduce 50% memory usage" only indirect pages keep it
//  - rmap: one 8-byte struct kvm_rmap_head per gfn per level (4K, 2M, 1G), allocated for every
//    memslot when shadow paging may run (always in 2010; today only without the TDP MMU)
//  - struct pte_list_desc: 128 B (PTE_LIST_EXT = 14 sptes + count + next) per aliased gfn
//  - struct kvm_lpage_info: 4 B (disallow_lpage) per 2M and per 1G region of every memslot
#include <cstdint>

#include "guest/memslots.hpp"

namespace vmmu::mmu {

inline constexpr uint64_t KVM_MMU_PAGE_BYTES = 184;
inline constexpr uint64_t KVM_TABLE_BYTES = 4096;
inline constexpr uint64_t KVM_RMAP_HEAD_BYTES = 8;
inline constexpr uint64_t KVM_PTE_LIST_DESC_BYTES = 128;
inline constexpr uint64_t KVM_LPAGE_INFO_BYTES = 4;

struct KvmLayoutModel {
  uint64_t pre2010 = 0;    // every shadow page with a gfns array, rmaps for every slot
  uint64_t after2010 = 0;  // direct pages without the gfns array (the seed's patch)
  uint64_t today = 0;      // the TDP MMU (no rmaps, no gfns) or today's shadow MMU
};

inline KvmLayoutModel kvm_layouts(const guest::Memslots& slots, uint64_t pages, uint64_t indirect_pages,
                                  uint64_t pte_list_descs, bool tdp) {
  uint64_t gfns = 0, regions = 0;
  for (const guest::Memslot* s : slots.slots()) {
    gfns += s->npages();
    const uint64_t first = s->base_gfn(), last = s->end_gfn() - 1;
    regions += (last >> 9) - (first >> 9) + 1;    // 2 MiB regions
    regions += (last >> 18) - (first >> 18) + 1;  // 1 GiB regions
  }
  const uint64_t rmap = KVM_RMAP_HEAD_BYTES * (gfns + regions);
  const uint64_t lpage = KVM_LPAGE_INFO_BYTES * regions;
  const uint64_t descs = KVM_PTE_LIST_DESC_BYTES * pte_list_descs;
  const uint64_t base = pages * (KVM_TABLE_BYTES + KVM_MMU_PAGE_BYTES);
  KvmLayoutModel m;
  m.pre2010 = base + pages * KVM_TABLE_BYTES + rmap + lpage + descs;
  m.after2010 = base + indirect_pages * KVM_TABLE_BYTES + rmap + lpage + descs;
  m.today = tdp ? base + lpage : m.after2010;
  return m;
}

}  // namespace vmmu::mmu
