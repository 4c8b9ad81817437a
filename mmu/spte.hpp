#pragma once
// SPTEs are real x86-64 page-table entries whose frame field holds a host frame number (the host
// virtual address >> 12), so a caller can walk the tables as hardware would. Bits the hardware
// ignores (52..62) carry MMU state, as KVM's spte.h does.
#include <cstdint>

#include "x86/page_table_entry.hpp"

namespace vmmu::mmu::spte {

using x86::pte::A;
using x86::pte::D;
using x86::pte::P;
using x86::pte::PS;
using x86::pte::RW;
using x86::pte::US;
using x86::pte::XD;

inline constexpr uint64_t FRAME_MASK = x86::pte::ADDR_MASK_52;
inline constexpr uint64_t HOST_WRITABLE = 1ull << 52;  // the host lets the guest write the frame
inline constexpr uint64_t MMU_WRITABLE = 1ull << 53;   // only dirty logging keeps W clear: the fast path may set it
inline constexpr uint64_t MMIO = 1ull << 54;           // not present: the gfn is in no memslot (cached)
// Shadow leaves carry the guest's own rights, checked in the guest's context on every access:
// U in US, X as XD, W here (RW is the host's permission: write tracking and dirty logging take
// it away whatever the guest allows), and the protection key in bits 62:59 as in long mode.
inline constexpr uint64_t GUEST_WRITABLE = 1ull << 56;
inline constexpr uint64_t PKEY_MASK = x86::pte::PKEY_MASK;
inline constexpr unsigned PKEY_SHIFT = x86::pte::PKEY_SHIFT;
inline constexpr unsigned MMIO_GEN_SHIFT = 55;         // bits 62:55: memslot generation of an MMIO SPTE
inline constexpr unsigned MMIO_GEN_BITS = 8;
inline constexpr uint64_t MMIO_GEN_MASK = ((1ull << MMIO_GEN_BITS) - 1) << MMIO_GEN_SHIFT;

constexpr bool is_present(uint64_t s) { return s & P; }
constexpr bool is_mmio(uint64_t s) { return (s & (P | MMIO)) == MMIO; }
constexpr bool is_leaf(uint64_t s, unsigned level) { return level == 1 || (s & PS); }
constexpr uint64_t frame(uint64_t s) { return (s & FRAME_MASK) >> 12; }
inline uint8_t* host_address(uint64_t s) { return reinterpret_cast<uint8_t*>(s & FRAME_MASK); }

constexpr uint64_t mmio_generation(uint64_t generation) { return generation & ((1ull << MMIO_GEN_BITS) - 1); }
constexpr uint64_t make_mmio(uint64_t generation) { return MMIO | (mmio_generation(generation) << MMIO_GEN_SHIFT); }
constexpr bool mmio_is_current(uint64_t s, uint64_t generation) {
  return ((s & MMIO_GEN_MASK) >> MMIO_GEN_SHIFT) == mmio_generation(generation);
}

// A pointer to the next table: present, writable and user, as KVM builds non-leaf SPTEs.
inline uint64_t make_table(const void* table) { return reinterpret_cast<uint64_t>(table) | P | RW | US; }
inline uint64_t* table_of(uint64_t s) { return reinterpret_cast<uint64_t*>(s & FRAME_MASK); }

static_assert((MMIO_GEN_MASK & (FRAME_MASK | HOST_WRITABLE | MMU_WRITABLE | MMIO | XD)) == 0);
static_assert(((GUEST_WRITABLE | PKEY_MASK) & (FRAME_MASK | HOST_WRITABLE | MMU_WRITABLE | XD)) == 0);
static_assert(is_mmio(make_mmio(0x1ff)) && !is_present(make_mmio(0x1ff)));
static_assert(mmio_is_current(make_mmio(0x100), 0) && !mmio_is_current(make_mmio(1), 2));

}  // namespace vmmu::mmu::spte
