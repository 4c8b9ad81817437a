#include "sim/trace_import/traced_program.hpp"

#include "sim/trace_import/access_splitter.hpp"

namespace vmmu::sim::trace_import {

namespace {

uint64_t store_value(uint64_t seed, uint64_t n) {
  n = (n + seed * 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
  n = (n ^ (n >> 31)) * 0x7fb5d329728ea185ull;
  return n ^ (n >> 27);
}

}  // namespace

TracedProgram::TracedProgram(std::unique_ptr<TraceReader> reader, uint64_t max_accesses, uint64_t seed)
    : reader_(std::move(reader)), max_accesses_(max_accesses), seed_(seed) {}

void TracedProgram::start(guest_os::GuestOs& os, uint32_t init) {
  guest_os::ProgramImage flat;
  flat.id = 100;
  flat.flat = true;
  pid_ = os.fork(init);
  os.exec(pid_, flat);
}

bool TracedProgram::run(guest_os::GuestOs& os, uint64_t accesses) {
  uint64_t made = 0;
  TraceAccess a;
  while (!done_ && made < accesses) {
    if ((max_accesses_ && traced_ >= max_accesses_) || !reader_->next(a)) {
      done_ = true;
      break;
    }
    ++traced_;
    split_access(a, [&](x86::AccessKind k, uint64_t va, unsigned width) {
      os.access(pid_, k, va, width, k == x86::AccessKind::Write ? store_value(seed_, made_) : 0);
      ++made_;
      ++made;
    });
  }
  return !done_;
}

void TracedProgram::exit(guest_os::GuestOs& os) { os.exit(pid_); }

}  // namespace vmmu::sim::trace_import
