#pragma once
// Exception vectors and page-fault error-code bits (SDM Vol. 3A, 4.7).
#include <cstdint>

namespace vmmu::x86 {

inline constexpr uint8_t VECTOR_GP = 13;
inline constexpr uint8_t VECTOR_PF = 14;

namespace pfec {
inline constexpr uint32_t P = 1u << 0;     // 0: not present; 1: protection or reserved bit
inline constexpr uint32_t W = 1u << 1;     // the access was a write
inline constexpr uint32_t U = 1u << 2;     // the access was a user-mode (CPL 3) access
inline constexpr uint32_t RSVD = 1u << 3;  // a reserved bit was set in some entry
inline constexpr uint32_t I = 1u << 4;     // instruction fetch (only when SMEP or PAE+NXE)
inline constexpr uint32_t PK = 1u << 5;    // protection-key violation
}  // namespace pfec

// A fault delivered to the guest: #PF carries the error code and CR2; #GP(0) carries neither.
struct Fault {
  uint8_t vector = 0;
  uint32_t error_code = 0;
  uint64_t address = 0;  // CR2 for #PF

  static constexpr Fault page_fault(uint32_t error_code, uint64_t address) {
    return Fault{VECTOR_PF, error_code, address};
  }
  static constexpr Fault general_protection() { return Fault{VECTOR_GP, 0, 0}; }
  friend bool operator==(const Fault&, const Fault&) = default;
};

}  // namespace vmmu::x86
