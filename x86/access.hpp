#pragma once
// Kinds of memory access and the effective access rights a translation grants.
#include <cstdint>

namespace vmmu::x86 {

enum class AccessKind : uint8_t { Read = 0, Write = 1, Fetch = 2 };

constexpr const char* name(AccessKind k) {
  return k == AccessKind::Read ? "read" : k == AccessKind::Write ? "write" : "fetch";
}

// Effective rights accumulated over a walk (KVM's ACC_* bits; W and U sit where the entry
// bits do, so an entry's bits can be ANDed in directly).
namespace acc {
inline constexpr uint8_t X = 1u << 0;  // executable: no XD on any level (or EFER.NXE=0)
inline constexpr uint8_t W = 1u << 1;  // R/W=1 on every level
inline constexpr uint8_t U = 1u << 2;  // U/S=1 on every level: a user-mode address
inline constexpr uint8_t ALL = X | W | U;
}  // namespace acc

}  // namespace vmmu::x86
