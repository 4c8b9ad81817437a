// Guest page-table walks per second with the tables in cache, and the full reference access path.
//
// Each benchmark maps a few thousand distinct 4 KiB pages (spread over four top-level entries, so
// the walks use several tables at every level), sets A and D in every entry beforehand so that a
// read walk updates nothing, and then walks the pages in a shuffled order. Three ways to reach
// the tables:
//   - FlatPort: a plain byte array as the walker's port (guest/walker.hpp), the walk alone;
//   - GuestTablePort over guest::Memslots (mmu/guest_table_port.hpp), as the reference MMU walks;
//   - vmmu::Vm / Vcpu::access: the library's whole reference path (walk, memslot lookup, data
//     read, accessed/dirty bookkeeping, per-vCPU counters).
// items_per_second is walks (or accesses) per second.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "guest/guest_memory.hpp"
#include "guest/memslots.hpp"
#include "guest/walker.hpp"
#include "mmu/guest_table_port.hpp"
#include "vm/vm.hpp"
#include "x86/control_registers.hpp"
#include "x86/cpu_state.hpp"
#include "x86/page_table_entry.hpp"
#include "x86/paging_context.hpp"
#include "x86/paging_format.hpp"

namespace {

using namespace vmmu;

constexpr uint64_t PAGES = 4096;            // distinct pages walked
constexpr uint64_t REGIONS = 4;             // top-level entries they are spread over
constexpr uint64_t TABLES_BASE = 0x100000;  // tables are allocated from here
constexpr uint64_t DATA_BASE = 0x1000000;   // the pages map here, one frame each
constexpr uint64_t MEMORY_BYTES = DATA_BASE + PAGES * x86::PAGE_SIZE;

// A paging format with the register values that select it.
struct Bits32 {
  using F = x86::Bits32Format;
  static constexpr const char* name = "32-bit";
  static constexpr uint64_t cr4 = 0, efer = 0;
};
struct Level4 {
  using F = x86::Level4Format;
  static constexpr const char* name = "4-level";
  static constexpr uint64_t cr4 = x86::cr4::PAE, efer = x86::efer::LME | x86::efer::NXE;
};
struct Level5 {
  using F = x86::Level5Format;
  static constexpr const char* name = "5-level";
  static constexpr uint64_t cr4 = x86::cr4::PAE | x86::cr4::LA57, efer = x86::efer::LME | x86::efer::NXE;
};

// Guest memory as one flat array at gpa 0: the cheapest possible port.
class FlatPort {
 public:
  explicit FlatPort(uint64_t bytes) : mem_(bytes, 0) {}

  template <class Entry>
  bool read_entry(uint64_t gpa, Entry& out) {
    if (gpa > mem_.size() - sizeof(Entry)) return false;
    std::memcpy(&out, mem_.data() + gpa, sizeof(Entry));
    return true;
  }
  template <class Entry>
  guest::EntryUpdate update_entry(uint64_t gpa, Entry old, Entry updated) {
    if (gpa > mem_.size() - sizeof(Entry)) return guest::EntryUpdate::ReadOnly;
    Entry current;
    std::memcpy(&current, mem_.data() + gpa, sizeof(Entry));
    if (current != old) return guest::EntryUpdate::Changed;
    std::memcpy(mem_.data() + gpa, &updated, sizeof(Entry));
    ++updates;
    return guest::EntryUpdate::Done;
  }

  // Host-side access for building the tables.
  uint64_t read(uint64_t gpa, unsigned width) const {
    uint64_t v = 0;
    std::memcpy(&v, mem_.data() + gpa, width);
    return v;
  }
  void write(uint64_t gpa, unsigned width, uint64_t value) { std::memcpy(mem_.data() + gpa, &value, width); }

  uint64_t updates = 0;

 private:
  std::vector<uint8_t> mem_;
};

// Host-side access to memory behind memslots (for GuestTablePort) or behind a Vm.
struct MemslotsAccess {
  guest::GuestMemory mem;
  uint64_t read(uint64_t gpa, unsigned width) const {
    uint64_t v = 0;
    if (!mem.read(gpa, width, v)) throw std::logic_error("table outside the memslots");
    return v;
  }
  void write(uint64_t gpa, unsigned width, uint64_t value) {
    if (!mem.write(gpa, width, value)) throw std::logic_error("table outside the memslots");
  }
};
struct VmAccess {
  Vm& vm;
  uint64_t read(uint64_t gpa, unsigned width) const { return vm.read_guest(gpa, width); }
  void write(uint64_t gpa, unsigned width, uint64_t value) { vm.write_guest(gpa, width, value); }
};

// The gva of page i: REGIONS top-level entries, consecutive pages within each.
template <class F>
uint64_t page_gva(uint64_t i) {
  const uint64_t region = i % REGIONS;
  const uint64_t top_shift = F::level_shift(F::levels);
  return (region << top_shift) + (i / REGIONS) * x86::PAGE_SIZE;
}

// Builds the tables mapping page i at page_gva(i) to DATA_BASE + i * 4 KiB, with A and D set in
// every entry (so read walks update nothing). Returns the root's gpa.
template <class F, class Mem>
uint64_t build_tables(Mem& mem) {
  constexpr uint64_t flags = x86::pte::P | x86::pte::RW | x86::pte::US | x86::pte::A;
  constexpr uint64_t frame = F::entry_size == 4 ? x86::pte::bits(31, 12) : x86::pte::bits(51, 12);
  uint64_t next = TABLES_BASE;
  auto allocate = [&] {
    const uint64_t t = next;
    next += x86::PAGE_SIZE;
    for (uint64_t off = 0; off < x86::PAGE_SIZE; off += 8) mem.write(t + off, 8, 0);
    return t;
  };
  const uint64_t root = allocate();
  for (uint64_t i = 0; i < PAGES; ++i) {
    const uint64_t gva = page_gva<F>(i);
    uint64_t table = root;
    for (unsigned level = F::levels; level > 1; --level) {
      const uint64_t at = table + uint64_t{F::index(gva, level)} * F::entry_size;
      uint64_t e = mem.read(at, F::entry_size);
      if (!(e & x86::pte::P)) {
        e = allocate() | flags;
        mem.write(at, F::entry_size, e);
      }
      table = e & frame;
    }
    mem.write(table + uint64_t{F::index(gva, 1)} * F::entry_size, F::entry_size,
              (DATA_BASE + i * x86::PAGE_SIZE) | flags | x86::pte::D);
  }
  return root;
}

x86::CpuState state_for(uint64_t cr4, uint64_t efer, uint64_t root) {
  x86::CpuState s;
  s.cr0 = x86::cr0::PE | x86::cr0::PG | x86::cr0::WP;
  s.cr3 = root;
  s.cr4 = cr4;
  s.efer = efer;
  return s;
}

// One access of the benchmark: a gva and the gpa it must translate to.
struct Target {
  uint64_t gva, gpa;
};

// The pages in a fixed shuffled order (an 8-byte-aligned offset in each), so that consecutive
// walks do not share a PTE cache line.
template <class F>
std::vector<Target> shuffled_targets() {
  std::vector<uint64_t> order(PAGES);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(42));
  std::vector<Target> targets;
  for (uint64_t i : order) {
    const uint64_t offset = (i * 8) & x86::PAGE_OFFSET_MASK;
    targets.push_back(Target{page_gva<F>(i) + offset, DATA_BASE + i * x86::PAGE_SIZE + offset});
  }
  return targets;
}

// Walks every page once and checks the translation, so a benchmark never times a wrong walk.
template <class Port>
bool check_walks(benchmark::State& state, const x86::PagingContext& ctx, Port& port, const std::vector<Target>& targets) {
  const x86::PaePdptes pdptes;
  const guest::AccessMode read{x86::AccessKind::Read, false, false, 0};
  for (const Target& t : targets) {
    const guest::WalkResult r = guest::walk_guest(ctx, pdptes, port, t.gva, read);
    if (!r.ok || r.walk.gpa != t.gpa) {
      state.SkipWithError(("wrong walk of gva " + std::to_string(t.gva)).c_str());
      return false;
    }
  }
  return true;
}

template <class Mode, class Port>
void run_walks(benchmark::State& state, const x86::PagingContext& ctx, Port& port, const uint64_t& updates) {
  const x86::PaePdptes pdptes;
  const guest::AccessMode read{x86::AccessKind::Read, false, false, 0};
  const std::vector<Target> targets = shuffled_targets<typename Mode::F>();
  if (!check_walks(state, ctx, port, targets)) return;
  const uint64_t updates_before = updates;
  size_t i = 0;
  for (auto _ : state) {
    const guest::WalkResult r = guest::walk_guest(ctx, pdptes, port, targets[i].gva, read);
    benchmark::DoNotOptimize(r.walk.gpa);
    i = (i + 1) & (PAGES - 1);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(Mode::name);
  state.counters["levels"] = Mode::F::levels;
  // Must stay 0: the A/D bits were set beforehand, so a read walk writes nothing.
  state.counters["ad_updates"] = static_cast<double>(updates - updates_before);
}

// The walk alone, over a flat array.
template <class Mode>
void BM_WalkFlat(benchmark::State& state) {
  FlatPort port(MEMORY_BYTES);
  const uint64_t root = build_tables<typename Mode::F>(port);
  const x86::PagingContext ctx(x86::CpuModel{}, state_for(Mode::cr4, Mode::efer, root));
  run_walks<Mode>(state, ctx, port, port.updates);
}

// The walk through the memslots, as the reference MMU and a shadow MMU do it.
template <class Mode>
void BM_WalkMemslots(benchmark::State& state) {
  guest::Memslots slots;
  slots.add(guest::MemslotSpec{0, 0, MEMORY_BYTES, false, false, guest::HostPageSize::Size2M});
  MemslotsAccess mem{guest::GuestMemory(slots)};
  const uint64_t root = build_tables<typename Mode::F>(mem);
  mmu::GuestTablePort port(slots);
  const x86::PagingContext ctx(x86::CpuModel{}, state_for(Mode::cr4, Mode::efer, root));
  run_walks<Mode>(state, ctx, port, port.updates);
}

// The library's whole reference access path: Vcpu::access with --mmu=none (walk, memslot lookup,
// the 8-byte read itself, accessed-page bookkeeping, counters).
template <class Mode>
void BM_VmAccess(benchmark::State& state) {
  Vm vm(VmConfig{MmuKind::None});
  vm.add_memslot(MemslotSpec{0, 0, MEMORY_BYTES, false, false, guest::HostPageSize::Size2M});
  VmAccess mem{vm};
  const uint64_t root = build_tables<typename Mode::F>(mem);
  Vcpu& vcpu = vm.create_vcpu(0);
  RegisterUpdate regs;
  regs.cr0 = x86::cr0::PE | x86::cr0::PG | x86::cr0::WP;
  regs.cr3 = root;
  regs.cr4 = Mode::cr4;
  regs.efer = Mode::efer;
  if (vcpu.set_registers(regs)) {
    state.SkipWithError("set_registers faulted");
    return;
  }
  const std::vector<Target> targets = shuffled_targets<typename Mode::F>();
  for (const Target& t : targets) {
    const AccessResult r = vcpu.access(t.gva, AccessKind::Read, 8);
    if (!r.ok() || r.gpa != t.gpa) {
      state.SkipWithError(("wrong access to gva " + std::to_string(t.gva)).c_str());
      return;
    }
  }
  size_t i = 0;
  for (auto _ : state) {
    const AccessResult r = vcpu.access(targets[i].gva, AccessKind::Read, 8);
    benchmark::DoNotOptimize(r.value);
    i = (i + 1) & (PAGES - 1);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(Mode::name);
}

static_assert((PAGES & (PAGES - 1)) == 0, "the index wraps with a mask");

BENCHMARK_TEMPLATE(BM_WalkFlat, Bits32);
BENCHMARK_TEMPLATE(BM_WalkFlat, Level4);
BENCHMARK_TEMPLATE(BM_WalkFlat, Level5);
BENCHMARK_TEMPLATE(BM_WalkMemslots, Bits32);
BENCHMARK_TEMPLATE(BM_WalkMemslots, Level4);
BENCHMARK_TEMPLATE(BM_WalkMemslots, Level5);
BENCHMARK_TEMPLATE(BM_VmAccess, Bits32);
BENCHMARK_TEMPLATE(BM_VmAccess, Level4);
BENCHMARK_TEMPLATE(BM_VmAccess, Level5);

}  // namespace
