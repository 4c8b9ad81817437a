#pragma once
// Field parsing shared by the text trace readers: numbers that either parse completely or say
// which field of which line is wrong.
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "sim/trace_import/trace_error.hpp"

namespace vmmu::sim::trace_import {

// Hex digits, with or without 0x; nullopt-free: false when the text is not a 64-bit hex number.
inline bool parse_hex(std::string_view s, uint64_t& out) {
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s.remove_prefix(2);
  if (s.empty() || s.size() > 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    unsigned d;
    if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
    else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A' + 10);
    else return false;
    v = v << 4 | d;
  }
  out = v;
  return true;
}

inline bool parse_decimal(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  out = v;
  return true;
}

// The largest access a trace line may describe (a wider one is surely a garbled line).
inline constexpr uint64_t MAX_TRACED_ACCESS = 4096;

// Refuses an access that does not lie below the guest's user space.
inline void check_user_space(const std::string& file, TraceError::Unit unit, uint64_t where, const char* field, uint64_t addr,
                             uint64_t size, uint64_t user_top, const std::string& guest) {
  if (addr < user_top && size <= user_top - addr) return;
  throw TraceError(file, unit, where, field,
                   fmt::format("0x{:x} (+{} bytes) does not fit the user space of the {} guest (below 0x{:x})", addr, size, guest, user_top));
}

}  // namespace vmmu::sim::trace_import
