// Reading workloads and replaying them (issue 6): how fast the binary .vmt form decodes, from
// memory and from a .vmt.zst file, against the text form; and how fast an imported trace replays
// from .vmt.zst under tdp and shadow with the TLB model on (accesses per second, decoding, the
// guest OS model's boot and every first touch included): a synthetic one, and the real program
// shipped in workloads/traces (`vmmu replay NAME.vmt.zst --tlb=on --results=stats`).
//
// The trace is synthetic lackey output (code fetched in runs, a stack, a heap walked with some
// locality), imported once through the guest OS model as `vmmu import lackey` does, so the ops
// have the mix and the address deltas of a real import.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <streambuf>
#include <string>
#include <vector>

#include "sim/random_workload.hpp"
#include "sim/replayer.hpp"
#include "sim/trace_import/trace_importer.hpp"
#include "sim/vmt_binary_reader.hpp"
#include "sim/vmt_binary_writer.hpp"
#include "sim/vmt_reader.hpp"
#include "sim/workload_input.hpp"
#include "sim/workload_output.hpp"
#include "vm/vm.hpp"

namespace {

using namespace vmmu;
namespace fs = std::filesystem;

constexpr uint64_t TRACED_ACCESSES = 400000;

// A read-only stream buffer over bytes in memory.
class MemoryBuf : public std::streambuf {
 public:
  explicit MemoryBuf(const std::string& bytes) {
    char* b = const_cast<char*>(bytes.data());
    setg(b, b, b + bytes.size());
  }
};

struct ImportedTrace {
  std::vector<sim::Op> ops;
  std::string text, binary;
  fs::path zst;  // the binary form under zstd, as `vmmu import ... -o NAME.vmt.zst` writes it
  uint64_t accesses = 0;
  fs::path dir;

  ~ImportedTrace() { fs::remove_all(dir); }
  ImportedTrace() {
    dir = fs::temp_directory_path() / ("vmmu-replay-bench-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const fs::path trace = dir / "trace.lackey";
    {
      std::ofstream t(trace);
      std::mt19937_64 rng(42);
      uint64_t pc = 0x400000, heap = 0x10000000;
      const uint64_t stack = 0x7ffd0000;
      for (uint64_t i = 0; i < TRACED_ACCESSES; ++i) {
        const unsigned r = static_cast<unsigned>(rng() % 100);
        char line[64];
        if (r < 45) {
          pc = rng() % 16 == 0 ? 0x400000 + (rng() % (4 << 20)) : pc + 4;  // jumps now and then
          std::snprintf(line, sizeof line, "I  %08llx,4\n", static_cast<unsigned long long>(pc));
        } else if (r < 70) {
          std::snprintf(line, sizeof line, " %c %08llx,8\n", r < 60 ? 'L' : 'S', static_cast<unsigned long long>(stack - (rng() % 512) * 8));
        } else {
          heap = rng() % 8 == 0 ? 0x10000000 + (rng() % (64 << 20)) : heap + 8;  // arrays walked, now and then elsewhere
          heap &= ~uint64_t{7};
          std::snprintf(line, sizeof line, " %c %08llx,8\n", r < 88 ? 'L' : r < 95 ? 'S' : 'M', static_cast<unsigned long long>(heap));
        }
        t << line;
      }
    }
    sim::trace_import::TraceImportParams params;
    params.os.memory = 1ull << 30;
    params.os.vcpus = 2;
    const auto r = sim::trace_import::import_traces(sim::trace_import::TraceKind::Lackey, {trace.string()}, params,
                                                    [&](const sim::Op& op) { ops.push_back(op); });
    accesses = r.guest_accesses;
    std::ostringstream t, b;
    sim::write_vmt(t, ops, "bench");
    text = t.str();
    sim::VmtBinaryWriter w(b, "bench");
    for (const sim::Op& op : ops) w.write(op);
    w.finish();
    binary = b.str();
    zst = dir / "trace.vmt.zst";
    sim::WorkloadOutput out(zst.string(), sim::output_format_for(zst.string()), "bench");
    for (const sim::Op& op : ops) out.write(op);
    out.finish();
  }
};

const ImportedTrace& trace() {
  static const ImportedTrace t;
  return t;
}

void sizes(benchmark::State& state, const ImportedTrace& t) {
  state.counters["ops"] = static_cast<double>(t.ops.size());
  state.counters["text_bytes_per_op"] = double(t.text.size()) / double(t.ops.size());
  state.counters["binary_bytes_per_op"] = double(t.binary.size()) / double(t.ops.size());
  state.counters["zst_bytes_per_op"] = double(fs::file_size(t.zst)) / double(t.ops.size());
}

void BM_DecodeBinaryFromMemory(benchmark::State& state) {
  const ImportedTrace& t = trace();
  for (auto _ : state) {
    MemoryBuf buf(t.binary);
    sim::VmtBinaryReader r(buf);
    sim::Op op;
    uint64_t n = 0;
    while (r.next(op)) ++n;
    benchmark::DoNotOptimize(n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * t.ops.size()));
  sizes(state, t);
}
BENCHMARK(BM_DecodeBinaryFromMemory)->Unit(benchmark::kMillisecond);

void BM_DecodeBinaryZstdFile(benchmark::State& state) {
  const ImportedTrace& t = trace();
  for (auto _ : state) {
    sim::WorkloadInput in(t.zst.string());
    sim::Op op;
    uint64_t n = 0;
    while (in.next(op)) ++n;
    benchmark::DoNotOptimize(n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * t.ops.size()));
}
BENCHMARK(BM_DecodeBinaryZstdFile)->Unit(benchmark::kMillisecond);

void BM_DecodeTextFromMemory(benchmark::State& state) {
  const ImportedTrace& t = trace();
  for (auto _ : state) {
    std::istringstream in(t.text);
    sim::VmtReader r(in);
    sim::Op op;
    uint64_t n = 0;
    while (r.next(op)) ++n;
    benchmark::DoNotOptimize(n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * t.ops.size()));
}
BENCHMARK(BM_DecodeTextFromMemory)->Unit(benchmark::kMillisecond);

// The whole `vmmu replay NAME.vmt.zst --mmu=M --tlb=on --results=stats` path: decode, the
// engine, the TLB model; a new Vm each time.
void replay_zst(benchmark::State& state, const fs::path& zst, uint64_t ops) {
  const MmuKind mmu = state.range(0) == 0 ? MmuKind::Tdp : MmuKind::Shadow;
  state.SetLabel(mmu == MmuKind::Tdp ? "tdp" : "shadow");
  sim::ReplayOptions options;
  options.tlb = true;
  options.results = sim::ReplayResults::Stats;
  uint64_t accesses = 0;
  sim::ReplaySummary summary;
  for (auto _ : state) {
    sim::WorkloadInput in(zst.string());
    Vm vm(VmConfig{mmu});
    if (sim::replay_stream(in, vm, nullptr, stderr, &summary, options) != 0) state.SkipWithError("the replay failed");
    accesses += summary.accesses;
  }
  state.counters["accesses_per_second"] = benchmark::Counter(static_cast<double>(accesses), benchmark::Counter::kIsRate);
  state.counters["tlb_miss_rate"] = double(summary.tlb.walks) / double(summary.tlb.translated() ? summary.tlb.translated() : 1);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ops));
}

void BM_ReplayImportedTraceFromZst(benchmark::State& state) {
  const ImportedTrace& t = trace();
  replay_zst(state, t.zst, t.ops.size());
}
BENCHMARK(BM_ReplayImportedTraceFromZst)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// The real program: `sort` recorded with valgrind (workloads/traces/sort.lackey.xz), imported
// with `vmmu import`'s defaults.
struct ShippedTrace {
  fs::path dir, zst;
  uint64_t ops = 0;
  ~ShippedTrace() { fs::remove_all(dir); }
  ShippedTrace() {
    dir = fs::temp_directory_path() / ("vmmu-shipped-bench-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    zst = dir / "sort.vmt.zst";
    sim::WorkloadOutput out(zst.string(), sim::output_format_for(zst.string()), "bench");
    sim::trace_import::import_traces(sim::trace_import::TraceKind::Lackey, {std::string(VMMU_SOURCE_DIR) + "/workloads/traces/sort.lackey.xz"},
                                     sim::trace_import::TraceImportParams{}, [&](const sim::Op& op) {
                                       out.write(op);
                                       ++ops;
                                     });
    out.finish();
  }
};

// A long synthetic program at the operating point: 4 M accesses, code in 256 KiB, a
// stack page, and a 16 MiB heap of 4 KiB pages walked with random jumps, so that about 9 % of the
// accesses miss the modelled TLBs (their reach is 6 MiB) while first touches are a small share.
struct SteadyTrace {
  fs::path dir, zst;
  uint64_t ops = 0;
  ~SteadyTrace() { fs::remove_all(dir); }
  SteadyTrace() {
    dir = fs::temp_directory_path() / ("vmmu-steady-bench-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const fs::path trace = dir / "steady.lackey";
    {
      std::ofstream t(trace);
      std::mt19937_64 rng(7);
      uint64_t pc = 0x400000, heap = 0x10000000;
      const uint64_t stack = 0x7ffd0000;
      for (uint64_t i = 0; i < 4000000; ++i) {
        const unsigned r = static_cast<unsigned>(rng() % 100);
        char line[64];
        if (r < 40) {
          pc = rng() % 32 == 0 ? 0x400000 + (rng() % (256 << 10)) : pc + 4;
          std::snprintf(line, sizeof line, "I  %08llx,4\n", static_cast<unsigned long long>(pc));
        } else if (r < 65) {
          std::snprintf(line, sizeof line, " %c %08llx,8\n", r < 55 ? 'L' : 'S', static_cast<unsigned long long>(stack - (rng() % 512) * 8));
        } else {
          heap = rng() % 10 < 3 ? 0x10000000 + (rng() % (16 << 20)) : heap + 8;
          heap = (0x10000000 + (heap - 0x10000000) % (16 << 20)) & ~uint64_t{7};
          std::snprintf(line, sizeof line, " %c %08llx,8\n", r < 88 ? 'L' : 'S', static_cast<unsigned long long>(heap));
        }
        t << line;
      }
    }
    zst = dir / "steady.vmt.zst";
    sim::WorkloadOutput out(zst.string(), sim::output_format_for(zst.string()), "bench");
    sim::trace_import::TraceImportParams params;
    params.os.thp = false;  // 4 KiB pages: the heap is 4,096 of them, beyond the modelled TLBs' reach
    sim::trace_import::import_traces(sim::trace_import::TraceKind::Lackey, {trace.string()}, params,
                                     [&](const sim::Op& op) {
                                       out.write(op);
                                       ++ops;
                                     });
    out.finish();
  }
};

void BM_ReplaySteadyTraceFromZst(benchmark::State& state) {
  static const SteadyTrace t;
  replay_zst(state, t.zst, t.ops);
}
BENCHMARK(BM_ReplaySteadyTraceFromZst)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_ReplayShippedTraceFromZst(benchmark::State& state) {
  static const ShippedTrace t;
  replay_zst(state, t.zst, t.ops);
}
BENCHMARK(BM_ReplayShippedTraceFromZst)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
