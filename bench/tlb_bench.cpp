// The TLB model's cost (issue 6: replay of a real trace with the model on at >= 50 M accesses/s
// per core under tdp, 30 M under shadow): the model alone on hits and on misses, and the replay
// of a trace-like access stream (a hot set with some scattered accesses, as imported traces are)
// broken down: the engine's access alone, the Replayer without the model, and with it.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sim/op.hpp"
#include "sim/replayer.hpp"
#include "sim/tlb_model.hpp"
#include "sim/tlb_replay.hpp"
#include "vm/vm.hpp"

namespace {

using namespace vmmu;

// A fixed pseudo-random sequence (the figures must not depend on a seed per run).
struct Lcg {
  uint64_t s = 0x9e3779b97f4a7c15ull;
  uint64_t next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return s >> 17;
  }
};

// The model alone, every access a hit: 32 pages read in turn (all in the L1 dTLB).
void BM_TlbModelHit(benchmark::State& state) {
  sim::TlbCounters counters;
  sim::TlbModel m(sim::TlbConfig{}, counters);
  sim::WalkFacts f;
  f.translated = true;
  f.top_level = 4;
  for (uint64_t p = 0; p < 32; ++p) m.walk(p << 12, x86::AccessKind::Read, f);
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(m.lookup((i++ & 31) << 12, x86::AccessKind::Read));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TlbModelHit);

// The model alone, every access a miss (random pages over 64 GiB) with a 2-D walk to count:
// the lookup, the walk over both dimensions' caches, the fills. The facts are given, not probed.
void BM_TlbModelMissTdp(benchmark::State& state) {
  sim::TlbCounters counters;
  sim::TlbModel m(sim::TlbConfig{}, counters);
  sim::WalkFacts f;
  f.translated = true;
  f.top_level = 4;
  f.nested = true;
  f.nested_root_level = 4;
  f.data_nested = true;
  Lcg r;
  for (auto _ : state) {
    const uint64_t gva = (r.next() & ((1ull << 24) - 1)) << 12;
    for (unsigned l = 1; l <= 4; ++l) {
      f.table_gpa[l] = (gva >> (9 * l)) & ~7ull;
      f.table_nested_level[l] = 1;
    }
    f.data_gpa = gva;
    if (!m.lookup(gva, x86::AccessKind::Read)) benchmark::DoNotOptimize(m.walk(gva, x86::AccessKind::Read, f));
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["refs_per_walk"] = double(counters.walk_refs) / double(counters.walks ? counters.walks : 1);
}
BENCHMARK(BM_TlbModelMissTdp);

// A 4-level guest mapping 64 MiB with 4 KiB pages, and an access stream shaped like an imported
// trace: 90 % of the accesses in a hot set of 256 pages, 10 % anywhere, one in four a write.
constexpr uint64_t DATA_GPA = 16ull << 20, DATA_PAGES = 16384, STREAM = 1 << 20;

std::vector<sim::Op> setup_ops() {
  std::vector<sim::Op> ops;
  auto op = [&](sim::OpKind k) -> sim::Op& {
    ops.emplace_back();
    ops.back().kind = k;
    return ops.back();
  };
  sim::Op& slot = op(sim::OpKind::Memslot);
  slot.size = 128ull << 20;
  op(sim::OpKind::Vcpu);
  auto poke = [&](uint64_t gpa, uint64_t value) {
    sim::Op& p = op(sim::OpKind::Poke);
    p.addr = gpa;
    p.value = value;
  };
  poke(0x1000, 0x2000 | 7);
  poke(0x2000, 0x3000 | 7);
  for (uint64_t pd = 0; pd < DATA_PAGES / 512; ++pd) poke(0x3000 + 8 * pd, (0x100000 + pd * 0x1000) | 7);
  for (uint64_t p = 0; p < DATA_PAGES; ++p) poke(0x100000 + 8 * p, (DATA_GPA + p * 0x1000) | 7);
  sim::Op& regs = op(sim::OpKind::Regs);
  regs.regs.cr0 = 0x80000001;
  regs.regs.cr4 = 0x20;
  regs.regs.efer = 0x100;
  regs.regs.cr3 = 0x1000;
  for (uint64_t p = 0; p < DATA_PAGES; ++p) op(sim::OpKind::Read).addr = p << 12;  // fault everything in
  return ops;
}

std::vector<sim::Op> trace_ops() {
  std::vector<sim::Op> ops(STREAM);
  Lcg r;
  for (sim::Op& o : ops) {
    const uint64_t x = r.next();
    const uint64_t page = x % 10 ? (x >> 8) % 256 * 61 % DATA_PAGES : (x >> 8) % DATA_PAGES;
    o.kind = (x >> 30) % 4 ? sim::OpKind::Read : sim::OpKind::Write;
    o.addr = (page << 12) | (((x >> 40) % 512) * 8);
  }
  return ops;
}

// The engine's own access path: Vcpu::access over the stream, no Replayer.
void BM_EngineAccess(benchmark::State& state) {
  Vm vm(VmConfig{static_cast<MmuKind>(state.range(0))});
  sim::Replayer setup(vm, nullptr);
  for (const sim::Op& op : setup_ops()) setup.apply(op);
  const std::vector<sim::Op> stream = trace_ops();
  Vcpu& v = vm.vcpu(0);
  size_t i = 0;
  for (auto _ : state) {
    const sim::Op& o = stream[i++ % STREAM];
    benchmark::DoNotOptimize(v.access(o.addr, o.kind == sim::OpKind::Read ? AccessKind::Read : AccessKind::Write, 8, o.value));
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(name(static_cast<MmuKind>(state.range(0))));
}

// The Replayer over the stream (no output), with the TLB model off (0) or on (1).
void BM_ReplayTrace(benchmark::State& state) {
  Vm vm(VmConfig{static_cast<MmuKind>(state.range(0))});
  sim::ReplayOptions o;
  o.tlb = state.range(1) != 0;
  sim::Replayer r(vm, nullptr, o);
  for (const sim::Op& op : setup_ops()) r.apply(op);
  const std::vector<sim::Op> stream = trace_ops();
  size_t i = 0;
  for (auto _ : state) r.apply(stream[i++ % STREAM]);
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(std::string(name(static_cast<MmuKind>(state.range(0)))) + (o.tlb ? " tlb=on" : " tlb=off"));
  if (o.tlb) {
    const sim::TlbCounters& c = r.summary().tlb;
    state.counters["miss_rate"] = double(c.walks) / double(c.translated() ? c.translated() : 1);
    state.counters["refs_per_walk"] = double(c.walk_refs) / double(c.walks ? c.walks : 1);
  }
}

// The model's own share of the replay: TlbReplay::access alone over the stream, fed with the
// results the engine gave for it (the engine is warm: every page mapped, A/D set, so replaying
// the stream again changes nothing the model reads). Per access, hits and misses together.
void BM_TlbReplayModel(benchmark::State& state) {
  Vm vm(VmConfig{static_cast<MmuKind>(state.range(0))});
  sim::Replayer setup(vm, nullptr);
  for (const sim::Op& op : setup_ops()) setup.apply(op);
  const std::vector<sim::Op> stream = trace_ops();
  Vcpu& v = vm.vcpu(0);
  auto kind_of = [](const sim::Op& o) { return o.kind == sim::OpKind::Read ? AccessKind::Read : AccessKind::Write; };
  for (const sim::Op& o : stream) v.access(o.addr, kind_of(o), 8, o.value);
  // Compact records (what the model reads of a result), so that the loop streams little memory.
  struct Rec {
    uint64_t gva, gpa;
    AccessResult::Status status;
    AccessKind kind;
  };
  std::vector<Rec> recs;
  recs.reserve(STREAM);
  for (const sim::Op& o : stream) {
    const AccessResult r = v.access(o.addr, kind_of(o), 8, o.value);
    if (r.status == AccessResult::Status::Fault) state.SkipWithError("the warm stream faulted");
    recs.push_back({o.addr, r.gpa, r.status, kind_of(o)});
  }
  sim::TlbCounters counters;
  sim::TlbReplay tlb(vm, sim::TlbConfig{}, counters);
  size_t i = 0;
  for (auto _ : state) {
    const Rec& rec = recs[i++ % STREAM];
    AccessResult r;
    r.status = rec.status;
    r.gpa = rec.gpa;
    tlb.access(v, rec.gva, rec.kind, r);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(name(static_cast<MmuKind>(state.range(0))));
  state.counters["miss_rate"] = double(counters.walks) / double(counters.translated() ? counters.translated() : 1);
  state.counters["stlb_hit_rate"] = double(counters.stlb_hits) / double(counters.translated() ? counters.translated() : 1);
}

constexpr int64_t TDP = static_cast<int64_t>(MmuKind::Tdp), SHADOW = static_cast<int64_t>(MmuKind::Shadow),
                  NONE = static_cast<int64_t>(MmuKind::None);
BENCHMARK(BM_EngineAccess)->Arg(NONE)->Arg(TDP)->Arg(SHADOW);
BENCHMARK(BM_TlbReplayModel)->Arg(NONE)->Arg(TDP)->Arg(SHADOW);
BENCHMARK(BM_ReplayTrace)->Args({NONE, 0})->Args({NONE, 1})->Args({TDP, 0})->Args({TDP, 1})->Args({SHADOW, 0})->Args({SHADOW, 1});

}  // namespace
