#pragma once
// Bits of a paging-structure entry (SDM Vol. 3A, 4.3-4.5). The low 12 bits mean the same in
// every format; 4-byte entries simply have no bits above 31.
#include <cstdint>

namespace vmmu::x86::pte {

inline constexpr uint64_t P = 1ull << 0;     // present
inline constexpr uint64_t RW = 1ull << 1;    // writable
inline constexpr uint64_t US = 1ull << 2;    // user-accessible
inline constexpr uint64_t PWT = 1ull << 3;
inline constexpr uint64_t PCD = 1ull << 4;
inline constexpr uint64_t A = 1ull << 5;     // accessed
inline constexpr uint64_t D = 1ull << 6;     // dirty (leaf entries only)
inline constexpr uint64_t PS = 1ull << 7;    // page size (non-leaf levels); PAT in a 4 KiB PTE
inline constexpr uint64_t G = 1ull << 8;     // global (leaf entries only)
inline constexpr uint64_t PAT_4K = 1ull << 7;     // PAT in a 4 KiB PTE
inline constexpr uint64_t PAT_HUGE = 1ull << 12;  // PAT in a 2 MiB/4 MiB/1 GiB leaf
inline constexpr uint64_t XD = 1ull << 63;   // execute-disable (PAE and long mode, EFER.NXE=1)

inline constexpr unsigned PKEY_SHIFT = 59;   // bits 62:59: protection key of a long-mode leaf
inline constexpr uint64_t PKEY_MASK = 0xfull << PKEY_SHIFT;

// Bits that hold a physical address in 8-byte entries (before masking to MAXPHYADDR).
inline constexpr uint64_t ADDR_MASK_52 = 0x000f'ffff'ffff'f000ull;

// Mask of bits lo..hi inclusive.
constexpr uint64_t bits(unsigned hi, unsigned lo) {
  return ((hi >= 63) ? ~0ull : ((1ull << (hi + 1)) - 1)) & ~((1ull << lo) - 1);
}
static_assert(bits(51, 12) == ADDR_MASK_52);
static_assert(bits(63, 63) == XD);
static_assert(bits(62, 59) == PKEY_MASK);

}  // namespace vmmu::x86::pte
