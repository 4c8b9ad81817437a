#pragma once
// A process of the guest OS model whose accesses are a real program's, read from its trace:
// init forks it and it execs a "flat" image (all of user space anonymous and executable), so the
// page tables and faults come from the model and the access stream from the program traced.
#include <cstdint>
#include <memory>

#include "sim/guest_os/scenario.hpp"
#include "sim/trace_import/trace_reader.hpp"

namespace vmmu::sim::trace_import {

class TracedProgram : public guest_os::GuestProgram {
 public:
  // `max_accesses`: traced accesses to take (before splitting); 0: all. `seed` varies the values
  // stores write (traces record none).
  TracedProgram(std::unique_ptr<TraceReader> reader, uint64_t max_accesses, uint64_t seed);

  void start(guest_os::GuestOs& os, uint32_t init) override;
  // Throws TraceError for a malformed trace.
  bool run(guest_os::GuestOs& os, uint64_t accesses) override;
  void exit(guest_os::GuestOs& os) override;

  uint64_t traced_accesses() const { return traced_; }  // as the trace records them
  uint64_t guest_accesses() const { return made_; }     // after splitting

 private:
  std::unique_ptr<TraceReader> reader_;
  uint64_t max_accesses_, seed_;
  uint32_t pid_ = 0;
  uint64_t traced_ = 0, made_ = 0;
  bool done_ = false;
};

}  // namespace vmmu::sim::trace_import
