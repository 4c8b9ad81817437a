#pragma once
// The geometry of the guest's paging format and where a Linux-like kernel puts things in it:
// the split between user and kernel halves, the direct map, and the huge-page size.
#include <cstdint>

#include "x86/page_table_entry.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::sim::guest_os {

struct PagingLayout {
  x86::PagingMode mode = x86::PagingMode::Level4;
  unsigned root_level = 4;      // level of the table CR3 points at (PAE: the PDPT, level 3)
  unsigned entry_bytes = 8;
  unsigned index_bits = 9;
  uint64_t user_top = 0;        // TASK_SIZE: user addresses lie below it
  uint64_t direct_map = 0;      // PAGE_OFFSET: the direct map's virtual base
  uint64_t direct_map_size = 0; // physical bytes it covers (lowmem on 32-bit guests)
  unsigned kernel_first_index = 0;  // first root entry of the kernel half
  bool nx = true;               // entries have an XD bit (PAE and long mode)

  // Linux's layout for `mode` over `memory` bytes of guest-physical memory.
  static PagingLayout for_mode(x86::PagingMode mode, uint64_t memory);

  bool long_mode() const { return x86::is_long_mode(mode); }
  unsigned entries(unsigned level) const {
    if (mode == x86::PagingMode::Pae && level == 3) return 4;
    return 1u << index_bits;
  }
  unsigned shift(unsigned level) const { return x86::PAGE_SHIFT + (level - 1) * index_bits; }
  uint64_t span(unsigned level) const { return 1ull << shift(level); }
  unsigned index(uint64_t va, unsigned level) const {
    return static_cast<unsigned>((va >> shift(level)) & (entries(level) - 1));
  }
  // The size of a level-2 leaf: 4 MiB with 4-byte entries, else 2 MiB.
  uint64_t huge_size() const { return span(2); }
  uint64_t direct_va(uint64_t gpa) const { return direct_map + gpa; }

  // Whether a present entry at `level` maps a page (rather than pointing at a table).
  bool is_leaf(uint64_t entry, unsigned level) const {
    if (level == 1) return true;
    if (mode == x86::PagingMode::Pae && level == 3) return false;
    return (entry & x86::pte::PS) != 0;
  }
  // The gpa an entry points at: a table, or the start of the page a leaf maps.
  uint64_t target(uint64_t entry, unsigned level) const {
    const uint64_t addr = entry_bytes == 4 ? entry & 0xffff'f000ull : entry & x86::pte::ADDR_MASK_52;
    if (level > 1 && is_leaf(entry, level)) return addr & ~(span(level) - 1);
    return addr;
  }
};

}  // namespace vmmu::sim::guest_os
