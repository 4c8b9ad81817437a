#pragma once
// One program's memory accesses as a trace records them, before they are split into the
// in-page accesses of at most 8 bytes a guest performs (access_splitter.hpp).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sim/trace_import/trace_input.hpp"
#include "x86/access.hpp"

namespace vmmu::sim::trace_import {

struct TraceAccess {
  x86::AccessKind kind = x86::AccessKind::Read;
  uint64_t addr = 0;
  uint64_t size = 8;  // bytes; for a fetch, the instruction's length
};

class TraceReader {
 public:
  virtual ~TraceReader() = default;
  // The next access, or false at the end. Throws TraceError for a malformed line or record, or
  // an access that does not lie below `user_top` (the guest's user space).
  virtual bool next(TraceAccess& out) = 0;
};

// A reader of a trace file whose lines or records each hold one or more accesses: it hands them
// out one by one. Accesses must lie below `user_top`; `guest` names the guest in messages.
class QueuedTraceReader : public TraceReader {
 public:
  QueuedTraceReader(const std::string& path, uint64_t user_top, std::string guest)
      : in_(path), user_top_(user_top), guest_(std::move(guest)) {}

  bool next(TraceAccess& out) final {
    if (taken_ == queue_.size()) {
      queue_.clear();
      taken_ = 0;
      if (!refill(queue_)) return false;
    }
    out = queue_[taken_++];
    return true;
  }

 protected:
  // Appends the accesses of the next line or record that has any; false at the end.
  virtual bool refill(std::vector<TraceAccess>& queue) = 0;

  TraceInput in_;
  const uint64_t user_top_;
  const std::string guest_;

 private:
  std::vector<TraceAccess> queue_;
  size_t taken_ = 0;
};

enum class TraceKind { Lackey, Pin, ChampSim };

std::optional<TraceKind> parse_trace_kind(std::string_view name);
const char* name(TraceKind kind);

// Opens a trace of `kind`; `guest` names the guest in messages about addresses it cannot hold.
std::unique_ptr<TraceReader> open_trace(TraceKind kind, const std::string& path, uint64_t user_top, const std::string& guest);

}  // namespace vmmu::sim::trace_import
