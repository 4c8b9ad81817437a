// The TDP engine's figures (issue: first-touch faults, dirty logging, eager split, bytes held).
// Host memory is prefaulted before timing, so the figures are the engine's, not the kernel's.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "mmu/tdp_mmu.hpp"
#include "vm/vm.hpp"

namespace {

using namespace vmmu;

constexpr uint64_t GIB = 1ull << 30;
constexpr uint64_t PAGES_1G = GIB >> 12;

struct TdpVm {
  explicit TdpVm(guest::HostPageSize host, uint64_t bytes = GIB, unsigned vcpus = 1) {
    VmConfig c;
    c.mmu = MmuKind::Tdp;
    vm = std::make_unique<Vm>(c);
    vm->add_memslot({.id = 0, .gpa = 0, .size = bytes, .host_page = host});
    for (uint64_t off = 0; off < bytes; off += 4096) vm->write_guest(off, 1, 0);  // prefault host memory
    tdp().prefault_pages(((bytes >> 12) / 512) + 16);  // and the table pages the faults will take
    for (unsigned i = 0; i < vcpus; ++i) vm->create_vcpu(i);
  }
  mmu::TdpMmu& tdp() { return static_cast<mmu::TdpMmu&>(vm->mmu()); }
  void touch(unsigned vcpu, uint64_t first, uint64_t n, x86::AccessKind kind) {
    auto& ctx = vm->vcpu(vcpu).mmu_context();
    for (uint64_t g = first; g < first + n; ++g) benchmark::DoNotOptimize(tdp().translate_gfn(ctx, g, kind, true));
  }
  uint64_t mapping_total() { return vm->stats()["memory"]["mapping_total"].get<uint64_t>(); }
  std::unique_ptr<Vm> vm;
};

// First touch of every 4 KiB page of 1 GiB, in order: one TDP fault each.
// (Each VM is built and torn down with timing paused: unmapping 1 GiB costs more than mapping it.)
void BM_TdpFirstTouch4K(benchmark::State& state) {
  uint64_t total = 0;
  std::unique_ptr<TdpVm> t;
  for (auto _ : state) {
    state.PauseTiming();
    t.reset();
    t = std::make_unique<TdpVm>(guest::HostPageSize::Size4K);
    state.ResumeTiming();
    t->touch(0, 0, PAGES_1G, x86::AccessKind::Read);
  }
  total = t->mapping_total();
  state.counters["faults_per_s"] = benchmark::Counter(double(PAGES_1G) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["mapping_total_MiB"] = double(total) / (1 << 20);
}
BENCHMARK(BM_TdpFirstTouch4K)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

// The same with two vCPU threads faulting disjoint halves concurrently (shared lock + CAS).
void BM_TdpFirstTouch4KTwoThreads(benchmark::State& state) {
  std::unique_ptr<TdpVm> t;
  for (auto _ : state) {
    state.PauseTiming();
    t.reset();
    t = std::make_unique<TdpVm>(guest::HostPageSize::Size4K, GIB, 2);
    // Build the root and upper tables first so both threads start on equal terms.
    t->touch(0, 0, 1, x86::AccessKind::Read);
    state.ResumeTiming();
    std::thread other([&] { t->touch(1, PAGES_1G / 2, PAGES_1G / 2, x86::AccessKind::Read); });
    t->touch(0, 1, PAGES_1G / 2 - 1, x86::AccessKind::Read);
    other.join();
  }
  state.counters["faults_per_s"] = benchmark::Counter(double(PAGES_1G) * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TdpFirstTouch4KTwoThreads)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

// 1 GiB behind 2 MiB host pages: 512 faults map it all.
void BM_TdpMap2M(benchmark::State& state) {
  std::unique_ptr<TdpVm> t;
  for (auto _ : state) {
    state.PauseTiming();
    t.reset();
    t = std::make_unique<TdpVm>(guest::HostPageSize::Size2M);
    state.ResumeTiming();
    for (uint64_t g = 0; g < PAGES_1G; g += 512) t->touch(0, g, 1, x86::AccessKind::Read);
  }
  const uint64_t total = t->mapping_total();
  state.counters["mapping_total_KiB"] = double(total) / 1024;
}
BENCHMARK(BM_TdpMap2M)->Unit(benchmark::kMicrosecond)->Iterations(3)->UseRealTime();

// Dirty logging of 1 GiB fully dirtied at 4K: `get` (the bitmap) and `clear` (re-protect all).
void BM_TdpDirtyLog(benchmark::State& state) {
  const bool dbit = state.range(0);
  VmConfig c;
  c.mmu = MmuKind::Tdp;
  c.tdp.dirty_log = dbit ? mmu::DirtyLogMode::DirtyBit : mmu::DirtyLogMode::WriteProtect;
  TdpVm t(guest::HostPageSize::Size4K);
  t.vm = std::make_unique<Vm>(c);
  t.vm->add_memslot({.id = 0, .gpa = 0, .size = GIB, .log_dirty = true});
  for (uint64_t off = 0; off < GIB; off += 4096) t.vm->write_guest(off, 1, 0);
  t.tdp().prefault_pages(PAGES_1G / 512 + 16);
  t.vm->create_vcpu(0);
  double get_s = 0, clear_s = 0;
  for (auto _ : state) {
    state.PauseTiming();
    t.touch(0, 0, PAGES_1G, x86::AccessKind::Write);
    state.ResumeTiming();
    auto t0 = std::chrono::steady_clock::now();
    DirtyBitmap b = t.vm->get_dirty_log(0);
    auto t1 = std::chrono::steady_clock::now();
    t.vm->clear_dirty_log(0, 0, b.words);
    auto t2 = std::chrono::steady_clock::now();
    get_s += std::chrono::duration<double>(t1 - t0).count();
    clear_s += std::chrono::duration<double>(t2 - t1).count();
    if (std::count(b.words.begin(), b.words.end(), ~0ull) != long(b.words.size())) state.SkipWithError("not all pages dirty");
  }
  state.counters["get_ms"] = get_s * 1e3 / state.iterations();
  state.counters["clear_ms"] = clear_s * 1e3 / state.iterations();
}
BENCHMARK(BM_TdpDirtyLog)->Arg(0)->Arg(1)->ArgNames({"dbit"})->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();

// Enabling logging on 1 GiB mapped by 2M pages: eager split into 262,144 4K SPTEs.
void BM_TdpEagerSplit(benchmark::State& state) {
  std::unique_ptr<TdpVm> t;
  for (auto _ : state) {
    state.PauseTiming();
    t.reset();
    t = std::make_unique<TdpVm>(guest::HostPageSize::Size2M);
    for (uint64_t g = 0; g < PAGES_1G; g += 512) t->touch(0, g, 1, x86::AccessKind::Write);
    t->tdp().prefault_pages(PAGES_1G / 512 + 16);  // the split's tables
    state.ResumeTiming();
    t->vm->set_dirty_logging(0, true);
  }
  state.counters["sptes_per_s"] = benchmark::Counter(double(PAGES_1G) * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TdpEagerSplit)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();

}  // namespace
