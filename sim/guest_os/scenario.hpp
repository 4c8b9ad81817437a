#pragma once
// The built-in scenario of the guest OS model: boot, init, a few worker processes started by
// fork + exec, and rounds of time slices in which the workers fork children that write to
// copy-on-write pages and exit, map, protect and unmap memory, and run helper programs.
#include <cstdint>
#include <vector>

#include "sim/guest_os/guest_os.hpp"

namespace vmmu::sim::guest_os {

// A program whose accesses come from outside the model (a real trace: sim/trace_import): init
// starts it beside the workers and it runs a share of every round, then to its end.
class GuestProgram {
 public:
  virtual ~GuestProgram() = default;
  // Starts the program as a child of `init` (fork + exec).
  virtual void start(GuestOs& os, uint32_t init) = 0;
  // Makes up to `accesses` guest accesses; false once the program has no more.
  virtual bool run(GuestOs& os, uint64_t accesses) = 0;
  virtual void exit(GuestOs& os) = 0;
};

struct ScenarioParams {
  GuestOsParams os{};
  uint64_t seed = 1;
  uint32_t processes = 3;  // workers init starts
  uint32_t rounds = 4;     // time slices per worker, each followed by one event
  uint32_t slice = 400;    // instructions per time slice (each a fetch, half of them also a data access)
  bool stats = true;       // a `stats` op at the end
  // Programs from traces (not owned; may be empty) and the accesses each makes per round.
  std::vector<GuestProgram*> programs;
  uint64_t program_share = 20000;
};

// Emits the scenario to `sink`; deterministic for given parameters (the seed included).
GuestOsCounts run_default_scenario(const ScenarioParams& params, const OpSink& sink);

}  // namespace vmmu::sim::guest_os
