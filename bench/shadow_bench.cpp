// The shadow engine's figures (issue: bytes held for 1 GiB mapped once and by two processes,
// first-touch faults, fork-like churn). Guest frames are shuffled, so nothing is contiguous;
// host memory is prefaulted before timing, so the figures are the engine's, not the kernel's.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "mmu/shadow_mmu.hpp"
#include "vm/vm.hpp"
#include "x86/control_registers.hpp"
#include "x86/page_table_entry.hpp"

namespace {

using namespace vmmu;
namespace pte = x86::pte;

constexpr uint64_t MIB = 1ull << 20, GIB = 1ull << 30;
constexpr uint64_t TABLES_GPA = 4 * GIB;  // a memslot of its own for the guest's page tables
constexpr uint64_t DATA_GVA = 1 * GIB;    // processes map their data from here
constexpr uint64_t TABLES_GVA = 8 * GIB;  // the kernel maps the page tables here (to write them)
constexpr uint64_t FLAGS = pte::P | pte::RW | pte::US;

// A 4-level guest: `data_bytes` of memory at gpa 0 whose frames every process maps in a random
// order, and page tables the "kernel" can write through TABLES_GVA.
class ShadowGuest {
 public:
  ShadowGuest(uint64_t data_bytes, unsigned processes, bool prefault_data, bool unsync = true) : pages_(data_bytes >> 12) {
    VmConfig c;
    c.mmu = MmuKind::Shadow;
    c.shadow.unsync = unsync;
    vm_ = std::make_unique<Vm>(c);
    vm_->add_memslot({.id = 0, .gpa = 0, .size = data_bytes});
    vm_->add_memslot({.id = 1, .gpa = TABLES_GPA, .size = 64 * MIB});
    if (prefault_data)
      for (uint64_t off = 0; off < data_bytes; off += 4096) vm_->write_guest(off, 1, 0);
    std::mt19937_64 rng(42);
    for (unsigned p = 0; p < processes; ++p) {
      roots_.push_back(allocate());
      std::vector<uint64_t> frames(pages_);
      std::iota(frames.begin(), frames.end(), 0);
      std::shuffle(frames.begin(), frames.end(), rng);
      for (uint64_t i = 0; i < pages_; ++i) map(roots_[p], DATA_GVA + (i << 12), frames[i] << 12);
    }
    shadow().prefault_pages(processes * (pages_ / 512 + 8) + 64);
    vcpu_ = &vm_->create_vcpu(0);
    RegisterUpdate u;
    u.cr0 = x86::cr0::PG | x86::cr0::PE | x86::cr0::WP;
    u.cr3 = roots_[0];
    u.cr4 = x86::cr4::PAE;
    u.efer = x86::efer::LME | x86::efer::NXE;
    vcpu_->set_registers(u);
  }

  // The kernel's view of the page tables (after every process exists).
  void map_tables() {
    for (uint64_t a = TABLES_GPA; a < next_table_; a += 4096)
      for (uint64_t root : roots_) map(root, TABLES_GVA + (a - TABLES_GPA), a);
  }

  void switch_to(unsigned process) { vcpu_->mov_cr3(roots_[process]); }
  void touch_all(x86::AccessKind kind = x86::AccessKind::Read) {  // a fetch touches no data: engine cost only
    const unsigned width = kind == x86::AccessKind::Fetch ? 1 : 8;
    for (uint64_t i = 0; i < pages_; ++i) benchmark::DoNotOptimize(vcpu_->access(DATA_GVA + (i << 12), kind, width, 0));
  }
  // Where the leaf entry of `gva` in `process` lies (the tables are well formed by construction).
  uint64_t pte_gpa(unsigned process, uint64_t gva) {
    uint64_t table = roots_[process];
    for (unsigned l = 4; l > 1; --l) table = vm_->read_guest(table + index(gva, l) * 8, 8) & pte::ADDR_MASK_52;
    return table + index(gva, 1) * 8;
  }

  mmu::ShadowMmu& shadow() { return static_cast<mmu::ShadowMmu&>(vm_->mmu()); }
  Vm& vm() { return *vm_; }
  Vcpu& vcpu() { return *vcpu_; }
  uint64_t pages() const { return pages_; }
  uint64_t stat(const char* name) { return vm_->stats()["stats"][name].get<uint64_t>(); }
  double memory_mib(const char* name) { return double(vm_->stats()["memory"][name].get<uint64_t>()) / MIB; }

 private:
  static uint64_t index(uint64_t gva, unsigned level) { return (gva >> (12 + 9 * (level - 1))) & 511; }
  uint64_t allocate() {
    const uint64_t a = next_table_;
    next_table_ += 4096;
    return a;
  }
  void map(uint64_t root, uint64_t gva, uint64_t gpa) {
    uint64_t table = root;
    for (unsigned l = 4; l > 1; --l) {
      const uint64_t at = table + index(gva, l) * 8;
      uint64_t e = vm_->read_guest(at, 8);
      if (!(e & pte::P)) {
        e = allocate() | FLAGS;
        vm_->write_guest(at, 8, e);
      }
      table = e & pte::ADDR_MASK_52;
    }
    vm_->write_guest(table + index(gva, 1) * 8, 8, gpa | FLAGS);
  }

  uint64_t pages_;
  uint64_t next_table_ = TABLES_GPA;
  std::vector<uint64_t> roots_;
  std::unique_ptr<Vm> vm_;
  Vcpu* vcpu_ = nullptr;
};

void report_memory(benchmark::State& state, ShadowGuest& g) {
  state.counters["shadow_pages"] = double(g.stat("shadow_pages"));
  state.counters["mapping_total_MiB"] = g.memory_mib("mapping_total");
  state.counters["tables_MiB"] = g.memory_mib("shadow_tables");
  state.counters["rmap_MiB"] = g.memory_mib("rmap");
  state.counters["kvm_today_MiB"] = g.memory_mib("kvm_today");
}

// 1 GiB, every page mapped once at 4K by one process.
void BM_ShadowMapping1GiBOnce(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    ShadowGuest g(GIB, 1, false);
    state.ResumeTiming();
    g.touch_all();
    state.PauseTiming();
    report_memory(state, g);
    state.ResumeTiming();
  }
}
BENCHMARK(BM_ShadowMapping1GiBOnce)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

// 1 GiB, every page mapped at 4K by two processes (two sets of tables, two shuffles).
void BM_ShadowMapping1GiBTwoProcesses(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    ShadowGuest g(GIB, 2, false);
    state.ResumeTiming();
    g.touch_all();
    g.switch_to(1);
    g.touch_all();
    state.PauseTiming();
    report_memory(state, g);
    state.counters["aliased_gfns"] = double(g.stat("aliased_gfns"));
    state.ResumeTiming();
  }
}
BENCHMARK(BM_ShadowMapping1GiBTwoProcesses)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

// First touch of every page of 256 MiB (one shadow fault each: guest walk, chain, leaf, rmap),
// host memory and table pages prefaulted; every shadow page is dropped between passes.
void BM_ShadowFirstTouch4K(benchmark::State& state) {
  ShadowGuest g(256 * MIB, 1, true);
  g.touch_all();  // guest A bits set once, so every pass is the same work
  for (auto _ : state) {
    state.PauseTiming();
    g.shadow().zap_all_pages();
    state.ResumeTiming();
    g.touch_all(x86::AccessKind::Fetch);
  }
  state.counters["faults_per_s"] = benchmark::Counter(double(g.pages()) * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ShadowFirstTouch4K)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();

// The same, calling the engine directly (no Vcpu::access around it: no VM lock, no access epoch,
// no per-vCPU counters), as the TDP figure calls translate_gfn.
void BM_ShadowFirstTouch4KEngine(benchmark::State& state) {
  ShadowGuest g(256 * MIB, 1, true);
  g.touch_all();
  mmu::VcpuContext& ctx = g.vcpu().mmu_context();
  for (auto _ : state) {
    state.PauseTiming();
    g.shadow().zap_all_pages();
    state.ResumeTiming();
    for (uint64_t i = 0; i < g.pages(); ++i)
      benchmark::DoNotOptimize(g.shadow().access(ctx, DATA_GVA + (i << 12), x86::AccessKind::Fetch, 1, 0));
  }
  state.counters["faults_per_s"] = benchmark::Counter(double(g.pages()) * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ShadowFirstTouch4KEngine)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();

// Accesses through SPTEs already built (the simulated hardware's walk and checks).
void BM_ShadowHit4K(benchmark::State& state) {
  ShadowGuest g(64 * MIB, 1, true);
  g.touch_all();
  for (auto _ : state) g.touch_all(x86::AccessKind::Fetch);
  state.counters["accesses_per_s"] = benchmark::Counter(double(g.pages()) * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ShadowHit4K)->Unit(benchmark::kMillisecond)->UseRealTime();

// Fork-like churn: a process's 1,000 PTEs are write-protected by the guest kernel (writes
// through its mapping of the page tables, then a flush, as fork does), then every page is
// written: a #PF, the kernel makes the PTE writable again (copy-on-write done), `invlpg`, retry.
void BM_ShadowForkChurn(benchmark::State& state) {
  constexpr uint64_t PTES = 1000;
  ShadowGuest g(8 * MIB, 1, true, /*unsync=*/state.range(0) != 0);
  g.map_tables();
  g.vcpu().flush();
  std::vector<uint64_t> pte_gva(PTES);
  for (uint64_t i = 0; i < PTES; ++i) pte_gva[i] = TABLES_GVA + (g.pte_gpa(0, DATA_GVA + (i << 12)) - TABLES_GPA);
  Vcpu& v = g.vcpu();
  for (uint64_t i = 0; i < PTES; ++i) v.access(DATA_GVA + (i << 12), x86::AccessKind::Write, 8, i);
  const uint64_t emulated0 = g.stat("pf_emulate"), unsync0 = g.stat("mmu_unsync"), sync0 = g.stat("mmu_sync");
  for (auto _ : state) {
    for (uint64_t i = 0; i < PTES; ++i) {
      const uint64_t e = v.access(pte_gva[i], x86::AccessKind::Read).value;
      v.access(pte_gva[i], x86::AccessKind::Write, 8, e & ~uint64_t{pte::RW});
    }
    v.flush();
    for (uint64_t i = 0; i < PTES; ++i) {
      const uint64_t gva = DATA_GVA + (i << 12);
      if (v.access(gva, x86::AccessKind::Write, 8, i).ok()) continue;  // (not expected)
      const uint64_t e = v.access(pte_gva[i], x86::AccessKind::Read).value;
      v.access(pte_gva[i], x86::AccessKind::Write, 8, e | pte::RW);
      v.invlpg(gva);
      v.access(gva, x86::AccessKind::Write, 8, i);
    }
  }
  const double n = double(PTES) * double(state.iterations());
  state.counters["ns_per_pte"] = benchmark::Counter(n, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["emulated_per_pte"] = double(g.stat("pf_emulate") - emulated0) / n;
  state.counters["unsyncs_per_pte"] = double(g.stat("mmu_unsync") - unsync0) / n;
  state.counters["syncs_per_pte"] = double(g.stat("mmu_sync") - sync0) / n;
}
// Argument: 1 = unsync on (KVM's default), 0 = every write to a table emulated.
BENCHMARK(BM_ShadowForkChurn)->Arg(1)->Arg(0)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
