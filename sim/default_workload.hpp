#pragma once
// `vmmu run`'s built-in workload: the guest OS model's scenario (sim/guest_os/scenario.hpp)
// with a real program beside its workers, whose accesses come from a trace shipped in the tree
// (workloads/traces/).
#include <cstdint>
#include <string>

#include "sim/guest_os/scenario.hpp"

namespace vmmu::sim {

struct DefaultWorkloadParams {
  guest_os::ScenarioParams scenario{};
  // A lackey trace of a 64-bit program (.xz/.gz read through the system tools); empty: none. It
  // runs in 4- and 5-level guests only: a 32-bit guest's user space cannot hold its addresses.
  std::string trace;
  uint64_t trace_accesses = 0;   // traced accesses to take from it; 0: all
};

struct DefaultWorkloadCounts {
  guest_os::GuestOsCounts os;
  bool trace_left_out = false;  // a trace was given but the guest is a 32-bit one
  uint64_t traced_accesses = 0, trace_guest_accesses = 0;
};

// Emits the workload to `sink`; deterministic for given parameters. Throws
// trace_import::TraceError for a missing or malformed trace.
DefaultWorkloadCounts run_default_workload(const DefaultWorkloadParams& params, const guest_os::OpSink& sink);

}  // namespace vmmu::sim
