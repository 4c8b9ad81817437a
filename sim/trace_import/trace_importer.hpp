#pragma once
// Real traces drive the guest OS model: it boots, init forks one process per trace and each
// execs a "flat" image (all of user space anonymous and executable), then the processes take
// turns, `quantum` accesses each, on the model's vCPUs. The page tables and faults come from
// the model; the access stream from the program traced.
#include <cstdint>
#include <string>
#include <vector>

#include "sim/guest_os/guest_os.hpp"
#include "sim/trace_import/trace_reader.hpp"

namespace vmmu::sim::trace_import {

struct TraceImportParams {
  guest_os::GuestOsParams os{};
  uint64_t quantum = 10000;      // guest accesses a process makes before the next one runs
  uint64_t max_accesses = 0;     // per trace, traced accesses (before splitting); 0: all
  bool exit_at_end = true;       // the processes exit at the end (their tables are freed)
  bool stats = true;             // a `stats` op last: `vmmu replay --results=stats` prints the counters
  uint64_t seed = 1;             // varies the values stores write (traces record no values)
};

struct TraceImportResult {
  uint64_t traced_accesses = 0;  // as the traces record them (an `M` counts twice)
  uint64_t guest_accesses = 0;   // after splitting
  guest_os::GuestOsCounts counts;
};

// Throws TraceError for a trace it cannot use (the message names file, line or record, field),
// guest_os::OutOfGuestMemory when the traces need more memory than the guest has.
TraceImportResult import_traces(TraceKind kind, const std::vector<std::string>& files, const TraceImportParams& params,
                                const guest_os::OpSink& sink);

}  // namespace vmmu::sim::trace_import
