#include "sim/random_workload.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "guest/guest_memory.hpp"
#include "guest/read_only_port.hpp"
#include "guest/walker.hpp"
#include "sim/replayer.hpp"
#include "vm/vm.hpp"
#include "x86/control_registers.hpp"
#include "x86/page_table_entry.hpp"
#include "x86/paging_context.hpp"

namespace vmmu::sim {

namespace {

using x86::PagingMode;
namespace pte = x86::pte;

constexpr uint64_t KIB = 1ull << 10, MIB = 1ull << 20, GIB = 1ull << 30;
constexpr uint64_t PAGE = x86::PAGE_SIZE;

// ---- The guest-physical map -------------------------------------------------------------------
// main     [0, G)                 G = 4..32 MiB; its first MiB is set aside for page tables
// tables   0x2000000 (+64 KiB)    page tables that move to 0x2100000 and back, or vanish
// ro       0x2200000 (+64 KiB)    read-only: 8 pages for page tables, 8 of data
// transient [0x3000000, 0x3800000) memslots 5-7 come, go and move here
// hole     [0x3800000, 0x3c00000) never a memslot: MMIO, and where some table pointers lead
// big      0x4000000 or 0x5000000 (4 MiB, host=2m), or 1 GiB or 2 GiB (1 GiB, host=1g)
// mmio     [3 GiB, 4 GiB)         never a memslot (0xfee00000 and friends)
// hi       4 GiB (+8 MiB)         above 4 GiB: reached by PAE, long mode and PSE-36
constexpr uint32_t SLOT_MAIN = 0, SLOT_TABLES = 1, SLOT_RO = 2, SLOT_BIG = 3, SLOT_HI = 4, SLOT_TRANSIENT = 5;
constexpr uint32_t N_TRANSIENT = 3;
constexpr uint64_t TABLE_AREA_PAGES = 256;
constexpr uint64_t TABLES_HOME = 0x2000000, TABLES_AWAY = 0x2100000, TABLES_SIZE = 64 * KIB;
constexpr uint64_t RO_BASE = 0x2200000, RO_SIZE = 64 * KIB, RO_TABLE_PAGES = 8;
constexpr uint64_t TRANSIENT_BASE = 0x3000000, TRANSIENT_END = 0x3800000;
constexpr uint64_t HOLE_BASE = 0x3800000, HOLE_END = 0x3c00000;
constexpr std::array<uint64_t, 2> BIG_2M_HOMES{0x4000000, 0x5000000};
constexpr std::array<uint64_t, 2> BIG_1G_HOMES{1 * GIB, 2 * GIB};
constexpr uint64_t BIG_2M_SIZE = 4 * MIB;
constexpr uint64_t MMIO_BASE = 3 * GIB, APIC_BASE = 0xfee00000;
constexpr uint64_t HI_BASE = 4 * GIB, HI_SIZE = 8 * MIB;
constexpr size_t MAX_TABLES = 160;
constexpr size_t MAX_PATHS = 16;

// ---- A small deterministic PRNG (xoshiro256**, seeded by splitmix64): the same on every
// platform and standard library, unlike std::*_distribution. Its values come first from
// `entropy` (RandomWorkloadParams::entropy), while that lasts.
class Rng {
 public:
  Rng(uint64_t seed, const std::vector<uint8_t>& entropy) : entropy_(entropy) {
    uint64_t x = seed;
    for (uint64_t& w : s_) {
      x += 0x9e3779b97f4a7c15ull;
      uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      w = z ^ (z >> 31);
    }
  }
  uint64_t next() { return draw(8); }
  uint64_t below(uint64_t n) { return n ? draw(bytes_for(n - 1)) % n : 0; }
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }  // inclusive
  bool percent(unsigned p) { return below(100) < p; }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }

 private:
  static unsigned bytes_for(uint64_t max) {
    unsigned n = 1;
    while (n < 8 && (max >> (8 * n)) != 0) ++n;
    return n;
  }
  // The next `bytes` bytes of the entropy (little-endian), or the PRNG's next value once fewer
  // are left (from then on, the PRNG's alone).
  uint64_t draw(unsigned bytes) {
    if (entropy_.size() - used_ < bytes) {
      used_ = entropy_.size();
      return prng();
    }
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; ++i) v |= uint64_t{entropy_[used_++]} << (8 * i);
    return v;
  }
  uint64_t prng() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  const std::vector<uint8_t>& entropy_;
  size_t used_ = 0;
  uint64_t s_[4];
};

// ---- Paging formats as the generator sees them ------------------------------------------------
enum class Fmt : uint8_t { Bits32 = 0, Pae = 1, L4 = 2, L5 = 3 };
constexpr unsigned N_FMTS = 4;

Fmt fmt_of(PagingMode m) {
  switch (m) {
    case PagingMode::Bits32: return Fmt::Bits32;
    case PagingMode::Pae: return Fmt::Pae;
    case PagingMode::Level5: return Fmt::L5;
    default: return Fmt::L4;
  }
}
unsigned fi(Fmt f) { return static_cast<unsigned>(f); }
bool is_long(Fmt f) { return f == Fmt::L4 || f == Fmt::L5; }
unsigned root_level(Fmt f) { return f == Fmt::Bits32 ? 2 : f == Fmt::Pae ? 3 : f == Fmt::L4 ? 4 : 5; }
unsigned entry_bytes(Fmt f) { return f == Fmt::Bits32 ? 4 : 8; }
unsigned entries_of(Fmt f, unsigned level) {
  if (f == Fmt::Bits32) return 1024;
  if (f == Fmt::Pae && level == 3) return 4;
  return 512;
}
unsigned shift_of(Fmt f, unsigned level) { return 12 + (level - 1) * (f == Fmt::Bits32 ? 10 : 9); }
unsigned index_of(Fmt f, uint64_t gva, unsigned level) {
  return static_cast<unsigned>((gva >> shift_of(f, level)) & (entries_of(f, level) - 1));
}
uint64_t sext(Fmt f, uint64_t gva) {
  const unsigned width = f == Fmt::L4 ? 48 : f == Fmt::L5 ? 57 : 64;
  if (width == 64) return gva;
  return static_cast<uint64_t>(static_cast<int64_t>(gva << (64 - width)) >> (64 - width));
}
// Root entries that link the shared kernel subtree, the same in every address space of a format.
const std::vector<unsigned>& pinned_indices(Fmt f) {
  static const std::vector<unsigned> bits32{1022, 1023}, pae{3}, longmode{511};
  return f == Fmt::Bits32 ? bits32 : f == Fmt::Pae ? pae : longmode;
}
uint64_t mask_width(uint64_t v, unsigned width) { return width >= 8 ? v : v & ((1ull << (8 * width)) - 1); }

// The guest walker's port for a side-effect-free walk: reads through the memslots, pretends to
// set A/D bits (they never change which entries a walk reads or what it yields).
using DryRunPort = guest::ReadOnlyPort;

struct Table {
  Fmt fmt = Fmt::L4;
  uint8_t level = 1;
  bool kernel = false;  // under the shared kernel subtree (may hold global leaves)
  int space = -1;       // >= 0: the root of that address space
  int32_t self = -1;    // >= 0: the index of its self-map entry (it points at the table itself)
  uint64_t self_flags = 0;
  uint32_t slot = SLOT_MAIN;
  uint64_t offset = 0;  // bytes into the memslot (a PDPT sits at a 32-byte offset in its page)
  uint64_t home = 0;    // its gpa with every table memslot at home: what pointers hold
  std::vector<int32_t> link;                             // per entry: the table it points at, or -1
  std::vector<std::pair<uint32_t, uint32_t>> parents;   // (table, index) entries pointing here
};

struct Mapped {
  uint64_t gva;
  uint64_t size;
};

struct Space {
  Fmt fmt;
  uint32_t root;
  std::vector<Mapped> gvas;
  std::map<uint32_t, uint64_t> windows;  // table -> gva of a leaf mapping its page
};

struct VcpuModel {
  uint32_t id;
  std::set<int> cached;          // address spaces it may hold translations of (since its last full drop)
  std::vector<uint64_t> recent;  // pages of gvas it translated lately (since its last full drop)
};

struct Touched {
  uint32_t table;
  unsigned index;
  uint64_t old;
};

struct DryRun {
  bool translated = false;  // no fault
  bool performed = false;   // a memslot access that happens (not MMIO, not a refused ro write)
  uint64_t gpa = 0;
  guest::GuestWalk walk;    // the entries it used, A/D updates included
};

enum class Role { Free, FreePoolPage, LeafTable, UpperTable };
struct PageRole {
  Role role = Role::Free;
  int32_t table = -1;
};

// Pending invalidations after entry changes, emitted together.
struct Invalidation {
  std::map<uint32_t, std::set<uint64_t>> invlpg;  // vcpu -> gvas
  std::set<uint32_t> flush;
};

class Generator {
 public:
  Generator(const RandomWorkloadParams& p, std::vector<Op>& ops, RandomWorkloadCoverage& cov)
      : p_(p), f_(p.features), ops_(ops), cov_(cov), rng_(p.seed, p.entropy), ref_(VmConfig{MmuKind::None}), replayer_(ref_, nullptr) {}

  void run() {
    validate();
    setup_cpu();
    setup_slots();
    for (uint32_t i = 0; i < p_.vcpus; ++i) {
      Op o = make(OpKind::Vcpu);
      o.id = i;
      emit(o);
      vcpus_.push_back(VcpuModel{i, {}, {}});
    }
    setup_tables();
    for (VcpuModel& v : vcpus_) gen_mode_switch(v);
    in_main_ = true;
    while (main_ops_ < p_.ops) step();
    in_main_ = false;
    finale();
  }

 private:
  // ---- set-up ---------------------------------------------------------------------------------
  void validate() {
    if (p_.modes.empty()) throw std::invalid_argument("RandomWorkloadParams: no paging mode allowed");
    if (p_.vcpus < 1 || p_.vcpus > 8) throw std::invalid_argument("RandomWorkloadParams: vcpus must be 1..8");
    main_size_ = std::clamp<uint64_t>(p_.guest_memory, 4 * MIB, 32 * MIB) & ~(4 * MIB - 1);
    for (PagingMode m : p_.modes) {
      if (m != PagingMode::Off) fmt_used_[fi(fmt_of(m))] = true;
    }
    modes_ = p_.modes;
  }

  void setup_cpu() {
    x86::CpuModel m;
    if (p_.random_cpu_model) {
      static const unsigned widths[] = {32, 36, 36, 39, 40, 42, 46, 48, 48, 52};
      m.maxphyaddr = widths[rng_.below(std::size(widths))];
      m.gbpages = rng_.percent(80);
      m.la57 = fmt_used_[fi(Fmt::L5)] || rng_.percent(70);
    }
    if (fmt_used_[fi(Fmt::L5)]) m.la57 = true;
    model_ = m;
    frame_mask_ = pte::bits(m.maxphyaddr - 1, 12);
    Op o = make(OpKind::Cpu);
    o.maxphyaddr = m.maxphyaddr;
    o.gbpages = m.gbpages;
    o.la57 = m.la57;
    emit(o);
  }

  void add_slot(uint32_t id, uint64_t gpa, uint64_t size, bool ro, bool log, guest::HostPageSize host) {
    Op o = make(OpKind::Memslot);
    o.id = id;
    o.addr = gpa;
    o.size = size;
    o.readonly = ro;
    o.log = log && !ro;
    o.host_page = host;
    emit(o);
  }

  guest::HostPageSize big_host() const { return p_.big_slot_1g ? guest::HostPageSize::Size1G : guest::HostPageSize::Size2M; }
  uint64_t big_size() const { return p_.big_slot_1g ? GIB : BIG_2M_SIZE; }
  const std::array<uint64_t, 2>& big_homes() const { return p_.big_slot_1g ? BIG_1G_HOMES : BIG_2M_HOMES; }

  void setup_slots() {
    using guest::HostPageSize;
    const bool huge = f_.huge_pages;
    add_slot(SLOT_MAIN, 0, main_size_, false, f_.dirty_log && rng_.percent(15),
             huge && rng_.percent(70) ? HostPageSize::Size2M : HostPageSize::Size4K);
    add_slot(SLOT_TABLES, TABLES_HOME, TABLES_SIZE, false, f_.dirty_log && rng_.percent(15), HostPageSize::Size4K);
    if (f_.readonly_slot) add_slot(SLOT_RO, RO_BASE, RO_SIZE, true, false, HostPageSize::Size4K);
    if (huge) add_slot(SLOT_BIG, big_homes()[0], big_size(), false, f_.dirty_log && rng_.percent(15), big_host());
    add_slot(SLOT_HI, HI_BASE, HI_SIZE, false, false, huge ? HostPageSize::Size2M : HostPageSize::Size4K);
    if (!f_.memslot_changes || rng_.percent(50)) add_transient(SLOT_TRANSIENT);

    // Page-table pools: pages that become tables, kept zero until then.
    for (uint64_t i = 0; i < TABLE_AREA_PAGES; ++i) pool_[{SLOT_MAIN, i}] = -1;
    for (uint64_t i = 0; i < TABLES_SIZE / PAGE; ++i) pool_[{SLOT_TABLES, i}] = -1;
    if (f_.readonly_slot)
      for (uint64_t i = 0; i < RO_TABLE_PAGES; ++i) pool_[{SLOT_RO, i}] = -1;

    // Data pages the mappings favour (so that reads see writes, and gvas alias).
    const uint64_t data_pages = main_size_ / PAGE - TABLE_AREA_PAGES;
    for (int i = 0; i < 24; ++i) hot_.push_back((TABLE_AREA_PAGES + rng_.below(data_pages)) * PAGE);
    for (int i = 0; i < 4; ++i) hot_.push_back(HI_BASE + rng_.below(HI_SIZE / PAGE) * PAGE);
    if (huge)
      for (int i = 0; i < 4; ++i) hot_.push_back(big_homes()[0] + rng_.below(std::min<uint64_t>(big_size(), 64 * MIB) / PAGE) * PAGE);
    if (f_.readonly_slot) {
      for (int i = 0; i < 3; ++i) {
        const uint64_t gpa = RO_BASE + (RO_TABLE_PAGES + rng_.below(RO_SIZE / PAGE - RO_TABLE_PAGES)) * PAGE;
        hot_.push_back(gpa);
        gen_poke(gpa + 8 * rng_.below(512), 8, rng_.next());
      }
    }
    for (int i = 0; i < 6; ++i) gen_poke(rng_.pick(hot_) + 8 * rng_.below(512), 8, rng_.next());
  }

  void setup_tables() {
    for (unsigned k = 0; k < N_FMTS; ++k) {
      if (!fmt_used_[k]) continue;
      const Fmt f = static_cast<Fmt>(k);
      setup_kernel(f);
      const unsigned n = f_.address_spaces ? 2 + static_cast<unsigned>(rng_.below(2)) : 1;
      for (unsigned s = 0; s < n; ++s) create_space(f);
    }
    for (size_t s = 0; s < spaces_.size(); ++s) {
      const Fmt f = spaces_[s].fmt;
      for (int i = 0; i < 5; ++i) map_random(static_cast<int>(s), f, false);
    }
    for (unsigned k = 0; k < N_FMTS; ++k) {
      if (!fmt_used_[k]) continue;
      for (int i = 0; i < 4; ++i) map_random(-1, static_cast<Fmt>(k), true);
    }
    // Often one PAE address space that cannot be loaded: a PDPTE with a reserved bit (#GP).
    const std::vector<int> pae = spaces_of(Fmt::Pae);
    const int32_t pd = pae.size() > 1 && f_.reserved_bits && rng_.percent(60) ? pick_child(Fmt::Pae, 2, false) : -1;
    if (pd >= 0) {
      const uint32_t root = spaces_[rng_.pick(pae)].root;
      poke_entry(root, static_cast<unsigned>(rng_.below(3)), pointer_bits(Fmt::Pae, 3, tables_[pd].home, false) | pdpte_reserved_bit());
      ++cov_.reserved_entries;
    }
  }

  void setup_kernel(Fmt f) {
    self_index_[fi(f)] = pick_self_index(f);
    root_self_flags_[fi(f)] = self_flags(f);
    const uint64_t base = pte::P | pte::A;
    for (unsigned k : pinned_indices(f)) {
      uint64_t v = 0;
      switch (f) {
        case Fmt::Bits32: {
          const int32_t t = alloc_table(f, 1, true, false);
          v = tables_[t].home | base | pte::RW | pte::D | (rng_.percent(50) ? pte::US : 0);
          if (k == 1022 && f_.huge_pages) {
            v |= pte::PS;
            if (f_.global_pages) v |= pte::G;
          }
          break;
        }
        case Fmt::Pae: {
          const int32_t pd = alloc_table(f, 2, true, false);
          v = tables_[pd].home | pte::P;
          // PDPTEs are registers: the shared kernel page directory maps itself instead.
          if (f_.self_map) add_self_map(static_cast<uint32_t>(pd), self_index_[fi(f)], self_flags(f));
          break;
        }
        case Fmt::L4: v = tables_[alloc_table(f, 3, true, false)].home | base | pte::RW | pte::US; break;
        case Fmt::L5: v = tables_[alloc_table(f, 4, true, false)].home | base | pte::RW | pte::US; break;
      }
      pinned_[fi(f)][k] = v;
    }
  }

  void create_space(Fmt f) {
    const int32_t root = alloc_table(f, root_level(f), false, true);
    if (root < 0) throw std::logic_error("RandomWorkload: no page for a root table");
    const int id = static_cast<int>(spaces_.size());
    spaces_.push_back(Space{f, static_cast<uint32_t>(root), {}, {}});
    tables_[root].space = id;
    ++cov_.address_spaces;
    for (unsigned k : pinned_indices(f)) poke_entry(static_cast<uint32_t>(root), k, pinned_[fi(f)].at(k));
    if (f_.self_map && f != Fmt::Pae) add_self_map(static_cast<uint32_t>(root), self_index_[fi(f)], root_self_flags_[fi(f)]);
  }

  // ---- tables ---------------------------------------------------------------------------------
  static uint64_t slot_home(uint32_t slot) { return slot == SLOT_TABLES ? TABLES_HOME : slot == SLOT_RO ? RO_BASE : 0; }

  int32_t alloc_table(Fmt f, unsigned level, bool kernel, bool root) {
    if (tables_.size() >= MAX_TABLES) return -1;
    const bool pdpt = f == Fmt::Pae && level == 3;
    uint32_t slot = SLOT_MAIN;
    if (!kernel && !root && !pdpt) {
      const uint64_t r = rng_.below(100);
      if (r < 15) slot = SLOT_TABLES;
      else if (r < 25 && f_.readonly_slot) slot = SLOT_RO;
    }
    // Pages 0-3 of the main slot hold 32-bit page tables when there are any: a PSE PDE that
    // points at them maps 4 MiB at gpa 0 or (PSE-36) at 4 GiB, with or without PAT.
    const bool low_pages_reserved = fmt_used_[fi(Fmt::Bits32)];
    auto free_pages = [&](uint32_t s) {
      std::vector<uint64_t> v;
      for (auto it = pool_.lower_bound({s, 0}); it != pool_.end() && it->first.first == s; ++it) {
        if (it->second >= 0) continue;
        if (s == SLOT_MAIN && it->first.second < 4 && low_pages_reserved && !(f == Fmt::Bits32 && level == 1)) continue;
        v.push_back(it->first.second);
      }
      return v;
    };
    std::vector<uint64_t> pages = free_pages(slot);
    if (pages.empty() && slot != SLOT_MAIN) pages = free_pages(slot = SLOT_MAIN);
    if (pages.empty()) return -1;
    uint64_t page = rng_.pick(pages);
    if (slot == SLOT_MAIN && f == Fmt::Bits32 && level == 1 && rng_.percent(60)) {
      for (uint64_t p : pages)
        if (p < 4) {
          page = p;
          break;
        }
    }
    Table t;
    t.fmt = f;
    t.level = static_cast<uint8_t>(level);
    t.kernel = kernel;
    t.slot = slot;
    t.offset = page * PAGE + (pdpt ? rng_.below(PAGE / 32) * 32 : 0);
    t.home = slot_home(slot) + t.offset;
    if (level >= 2) t.link.assign(entries_of(f, level), -1);
    const int32_t id = static_cast<int32_t>(tables_.size());
    pool_[{slot, page}] = id;
    by_home_[t.home] = static_cast<uint32_t>(id);
    tables_.push_back(std::move(t));
    ++cov_.tables;
    return id;
  }

  bool is_pinned(const Table& t, unsigned i) const {
    if (t.space < 0) return false;
    const auto& p = pinned_indices(t.fmt);
    return std::find(p.begin(), p.end(), i) != p.end();
  }

  const guest::Memslot* slot(uint32_t id) const { return ref_.memslots().by_id(id); }

  std::optional<uint64_t> entry_gpa(const Table& t, unsigned i) const {
    const guest::Memslot* s = slot(t.slot);
    if (!s) return std::nullopt;
    return (s->base_gfn() << x86::PAGE_SHIFT) + t.offset + uint64_t{i} * entry_bytes(t.fmt);
  }
  uint64_t read_entry(const Table& t, unsigned i) const {
    const auto g = entry_gpa(t, i);
    return g ? ref_.read_guest(*g, entry_bytes(t.fmt)) : 0;
  }

  // The table an entry links (as a pointer in any interpretation: a 32-bit PDE with PS=1 is a
  // pointer when CR4.PSE=0), or -1. Throws when the entry breaks the generator's invariants.
  int32_t child_of(uint32_t ti, unsigned i, uint64_t e) const {
    const Table& t = tables_[ti];
    if (t.level == 1 || !(e & pte::P) || t.self == static_cast<int32_t>(i)) return -1;  // a self-map is no link
    const bool pdpte = t.fmt == Fmt::Pae && t.level == 3;
    uint64_t target;
    if (t.fmt == Fmt::Bits32) {
      target = e & 0xffff'f000ull;
    } else {
      if (!pdpte && (e & pte::PS)) return -1;  // a leaf, or a reserved PS: never followed
      target = e & frame_mask_;
    }
    if (target >= HOLE_BASE && target < HOLE_END) return -1;
    auto it = by_home_.find(target);
    const bool kernel = t.kernel || is_pinned(t, i);
    if (it == by_home_.end() || tables_[it->second].fmt != t.fmt || tables_[it->second].level + 1 != t.level ||
        tables_[it->second].kernel != kernel || tables_[it->second].space >= 0) {
      throw std::logic_error(fmt::format("RandomWorkload (seed {}): entry {} of the level-{} table at 0x{:x} (0x{:x}) "
                                         "points at no table of its kind",
                                         p_.seed, i, t.level, t.home, e));
    }
    return static_cast<int32_t>(it->second);
  }

  void relink(uint32_t ti, unsigned i, uint64_t e) {
    if (tables_[ti].level == 1) return;
    const int32_t c = child_of(ti, i, e);
    int32_t& l = tables_[ti].link[i];
    if (l == c) return;
    if (l >= 0) {
      auto& ps = tables_[l].parents;
      auto it = std::find(ps.begin(), ps.end(), std::make_pair(ti, uint32_t{i}));
      if (it != ps.end()) ps.erase(it);
    }
    l = c;
    if (c >= 0) tables_[c].parents.emplace_back(ti, i);
  }

  // (address space, gva) of every walk that reads table `ti` as a table of level `eff` (below its
  // own level only through self-maps); false beyond `cap` of them.
  bool reach(uint32_t ti, unsigned eff, std::vector<std::pair<int, uint64_t>>& out, size_t cap) const {
    const Table& t = tables_[ti];
    if (eff == 0 || eff > t.level) return true;
    if (t.space >= 0 && eff == t.level) out.emplace_back(t.space, 0);
    auto via = [&](uint32_t p, uint32_t j) {
      std::vector<std::pair<int, uint64_t>> up;
      if (!reach(p, eff + 1, up, cap)) return false;
      const uint64_t step = uint64_t{j} << shift_of(t.fmt, eff + 1);
      for (const auto& [s, b] : up) {
        out.emplace_back(s, b + step);
        if (out.size() > cap) return false;
      }
      return true;
    };
    for (const auto& [p, j] : t.parents)
      if (!via(p, j)) return false;
    if (t.self >= 0 && eff < t.level && !via(ti, static_cast<uint32_t>(t.self))) return false;
    return true;
  }

  // Whether a change of this entry, read as one of level `level`, is covered by INVLPG of the gvas
  // it maps.
  static bool leaf_position(Fmt f, unsigned level, uint64_t e) {
    if (level == 1 || !(e & pte::P)) return true;
    if (f == Fmt::Bits32 || (f == Fmt::Pae && level == 3)) return false;
    return (e & pte::PS) && level <= 3;
  }

  // An entry changed from `old` to `now`: keep the links, and note the invalidations the contract
  // asks for.
  void entry_changed(uint32_t ti, unsigned i, uint64_t old, uint64_t now, Invalidation& inv) {
    if (old == now) return;
    relink(ti, i, now);
    if (!(old & pte::P) && (now & pte::P)) return;  // not present -> present: nothing to drop
    ++cov_.entry_changes;
    const Table& t = tables_[ti];
    struct Use {
      int space;
      uint64_t gva;  // of the first byte the entry maps when read at `level`
      unsigned level;
    };
    std::vector<Use> uses;
    bool precise = true;
    for (unsigned eff = 1; eff <= t.level && precise; ++eff) {
      std::vector<std::pair<int, uint64_t>> paths;
      precise = reach(ti, eff, paths, MAX_PATHS);
      for (const auto& [sp, base] : paths) uses.push_back(Use{sp, base + (uint64_t{i} << shift_of(t.fmt, eff)), eff});
      if (uses.size() > MAX_PATHS) precise = false;
    }
    for (VcpuModel& v : vcpus_) {
      if (v.cached.empty()) continue;
      const x86::CpuState& s = ref_.vcpu(v.id).state();
      std::set<uint64_t> gvas;
      bool hit = !precise, leaf = true;
      for (const Use& u : uses) {
        if (!v.cached.count(u.space)) continue;
        hit = true;
        leaf = leaf && leaf_position(t.fmt, u.level, old) && leaf_position(t.fmt, u.level, now);
        const uint64_t span = 1ull << shift_of(t.fmt, u.level);
        uint64_t gva = u.gva;
        // INVLPG of any address in a large page drops all of that page (SDM 4.10.4.1).
        if (u.level > 1 && rng_.percent(50)) gva += rng_.below(span / PAGE) * PAGE;
        gvas.insert(sext(t.fmt, gva));
      }
      if (!hit) continue;
      const bool same_format = s.mode() != PagingMode::Off && fmt_of(s.mode()) == t.fmt;
      if (precise && leaf && same_format && gvas.size() <= 4 && !rng_.percent(15)) {
        inv.invlpg[v.id].insert(gvas.begin(), gvas.end());
      } else {
        inv.flush.insert(v.id);
      }
    }
  }

  void invalidate(const Invalidation& inv) {
    for (VcpuModel& v : vcpus_) {
      if (inv.flush.count(v.id)) {
        op_flush(v);
        continue;
      }
      auto it = inv.invlpg.find(v.id);
      if (it == inv.invlpg.end()) continue;
      for (uint64_t gva : it->second) op_invlpg(v, gva);
    }
  }

  PageRole role_of(uint64_t gfn) const {
    const guest::Memslot* s = ref_.memslots().find(gfn);
    if (!s) return {};
    auto it = pool_.find({s->id(), gfn - s->base_gfn()});
    if (it == pool_.end()) return {};
    if (it->second < 0) return {Role::FreePoolPage, -1};
    return {tables_[it->second].level == 1 ? Role::LeafTable : Role::UpperTable, it->second};
  }

  // Entries of the table on page `gpa` overlapping [gpa, gpa + width), with their values now.
  std::vector<Touched> touched_entries(uint64_t gpa, unsigned width) const {
    std::vector<Touched> out;
    const PageRole r = role_of(gpa >> x86::PAGE_SHIFT);
    if (r.table < 0) return out;
    const Table& t = tables_[r.table];
    const unsigned es = entry_bytes(t.fmt);
    const uint64_t base = t.offset & x86::PAGE_OFFSET_MASK;
    const uint64_t off = gpa & x86::PAGE_OFFSET_MASK;
    const unsigned n = entries_of(t.fmt, t.level);
    for (unsigned i = 0; i < n; ++i) {
      const uint64_t lo = base + uint64_t{i} * es;
      if (lo < off + width && off < lo + es) out.push_back(Touched{static_cast<uint32_t>(r.table), i, read_entry(t, i)});
    }
    return out;
  }

  void settle(const std::vector<Touched>& touched) {
    Invalidation inv;
    for (const Touched& t : touched) entry_changed(t.table, t.index, t.old, read_entry(tables_[t.table], t.index), inv);
    invalidate(inv);
  }

  // Makes a write of `width` bytes at offset `off` of frame `gfn` keep every table well formed
  // (it may move the write within the page and change its width and value).
  void shape(uint64_t gfn, unsigned& off, unsigned& width, uint64_t& value) {
    const PageRole r = role_of(gfn);
    switch (r.role) {
      case Role::Free: return;
      case Role::FreePoolPage: value = 0; return;
      case Role::LeafTable: {
        const Table& t = tables_[r.table];
        if (t.kernel) return;
        // No global pages outside the kernel subtree: clear bit 8 of every entry written.
        const unsigned es = entry_bytes(t.fmt);
        for (unsigned p = off - off % es; p < off + width; p += es) {
          if (p + 1 >= off && p + 1 < off + width) value &= ~(1ull << (8 * (p + 1 - off)));
        }
        return;
      }
      case Role::UpperTable: {
        const Table& t = tables_[r.table];
        const unsigned es = entry_bytes(t.fmt);
        const unsigned base = static_cast<unsigned>(t.offset & x86::PAGE_OFFSET_MASK);
        const unsigned end = base + entries_of(t.fmt, t.level) * es;
        if (off + width <= base || off >= end) return;  // beside a PDPT in its page
        const unsigned i = (std::max(off, base) - base) / es;
        off = base + i * es;
        width = es;
        value = make_entry(static_cast<uint32_t>(r.table), i);
        return;
      }
    }
  }

  // ---- entries --------------------------------------------------------------------------------
  uint64_t reserved_high_bit(Fmt f) {
    const unsigned m = model_.maxphyaddr;
    if (f == Fmt::Pae) return 1ull << rng_.range(m, 62);
    if (is_long(f) && m < 52) return 1ull << rng_.range(m, 51);
    return 0;
  }

  uint64_t make_entry(uint32_t ti, unsigned i) {
    // Copies: allocating a table may move tables_.
    const Fmt fmt = tables_[ti].fmt;
    const unsigned level = tables_[ti].level;
    const bool kernel = tables_[ti].kernel;
    if (tables_[ti].self == static_cast<int32_t>(i)) return self_entry(ti);
    if (is_pinned(tables_[ti], i)) return pinned_[fi(fmt)].at(i);
    if (level == 1) return leaf_entry(fmt, 1, kernel);
    const bool pdpt = fmt == Fmt::Pae && level == 3;
    if (rng_.percent(8)) {
      if (rng_.percent(50)) return 0;
      return (pdpt ? pdpte_entry(ti) : pointer_entry(ti, i, true)) & ~pte::P;
    }
    if (pdpt) return pdpte_entry(ti);
    const bool huge = f_.huge_pages && (level == 2 || (level == 3 && is_long(fmt)));
    if (huge && rng_.percent(level == 2 ? 35 : 20)) return leaf_entry(fmt, level, kernel);
    return pointer_entry(ti, i, true);
  }

  // ---- self-maps ------------------------------------------------------------------------------
  // Flags of a self-map entry: already accessed (a walk in another address space must not set A
  // where a cached global translation skipped it), never PS (it stays a pointer at every level it
  // is read at) nor bit 8 (G where it is read as a leaf).
  uint64_t self_flags(Fmt f) {
    uint64_t e = pte::P | pte::A;
    if (rng_.percent(90)) e |= pte::RW;
    if (rng_.percent(50)) e |= pte::US;
    if (rng_.percent(30)) e |= pte::D;
    if (rng_.percent(5)) e |= pte::PWT;
    if (rng_.percent(5)) e |= pte::PCD;
    if (f != Fmt::Bits32 && rng_.percent(10)) e |= pte::XD;
    return e;
  }

  uint64_t self_entry(uint32_t ti) const { return tables_[ti].home | tables_[ti].self_flags; }

  // Makes entry `index` of table `ti` point at the table itself.
  void add_self_map(uint32_t ti, unsigned index, uint64_t flags) {
    tables_[ti].self = static_cast<int32_t>(index);
    tables_[ti].self_flags = flags;
    ++cov_.self_maps;
    poke_entry(ti, index, self_entry(ti));
  }

  // The index of the self-map of every root of a format (of the kernel page directory for PAE).
  unsigned pick_self_index(Fmt f) {
    switch (f) {
      case Fmt::Bits32: return static_cast<unsigned>(rng_.range(768, 1021));  // 0xc0000000 and up
      case Fmt::Pae: return static_cast<unsigned>(rng_.range(300, 500));
      default: return static_cast<unsigned>(rng_.range(257, 510));  // the upper half, as Windows
    }
  }

  bool is_self(const Table& t, unsigned i) const { return t.self == static_cast<int32_t>(i); }

  int32_t pick_child(Fmt f, unsigned level, bool kernel) {
    std::vector<uint32_t> have;
    for (uint32_t k = 0; k < tables_.size(); ++k) {
      const Table& t = tables_[k];
      if (t.fmt == f && t.level == level && t.kernel == kernel && t.space < 0) have.push_back(k);
    }
    if (have.empty() || rng_.percent(40)) {
      const int32_t n = alloc_table(f, level, kernel, false);
      // Now and then a self-map below the root (a table that is not linked yet: nothing to drop).
      if (n >= 0 && f_.self_map && level >= 2 && rng_.percent(8))
        add_self_map(static_cast<uint32_t>(n), static_cast<unsigned>(rng_.range(8, 250)), self_flags(f));
      if (n >= 0) return n;
    }
    return have.empty() ? -1 : static_cast<int32_t>(rng_.pick(have));
  }

  uint64_t pointer_bits(Fmt f, unsigned level, uint64_t target, bool allow_reserved) {
    uint64_t e = target | pte::P;
    if (rng_.percent(5)) e |= pte::PWT;
    if (rng_.percent(5)) e |= pte::PCD;
    if (rng_.percent(10)) e |= rng_.below(8) << 9;  // ignored
    if (f == Fmt::Pae && level == 3) return e;      // a PDPTE: no RW/US/A/XD
    if (rng_.percent(95)) e |= pte::RW;
    if (rng_.percent(80)) e |= pte::US;
    if (rng_.percent(50)) e |= pte::A;
    if (f != Fmt::Bits32 && rng_.percent(3)) e |= pte::XD;
    if (is_long(f) && rng_.percent(5)) e |= rng_.below(128) << 52;  // ignored
    if (allow_reserved && f_.reserved_bits && rng_.percent(3)) {
      uint64_t r = reserved_high_bit(f);
      if (is_long(f) && level >= 4 && (r == 0 || rng_.percent(40))) r = pte::PS;  // PS is reserved there
      if (r) {
        e |= r;
        ++cov_.reserved_entries;
      }
    }
    return e;
  }

  uint64_t pointer_entry(uint32_t ti, unsigned i, bool allow_reserved) {
    const Fmt fmt = tables_[ti].fmt;
    const unsigned level = tables_[ti].level;
    const bool kernel = tables_[ti].kernel || is_pinned(tables_[ti], i);
    uint64_t target;
    if (f_.mmio && rng_.percent(2)) {
      target = HOLE_BASE + rng_.below((HOLE_END - HOLE_BASE) / PAGE) * PAGE;
    } else {
      const int32_t c = pick_child(fmt, level - 1, kernel);
      if (c < 0) return 0;
      target = tables_[c].home;
    }
    return pointer_bits(fmt, level, target, allow_reserved);
  }

  bool pdpt_in_use(uint32_t ti) {
    for (const VcpuModel& v : vcpus_) {
      const x86::CpuState& s = ref_.vcpu(v.id).state();
      if ((s.cr3 & x86::cr3::PAE_PDPT_MASK) == tables_[ti].home) return true;
    }
    return false;
  }

  uint64_t pdpte_entry(uint32_t ti) {
    const int32_t c = pick_child(Fmt::Pae, 2, false);
    if (c < 0) return 0;
    uint64_t e = pointer_bits(Fmt::Pae, 3, tables_[c].home, false);
    // Reserved bits only in a PDPT no vCPU has in CR3: loading it is then a #GP, and a flush
    // (which reloads the PDPTEs) never fails.
    if (f_.reserved_bits && rng_.percent(20) && !pdpt_in_use(ti)) {
      e |= pdpte_reserved_bit();
      ++cov_.reserved_entries;
    }
    return e;
  }

  // One of a PDPTE's reserved bits: 2:1, 8:5 or 63:M.
  uint64_t pdpte_reserved_bit() {
    static const unsigned low[] = {1, 2, 5, 6, 7, 8};
    return rng_.percent(50) ? 1ull << low[rng_.below(std::size(low))] : 1ull << rng_.range(model_.maxphyaddr, 63);
  }

  uint64_t leaf_flags(bool kernel) {
    uint64_t e = pte::P;
    if (rng_.percent(80)) e |= pte::RW;
    if (rng_.percent(kernel ? 35 : 75)) e |= pte::US;
    if (rng_.percent(50)) e |= pte::A;
    if (rng_.percent(40)) e |= pte::D;
    if (rng_.percent(5)) e |= pte::PWT;
    if (rng_.percent(5)) e |= pte::PCD;
    if (rng_.percent(10)) e |= rng_.below(8) << 9;  // ignored
    if (kernel && f_.global_pages && rng_.percent(50)) {
      e |= pte::G;
      ++cov_.global_leaves;
    }
    return e;
  }

  uint64_t leaf_entry(Fmt f, unsigned level, bool kernel) {
    if (f == Fmt::Bits32 && level == 2) return pse_entry(kernel);
    uint64_t e = leaf_flags(kernel);
    if (level == 1) {
      if (rng_.percent(5)) e |= pte::PAT_4K;
    } else {
      e |= pte::PS;
      if (rng_.percent(5)) e |= pte::PAT_HUGE;
      ++cov_.huge_leaves;
    }
    e |= pick_frame(f, level);
    if (f != Fmt::Bits32 && rng_.percent(8)) e |= pte::XD;
    if (is_long(f)) {
      if (rng_.percent(30)) e |= rng_.below(16) << pte::PKEY_SHIFT;
      if (rng_.percent(5)) e |= rng_.below(128) << 52;  // ignored
    }
    if (f_.reserved_bits && f != Fmt::Bits32 && rng_.percent(3)) {
      const uint64_t r = level >= 2 && rng_.percent(50) ? 1ull << rng_.range(13, level == 2 ? 20 : 29) : reserved_high_bit(f);
      if (r) {
        e |= r;
        ++cov_.reserved_entries;
      }
    }
    return e;
  }

  // A 32-bit PDE with PS=1: a 4 MiB page when CR4.PSE=1, a pointer to a page table when not, so
  // bits 31:12 name one (bit 12 is then PAT, bits 20:13 PSE-36 address bits or reserved ones).
  uint64_t pse_entry(bool kernel) {
    const int32_t pt = pick_child(Fmt::Bits32, 1, kernel);
    if (pt < 0) return 0;
    ++cov_.huge_leaves;
    return tables_[pt].home | leaf_flags(kernel) | pte::PS;
  }

  // A guest-physical frame for a leaf of `level` (aligned to its size).
  uint64_t pick_frame(Fmt f, unsigned level) {
    const uint64_t limit = f == Fmt::Bits32 ? 4 * GIB : (1ull << 52);
    const bool big = slot(SLOT_BIG) != nullptr || f_.huge_pages;
    uint64_t gpa = 0;
    if (level == 1) {
      for (int attempt = 0; attempt < 8; ++attempt) {
        const uint64_t r = rng_.below(100);
        if (r < 15 && f_.aliases && !alias_.empty()) {
          gpa = rng_.pick(alias_);
          ++cov_.alias_leaves;
        } else if (r < 45) {
          gpa = rng_.pick(hot_);
        } else if (r < 62) {
          gpa = (TABLE_AREA_PAGES + rng_.below(main_size_ / PAGE - TABLE_AREA_PAGES)) * PAGE;
        } else if (r < 67 && big) {
          gpa = big_homes()[rng_.below(2)] + rng_.below(std::min<uint64_t>(big_size(), 64 * MIB) / PAGE) * PAGE;
        } else if (r < 71) {
          gpa = HI_BASE + rng_.below(HI_SIZE / PAGE) * PAGE;
        } else if (r < 75 && f_.readonly_slot) {
          gpa = RO_BASE + rng_.below(RO_SIZE / PAGE) * PAGE;
        } else if (r < 81) {
          gpa = TRANSIENT_BASE + rng_.below((TRANSIENT_END - TRANSIENT_BASE) / PAGE) * PAGE;
        } else if (r < 86 && f_.mmio) {
          gpa = rng_.percent(50) ? APIC_BASE : HOLE_BASE + rng_.below((HOLE_END - HOLE_BASE) / PAGE) * PAGE;
        } else if (r < 94 && !tables_.empty()) {
          gpa = rng_.pick(tables_).home & ~x86::PAGE_OFFSET_MASK;  // a window onto a table
        } else {
          gpa = (rng_.percent(50) ? TABLES_HOME : TABLES_AWAY) + rng_.below(TABLES_SIZE / PAGE) * PAGE;
        }
        if (gpa < limit) break;
      }
      if (gpa >= limit) gpa = TABLE_AREA_PAGES * PAGE;
      if (alias_.size() < 48) alias_.push_back(gpa);
      else alias_[rng_.below(alias_.size())] = gpa;
      return gpa;
    }
    if (level == 2) {
      std::vector<uint64_t> chunks;
      for (uint64_t a = 0; a < main_size_; a += 2 * MIB) chunks.push_back(a);
      chunks.push_back(TABLES_HOME);
      chunks.push_back(TRANSIENT_BASE + rng_.below((TRANSIENT_END - TRANSIENT_BASE) / (2 * MIB)) * 2 * MIB);
      if (big) chunks.push_back(big_homes()[rng_.below(2)] + rng_.below(std::min<uint64_t>(big_size(), 64 * MIB) / (2 * MIB)) * 2 * MIB);
      chunks.push_back(HI_BASE + rng_.below(HI_SIZE / (2 * MIB)) * 2 * MIB);
      if (f_.mmio) chunks.push_back(rng_.percent(50) ? HOLE_BASE : MMIO_BASE);
      gpa = rng_.pick(chunks);
    } else {
      static const uint64_t gigs[] = {0, 1 * GIB, 2 * GIB, 3 * GIB, 4 * GIB};
      gpa = gigs[rng_.below(std::size(gigs))];
    }
    return gpa < limit ? gpa : 0;
  }

  bool poke_entry(uint32_t ti, unsigned i, uint64_t value) {
    const auto g = entry_gpa(tables_[ti], i);
    if (!g) return false;
    ++cov_.table_pokes;
    gen_poke(*g, entry_bytes(tables_[ti].fmt), value, true);
    return true;
  }

  // Maps `gva` with a leaf at `leaf_level` in address space `sp` (or in the kernel subtree every
  // space of the format shares), creating tables on the way.
  bool map(Fmt f, int sp, bool kernel, uint64_t gva, unsigned leaf_level, std::optional<uint64_t> leaf_value = {}) {
    if (sp < 0) {
      for (size_t s = 0; s < spaces_.size() && sp < 0; ++s)
        if (spaces_[s].fmt == f) sp = static_cast<int>(s);
      if (sp < 0) return false;
    }
    uint32_t t = spaces_[sp].root;
    for (unsigned level = root_level(f); level > leaf_level; --level) {
      const unsigned i = index_of(f, gva, level);
      if (is_self(tables_[t], i)) return false;
      if (is_pinned(tables_[t], i)) {
        const int32_t c = tables_[t].link[i];
        if (!kernel || c < 0) return false;
        t = static_cast<uint32_t>(c);
        continue;
      }
      const uint64_t e = read_entry(tables_[t], i);
      int32_t c = tables_[t].link[i];
      if (c < 0 || (f == Fmt::Bits32 && (e & pte::PS))) {
        c = pick_child(f, level - 1, tables_[t].kernel);
        if (c < 0) return false;
        if (!poke_entry(t, i, pointer_bits(f, level, tables_[c].home, rng_.percent(30)))) return false;
        if (tables_[t].link[i] != c) return false;
      }
      t = static_cast<uint32_t>(c);
    }
    const unsigned i = index_of(f, gva, leaf_level);
    if (is_pinned(tables_[t], i) || is_self(tables_[t], i)) return false;
    const uint64_t v = leaf_value ? *leaf_value : leaf_entry(f, leaf_level, tables_[t].kernel);
    if (!poke_entry(t, i, v)) return false;
    const uint64_t size = 1ull << shift_of(f, leaf_level);
    std::vector<Mapped>& pool = kernel ? kernel_gvas_[fi(f)] : spaces_[sp].gvas;
    const Mapped m{gva & ~(size - 1), size};
    if (pool.size() < 48) pool.push_back(m);
    else pool[rng_.below(pool.size())] = m;
    return true;
  }

  unsigned hot_index(unsigned n) {
    static const unsigned picks[] = {0, 1, 2, 3, 4, 7};
    if (rng_.percent(70)) {
      const uint64_t r = rng_.below(8);
      if (r < 6) return picks[r] % n;
      return r == 6 ? n - 1 : n / 2;
    }
    return static_cast<unsigned>(rng_.below(n));
  }

  uint64_t pick_gva(Fmt f, bool kernel, unsigned leaf_level) {
    uint64_t gva = 0;
    const unsigned top = root_level(f);
    const auto& pins = pinned_indices(f);
    for (unsigned level = top; level >= leaf_level; --level) {
      const unsigned n = entries_of(f, level);
      unsigned idx;
      if (level == top) {
        if (kernel) {
          idx = rng_.pick(pins);
        } else {
          do idx = hot_index(n);
          while (std::find(pins.begin(), pins.end(), idx) != pins.end() || (f_.self_map && idx == self_index_[fi(f)]));
        }
      } else {
        do idx = hot_index(n);
        while (f_.self_map && f == Fmt::Pae && kernel && level == 2 && idx == self_index_[fi(f)]);
      }
      gva |= uint64_t{idx} << shift_of(f, level);
      if (level == 1) break;
    }
    return sext(f, gva);
  }

  void map_random(int sp, Fmt f, bool kernel) {
    unsigned level = 1;
    if (f_.huge_pages && !(kernel && f == Fmt::Bits32)) {
      const uint64_t r = rng_.below(100);
      if (r < 25) level = 2;
      else if (r < 35 && is_long(f)) level = 3;
    }
    map(f, sp, kernel, pick_gva(f, kernel, level), level);
  }

  // ---- vCPUs ----------------------------------------------------------------------------------
  const x86::CpuState& state(const VcpuModel& v) { return ref_.vcpu(v.id).state(); }

  int space_of(const x86::CpuState& s) const {
    const PagingMode m = s.mode();
    if (m == PagingMode::Off) return -1;
    const Fmt f = fmt_of(m);
    const uint64_t root = f == Fmt::Bits32 ? s.cr3 & x86::cr3::BITS32_ROOT_MASK
                          : f == Fmt::Pae  ? s.cr3 & x86::cr3::PAE_PDPT_MASK
                                           : s.cr3 & frame_mask_;
    auto it = by_home_.find(root);
    if (it == by_home_.end() || tables_[it->second].space < 0 || tables_[it->second].fmt != f)
      throw std::logic_error(fmt::format("RandomWorkload (seed {}): cr3 0x{:x} is no root of a {} space", p_.seed, s.cr3, x86::name(m)));
    return tables_[it->second].space;
  }

  void reset_cached(VcpuModel& v) {
    v.cached.clear();
    const int sp = space_of(state(v));
    if (sp >= 0) v.cached.insert(sp);
  }

  VcpuModel& random_vcpu() { return vcpus_[rng_.below(vcpus_.size())]; }

  uint64_t root_cr3(int sp) {
    uint64_t x = tables_[spaces_[sp].root].home;
    if (rng_.percent(10)) x |= rng_.below(4) << 3;  // PWT, PCD
    return x;
  }

  std::vector<int> spaces_of(Fmt f) const {
    std::vector<int> v;
    for (size_t s = 0; s < spaces_.size(); ++s)
      if (spaces_[s].fmt == f) v.push_back(static_cast<int>(s));
    return v;
  }

  void emit_regs(VcpuModel& v, const RegisterUpdate& u) {
    const x86::CpuState before = state(v);
    Op o = make(OpKind::Regs);
    o.id = v.id;
    o.regs = u;
    emit(o);
    const x86::CpuState& now = state(v);
    if (now.mode() != before.mode()) v.recent.clear();  // other gvas are valid now
    if (now.cr0 != before.cr0 || now.cr3 != before.cr3 || now.cr4 != before.cr4 || now.efer != before.efer) reset_cached(v);
  }

  uint32_t pick_pkru() {
    const uint64_t r = rng_.below(10);
    if (r < 4) return 0;
    if (r < 7) return static_cast<uint32_t>(rng_.next());
    return static_cast<uint32_t>(rng_.range(1, 3) << (2 * rng_.below(16)));
  }

  void add_cpl_ac_pkru(RegisterUpdate& u) {
    if (!f_.cpl_ac_pkru) return;
    if (rng_.percent(60)) u.cpl = static_cast<uint8_t>(rng_.percent(30) ? 3 : 0);
    if (rng_.percent(40)) u.ac = rng_.percent(50);
    if (rng_.percent(40)) u.pkru = pick_pkru();
  }

  void gen_mode_switch(VcpuModel& v) {
    const PagingMode m = rng_.pick(modes_);
    const bool cb = f_.control_bits;
    uint64_t cr0 = x86::cr0::PE, cr4 = 0, efer = 0;
    if (m == PagingMode::Off && rng_.percent(10)) cr0 = 0;
    if (m != PagingMode::Off) cr0 |= x86::cr0::PG;
    if (!cb || rng_.percent(50)) cr0 |= x86::cr0::WP;
    if (!cb || rng_.percent(50)) cr4 |= x86::cr4::PSE;
    if (f_.global_pages && (!cb || rng_.percent(60))) cr4 |= x86::cr4::PGE;
    if (cb) {
      if (rng_.percent(25)) cr4 |= x86::cr4::SMEP;
      if (rng_.percent(25)) cr4 |= x86::cr4::SMAP;
      if (rng_.percent(30)) cr4 |= x86::cr4::PKE;
    }
    if (!cb || rng_.percent(60)) efer |= x86::efer::NXE;
    if (rng_.percent(20)) efer |= x86::efer::SCE;
    switch (m) {
      case PagingMode::Off:
        if (rng_.percent(20)) cr4 |= x86::cr4::PAE;
        if (rng_.percent(10)) efer |= x86::efer::LME;
        break;
      case PagingMode::Bits32: break;
      case PagingMode::Pae: cr4 |= x86::cr4::PAE; break;
      case PagingMode::Level4:
        cr4 |= x86::cr4::PAE;
        efer |= x86::efer::LME;
        break;
      case PagingMode::Level5:
        cr4 |= x86::cr4::PAE | x86::cr4::LA57;
        efer |= x86::efer::LME;
        break;
    }
    RegisterUpdate u;
    u.cr0 = cr0;
    u.cr4 = cr4;
    u.efer = efer;
    if (m == PagingMode::Off) {
      if (!spaces_.empty() && rng_.percent(70)) u.cr3 = root_cr3(static_cast<int>(rng_.below(spaces_.size())));
    } else {
      u.cr3 = root_cr3(rng_.pick(spaces_of(fmt_of(m))));
    }
    if (rng_.percent(30)) add_cpl_ac_pkru(u);
    ++cov_.mode_switches;
    emit_regs(v, u);
  }

  void gen_control_bit(VcpuModel& v) {
    const x86::CpuState s = state(v);
    if (s.mode() == PagingMode::Off || !f_.control_bits) return gen_mode_switch(v);
    RegisterUpdate u;
    switch (rng_.below(7)) {
      case 0: u.cr0 = s.cr0 ^ x86::cr0::WP; break;
      case 1: u.cr4 = s.cr4 ^ x86::cr4::SMEP; break;
      case 2: u.cr4 = s.cr4 ^ x86::cr4::SMAP; break;
      case 3: u.cr4 = s.cr4 ^ x86::cr4::PKE; break;
      case 4: u.cr4 = s.cr4 ^ (f_.global_pages ? x86::cr4::PGE : x86::cr4::PSE); break;
      case 5: u.cr4 = s.cr4 ^ x86::cr4::PSE; break;
      default: u.efer = s.efer ^ x86::efer::NXE; break;
    }
    ++cov_.control_bit_changes;
    emit_regs(v, u);
  }

  void gen_cpl_ac_pkru(VcpuModel& v) {
    RegisterUpdate u;
    add_cpl_ac_pkru(u);
    if (!u.cpl && !u.ac && !u.pkru) u.cpl = static_cast<uint8_t>(state(v).cpl == 3 ? 0 : 3);
    emit_regs(v, u);
  }

  void gen_cr3(VcpuModel& v) {
    const x86::CpuState& s = state(v);
    if (s.mode() == PagingMode::Off) return gen_mode_switch(v);
    const int sp = rng_.pick(spaces_of(fmt_of(s.mode())));
    Op o = make(OpKind::Cr3);
    o.id = v.id;
    o.addr = root_cr3(sp);
    ++cov_.cr3_switches;
    emit(o);
    if (state(v).cr3 == o.addr) v.cached.insert(sp);
  }

  // ---- accesses -------------------------------------------------------------------------------
  DryRun dry_run(const VcpuModel& v, uint64_t gva, x86::AccessKind kind) {
    const mmu::VcpuContext& ctx = ref_.vcpu(v.id).context();
    DryRunPort port(ref_.memslots());
    const guest::AccessMode m{kind, ctx.state.cpl == 3, ctx.state.ac, ctx.state.pkru};
    const guest::WalkResult w = guest::walk_guest(ctx.paging, ctx.pdptes, port, gva, m);
    DryRun r;
    if (!w.ok) return r;
    r.translated = true;
    r.gpa = w.walk.gpa;
    r.walk = w.walk;
    const guest::Memslot* s = ref_.memslots().find(r.gpa >> x86::PAGE_SHIFT);
    r.performed = s && !(kind == x86::AccessKind::Write && s->readonly());
    return r;
  }

  void note_translated(VcpuModel& v, uint64_t gva, const DryRun& d) {
    if (!d.translated || state(v).mode() == PagingMode::Off) return;
    const uint64_t page = gva & ~x86::PAGE_OFFSET_MASK;
    if (std::find(v.recent.begin(), v.recent.end(), page) != v.recent.end()) return;
    if (v.recent.size() < 8) v.recent.push_back(page);
    else v.recent[rng_.below(v.recent.size())] = page;
  }

  void note_gpa(uint64_t gpa) {
    if (recent_.size() < 64) recent_.push_back(gpa);
    else recent_[rng_.below(recent_.size())] = gpa;
  }

  unsigned pick_width() {
    static const unsigned w[] = {8, 8, 8, 8, 4, 4, 4, 2, 2, 1, 1};
    return w[rng_.below(std::size(w))];
  }
  unsigned pick_offset(unsigned width) {
    if (rng_.percent(80)) return static_cast<unsigned>(rng_.below(PAGE / width) * width);
    return static_cast<unsigned>(rng_.below(PAGE - width + 1));
  }
  uint64_t pick_value(unsigned width) {
    const uint64_t r = rng_.below(10);
    const uint64_t v = r < 2 ? rng_.below(256) : r < 3 ? 0 : rng_.next();
    return mask_width(v, width);
  }

  std::vector<uint64_t> table_pages_present() const {
    std::vector<uint64_t> v;
    for (const Table& t : tables_)
      if (auto g = entry_gpa(t, 0)) v.push_back(*g & ~x86::PAGE_OFFSET_MASK);
    return v;
  }

  // A page-aligned gva for an access by `v`.
  uint64_t pick_access_page(VcpuModel& v) {
    const x86::CpuState s = ref_.vcpu(v.id).state();
    const PagingMode m = s.mode();
    if (m == PagingMode::Off) {
      const uint64_t r = rng_.below(100);
      if (r < 55) return rng_.pick(hot_) & 0xffff'ffffull;
      if (r < 70) {
        auto t = table_pages_present();
        if (!t.empty()) return rng_.pick(t);
      }
      if (r < 80 && !recent_.empty()) return (rng_.pick(recent_) & ~x86::PAGE_OFFSET_MASK) & 0xffff'ffffull;
      if (r < 88 && f_.mmio) return APIC_BASE;
      return rng_.below(main_size_ / PAGE) * PAGE;
    }
    // Mostly pages it used lately, as a program would: translations an engine may have cached.
    if (!v.recent.empty() && rng_.percent(60)) return rng_.pick(v.recent);
    const Fmt f = fmt_of(m);
    const int sp = space_of(s);
    const uint64_t r = rng_.below(100);
    const std::vector<Mapped>* pool = nullptr;
    if (r < 55) pool = &spaces_[sp].gvas;
    else if (r < 75) pool = &kernel_gvas_[fi(f)];
    else if (r < 80 && !spaces_[sp].windows.empty()) {
      auto it = spaces_[sp].windows.begin();
      std::advance(it, static_cast<long>(rng_.below(spaces_[sp].windows.size())));
      return it->second;
    } else if (r < 87) {
      pool = &spaces_[rng_.pick(spaces_of(f))].gvas;
    }
    if (pool && !pool->empty()) {
      const Mapped& mp = rng_.pick(*pool);
      const uint64_t pages = mp.size / PAGE;
      return mp.gva + (pages > 1 && rng_.percent(60) ? rng_.below(std::min<uint64_t>(pages, 1024)) * PAGE : 0);
    }
    switch (f) {
      case Fmt::Bits32:
      case Fmt::Pae: return rng_.below(1ull << 20) * PAGE;
      case Fmt::L4:
        if (rng_.percent(10)) return rng_.next() & ~x86::PAGE_OFFSET_MASK;
        return sext(f, rng_.below(1ull << 36) * PAGE);
      case Fmt::L5:
        if (rng_.percent(10)) return rng_.next() & ~x86::PAGE_OFFSET_MASK;
        return sext(f, rng_.below(1ull << 45) * PAGE);
    }
    return 0;
  }

  void gen_write(VcpuModel& v, uint64_t gva, unsigned width, uint64_t value) {
    const DryRun d = dry_run(v, gva, x86::AccessKind::Write);
    note_translated(v, gva, d);
    std::vector<Touched> touched;
    if (d.performed) {
      unsigned off = static_cast<unsigned>(gva & x86::PAGE_OFFSET_MASK);
      shape(d.gpa >> x86::PAGE_SHIFT, off, width, value);
      gva = (gva & ~x86::PAGE_OFFSET_MASK) | off;
      const uint64_t gpa = (d.gpa & ~x86::PAGE_OFFSET_MASK) | off;
      touched = touched_entries(gpa, width);
      // An entry this write's own walk used holds, by the time the data is written, what the
      // walk made of it (A/D set): that is the value a cached translation came from.
      const guest::GuestWalk& w = d.walk;
      // Through a self-map the walk may read one entry at several levels: the lowest holds every
      // A/D bit the walk set (the dry run reads memory as it was before the walk).
      for (Touched& t : touched) {
        const std::optional<uint64_t> entry = entry_gpa(tables_[t.table], t.index);
        for (unsigned l = w.level; entry && l <= w.root_level; ++l) {
          if (w.pte_gpa[l] == *entry) {
            t.old = w.pte[l];
            break;
          }
        }
      }
      if (!touched.empty()) ++cov_.guest_table_writes;
      else if (written_.size() < 64) written_.insert(gpa & ~7ull);
      note_gpa(gpa);
    }
    Op o = make(OpKind::Write);
    o.id = v.id;
    o.addr = gva;
    o.width = static_cast<uint8_t>(width);
    o.value = mask_width(value, width);
    emit(o);
    settle(touched);
  }

  void gen_poke(uint64_t gpa, unsigned width, uint64_t value, bool shaped = false) {
    unsigned off = static_cast<unsigned>(gpa & x86::PAGE_OFFSET_MASK);
    if (!shaped) shape(gpa >> x86::PAGE_SHIFT, off, width, value);
    gpa = (gpa & ~x86::PAGE_OFFSET_MASK) | off;
    const std::vector<Touched> touched = touched_entries(gpa, width);
    Op o = make(OpKind::Poke);
    o.addr = gpa;
    o.width = static_cast<uint8_t>(width);
    o.value = mask_width(value, width);
    emit(o);
    settle(touched);
  }

  // ---- the main phase -------------------------------------------------------------------------
  void step() {
    struct Action {
      unsigned weight;
      void (Generator::*fn)();
    };
    const Action actions[] = {
        {50, &Generator::act_access},
        {9, &Generator::act_map},
        {f_.table_writes ? 7u : 0u, &Generator::act_table_write},
        {f_.self_map ? 6u : 0u, &Generator::act_self_map},
        {2, &Generator::act_poke_data},
        {f_.peek ? 3u : 0u, &Generator::act_peek},
        {2, &Generator::act_invalidate},
        {2, &Generator::act_mode_switch},
        {f_.control_bits ? 3u : 0u, &Generator::act_control_bit},
        {f_.cpl_ac_pkru ? 4u : 0u, &Generator::act_cpl_ac_pkru},
        {f_.address_spaces ? 3u : 0u, &Generator::act_cr3},
        {f_.memslot_changes ? 2u : 0u, &Generator::act_memslot},
        {f_.dirty_log ? 4u : 0u, &Generator::act_dirty_log},
        {f_.unmap ? 2u : 0u, &Generator::act_unmap},
        {f_.age ? 3u : 0u, &Generator::act_age},
        {1, &Generator::act_audit},
        {f_.stats ? 1u : 0u, &Generator::act_stats},
    };
    unsigned total = 0;
    for (const Action& a : actions) total += a.weight;
    uint64_t r = rng_.below(total);
    for (const Action& a : actions) {
      if (r < a.weight) {
        (this->*a.fn)();
        return;
      }
      r -= a.weight;
    }
  }

  void act_access() {
    VcpuModel& v = random_vcpu();
    const uint64_t r = rng_.below(100);
    const x86::AccessKind kind = r < 50 ? x86::AccessKind::Read : r < 85 ? x86::AccessKind::Write : x86::AccessKind::Fetch;
    const unsigned width = kind == x86::AccessKind::Fetch ? 1 : pick_width();
    const uint64_t gva = pick_access_page(v) | pick_offset(width);
    ++cov_.accesses;
    if (kind == x86::AccessKind::Write) return gen_write(v, gva, width, pick_value(width));
    gen_read(v, gva, kind, width);
  }

  void gen_read(VcpuModel& v, uint64_t gva, x86::AccessKind kind, unsigned width) {
    const DryRun d = dry_run(v, gva, kind);
    note_translated(v, gva, d);
    if (d.performed) note_gpa(d.gpa);
    Op o = make(kind == x86::AccessKind::Read ? OpKind::Read : OpKind::Fetch);
    o.id = v.id;
    o.addr = gva;
    o.width = static_cast<uint8_t>(width);
    emit(o);
  }

  int pick_space() {
    if (rng_.percent(70)) {
      const VcpuModel& v = random_vcpu();
      const x86::CpuState& s = ref_.vcpu(v.id).state();
      if (s.mode() != PagingMode::Off) return space_of(s);
    }
    return static_cast<int>(rng_.below(spaces_.size()));
  }

  void act_map() {
    if (spaces_.empty()) return act_access();
    const int sp = pick_space();
    const Fmt f = spaces_[sp].fmt;
    if (rng_.percent(70)) return map_random(sp, f, rng_.percent(20));
    // Change an entry of some table of this format.
    std::vector<uint32_t> cands;
    // Mostly leaves (an INVLPG does after a change); roots (PDPTs...) get their share.
    const uint64_t r = rng_.below(100);
    for (uint32_t k = 0; k < tables_.size(); ++k) {
      const Table& t = tables_[k];
      if (t.fmt != f || !slot(t.slot)) continue;
      if (r < 15 ? t.space >= 0 : r < 75 ? t.level == 1 : true) cands.push_back(k);
    }
    if (cands.empty()) return;
    const uint32_t t = rng_.pick(cands);
    const unsigned i = pick_entry(t);
    poke_entry(t, i, make_entry(t, i));
  }

  // An entry index of table `t`, often one in use.
  unsigned pick_entry(uint32_t t) {
    const unsigned n = entries_of(tables_[t].fmt, tables_[t].level);
    if (rng_.percent(60)) {
      std::vector<unsigned> used;
      for (unsigned i = 0; i < n; ++i)
        if (read_entry(tables_[t], i)) used.push_back(i);
      if (!used.empty()) return rng_.pick(used);
    }
    return static_cast<unsigned>(rng_.below(n));
  }

  void act_table_write() {
    VcpuModel& v = random_vcpu();
    const x86::CpuState s = state(v);
    const PagingMode m = s.mode();
    std::vector<uint32_t> cands;
    const bool leaves = rng_.percent(65);
    for (uint32_t k = 0; k < tables_.size(); ++k) {
      if (!slot(tables_[k].slot)) continue;
      if (m != PagingMode::Off && tables_[k].fmt != fmt_of(m)) continue;
      if (leaves && tables_[k].level != 1) continue;
      cands.push_back(k);
    }
    if (cands.empty()) return act_access();
    const uint32_t t = rng_.pick(cands);
    uint64_t page;
    if (m == PagingMode::Off) {
      page = *entry_gpa(tables_[t], 0) & ~x86::PAGE_OFFSET_MASK;
    } else {
      const Fmt f = fmt_of(m);
      const int sp = space_of(s);
      auto it = spaces_[sp].windows.find(t);
      if (it == spaces_[sp].windows.end() || rng_.percent(10)) {
        uint64_t leaf = pte::P | (tables_[t].home & ~x86::PAGE_OFFSET_MASK);
        if (rng_.percent(90)) leaf |= pte::RW;
        if (rng_.percent(70)) leaf |= pte::US;
        if (rng_.percent(50)) leaf |= pte::A;
        if (rng_.percent(30)) leaf |= pte::D;
        if (f != Fmt::Bits32 && rng_.percent(10)) leaf |= pte::XD;
        const uint64_t w = pick_gva(f, false, 1);
        if (!map(f, sp, false, w, 1, leaf)) return;
        spaces_[sp].windows[t] = w;
        ++cov_.windows;
      }
      page = spaces_[sp].windows[t];
    }
    gen_entry_write(v, page, t);
  }

  // A guest write to an entry of table `t` through `page`, a gva that maps the table's page.
  void gen_entry_write(VcpuModel& v, uint64_t page, uint32_t t) {
    const Table& tb = tables_[t];
    const unsigned es = entry_bytes(tb.fmt);
    const unsigned i = pick_entry(t);
    const uint64_t off = (tb.offset & x86::PAGE_OFFSET_MASK) + uint64_t{i} * es;
    unsigned width = es;
    uint64_t value = 0;
    if (tb.level == 1) {
      const uint64_t r = rng_.below(100);
      if (r < 50) {
        value = leaf_entry(tb.fmt, 1, tb.kernel);
      } else if (r < 80) {
        static const uint64_t flips[] = {pte::P, pte::RW, pte::US, pte::A, pte::D, pte::G, pte::XD};
        value = read_entry(tb, i) ^ flips[rng_.below(tb.fmt == Fmt::Bits32 ? 6 : 7)];
      } else {
        static const unsigned widths[] = {1, 2, 4};
        width = std::min(es, widths[rng_.below(3)]);
        value = pick_value(width);
        return gen_write(v, page + off + (es - width) * rng_.below(2), width, value);
      }
    }
    gen_write(v, page + off, width, value);
  }

  // ---- self-maps: page tables as data -------------------------------------------------------
  // A page-aligned gva of address space `sp` whose walk goes through a self-map entry, mostly one
  // that then reaches a page table as data; nullopt when `sp` has no self-map.
  std::optional<uint64_t> self_map_page(int sp) {
    const Fmt f = spaces_[sp].fmt;
    std::vector<std::pair<uint32_t, uint64_t>> starts;  // (table with a self-map, gva base it is read at)
    for (uint32_t k = 0; k < tables_.size(); ++k) {
      const Table& t = tables_[k];
      if (t.fmt != f || t.self < 0) continue;
      std::vector<std::pair<int, uint64_t>> paths;
      reach(k, t.level, paths, MAX_PATHS);  // some of them do
      for (const auto& [s, base] : paths)
        if (s == sp) starts.emplace_back(k, base);
    }
    if (starts.empty()) return std::nullopt;
    // Mostly the self-map of the root (or of the kernel PD), as a guest kernel uses it.
    std::pair<uint32_t, uint64_t> start = starts[0];
    for (const auto& st : starts)
      if (tables_[st.first].space == sp || (f == Fmt::Pae && tables_[st.first].kernel)) start = st;
    if (rng_.percent(30)) start = rng_.pick(starts);
    int32_t cur = static_cast<int32_t>(start.first);
    unsigned level = tables_[cur].level;
    uint64_t gva = start.second | static_cast<uint64_t>(tables_[cur].self) << shift_of(f, level);
    // Below the self-map, follow entries in use (or the self-map again), so that the page the
    // last entry names is mostly a table.
    while (--level >= 1) {
      unsigned idx;
      if (cur < 0) {
        idx = hot_index(entries_of(f, level));
      } else {
        const Table& t = tables_[cur];
        idx = t.self >= 0 && rng_.percent(30) ? static_cast<unsigned>(t.self) : used_entry(static_cast<uint32_t>(cur));
        if (!is_self(tables_[cur], idx)) cur = tables_[cur].level >= 2 ? tables_[cur].link[idx] : -1;
      }
      gva |= uint64_t{idx} << shift_of(f, level);
    }
    return sext(f, gva);
  }

  // An entry of table `t`, mostly one that is not zero.
  unsigned used_entry(uint32_t t) {
    const unsigned n = entries_of(tables_[t].fmt, tables_[t].level);
    std::vector<unsigned> used;
    for (unsigned i = 0; i < n; ++i)
      if (read_entry(tables_[t], i)) used.push_back(i);
    return !used.empty() && rng_.percent(85) ? rng_.pick(used) : static_cast<unsigned>(rng_.below(n));
  }

  void act_self_map() {
    VcpuModel& v = random_vcpu();
    const x86::CpuState s = state(v);
    if (s.mode() == PagingMode::Off) return act_access();
    const std::optional<uint64_t> page = self_map_page(space_of(s));
    if (!page) return act_access();
    ++cov_.accesses;
    ++cov_.self_map_accesses;
    const uint64_t r = rng_.below(100);
    if (r < 45) {
      // A write: to an entry when the page is a table, as a guest kernel edits its tables.
      const DryRun d = dry_run(v, *page, x86::AccessKind::Write);
      const PageRole role = d.performed ? role_of(d.gpa >> x86::PAGE_SHIFT) : PageRole{};
      const uint64_t before = cov_.guest_table_writes;
      if (role.table >= 0 && rng_.percent(90)) {
        gen_entry_write(v, *page, static_cast<uint32_t>(role.table));
      } else {
        const unsigned width = pick_width();
        gen_write(v, *page | pick_offset(width), width, pick_value(width));
      }
      if (cov_.guest_table_writes != before) ++cov_.self_map_writes;
      return;
    }
    const x86::AccessKind kind = r < 90 ? x86::AccessKind::Read : x86::AccessKind::Fetch;
    const unsigned width = kind == x86::AccessKind::Fetch ? 1 : pick_width();
    uint64_t off = pick_offset(width);
    if (kind == x86::AccessKind::Read && width == 8 && rng_.percent(60)) {
      // Mostly an entry in use when the page is a table: what a guest reads its tables for.
      const DryRun d = dry_run(v, *page, kind);
      const PageRole role = d.performed ? role_of(d.gpa >> x86::PAGE_SHIFT) : PageRole{};
      if (role.table >= 0) {
        const Table& t = tables_[role.table];
        if (entry_bytes(t.fmt) == 8) off = (t.offset & x86::PAGE_OFFSET_MASK) + uint64_t{used_entry(static_cast<uint32_t>(role.table))} * 8;
      }
    }
    gen_read(v, *page | off, kind, width);
  }

  void act_poke_data() {
    uint64_t gpa;
    const uint64_t r = rng_.below(10);
    if (r < 6) gpa = rng_.pick(hot_);
    else if (r < 8 && !recent_.empty()) gpa = rng_.pick(recent_) & ~x86::PAGE_OFFSET_MASK;
    else gpa = (TABLE_AREA_PAGES + rng_.below(main_size_ / PAGE - TABLE_AREA_PAGES)) * PAGE;
    if (!ref_.memslots().find(gpa >> x86::PAGE_SHIFT)) return;
    const unsigned width = pick_width();
    gen_poke(gpa | pick_offset(width), width, pick_value(width));
  }

  void act_peek() {
    uint64_t gpa;
    unsigned width;
    std::vector<uint32_t> present;
    for (uint32_t k = 0; k < tables_.size(); ++k)
      if (slot(tables_[k].slot)) present.push_back(k);
    if (rng_.percent(50) && !present.empty()) {
      const uint32_t t = rng_.pick(present);
      gpa = *entry_gpa(tables_[t], pick_entry(t));
      width = entry_bytes(tables_[t].fmt);
    } else {
      width = pick_width();
      const uint64_t page = !recent_.empty() && rng_.percent(60) ? rng_.pick(recent_) : rng_.pick(hot_);
      gpa = (page & ~x86::PAGE_OFFSET_MASK) | pick_offset(width);
      if (!ref_.memslots().find(gpa >> x86::PAGE_SHIFT)) return;
    }
    op_peek(gpa, width);
  }

  void act_invalidate() {
    VcpuModel& v = random_vcpu();
    if (rng_.percent(50)) return op_flush(v);
    op_invlpg(v, pick_access_page(v) | rng_.below(PAGE));
  }

  void act_mode_switch() { gen_mode_switch(random_vcpu()); }
  void act_control_bit() { gen_control_bit(random_vcpu()); }
  void act_cpl_ac_pkru() { gen_cpl_ac_pkru(random_vcpu()); }
  void act_cr3() { gen_cr3(random_vcpu()); }
  void act_audit() { emit(make(OpKind::Audit)); }
  void act_stats() { emit(make(OpKind::Stats)); }

  // ---- memslots -------------------------------------------------------------------------------
  // Page tables of a memslot that is gone: its pages read as zero now and when it comes back.
  void slot_lost(uint32_t id) {
    for (uint32_t k = 0; k < tables_.size(); ++k) {
      if (tables_[k].slot != id || tables_[k].level == 1) continue;
      for (unsigned i = 0; i < tables_[k].link.size(); ++i) relink(k, i, 0);
    }
    ++cov_.table_slot_changes;
  }

  bool transient_free(uint64_t gpa, uint64_t size, uint32_t ignore) const {
    for (uint32_t id = SLOT_TRANSIENT; id < SLOT_TRANSIENT + N_TRANSIENT; ++id) {
      if (id == ignore) continue;
      const guest::Memslot* s = slot(id);
      if (!s) continue;
      const uint64_t b = s->base_gfn() << x86::PAGE_SHIFT, e = s->end_gfn() << x86::PAGE_SHIFT;
      if (gpa < e && b < gpa + size) return false;
    }
    return true;
  }

  std::optional<uint64_t> transient_place(uint64_t size, uint32_t ignore) {
    const uint64_t align = std::min<uint64_t>(size >= 2 * MIB ? 2 * MIB : size, 2 * MIB);
    for (int attempt = 0; attempt < 12; ++attempt) {
      const uint64_t slots = (TRANSIENT_END - TRANSIENT_BASE - size) / align + 1;
      const uint64_t gpa = TRANSIENT_BASE + rng_.below(slots) * align;
      if (transient_free(gpa, size, ignore)) return gpa;
    }
    return std::nullopt;
  }

  void add_transient(uint32_t id) {
    static const uint64_t sizes[] = {PAGE, 2 * PAGE, 16 * PAGE, 64 * PAGE, 512 * PAGE, 512 * PAGE};
    const uint64_t size = sizes[rng_.below(std::size(sizes))];
    const auto gpa = transient_place(size, id);
    if (!gpa) return;
    const bool ro = f_.readonly_slot && rng_.percent(15);
    guest::HostPageSize host = guest::HostPageSize::Size4K;
    if (f_.huge_pages) {
      const uint64_t r = rng_.below(10);
      host = r < 4 ? guest::HostPageSize::Size2M : r < 5 ? guest::HostPageSize::Size1G : guest::HostPageSize::Size4K;
    }
    add_slot(id, *gpa, size, ro, f_.dirty_log && rng_.percent(20), host);
  }

  void act_memslot() {
    const uint64_t r = rng_.below(100);
    ++cov_.memslot_changes;
    if (r < 40) {
      const uint32_t id = SLOT_TRANSIENT + static_cast<uint32_t>(rng_.below(N_TRANSIENT));
      const guest::Memslot* s = slot(id);
      if (!s) return add_transient(id);
      if (rng_.percent(50)) return op_memslot_delete(id);
      if (auto gpa = transient_place(s->npages() * PAGE, id)) op_memslot_move(id, *gpa);
      return;
    }
    if (r < 65) {
      const guest::Memslot* s = slot(SLOT_TABLES);
      if (!s) {
        add_slot(SLOT_TABLES, TABLES_HOME, TABLES_SIZE, false, f_.dirty_log && rng_.percent(20), guest::HostPageSize::Size4K);
        return;
      }
      const bool home = (s->base_gfn() << x86::PAGE_SHIFT) == TABLES_HOME;
      if (rng_.percent(home ? 50 : 30)) {
        slot_lost(SLOT_TABLES);
        return op_memslot_delete(SLOT_TABLES);
      }
      ++cov_.table_slot_changes;
      return op_memslot_move(SLOT_TABLES, home ? TABLES_AWAY : TABLES_HOME);
    }
    if (r < 85 && f_.huge_pages) {
      const guest::Memslot* s = slot(SLOT_BIG);
      if (!s) return add_slot(SLOT_BIG, big_homes()[rng_.below(2)], big_size(), false, f_.dirty_log && rng_.percent(20), big_host());
      if (rng_.percent(40)) return op_memslot_delete(SLOT_BIG);
      const uint64_t base = s->base_gfn() << x86::PAGE_SHIFT;
      return op_memslot_move(SLOT_BIG, base == big_homes()[0] ? big_homes()[1] : big_homes()[0]);
    }
    if (f_.readonly_slot) {
      if (!slot(SLOT_RO)) return add_slot(SLOT_RO, RO_BASE, RO_SIZE, true, false, guest::HostPageSize::Size4K);
      slot_lost(SLOT_RO);
      op_memslot_delete(SLOT_RO);
    }
  }

  // A present memslot, weighted towards the ones with something in them.
  const guest::Memslot* pick_slot(bool writable) {
    std::vector<const guest::Memslot*> v;
    for (const guest::Memslot* s : ref_.memslots().slots()) {
      if (writable && s->readonly()) continue;
      v.push_back(s);
      if (s->id() == SLOT_MAIN) v.push_back(s), v.push_back(s);
    }
    return v.empty() ? nullptr : v[rng_.below(v.size())];
  }

  void act_dirty_log() {
    const guest::Memslot* s = pick_slot(true);
    if (!s) return;
    Op o = make(OpKind::DirtyLog);
    o.id = s->id();
    bool& got = last_get_[s->id()];
    if (!s->dirty_logging()) {
      const uint64_t r = rng_.below(10);
      o.dirty = r < 8 ? DirtyLogAction::Enable : r < 9 ? DirtyLogAction::Disable : DirtyLogAction::Clear;
    } else {
      const uint64_t r = rng_.below(100);
      if (got && r < 55) o.dirty = DirtyLogAction::Clear;
      else if (r < 80) o.dirty = DirtyLogAction::Get;
      else if (r < 90) o.dirty = DirtyLogAction::Disable;
      else o.dirty = DirtyLogAction::Enable;
    }
    got = o.dirty == DirtyLogAction::Get;
    emit(o);
  }

  // A 4 KiB-aligned range inside one present memslot, often around a recent access.
  std::optional<std::pair<uint64_t, uint64_t>> pick_range() {
    const guest::Memslot* s = nullptr;
    uint64_t first = 0;
    if (!recent_.empty() && rng_.percent(50)) {
      const uint64_t gpa = rng_.pick(recent_);
      s = ref_.memslots().find(gpa >> x86::PAGE_SHIFT);
      if (s) first = (gpa >> x86::PAGE_SHIFT) - s->base_gfn();
    }
    if (!s) {
      s = pick_slot(false);
      if (!s) return std::nullopt;
      first = rng_.below(std::min<uint64_t>(s->npages(), 1ull << 16));
    }
    const uint64_t r = rng_.below(10);
    uint64_t n;
    if (r < 3) {
      n = 1;
    } else if (r < 7) {
      n = rng_.range(2, 32);
    } else if (r < 9) {  // the 2 MiB region around it
      const uint64_t gfn = s->base_gfn() + first;
      const uint64_t lo = std::max<uint64_t>(gfn & ~511ull, s->base_gfn());
      first = lo - s->base_gfn();
      n = 512;
    } else {
      first = 0;
      n = s->npages();
    }
    n = std::min<uint64_t>({n, s->npages() - first, 1024});
    if (n == 0) return std::nullopt;
    return std::make_pair((s->base_gfn() + first) << x86::PAGE_SHIFT, n * PAGE);
  }

  void act_unmap() {
    auto r = pick_range();
    if (!r) return;
    Op o = make(OpKind::Unmap);
    o.addr = r->first;
    o.size = r->second;
    emit(o);
  }

  void act_age() {
    auto r = pick_range();
    if (!r) return;
    Op o = make(OpKind::Age);
    o.addr = r->first;
    o.size = r->second;
    emit(o);
  }

  // ---- the end: every table entry and the data written, then an audit ---------------------------
  void finale() {
    for (const Table& t : tables_) {
      const unsigned n = entries_of(t.fmt, t.level);
      for (unsigned i = 0; i < n; ++i) {
        const auto g = entry_gpa(t, i);
        if (g && read_entry(t, i)) op_peek(*g, entry_bytes(t.fmt));
      }
    }
    for (uint64_t gpa : written_)
      if (ref_.memslots().find(gpa >> x86::PAGE_SHIFT)) op_peek(gpa, 8);
    emit(make(OpKind::Audit));
    if (f_.stats) emit(make(OpKind::Stats));
  }

  // ---- ops ------------------------------------------------------------------------------------
  static Op make(OpKind k) {
    Op o;
    o.kind = k;
    return o;
  }

  void emit(Op op) {
    op.line = next_line_++;
    ops_.push_back(op);
    apply(ops_.back());
    if (in_main_) {
      ++main_ops_;
      if (p_.audit_every_op && op.kind != OpKind::Audit) {
        Op a = make(OpKind::Audit);
        a.line = next_line_++;
        ops_.push_back(a);
        apply(a);
      }
    }
  }

  void apply(const Op& op) {
    try {
      replayer_.apply(op);
    } catch (const ReplayError& e) {
      throw std::logic_error(fmt::format("RandomWorkload (seed {}) generated a malformed op at line {}: `{}`: {}", p_.seed,
                                         op.line, format_op(op), e.what()));
    }
  }

  void op_flush(VcpuModel& v) {
    const x86::CpuState s = state(v);
    if (s.mode() == PagingMode::Pae) {
      // A flush reloads the PDPTEs; it must not #GP (it would then drop nothing).
      const uint64_t base = s.cr3 & x86::cr3::PAE_PDPT_MASK;
      for (unsigned i = 0; i < 4; ++i) {
        const uint64_t e = ref_.read_guest(base + 8 * i, 8);
        if ((e & pte::P) && (e & x86::pae_pdpte_reserved_bits(model_.maxphyaddr)))
          throw std::logic_error(fmt::format("RandomWorkload (seed {}): the PDPT of vcpu {} has reserved bits", p_.seed, v.id));
      }
    }
    Op o = make(OpKind::Flush);
    o.id = v.id;
    ++cov_.flushes;
    emit(o);
    reset_cached(v);
  }

  void op_invlpg(VcpuModel& v, uint64_t gva) {
    if (!state(v).long_mode()) gva &= 0xffff'ffffull;
    Op o = make(OpKind::Invlpg);
    o.id = v.id;
    o.addr = gva;
    ++cov_.invlpgs;
    emit(o);
  }

  void op_peek(uint64_t gpa, unsigned width) {
    Op o = make(OpKind::Peek);
    o.addr = gpa;
    o.width = static_cast<uint8_t>(width);
    emit(o);
  }

  void op_memslot_delete(uint32_t id) {
    Op o = make(OpKind::MemslotDelete);
    o.id = id;
    last_get_.erase(id);
    emit(o);
  }

  void op_memslot_move(uint32_t id, uint64_t gpa) {
    Op o = make(OpKind::MemslotMove);
    o.id = id;
    o.addr = gpa;
    emit(o);
  }

  const RandomWorkloadParams& p_;
  const RandomWorkloadFeatures& f_;
  std::vector<Op>& ops_;
  RandomWorkloadCoverage& cov_;
  Rng rng_;
  Vm ref_;
  Replayer replayer_;

  std::vector<PagingMode> modes_;
  bool fmt_used_[N_FMTS] = {false, false, false, false};
  x86::CpuModel model_;
  uint64_t frame_mask_ = 0;
  uint64_t main_size_ = 16 * MIB;

  std::vector<Table> tables_;
  std::unordered_map<uint64_t, uint32_t> by_home_;
  std::map<std::pair<uint32_t, uint64_t>, int32_t> pool_;  // (slot, page) -> table, or -1 while free
  std::map<unsigned, uint64_t> pinned_[N_FMTS];
  unsigned self_index_[N_FMTS] = {0, 0, 0, 0};  // of the self-map of every root (PAE: of the kernel PD)
  uint64_t root_self_flags_[N_FMTS] = {0, 0, 0, 0};
  std::vector<Space> spaces_;
  std::vector<Mapped> kernel_gvas_[N_FMTS];
  std::vector<VcpuModel> vcpus_;

  std::vector<uint64_t> hot_, alias_, recent_;
  std::set<uint64_t> written_;
  std::map<uint32_t, bool> last_get_;

  uint64_t next_line_ = 3;  // line 1: `vmt 1`, line 2: a comment
  uint64_t main_ops_ = 0;
  bool in_main_ = false;
};

const char* host_name(guest::HostPageSize h) {
  return h == guest::HostPageSize::Size1G ? "1g" : h == guest::HostPageSize::Size2M ? "2m" : "4k";
}

}  // namespace

std::string RandomWorkloadParams::describe() const {
  std::string modes_text;
  for (x86::PagingMode m : modes) modes_text += std::string(modes_text.empty() ? "" : ",") + x86::name(m);
  const RandomWorkloadFeatures& f = features;
  const RandomWorkloadFeatures all{};
  std::string off;
  auto feature = [&](bool on, bool def, const char* name) {
    if (on != def) off += std::string(off.empty() ? "" : ",") + (on ? "+" : "-") + name;
  };
  feature(f.huge_pages, all.huge_pages, "huge_pages");
  feature(f.global_pages, all.global_pages, "global_pages");
  feature(f.reserved_bits, all.reserved_bits, "reserved_bits");
  feature(f.table_writes, all.table_writes, "table_writes");
  feature(f.aliases, all.aliases, "aliases");
  feature(f.address_spaces, all.address_spaces, "address_spaces");
  feature(f.control_bits, all.control_bits, "control_bits");
  feature(f.cpl_ac_pkru, all.cpl_ac_pkru, "cpl_ac_pkru");
  feature(f.mmio, all.mmio, "mmio");
  feature(f.readonly_slot, all.readonly_slot, "readonly_slot");
  feature(f.memslot_changes, all.memslot_changes, "memslot_changes");
  feature(f.dirty_log, all.dirty_log, "dirty_log");
  feature(f.unmap, all.unmap, "unmap");
  feature(f.age, all.age, "age");
  feature(f.peek, all.peek, "peek");
  feature(f.stats, all.stats, "stats");
  feature(f.self_map, all.self_map, "self_map");
  return fmt::format("seed={} ops={} guest_memory={}M vcpus={} modes={} features={} big_slot={} audit_every_op={} cpu={}", seed,
                     ops, guest_memory >> 20, vcpus, modes_text, off.empty() ? "all" : off, big_slot_1g ? "1g" : "2m",
                     audit_every_op ? 1 : 0, random_cpu_model ? "random" : "default") +
         (entropy.empty() ? "" : fmt::format(" entropy={}B", entropy.size()));
}

RandomWorkload::RandomWorkload(const RandomWorkloadParams& params) : params_(params) {
  Generator(params_, ops_, coverage_).run();
}

std::string format_op(const Op& op) {
  std::string s(op_name(op.kind));
  auto add = [&](const std::string& t) {
    s += ' ';
    s += t;
  };
  auto hex = [](uint64_t v) { return fmt::format("0x{:x}", v); };
  switch (op.kind) {
    case OpKind::Cpu:
      if (op.maxphyaddr) add(fmt::format("maxphyaddr={}", *op.maxphyaddr));
      if (op.gbpages) add(fmt::format("gbpages={}", *op.gbpages ? 1 : 0));
      if (op.la57) add(fmt::format("la57={}", *op.la57 ? 1 : 0));
      break;
    case OpKind::Memslot:
      add(std::to_string(op.id));
      add(hex(op.addr));
      add(hex(op.size));
      if (op.readonly) add("ro");
      if (op.log) add("log");
      if (op.host_page != guest::HostPageSize::Size4K) add(std::string("host=") + host_name(op.host_page));
      break;
    case OpKind::MemslotDelete:
    case OpKind::Vcpu:
    case OpKind::Flush: add(std::to_string(op.id)); break;
    case OpKind::MemslotMove:
    case OpKind::Cr3:
    case OpKind::Fetch:
    case OpKind::Invlpg:
      add(std::to_string(op.id));
      add(hex(op.addr));
      break;
    case OpKind::Regs:
      add(std::to_string(op.id));
      if (op.regs.cr0) add("cr0=" + hex(*op.regs.cr0));
      if (op.regs.cr3) add("cr3=" + hex(*op.regs.cr3));
      if (op.regs.cr4) add("cr4=" + hex(*op.regs.cr4));
      if (op.regs.efer) add("efer=" + hex(*op.regs.efer));
      if (op.regs.cpl) add(fmt::format("cpl={}", unsigned{*op.regs.cpl}));
      if (op.regs.ac) add(fmt::format("ac={}", *op.regs.ac ? 1 : 0));
      if (op.regs.pkru) add("pkru=" + hex(*op.regs.pkru));
      break;
    case OpKind::Poke:
      add(hex(op.addr));
      add(std::to_string(op.width));
      add(hex(op.value));
      break;
    case OpKind::Read:
      add(std::to_string(op.id));
      add(hex(op.addr));
      add(std::to_string(op.width));
      break;
    case OpKind::Write:
      add(std::to_string(op.id));
      add(hex(op.addr));
      add(std::to_string(op.width));
      add(hex(op.value));
      break;
    case OpKind::Peek:
      add(hex(op.addr));
      add(std::to_string(op.width));
      break;
    case OpKind::DirtyLog: {
      add(std::to_string(op.id));
      static const char* actions[] = {"enable", "disable", "get", "clear"};
      add(actions[static_cast<unsigned>(op.dirty)]);
      break;
    }
    case OpKind::Unmap:
    case OpKind::Age:
      add(hex(op.addr));
      add(hex(op.size));
      break;
    case OpKind::Audit:
    case OpKind::Stats: break;
  }
  return s;
}

void write_vmt(std::ostream& out, const std::vector<Op>& ops, std::string_view comment) {
  std::string note(comment);
  std::replace(note.begin(), note.end(), '\n', ' ');
  bool noted = note.empty();
  out << "vmt 1\n";
  uint64_t line = 2;
  for (const Op& op : ops) {
    if (op.line < line) throw std::invalid_argument(fmt::format("write_vmt: op line {} comes after line {}", op.line, line - 1));
    for (; line < op.line; ++line) {
      if (!noted) {
        out << "# " << note;
        noted = true;
      }
      out << '\n';
    }
    out << format_op(op) << '\n';
    ++line;
  }
  if (!noted) out << "# " << note << '\n';
}

}  // namespace vmmu::sim
