#pragma once
// Control-register, EFER and RFLAGS bits that change how linear addresses translate
// (Intel SDM Vol. 3A, 2.5 and 4.1).
#include <cstdint>

namespace vmmu::x86 {

namespace cr0 {
inline constexpr uint64_t PE = 1ull << 0;   // protected mode
inline constexpr uint64_t WP = 1ull << 16;  // supervisor writes honour R/W
inline constexpr uint64_t PG = 1ull << 31;  // paging
}  // namespace cr0

namespace cr3 {
inline constexpr uint64_t PWT = 1ull << 3;
inline constexpr uint64_t PCD = 1ull << 4;
inline constexpr uint64_t PAE_PDPT_MASK = 0xffff'ffe0ull;  // bits 31:5: PDPT base under PAE paging
inline constexpr uint64_t BITS32_ROOT_MASK = 0xffff'f000ull;  // bits 31:12: page directory base
}  // namespace cr3

namespace cr4 {
inline constexpr uint64_t PSE = 1ull << 4;     // 4 MiB pages under 32-bit paging
inline constexpr uint64_t PAE = 1ull << 5;     // 8-byte entries
inline constexpr uint64_t PGE = 1ull << 7;     // global pages
inline constexpr uint64_t LA57 = 1ull << 12;   // 5-level paging
inline constexpr uint64_t PCIDE = 1ull << 17;  // not modelled: refused
inline constexpr uint64_t SMEP = 1ull << 20;   // no supervisor fetch from user pages
inline constexpr uint64_t SMAP = 1ull << 21;   // no supervisor data access to user pages unless AC
inline constexpr uint64_t PKE = 1ull << 22;    // protection keys for user pages
}  // namespace cr4

namespace efer {
inline constexpr uint64_t SCE = 1ull << 0;
inline constexpr uint64_t LME = 1ull << 8;   // long mode enable
inline constexpr uint64_t LMA = 1ull << 10;  // long mode active (derived: LME && CR0.PG)
inline constexpr uint64_t NXE = 1ull << 11;  // bit 63 of entries is XD instead of reserved
}  // namespace efer

namespace rflags {
inline constexpr uint64_t AC = 1ull << 18;  // lets supervisor data accesses through SMAP
}

}  // namespace vmmu::x86
