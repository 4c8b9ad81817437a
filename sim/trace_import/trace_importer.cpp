#include "sim/trace_import/trace_importer.hpp"

#include <memory>

#include "sim/trace_import/access_splitter.hpp"
#include "sim/trace_import/champsim_reader.hpp"
#include "sim/trace_import/lackey_reader.hpp"
#include "sim/trace_import/pin_reader.hpp"

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

namespace {

struct Traced {
  std::unique_ptr<TraceReader> reader;
  uint32_t pid = 0;
  uint64_t traced = 0;
  bool done = false;
};

uint64_t store_value(uint64_t seed, uint64_t n) {
  n = (n + seed * 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
  n = (n ^ (n >> 31)) * 0x7fb5d329728ea185ull;
  return n ^ (n >> 27);
}

}  // namespace

TraceImportResult import_traces(TraceKind kind, const std::vector<std::string>& files, const TraceImportParams& params,
                                const guest_os::OpSink& sink) {
  guest_os::GuestOs os(params.os, sink);
  const guest_os::PagingLayout& layout = os.layout();
  std::vector<Traced> traces;
  // Open every trace first, so a missing file is reported before any work.
  for (const std::string& f : files) traces.push_back(Traced{open_trace(kind, f, layout.user_top, x86::name(layout.mode)), 0, 0, false});

  os.boot();
  const uint32_t init = os.spawn(guest_os::ProgramImage{0, 64 << 10, 16 << 10, 1 << 20, 128 << 10, false});
  guest_os::ProgramImage flat;
  flat.id = 100;
  flat.flat = true;
  for (Traced& t : traces) {
    t.pid = os.fork(init);
    os.exec(t.pid, flat);
  }

  TraceImportResult result;
  const uint64_t quantum = std::max<uint64_t>(params.quantum, 1);
  size_t running = traces.size();
  while (running > 0) {
    for (Traced& t : traces) {
      if (t.done) continue;
      uint64_t made = 0;
      TraceAccess a;
      while (made < quantum) {
        if ((params.max_accesses && t.traced >= params.max_accesses) || !t.reader->next(a)) {
          t.done = true;
          --running;
          break;
        }
        ++t.traced;
        split_access(a, [&](x86::AccessKind k, uint64_t va, unsigned width) {
          os.access(t.pid, k, va, width, k == x86::AccessKind::Write ? store_value(params.seed, result.guest_accesses) : 0);
          ++result.guest_accesses;
          ++made;
        });
      }
    }
  }
  for (const Traced& t : traces) result.traced_accesses += t.traced;
  if (params.exit_at_end)
    for (const Traced& t : traces) os.exit(t.pid);
  if (params.os.audits) os.audit();
  result.counts = os.counts();
  return result;
}

}  // namespace vmmu::sim::trace_import
