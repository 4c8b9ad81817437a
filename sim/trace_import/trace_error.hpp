#pragma once
// A trace the importer cannot use: a malformed line or record, an address the guest cannot
// hold, a file that cannot be read. The message names the file, the line (or record) and the
// field: `FILE:LINE: FIELD: what is wrong`, or `FILE: record N: FIELD: what is wrong`.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace vmmu::sim::trace_import {

class TraceError : public std::runtime_error {
 public:
  enum class Unit { Line, Record, None };
  TraceError(const std::string& file, Unit unit, uint64_t where, const std::string& field, const std::string& what)
      : std::runtime_error(format(file, unit, where, field, what)) {}

 private:
  static std::string format(const std::string& file, Unit unit, uint64_t where, const std::string& field, const std::string& what) {
    const std::string at = unit == Unit::Line ? fmt::format("{}:{}:", file, where)
                           : unit == Unit::Record ? fmt::format("{}: record {}:", file, where)
                                                  : fmt::format("{}:", file);
    return field.empty() ? fmt::format("{} {}", at, what) : fmt::format("{} {}: {}", at, field, what);
  }
};

}  // namespace vmmu::sim::trace_import
