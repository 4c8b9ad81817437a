#include "sim/trace_import/champsim_reader.hpp"

#include <utility>

#include "sim/trace_import/trace_fields.hpp"

namespace vmmu::sim::trace_import {

namespace {

uint64_t le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

}  // namespace

bool ChampSimReader::refill(std::vector<TraceAccess>& queue) {
  using Unit = TraceError::Unit;
  unsigned char rec[CHAMPSIM_RECORD_BYTES];
  const size_t n = in_.read(rec, sizeof rec);
  if (n == 0) {
    in_.finish();
    return false;
  }
  ++record_;
  if (n < sizeof rec)
    throw TraceError(in_.path(), Unit::Record, record_, "", fmt::format("truncated: {} of {} bytes", n, sizeof rec));
  const uint64_t ip = le64(rec);
  check_user_space(in_.path(), Unit::Record, record_, "ip", ip, 1, user_top_, guest_);
  queue.push_back(TraceAccess{x86::AccessKind::Fetch, ip, 1});
  for (int i = 0; i < 4; ++i) {
    const uint64_t a = le64(rec + 32 + 8 * i);
    if (!a) continue;
    check_user_space(in_.path(), Unit::Record, record_, fmt::format("source_memory[{}]", i).c_str(), a, 8, user_top_, guest_);
    queue.push_back(TraceAccess{x86::AccessKind::Read, a, 8});
  }
  for (int i = 0; i < 2; ++i) {
    const uint64_t a = le64(rec + 16 + 8 * i);
    if (!a) continue;
    check_user_space(in_.path(), Unit::Record, record_, fmt::format("destination_memory[{}]", i).c_str(), a, 8, user_top_, guest_);
    queue.push_back(TraceAccess{x86::AccessKind::Write, a, 8});
  }
  return true;
}

}  // namespace vmmu::sim::trace_import
