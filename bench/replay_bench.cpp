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

// Synthetic lackey output: code fetched in runs with jumps, a stack page, and a heap walked
// 8 bytes at a time with jumps now and then (the mix and address deltas of a real program).
struct LackeyShape {
  uint64_t accesses = 0;
  uint64_t seed = 0;
  unsigned fetch_percent = 0, stack_percent = 0;  // of the accesses; the heap takes the rest
  unsigned stack_load_percent = 0;                // loads below it among stack accesses, stores above
  uint64_t code_bytes = 0, code_jump_one_in = 0;
  uint64_t heap_bytes = 0;
  unsigned heap_jump_percent = 0;  // of the heap accesses, jumping anywhere in the heap
  bool heap_modify = false;       // heap accesses: 18 % loads, 7 % stores, 5 % modifies (else 23/7/0)
};

void write_lackey(const fs::path& path, const LackeyShape& k) {
  std::ofstream t(path);
  std::mt19937_64 rng(k.seed);
  const uint64_t code = 0x400000, heap_base = 0x10000000, stack = 0x7ffd0000;
  uint64_t pc = code, heap = heap_base;
  const unsigned stack_end = k.fetch_percent + k.stack_percent;
  for (uint64_t i = 0; i < k.accesses; ++i) {
    const unsigned r = static_cast<unsigned>(rng() % 100);
    char line[64];
    if (r < k.fetch_percent) {
      pc = rng() % k.code_jump_one_in == 0 ? code + (rng() % k.code_bytes) : pc + 4;
      std::snprintf(line, sizeof line, "I  %08llx,4\n", static_cast<unsigned long long>(pc));
    } else if (r < stack_end) {
      const char c = r < k.fetch_percent + k.stack_load_percent ? 'L' : 'S';
      std::snprintf(line, sizeof line, " %c %08llx,8\n", c, static_cast<unsigned long long>(stack - (rng() % 512) * 8));
    } else {
      heap = rng() % 100 < k.heap_jump_percent ? heap_base + (rng() % k.heap_bytes) : heap + 8;
      heap = (heap_base + (heap - heap_base) % k.heap_bytes) & ~uint64_t{7};
      const char c = r < 88 ? 'L' : r < 95 || !k.heap_modify ? 'S' : 'M';
      std::snprintf(line, sizeof line, " %c %08llx,8\n", c, static_cast<unsigned long long>(heap));
    }
    t << line;
  }
}

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
    write_lackey(trace, {.accesses = TRACED_ACCESSES, .seed = 42, .fetch_percent = 45, .stack_percent = 25,
                         .stack_load_percent = 15, .code_bytes = 4 << 20, .code_jump_one_in = 16,
                         .heap_bytes = 64 << 20, .heap_jump_percent = 12, .heap_modify = true});
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
// engine, the TLB model (unless `tlb` is false: the engine's own cost); a new Vm each time.
// Arg 0: tdp (0) or shadow (1).
void replay_zst(benchmark::State& state, const fs::path& zst, uint64_t ops, bool tlb = true) {
  const MmuKind mmu = state.range(0) == 0 ? MmuKind::Tdp : MmuKind::Shadow;
  sim::ReplayOptions options;
  options.tlb = tlb;
  state.SetLabel(std::string(mmu == MmuKind::Tdp ? "tdp" : "shadow") + (options.tlb ? "" : ", TLB model off"));
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

// A lackey trace imported as `vmmu import lackey TRACE -o NAME.vmt.zst` does, into a directory
// of its own that goes with it.
struct ZstWorkload {
  fs::path dir, zst;
  uint64_t ops = 0;
  explicit ZstWorkload(const std::string& name) {
    dir = fs::temp_directory_path() / ("vmmu-" + name + "-bench-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    zst = dir / (name + ".vmt.zst");
  }
  ~ZstWorkload() { fs::remove_all(dir); }
  void import(const std::string& trace, const sim::trace_import::TraceImportParams& params) {
    sim::WorkloadOutput out(zst.string(), sim::output_format_for(zst.string()), "bench");
    sim::trace_import::import_traces(sim::trace_import::TraceKind::Lackey, {trace}, params, [&](const sim::Op& op) {
      out.write(op);
      ++ops;
    });
    out.finish();
  }
};

// The real program: `sort` recorded with valgrind (workloads/traces/sort.lackey.xz), imported
// with `vmmu import`'s defaults.
struct ShippedTrace : ZstWorkload {
  ShippedTrace() : ZstWorkload("sort") { import(std::string(VMMU_SOURCE_DIR) + "/workloads/traces/sort.lackey.xz", {}); }
};

// A long synthetic program at the operating point: 4 M accesses, code in 256 KiB, a
// stack page, and a 16 MiB heap of 4 KiB pages walked with random jumps, so that about 9 % of the
// accesses miss the modelled TLBs (their reach is 6 MiB) while first touches are a small share.
struct SteadyTrace : ZstWorkload {
  SteadyTrace() : ZstWorkload("steady") {
    const fs::path trace = dir / "steady.lackey";
    write_lackey(trace, {.accesses = 4000000, .seed = 7, .fetch_percent = 40, .stack_percent = 25, .stack_load_percent = 15,
                         .code_bytes = 256 << 10, .code_jump_one_in = 32, .heap_bytes = 16 << 20, .heap_jump_percent = 30});
    sim::trace_import::TraceImportParams params;
    params.os.thp = false;  // 4 KiB pages: the heap is 4,096 of them, beyond the modelled TLBs' reach
    import(trace.string(), params);
  }
};

void BM_ReplaySteadyTraceFromZst(benchmark::State& state) {
  static const SteadyTrace t;
  replay_zst(state, t.zst, t.ops, state.range(1) != 0);  // arg 1: the TLB model on (1) or off (0)
}
BENCHMARK(BM_ReplaySteadyTraceFromZst)->ArgsProduct({{0, 1}, {1, 0}})->Unit(benchmark::kMillisecond);

void BM_ReplayShippedTraceFromZst(benchmark::State& state) {
  static const ShippedTrace t;
  replay_zst(state, t.zst, t.ops);
}
BENCHMARK(BM_ReplayShippedTraceFromZst)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
