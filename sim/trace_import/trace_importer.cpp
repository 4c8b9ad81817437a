#include "sim/trace_import/trace_importer.hpp"

#include <algorithm>
#include <memory>

#include "sim/trace_import/champsim_reader.hpp"
#include "sim/trace_import/lackey_reader.hpp"
#include "sim/trace_import/pin_reader.hpp"
#include "sim/trace_import/traced_program.hpp"

namespace vmmu::sim::trace_import {

std::optional<TraceKind> parse_trace_kind(std::string_view name) {
  if (name == "lackey") return TraceKind::Lackey;
  if (name == "pin") return TraceKind::Pin;
  if (name == "champsim") return TraceKind::ChampSim;
  return std::nullopt;
}

const char* name(TraceKind kind) {
  switch (kind) {
    case TraceKind::Lackey: return "lackey";
    case TraceKind::Pin: return "pin";
    case TraceKind::ChampSim: return "champsim";
  }
  return "?";
}

std::unique_ptr<TraceReader> open_trace(TraceKind kind, const std::string& path, uint64_t user_top, const std::string& guest) {
  switch (kind) {
    case TraceKind::Lackey: return std::make_unique<LackeyReader>(path, user_top, guest);
    case TraceKind::Pin: return std::make_unique<PinReader>(path, user_top, guest);
    case TraceKind::ChampSim: return std::make_unique<ChampSimReader>(path, user_top, guest);
  }
  return nullptr;
}

TraceImportResult import_traces(TraceKind kind, const std::vector<std::string>& files, const TraceImportParams& params,
                                const guest_os::OpSink& sink) {
  guest_os::GuestOs os(params.os, sink);
  const guest_os::PagingLayout& layout = os.layout();
  // Open every trace first, so a missing file is reported before any work.
  std::vector<std::unique_ptr<TracedProgram>> programs;
  for (const std::string& f : files)
    programs.push_back(std::make_unique<TracedProgram>(open_trace(kind, f, layout.user_top, x86::name(layout.mode)),
                                                       params.max_accesses, params.seed));

  os.boot();
  const uint32_t init = os.spawn(guest_os::ProgramImage{0, 64 << 10, 16 << 10, 1 << 20, 128 << 10, false});
  for (auto& p : programs) p->start(os, init);

  const uint64_t quantum = std::max<uint64_t>(params.quantum, 1);
  std::vector<TracedProgram*> running;
  for (auto& p : programs) running.push_back(p.get());
  while (!running.empty())
    std::erase_if(running, [&](TracedProgram* p) { return !p->run(os, quantum); });

  TraceImportResult result;
  for (const auto& p : programs) {
    result.traced_accesses += p->traced_accesses();
    result.guest_accesses += p->guest_accesses();
  }
  if (params.exit_at_end)
    for (auto& p : programs) p->exit(os);
  if (params.os.audits) os.audit();
  if (params.stats) os.stats();
  result.counts = os.counts();
  return result;
}

}  // namespace vmmu::sim::trace_import
