#pragma once
// The four x86 paging formats as compile-time geometry. The guest walker is one template over
// these (the C++ form of KVM's paging_tmpl.h).
#include <cstdint>

#include "x86/page_table_entry.hpp"

namespace vmmu::x86 {

inline constexpr unsigned PAGE_SHIFT = 12;
inline constexpr uint64_t PAGE_SIZE = 1ull << PAGE_SHIFT;
inline constexpr uint64_t PAGE_OFFSET_MASK = PAGE_SIZE - 1;
inline constexpr uint64_t SIZE_2M = 1ull << 21;
inline constexpr uint64_t SIZE_4M = 1ull << 22;
inline constexpr uint64_t SIZE_1G = 1ull << 30;

enum class PagingMode : uint8_t {
  Off,     // CR0.PG=0: linear = physical
  Bits32,  // 4-byte entries, 2 levels, optional 4 MiB pages (CR4.PSE) with PSE-36
  Pae,     // 8-byte entries, 4 PDPTEs latched from CR3, then 2 levels
  Level4,  // long mode, 4 levels
  Level5,  // long mode with CR4.LA57, 5 levels
};

constexpr const char* name(PagingMode m) {
  switch (m) {
    case PagingMode::Off: return "off";
    case PagingMode::Bits32: return "32-bit";
    case PagingMode::Pae: return "pae";
    case PagingMode::Level4: return "4-level";
    case PagingMode::Level5: return "5-level";
  }
  return "?";
}

constexpr bool is_long_mode(PagingMode m) { return m == PagingMode::Level4 || m == PagingMode::Level5; }

// Geometry of one format. Level 1 is the page table; `levels` is the root's level as the walker
// reads it from memory (PAE's PDPTEs are registers, so its walk from memory starts at level 2).
template <class Entry, unsigned Levels, unsigned IndexBits, bool PdptRegisters>
struct Format {
  using entry_type = Entry;
  static constexpr unsigned levels = Levels;
  static constexpr unsigned index_bits = IndexBits;
  static constexpr unsigned entries = 1u << IndexBits;
  static constexpr unsigned entry_size = sizeof(Entry);
  static constexpr bool pdpt_registers = PdptRegisters;

  static constexpr unsigned level_shift(unsigned level) { return PAGE_SHIFT + (level - 1) * IndexBits; }
  static constexpr uint64_t level_size(unsigned level) { return 1ull << level_shift(level); }
  static constexpr unsigned index(uint64_t gva, unsigned level) {
    return static_cast<unsigned>((gva >> level_shift(level)) & (entries - 1));
  }
};

using Bits32Format = Format<uint32_t, 2, 10, false>;
using PaeFormat = Format<uint64_t, 3, 9, true>;
using Level4Format = Format<uint64_t, 4, 9, false>;
using Level5Format = Format<uint64_t, 5, 9, false>;

// Every table is one 4 KiB page.
static_assert(Bits32Format::entries * Bits32Format::entry_size == PAGE_SIZE);
static_assert(Level4Format::entries * Level4Format::entry_size == PAGE_SIZE);
// Spans of each leaf size.
static_assert(Bits32Format::level_size(2) == SIZE_4M);
static_assert(PaeFormat::level_size(2) == SIZE_2M);
static_assert(Level4Format::level_size(3) == SIZE_1G);
// Address widths: 32-bit and PAE cover 32 bits, 4-level 48, 5-level 57.
static_assert(Bits32Format::level_shift(2) + Bits32Format::index_bits == 32);
static_assert(PaeFormat::level_shift(3) + 2 == 32);  // four PDPTEs
static_assert(Level4Format::level_shift(4) + 9 == 48);
static_assert(Level5Format::level_shift(5) + 9 == 57);

// Linear-address width checks (SDM 3.3.7.1): bits 63..N-1 must equal bit N-1.
constexpr bool is_canonical(uint64_t gva, unsigned width) {
  const int64_t s = static_cast<int64_t>(gva << (64 - width)) >> (64 - width);
  return static_cast<uint64_t>(s) == gva;
}
static_assert(is_canonical(0x0000'7fff'ffff'f000ull, 48));
static_assert(!is_canonical(0x0000'8000'0000'0000ull, 48));
static_assert(is_canonical(0xffff'8000'0000'0000ull, 48));
static_assert(is_canonical(0x0000'8000'0000'0000ull, 57));

}  // namespace vmmu::x86
