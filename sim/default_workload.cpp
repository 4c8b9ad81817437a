#include "sim/default_workload.hpp"

#include <memory>

#include "sim/guest_os/paging_layout.hpp"
#include "sim/trace_import/trace_reader.hpp"
#include "sim/trace_import/traced_program.hpp"

namespace vmmu::sim {

DefaultWorkloadCounts run_default_workload(const DefaultWorkloadParams& params, const guest_os::OpSink& sink) {
  guest_os::ScenarioParams scenario = params.scenario;
  std::unique_ptr<trace_import::TracedProgram> traced;
  DefaultWorkloadCounts counts;
  const bool long_mode = scenario.os.mode == x86::PagingMode::Level4 || scenario.os.mode == x86::PagingMode::Level5;
  counts.trace_left_out = !params.trace.empty() && !long_mode;
  if (!params.trace.empty() && long_mode) {
    // Opened before any op is emitted, so a missing trace is reported before any work.
    const guest_os::PagingLayout layout = guest_os::PagingLayout::for_mode(scenario.os.mode, scenario.os.memory);
    traced = std::make_unique<trace_import::TracedProgram>(
        trace_import::open_trace(trace_import::TraceKind::Lackey, params.trace, layout.user_top, x86::name(layout.mode)),
        params.trace_accesses, scenario.seed);
    scenario.programs.push_back(traced.get());
  }
  counts.os = guest_os::run_default_scenario(scenario, sink);
  if (traced) {
    counts.traced_accesses = traced->traced_accesses();
    counts.trace_guest_accesses = traced->guest_accesses();
  }
  return counts;
}

}  // namespace vmmu::sim
