// Security invariants (issue 7, item 2): a guest never gets more than its page tables and the
// host allow, whatever it or the VMM does to its tables and memslots. Every test drives a
// --mmu=none reference and the engine under test with the same operations, requires identical
// results (status, gpa, value, fault) for every access, and ends with a clean audit.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "vm/vm.hpp"
#include "x86/control_registers.hpp"
#include "x86/page_table_entry.hpp"

namespace vmmu {
namespace {

using guest::HostPageSize;
using x86::AccessKind;
using Status = AccessResult::Status;
namespace pte = x86::pte;
namespace pfec = x86::pfec;

constexpr uint64_t MIB = 1ull << 20, GIB = 1ull << 30;
constexpr uint64_t LONG_CR0 = x86::cr0::PG | x86::cr0::PE | x86::cr0::WP;
constexpr uint64_t FLAGS = pte::P | pte::RW | pte::US;
constexpr uint64_t POISON = 0x6b6b'6b6b'6b6b'6b6bull;

enum class Engine { None, Tdp, Shadow, ShadowSync };

const char* engine_name(Engine e) {
  switch (e) {
    case Engine::None: return "none";
    case Engine::Tdp: return "tdp";
    case Engine::Shadow: return "shadow";
    case Engine::ShadowSync: return "shadow_unsync_off";
  }
  return "?";
}

VmConfig config(Engine e) {
  VmConfig c;
  c.mmu = e == Engine::None ? MmuKind::None : e == Engine::Tdp ? MmuKind::Tdp : MmuKind::Shadow;
  c.shadow.unsync = e != Engine::ShadowSync;
  return c;
}

RegisterUpdate paging(uint64_t cr0, uint64_t cr3, uint64_t cr4, uint64_t efer) {
  RegisterUpdate u;
  u.cr0 = cr0;
  u.cr3 = cr3;
  u.cr4 = cr4;
  u.efer = efer;
  return u;
}
RegisterUpdate cpl(uint8_t level) {
  RegisterUpdate u;
  u.cpl = level;
  return u;
}
RegisterUpdate ac(bool on) {
  RegisterUpdate u;
  u.ac = on;
  return u;
}
RegisterUpdate cr0_only(uint64_t cr0) {
  RegisterUpdate u;
  u.cr0 = cr0;
  return u;
}

std::string describe(const AccessResult& r) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "status=%d gpa=0x%llx value=0x%llx fault=(%u, 0x%x, 0x%llx)", int(r.status),
                static_cast<unsigned long long>(r.gpa), static_cast<unsigned long long>(r.value), unsigned(r.fault.vector),
                unsigned(r.fault.error_code), static_cast<unsigned long long>(r.fault.address));
  return buf;
}

// The same op sequence on the reference (vms_[0], --mmu=none) and on the engine under test.
class Pair {
 public:
  explicit Pair(Engine e, x86::CpuModel model = {}) {
    for (Engine k : {Engine::None, e}) {
      vms_.push_back(std::make_unique<Vm>(config(k)));
      vms_.back()->set_cpu_model(model);
    }
  }
  Vm& ref() { return *vms_[0]; }
  Vm& engine() { return *vms_[1]; }
  unsigned completed() const { return completed_; }  // accesses that reached memory
  // The shadow audit of a 1 GiB guest page costs ~10 ms: such tests audit at their steps only.
  void audit_each_access(bool on) { audit_each_access_ = on; }

  void slot(const MemslotSpec& s) { each([&](Vm& vm) { vm.add_memslot(s); }); }
  void delete_slot(uint32_t id) { each([&](Vm& vm) { vm.delete_memslot(id); }); }
  void move_slot(uint32_t id, uint64_t gpa) { each([&](Vm& vm) { vm.move_memslot(id, gpa); }); }
  void unmap(uint64_t gpa, uint64_t size) { each([&](Vm& vm) { vm.unmap(gpa, size); }); }
  void poke(uint64_t gpa, unsigned width, uint64_t value) { each([&](Vm& vm) { vm.write_guest(gpa, width, value); }); }
  uint64_t peek(uint64_t gpa, unsigned width = 8) {
    const uint64_t v = ref().read_guest(gpa, width);
    EXPECT_EQ(engine().read_guest(gpa, width), v) << "peek 0x" << std::hex << gpa;
    return v;
  }

  // Later ops act on this vCPU.
  void use(uint32_t id) { cur_ = id; }
  void long_mode(uint64_t cr3, uint64_t cr0 = LONG_CR0, uint32_t id = 0) {
    each([&](Vm& vm) {
      Vcpu& v = vm.create_vcpu(id);
      EXPECT_FALSE(v.set_registers(paging(cr0, cr3, x86::cr4::PAE, x86::efer::LME | x86::efer::NXE)));
    });
  }
  void vcpu_with(const RegisterUpdate& u) {
    each([&](Vm& vm) { EXPECT_FALSE(vm.create_vcpu(cur_).set_registers(u)); });
  }
  void regs(const RegisterUpdate& u) { each([&](Vm& vm) { EXPECT_FALSE(vm.vcpu(cur_).set_registers(u)); }); }
  void invlpg(uint64_t gva) { each([&](Vm& vm) { vm.vcpu(cur_).invlpg(gva); }); }
  void flush() { each([&](Vm& vm) { EXPECT_FALSE(vm.vcpu(cur_).flush()); }); }
  void cr3(uint64_t value) { each([&](Vm& vm) { EXPECT_FALSE(vm.vcpu(cur_).mov_cr3(value)); }); }

  // One guest access in both; the results must be identical. Returns the reference's.
  AccessResult access(uint64_t gva, AccessKind kind, unsigned width = 8, uint64_t value = 0) {
    const AccessResult want = ref().vcpu(cur_).access(gva, kind, width, value);
    const AccessResult got = engine().vcpu(cur_).access(gva, kind, width, value);
    const bool same = want.status == got.status && want.gpa == got.gpa && want.value == got.value && want.fault == got.fault;
    EXPECT_TRUE(same) << x86::name(kind) << " 0x" << std::hex << gva << " in " << name(engine().mmu_kind()) << "\n  none:   "
                      << describe(want) << "\n  engine: " << describe(got);
    if (audit_each_access_) audit();
    completed_ += want.ok();
    return want;
  }
  AccessResult read(uint64_t gva) { return access(gva, AccessKind::Read); }
  AccessResult write(uint64_t gva, uint64_t value, unsigned width = 8) { return access(gva, AccessKind::Write, width, value); }
  AccessResult fetch(uint64_t gva) { return access(gva, AccessKind::Fetch, 1); }

  void audit() {
    for (auto& vm : vms_) {
      const auto v = vm->audit();
      EXPECT_TRUE(v.empty()) << name(vm->mmu_kind()) << ": " << (v.empty() ? "" : v.front());
    }
  }

 private:
  template <class F>
  void each(F f) {
    for (auto& vm : vms_) f(*vm);
  }
  std::vector<std::unique_ptr<Vm>> vms_;
  uint32_t cur_ = 0;
  unsigned completed_ = 0;
  bool audit_each_access_ = true;
};

// 4-level tables built by the VMM (pokes to both Vms) in a table area.
class Tables4 {
 public:
  Tables4(Pair& p, uint64_t area) : p_(p), next_(area) { root_ = allocate(); }
  uint64_t root() const { return root_; }
  uint64_t allocate() {
    const uint64_t a = next_;
    next_ += 4096;
    return a;
  }
  // The gpa of the entry that translates `gva` at `level` (tables above must be present).
  uint64_t entry(uint64_t gva, unsigned level) {
    uint64_t table = root_;
    for (unsigned l = 4; l > level; --l) table = p_.ref().read_guest(slot_of(table, gva, l), 8) & pte::ADDR_MASK_52;
    return slot_of(table, gva, level);
  }
  // Maps `gva` to `gpa` with a leaf at `level` (PS above 1); returns the leaf entry's gpa.
  uint64_t map(uint64_t gva, uint64_t gpa, uint64_t flags = FLAGS, unsigned level = 1) {
    uint64_t table = root_;
    for (unsigned l = 4; l > level; --l) {
      const uint64_t at = slot_of(table, gva, l);
      uint64_t e = p_.ref().read_guest(at, 8);
      if (!(e & pte::P)) {
        e = allocate() | FLAGS;
        p_.poke(at, 8, e);
      }
      table = e & pte::ADDR_MASK_52;
    }
    const uint64_t at = slot_of(table, gva, level);
    p_.poke(at, 8, gpa | flags | (level > 1 ? pte::PS : 0));
    return at;
  }

 private:
  static uint64_t slot_of(uint64_t table, uint64_t gva, unsigned level) { return table + ((gva >> (12 + 9 * (level - 1))) & 511) * 8; }
  Pair& p_;
  uint64_t next_, root_ = 0;
};

// The canonical gva with these four table indices.
uint64_t gva_of(uint64_t i4, uint64_t i3, uint64_t i2, uint64_t i1, uint64_t offset = 0) {
  uint64_t g = (i4 << 39) | (i3 << 30) | (i2 << 21) | (i1 << 12) | offset;
  if (i4 & 256) g |= 0xffff'0000'0000'0000ull;
  return g;
}

// A small LCG: the op sequence is fixed, so failures reproduce.
struct Lcg {
  uint64_t x;
  uint64_t next() {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return x >> 17;
  }
};

class Security : public ::testing::TestWithParam<Engine> {};

// The usual guest: 16 MiB of RAM at 0 (tables from 0x10000), a data page at 2 MiB, long mode.
constexpr uint64_t TABLES = 0x10000, DATA = 0x20'0000, DATA_GVA = 0x4000'0000;
// Another PML4 entry: changing any table above the data page leaves the window in place.
constexpr uint64_t WINDOW_GVA = 1ull << 39;

// ---- 1. no SPTE grants more than the guest's entries ------------------------------------------

using SecurityRights = Security;

// Removes `right` (RW or US) or adds XD on the entry of `level` that translates the data page
// (a 4 KiB, 2 MiB or 1 GiB leaf), by a poke or by the guest writing its own table through a window;
// then invalidates as the contract asks and checks every kind of access at CPL 3 and 0.
void remove_right(Engine e, unsigned leaf_level, unsigned level, uint64_t right, bool by_guest) {
  SCOPED_TRACE(::testing::Message() << "leaf level " << leaf_level << ", entry level " << level << ", right 0x" << std::hex
                                    << right << (by_guest ? ", guest write" : ", poke"));
  Pair p(e);
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.slot({.id = 1, .gpa = 32 * MIB, .size = 4 * MIB, .host_page = HostPageSize::Size2M});
  if (leaf_level == 3) {
    p.slot({.id = 2, .gpa = GIB, .size = GIB, .host_page = HostPageSize::Size1G});
    p.audit_each_access(false);
  }
  Tables4 t(p, TABLES);
  const uint64_t data = leaf_level == 1 ? DATA : leaf_level == 2 ? 32 * MIB : GIB;
  t.map(DATA_GVA, data, FLAGS, leaf_level);
  p.poke(data + 0x10, 8, 0x1234);
  const uint64_t at = t.entry(DATA_GVA, level);
  t.map(WINDOW_GVA, at & ~0xfffull);  // the table holding the entry, as data
  p.long_mode(t.root());
  for (uint8_t c : {3, 0}) {  // fill every cache with the full rights first
    p.regs(cpl(c));
    ASSERT_TRUE(p.read(DATA_GVA + 0x10).ok());
    ASSERT_TRUE(p.write(DATA_GVA + 0x18, c).ok());
    ASSERT_TRUE(p.fetch(DATA_GVA + 0x20).ok());
  }
  p.audit();
  const uint64_t old = p.peek(at);
  const uint64_t changed = right == pte::XD ? old | pte::XD : old & ~right;
  if (by_guest) {
    ASSERT_TRUE(p.write(WINDOW_GVA + (at & 0xfff), changed).ok());
  } else {
    p.poke(at, 8, changed);
  }
  if (level == leaf_level) {
    p.invlpg(DATA_GVA);
  } else {
    p.cr3(t.root());  // a non-leaf change: the contract asks for a cr3, flush or regs change
  }
  p.audit();
  for (uint8_t c : {3, 0}) {
    p.regs(cpl(c));
    const uint32_t u = c == 3 ? pfec::U : 0;
    const AccessResult r = p.read(DATA_GVA + 0x10);
    const AccessResult w = p.write(DATA_GVA + 0x18, 0x99);
    const AccessResult f = p.fetch(DATA_GVA + 0x20);
    if (right == pte::RW) {
      EXPECT_TRUE(r.ok());
      EXPECT_EQ(w.status, Status::Fault);
      EXPECT_EQ(w.fault.error_code, pfec::P | pfec::W | u);  // CR0.WP=1: the supervisor too
      EXPECT_TRUE(f.ok());
    } else if (right == pte::US) {
      EXPECT_EQ(r.ok(), c == 0);
      EXPECT_EQ(w.ok(), c == 0);
      EXPECT_EQ(f.ok(), c == 0);
      if (c == 3) {
        EXPECT_EQ(r.fault.error_code, pfec::P | pfec::U);
      }
    } else {
      EXPECT_TRUE(r.ok());
      EXPECT_TRUE(w.ok());
      EXPECT_EQ(f.status, Status::Fault);
      EXPECT_EQ(f.fault.error_code, pfec::P | pfec::I | u);
    }
  }
  EXPECT_EQ(p.peek(data + 0x18), right == pte::RW ? 0u : 0x99u);
  p.audit();
}

TEST_P(SecurityRights, RemovingWUOrAddingNxOnA4KLeafOrAnyTableAboveFaultsLikeTheReference) {
  for (unsigned level = 1; level <= 4; ++level)
    for (uint64_t right : {pte::RW, pte::US, pte::XD})
      for (bool by_guest : {false, true}) remove_right(GetParam(), 1, level, right, by_guest);
}

TEST_P(SecurityRights, RemovingWUOrAddingNxOnAHugeLeafOrAnyTableAboveFaultsLikeTheReference) {
  for (unsigned level = 2; level <= 4; ++level)
    for (uint64_t right : {pte::RW, pte::US, pte::XD})
      for (bool by_guest : {false, true}) remove_right(GetParam(), 2, level, right, by_guest);
}

TEST_P(SecurityRights, RemovingWUOrAddingNxOnAGibLeafOrThePml4EntryFaultsLikeTheReference) {
  for (unsigned level = 3; level <= 4; ++level)
    for (uint64_t right : {pte::RW, pte::US, pte::XD})
      for (bool by_guest : {false, true}) remove_right(GetParam(), 3, level, right, by_guest);
}

// A read-only leaf under a writable table and the reverse: the rights are the AND of all levels.
TEST_P(SecurityRights, RightsAreTheIntersectionOfEveryLevel) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  t.map(DATA_GVA, DATA, pte::P | pte::US);                  // leaf read-only
  t.map(DATA_GVA + 2 * MIB, DATA + 0x1000, FLAGS | pte::XD);  // leaf NX, other PT
  const uint64_t pde = t.entry(DATA_GVA + 4 * MIB, 2);
  t.map(DATA_GVA + 4 * MIB, DATA + 0x2000);
  p.poke(pde, 8, (p.peek(pde) & ~pte::US));  // supervisor-only table above a user leaf
  p.long_mode(t.root());
  p.regs(cpl(3));
  EXPECT_EQ(p.write(DATA_GVA, 1).fault.error_code, pfec::P | pfec::W | pfec::U);
  EXPECT_EQ(p.fetch(DATA_GVA + 2 * MIB).fault.error_code, pfec::P | pfec::U | pfec::I);
  EXPECT_EQ(p.read(DATA_GVA + 4 * MIB).fault.error_code, pfec::P | pfec::U);
  p.regs(cpl(0));
  EXPECT_EQ(p.write(DATA_GVA, 1).fault.error_code, pfec::P | pfec::W);
  EXPECT_TRUE(p.write(DATA_GVA + 4 * MIB, 1).ok());
  p.regs(cpl(3));
  EXPECT_EQ(p.read(DATA_GVA + 4 * MIB).fault.error_code, pfec::P | pfec::U);  // not from the cache
  p.audit();
}

// One page table under two PDEs (two gvas): the guest removes W from a PTE through a window
// (under unsync the table goes out of sync) and invalidates both gvas: neither may still write.
TEST_P(SecurityRights, AnAliasedPageTableLosesWAtBothAddresses) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  const uint64_t a = DATA_GVA, b = DATA_GVA + 64 * MIB;
  const uint64_t leaf = t.map(a, DATA);
  t.map(b, DATA);  // builds b's page table, then shares a's instead
  p.poke(t.entry(b, 2), 8, p.peek(t.entry(a, 2)));
  t.map(WINDOW_GVA, leaf & ~0xfffull);
  p.long_mode(t.root());
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(p.write(a, 1).ok());
    ASSERT_TRUE(p.write(b + 8, 2).ok());
    ASSERT_TRUE(p.write(WINDOW_GVA + (leaf & 0xfff), p.peek(leaf) & ~pte::RW).ok());
    p.invlpg(a);
    p.invlpg(b);
    EXPECT_EQ(p.write(a, 3).fault.error_code, pfec::P | pfec::W);
    EXPECT_EQ(p.write(b, 3).fault.error_code, pfec::P | pfec::W);
    EXPECT_EQ(p.read(b + 8).value, 2u);
    ASSERT_TRUE(p.write(WINDOW_GVA + (leaf & 0xfff), p.peek(leaf) | pte::RW).ok());
    p.invlpg(a);
    p.invlpg(b);
  }
  EXPECT_EQ(p.peek(DATA), 1u);
  p.audit();
}

// SMEP and SMAP take rights from the supervisor that the SPTE of a user access must not give back.
TEST_P(SecurityRights, SmepAndSmapHoldAfterUserAccesses) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  t.map(DATA_GVA, DATA);
  p.vcpu_with(paging(LONG_CR0, t.root(), x86::cr4::PAE | x86::cr4::SMEP | x86::cr4::SMAP, x86::efer::LME | x86::efer::NXE));
  for (int round = 0; round < 2; ++round) {
    p.regs(cpl(3));
    ASSERT_TRUE(p.fetch(DATA_GVA).ok());
    ASSERT_TRUE(p.write(DATA_GVA, 1).ok());
    p.regs(cpl(0));
    EXPECT_EQ(p.fetch(DATA_GVA).fault.error_code, pfec::P | pfec::I);
    EXPECT_EQ(p.read(DATA_GVA).fault.error_code, pfec::P);
    EXPECT_EQ(p.write(DATA_GVA, 2).fault.error_code, pfec::P | pfec::W);
    p.regs(ac(true));
    EXPECT_TRUE(p.write(DATA_GVA, 3).ok());
    EXPECT_EQ(p.fetch(DATA_GVA).fault.error_code, pfec::P | pfec::I);  // AC does not lift SMEP
    p.regs(ac(false));
  }
  EXPECT_EQ(p.peek(DATA), 3u);
  p.audit();
}

// ---- 2. no mapping survives what removes it -----------------------------------------------------

using SecurityStale = Security;

TEST_P(SecurityStale, AfterMemslotDeleteAccessesAreMmioAndAReaddedSlotIsFresh) {
  for (HostPageSize host : {HostPageSize::Size4K, HostPageSize::Size2M}) {
    Pair p(GetParam());
    p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
    p.slot({.id = 1, .gpa = 32 * MIB, .size = 2 * MIB, .host_page = host});
    Tables4 t(p, TABLES);
    t.map(DATA_GVA, 32 * MIB);
    t.map(DATA_GVA + 2 * MIB, 32 * MIB, FLAGS, 2);  // the same memory through a huge leaf too
    p.long_mode(t.root());
    ASSERT_TRUE(p.write(DATA_GVA + 8, 0x5555).ok());
    ASSERT_EQ(p.read(DATA_GVA + 2 * MIB + 8).value, 0x5555u);
    p.delete_slot(1);
    for (uint64_t gva : {DATA_GVA + 8, DATA_GVA + 2 * MIB + 8}) {
      const AccessResult r = p.read(gva);
      EXPECT_EQ(r.status, Status::Mmio);
      EXPECT_EQ(r.gpa, 32 * MIB + 8);
      EXPECT_EQ(p.write(gva, 1).status, Status::Mmio);
      EXPECT_EQ(p.fetch(gva).status, Status::Mmio);
    }
    p.slot({.id = 1, .gpa = 32 * MIB, .size = 2 * MIB, .host_page = host});  // new, zeroed memory
    EXPECT_EQ(p.read(DATA_GVA + 8).value, 0u);
    EXPECT_EQ(p.read(DATA_GVA + 2 * MIB + 8).value, 0u);
    p.audit();
  }
}

TEST_P(SecurityStale, AfterMemslotDeleteTablesInItAreNotPresent) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.slot({.id = 2, .gpa = 64 * MIB, .size = MIB});
  Tables4 t(p, TABLES);
  Tables4 far(p, 64 * MIB);  // only its lower tables are used: PML4[2] points at its PDPT
  far.map(DATA_GVA, DATA);
  p.poke(t.root() + 16, 8, p.peek(far.root()));  // gva 1 TiB + x walks the tables in slot 2
  p.long_mode(t.root());
  const uint64_t gva = (2ull << 39) + DATA_GVA;
  ASSERT_TRUE(p.write(gva, 7).ok());
  p.delete_slot(2);
  const AccessResult r = p.read(gva);
  EXPECT_EQ(r.status, Status::Fault);
  EXPECT_EQ(r.fault.error_code, 0u);  // the walk reads an entry outside every memslot: P=0
  EXPECT_EQ(p.write(gva, 8).fault.error_code, pfec::W);
  EXPECT_EQ(p.peek(DATA), 7u);
  p.audit();
}

TEST_P(SecurityStale, AfterMemslotMoveTheNewPlaceHasTheDataAndTheOldIsMmio) {
  for (HostPageSize host : {HostPageSize::Size4K, HostPageSize::Size2M}) {
    Pair p(GetParam());
    p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
    p.slot({.id = 1, .gpa = 32 * MIB, .size = 2 * MIB, .host_page = host});
    Tables4 t(p, TABLES);
    const uint64_t old_gva = DATA_GVA, new_gva = DATA_GVA + 2 * MIB;
    t.map(old_gva, 32 * MIB + 0x3000);
    t.map(new_gva, 48 * MIB + 0x3000);
    p.long_mode(t.root());
    ASSERT_TRUE(p.write(old_gva + 0x10, 0xabcd).ok());
    ASSERT_EQ(p.read(new_gva + 0x10).status, Status::Mmio);  // nothing there yet
    p.move_slot(1, 48 * MIB);
    EXPECT_EQ(p.read(old_gva + 0x10).status, Status::Mmio);
    EXPECT_EQ(p.write(old_gva + 0x10, 1).status, Status::Mmio);
    EXPECT_EQ(p.read(new_gva + 0x10).value, 0xabcdu);
    ASSERT_TRUE(p.write(new_gva + 0x18, 0xef).ok());
    p.move_slot(1, 32 * MIB);  // and back
    EXPECT_EQ(p.read(new_gva + 0x10).status, Status::Mmio);
    EXPECT_EQ(p.read(old_gva + 0x18).value, 0xefu);
    p.audit();
  }
}

TEST_P(SecurityStale, AfterMemslotMoveTablesThatLivedInItAreNotPresent) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.slot({.id = 2, .gpa = 64 * MIB, .size = MIB});
  Tables4 t(p, TABLES);
  Tables4 far(p, 64 * MIB);
  far.map(DATA_GVA, DATA);
  p.poke(t.root() + 16, 8, p.peek(far.root()));
  p.long_mode(t.root());
  const uint64_t gva = (2ull << 39) + DATA_GVA;
  ASSERT_TRUE(p.write(gva, 7).ok());
  p.move_slot(2, 80 * MIB);  // PML4[2] now points at nothing
  EXPECT_EQ(p.read(gva).fault.error_code, 0u);
  // PML4[2] follows the moved PDPT (a change of a present entry: flush).
  p.poke(t.root() + 16, 8, p.peek(t.root() + 16) + 16 * MIB);
  p.flush();
  // The PDPT's own pointers still name 64 MiB: the next level is outside every slot.
  EXPECT_EQ(p.read(gva).status, Status::Fault);
  p.audit();
}

TEST_P(SecurityStale, UnmapKeepsTheDataAndNeverShowsTheOldFrame) {
  for (HostPageSize host : {HostPageSize::Size4K, HostPageSize::Size2M}) {
    Pair p(GetParam());
    p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
    p.slot({.id = 1, .gpa = 32 * MIB, .size = 4 * MIB, .host_page = host});
    Tables4 t(p, TABLES);
    t.map(DATA_GVA, 32 * MIB + 0x5000);
    t.map(DATA_GVA + 2 * MIB, 32 * MIB, FLAGS, 2);  // the same page through a huge leaf
    p.long_mode(t.root());
    for (uint64_t round = 1; round <= 3; ++round) {
      ASSERT_TRUE(p.write(DATA_GVA + 0x20, round).ok());
      ASSERT_EQ(p.read(DATA_GVA + 2 * MIB + 0x5020).value, round);
      ASSERT_TRUE(p.fetch(DATA_GVA + 2 * MIB + 0x5020).ok());
      p.unmap(32 * MIB + 0x5000, 0x1000);
      for (uint64_t gva : {DATA_GVA + 0x20, DATA_GVA + 2 * MIB + 0x5020}) {
        const AccessResult r = p.read(gva);
        EXPECT_EQ(r.value, round);
        EXPECT_NE(r.value, POISON);
      }
      // A write through any old mapping would land in the poisoned frame, unseen by the VMM.
      ASSERT_TRUE(p.write(DATA_GVA + 2 * MIB + 0x5028, round * 10).ok());
      EXPECT_EQ(p.peek(32 * MIB + 0x5028), round * 10);
      EXPECT_EQ(p.peek(32 * MIB + 0x5020), round);
      p.unmap(32 * MIB, 4 * MIB);  // the whole slot, huge mappings included
      EXPECT_EQ(p.read(DATA_GVA + 0x28).value, round * 10);
    }
    p.audit();
  }
}

// Page tables moved by the host: the guest's own tables are read and written on new frames.
TEST_P(SecurityStale, UnmapOfThePageTablesKeepsTheirContentsCoherent) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  const uint64_t leaf = t.map(DATA_GVA, DATA);
  t.map(WINDOW_GVA, leaf & ~0xfffull);
  p.poke(DATA + 0x1000, 8, 0x2222);
  p.long_mode(t.root());
  ASSERT_TRUE(p.write(DATA_GVA, 0x1111).ok());
  p.unmap(TABLES, 0x10000);  // every table page
  EXPECT_EQ(p.read(DATA_GVA).value, 0x1111u);
  // The guest repoints its PTE through the window: the write must reach the moved table.
  ASSERT_TRUE(p.write(WINDOW_GVA + (leaf & 0xfff), (DATA + 0x1000) | FLAGS).ok());
  p.invlpg(DATA_GVA);
  EXPECT_EQ(p.read(DATA_GVA).value, 0x2222u);
  p.unmap(TABLES, 0x10000);
  p.unmap(DATA, 0x2000);
  EXPECT_EQ(p.read(DATA_GVA).value, 0x2222u);
  EXPECT_NE(p.peek(leaf) & pte::A, 0u);
  p.audit();
}

// The guest changes a PTE (write-tracked under shadow) or the VMM pokes it, then invlpg: the old
// frame is unreachable, for a repointed and for a cleared entry, at the leaf and above.
void repoint(Engine e, bool by_guest, unsigned level) {
  SCOPED_TRACE(::testing::Message() << (by_guest ? "guest write" : "poke") << ", level " << level);
  Pair p(e);
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  t.map(DATA_GVA, DATA);
  Tables4 other(p, 0x80'0000);  // a second set of lower tables that maps DATA_GVA elsewhere
  other.map(DATA_GVA, DATA + 0x7000);
  const uint64_t at = t.entry(DATA_GVA, level);
  const uint64_t replacement = p.peek(other.entry(DATA_GVA, level));
  t.map(WINDOW_GVA, at & ~0xfffull);
  p.poke(DATA, 8, 0x1);
  p.poke(DATA + 0x7000, 8, 0x7);
  p.long_mode(t.root());
  ASSERT_EQ(p.read(DATA_GVA).value, 1u);
  ASSERT_TRUE(p.write(DATA_GVA + 8, 0x11).ok());
  auto change = [&](uint64_t value) {
    if (by_guest) {
      ASSERT_TRUE(p.write(WINDOW_GVA + (at & 0xfff), value).ok());
    } else {
      p.poke(at, 8, value);
    }
    if (level == 1) {
      p.invlpg(DATA_GVA);
    } else {
      p.cr3(t.root());
    }
  };
  change(replacement);
  EXPECT_EQ(p.read(DATA_GVA).value, 7u);
  ASSERT_TRUE(p.write(DATA_GVA + 8, 0x77).ok());
  EXPECT_EQ(p.peek(DATA + 8), 0x11u);  // the old frame was not written
  change(0);
  const AccessResult r = p.read(DATA_GVA);
  EXPECT_EQ(r.status, Status::Fault);
  EXPECT_EQ(r.fault.error_code, 0u);
  EXPECT_EQ(p.write(DATA_GVA + 8, 0x88).fault.error_code, pfec::W);
  EXPECT_EQ(p.peek(DATA + 8), 0x11u);
  EXPECT_EQ(p.peek(DATA + 0x7008), 0x77u);
  p.audit();
}

TEST_P(SecurityStale, AGuestPteChangeFollowedByInvlpgLeavesNoOldMapping) {
  for (unsigned level = 1; level <= 4; ++level) repoint(GetParam(), true, level);
}

TEST_P(SecurityStale, APokeToAShadowedTableFollowedByInvlpgLeavesNoOldMapping) {
  for (unsigned level = 1; level <= 4; ++level) repoint(GetParam(), false, level);
}

// Two vCPUs hold translations of the same pages: delete, move and unmap take them from both.
TEST_P(SecurityStale, EveryVcpuLosesItsMappings) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.slot({.id = 1, .gpa = 32 * MIB, .size = 2 * MIB, .host_page = HostPageSize::Size2M});
  Tables4 t(p, TABLES);
  t.map(DATA_GVA, 32 * MIB + 0x4000);
  t.map(DATA_GVA + 2 * MIB, 32 * MIB, FLAGS, 2);
  t.map(DATA_GVA + 4 * MIB, 48 * MIB + 0x4000);  // where the slot will move
  p.long_mode(t.root(), LONG_CR0, 0);
  p.long_mode(t.root(), LONG_CR0, 1);
  auto touch_all = [&](uint64_t value) {
    for (uint32_t id : {0u, 1u}) {
      p.use(id);
      ASSERT_TRUE(p.write(DATA_GVA + 8 * id, value + id).ok());
      ASSERT_TRUE(p.read(DATA_GVA + 2 * MIB + 0x4000).ok());
    }
  };
  touch_all(0x100);
  p.unmap(32 * MIB, 2 * MIB);
  for (uint32_t id : {1u, 0u}) {
    p.use(id);
    EXPECT_EQ(p.read(DATA_GVA + 2 * MIB + 0x4000 + 8 * id).value, 0x100u + id);
    ASSERT_TRUE(p.write(DATA_GVA + 2 * MIB + 0x4010 + 8 * id, 0x200 + id).ok());
  }
  EXPECT_EQ(p.peek(32 * MIB + 0x4018), 0x201u);
  touch_all(0x300);
  p.move_slot(1, 48 * MIB);
  for (uint32_t id : {0u, 1u}) {
    p.use(id);
    EXPECT_EQ(p.read(DATA_GVA).status, Status::Mmio);
    EXPECT_EQ(p.write(DATA_GVA + 2 * MIB, 1).status, Status::Mmio);
    EXPECT_EQ(p.read(DATA_GVA + 4 * MIB + 8).value, 0x301u);
  }
  p.delete_slot(1);
  for (uint32_t id : {0u, 1u}) {
    p.use(id);
    EXPECT_EQ(p.read(DATA_GVA + 4 * MIB).status, Status::Mmio);
  }
  p.audit();
}

// The slot holding every table, the root included, moves away and back.
TEST_P(SecurityStale, TheRootTableMovesAwayAndBack) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.slot({.id = 2, .gpa = 64 * MIB, .size = MIB});
  Tables4 t(p, 64 * MIB);
  t.map(DATA_GVA, DATA);
  p.long_mode(t.root());
  ASSERT_TRUE(p.write(DATA_GVA, 4).ok());
  p.move_slot(2, 80 * MIB);
  EXPECT_EQ(p.read(DATA_GVA).fault.error_code, 0u);
  EXPECT_EQ(p.write(DATA_GVA, 5).fault.error_code, pfec::W);
  p.move_slot(2, 64 * MIB);
  EXPECT_EQ(p.read(DATA_GVA).value, 4u);
  p.delete_slot(2);
  EXPECT_EQ(p.fetch(DATA_GVA).fault.error_code, pfec::I);
  p.audit();
}

// A 4 KiB unmap inside a 1 GiB guest page backed by a 1 GiB host page.
TEST_P(SecurityStale, UnmapInsideAGibPage) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.slot({.id = 1, .gpa = GIB, .size = GIB, .host_page = HostPageSize::Size1G});
  Tables4 t(p, TABLES);
  t.map(GIB, GIB, FLAGS, 3);
  p.long_mode(t.root());
  const uint64_t page = GIB + 300 * MIB + 0x7000;
  ASSERT_TRUE(p.write(page + 8, 0x99).ok());
  ASSERT_TRUE(p.read(GIB + 0x10).ok());
  p.unmap(page, 0x1000);
  EXPECT_EQ(p.read(page + 8).value, 0x99u);
  ASSERT_TRUE(p.write(page + 16, 0xaa).ok());
  EXPECT_EQ(p.peek(page + 16), 0xaau);
  ASSERT_TRUE(p.write(page + 0x1000, 0xbb).ok());  // the neighbour did not move
  EXPECT_EQ(p.peek(page + 0x1000), 0xbbu);
  p.audit();
}

// A fixed random mix of guest accesses, right changes (each followed by the invalidation the
// contract asks for), CR0.WP and CPL changes, unmaps, and memslot moves and deletes.
TEST_P(SecurityStale, AMixOfHostAndGuestChanges) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  std::vector<uint64_t> leaves, gvas;
  for (uint64_t i = 0; i < 16; ++i) {
    const uint64_t gva = DATA_GVA + i * 0x1000 + (i / 4) * 2 * MIB;
    const uint64_t gpa = (i % 2 ? 32 * MIB : DATA) + i * 0x1000;  // half in slot 1
    leaves.push_back(t.map(gva, gpa));
    gvas.push_back(gva);
  }
  t.map(DATA_GVA + 64 * MIB, 32 * MIB, FLAGS, 2);  // slot 1 through a huge leaf too
  gvas.push_back(DATA_GVA + 64 * MIB + 0x3000);
  p.long_mode(t.root());
  bool slot1 = false, moved = false;
  Lcg rng{99};
  for (unsigned i = 0; i < 1500; ++i) {
    const uint64_t gva = gvas[rng.next() % gvas.size()] + (rng.next() % 64) * 8;
    switch (rng.next() % 12) {
      case 0:
        if (!slot1) {  // (re)added: fresh zeroed memory
          const HostPageSize host = rng.next() % 2 ? HostPageSize::Size2M : HostPageSize::Size4K;
          p.slot({.id = 1, .gpa = 32 * MIB, .size = 2 * MIB, .host_page = host});
          slot1 = true;
          moved = false;
        } else if (rng.next() % 2) {
          p.delete_slot(1);
          slot1 = false;
        } else {
          p.move_slot(1, moved ? 32 * MIB : 48 * MIB);
          moved = !moved;
        }
        break;
      case 1: {
        const uint64_t base = rng.next() % 2 || !slot1 ? DATA : (moved ? 48 : 32) * MIB;
        p.unmap(base + (rng.next() % 16) * 0x1000, 0x1000 * (1 + rng.next() % 2));
        break;
      }
      case 2: {
        const size_t k = rng.next() % leaves.size();
        p.poke(leaves[k], 8, p.peek(leaves[k]) ^ (rng.next() % 2 ? pte::RW : rng.next() % 2 ? pte::US : pte::XD));
        p.invlpg(gvas[k]);
        break;
      }
      case 3: p.regs(cr0_only(rng.next() % 2 ? LONG_CR0 : x86::cr0::PG | x86::cr0::PE)); break;
      case 4: p.regs(cpl(uint8_t(rng.next() % 2 ? 3 : 0))); break;
      case 5: p.fetch(gva); break;
      case 6:
      case 7: {
        const unsigned width = 1u << (rng.next() % 4);
        p.write(gva, i & (width == 8 ? ~0ull : (1ull << (8 * width)) - 1), width);
        break;
      }
      default: p.read(gva); break;
    }
  }
  EXPECT_GT(p.completed(), 250u);  // much of the mix reached memory: it tested something
  p.audit();
}

// Two vCPUs; the guest rewrites its PTEs through windows onto its page tables (emulated, or out
// of sync under unsync) and invalidates on both vCPUs, while the host moves table and data pages.
TEST_P(SecurityStale, GuestTableWritesMixedWithHostMoves) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  std::vector<uint64_t> leaves, gvas;
  for (uint64_t i = 0; i < 8; ++i) {
    const uint64_t gva = DATA_GVA + i * 0x1000 + (i / 4) * 2 * MIB;
    leaves.push_back(t.map(gva, DATA + i * 0x1000));
    gvas.push_back(gva);
  }
  // Windows onto both page tables, and one onto the PD above them.
  const uint64_t pts[] = {leaves[0] & ~0xfffull, leaves[4] & ~0xfffull, t.entry(DATA_GVA, 2) & ~0xfffull};
  for (uint64_t k = 0; k < 3; ++k) t.map(WINDOW_GVA + k * 0x1000, pts[k]);
  p.long_mode(t.root(), LONG_CR0, 0);
  p.long_mode(t.root(), LONG_CR0, 1);
  Lcg rng{7};
  for (unsigned i = 0; i < 1500; ++i) {
    p.use(uint32_t(rng.next() % 2));
    const size_t k = rng.next() % leaves.size();
    const uint64_t gva = gvas[k] + (rng.next() % 64) * 8;
    switch (rng.next() % 10) {
      case 0: {  // a new PTE: another data frame, random rights; then invlpg on every vCPU
        const uint64_t e = (DATA + (rng.next() % 8) * 0x1000) | pte::P | (rng.next() & (pte::RW | pte::US | pte::A | pte::D)) |
                           (rng.next() % 4 == 0 ? pte::XD : 0);
        const uint64_t window = WINDOW_GVA + (k / 4) * 0x1000 + (leaves[k] & 0xfff);
        p.regs(cpl(0));
        if (p.write(window, e).ok()) {
          for (uint32_t id : {0u, 1u}) {
            p.use(id);
            p.invlpg(gvas[k]);
          }
        }
        break;
      }
      case 1: p.unmap(TABLES + (rng.next() % 8) * 0x1000, 0x1000); break;
      case 2: p.unmap(DATA + (rng.next() % 8) * 0x1000, 0x1000 * (1 + rng.next() % 2)); break;
      case 3: p.regs(cpl(uint8_t(rng.next() % 2 ? 3 : 0))); break;
      case 4: {
        if (rng.next() % 2) {
          p.cr3(t.root());
        } else {
          p.regs(cr0_only(rng.next() % 2 ? LONG_CR0 : x86::cr0::PG | x86::cr0::PE));
        }
        break;
      }
      case 5: p.fetch(gva); break;
      case 6: p.write(gva, i); break;
      case 7: p.read(WINDOW_GVA + (rng.next() % 3) * 0x1000 + (rng.next() % 512) * 8); break;
      default: p.read(gva); break;
    }
  }
  EXPECT_GT(p.completed(), 500u);  // much of the mix reached memory: it tested something
  p.use(0);
  p.audit();
}

// ---- 3. a read-only memslot is never written by the guest -------------------------------------

using SecurityReadOnly = Security;

TEST_P(SecurityReadOnly, GuestWritesAreRefusedThrough4KAndHugeLeaves) {
  for (HostPageSize host : {HostPageSize::Size4K, HostPageSize::Size2M}) {
    Pair p(GetParam());
    p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
    p.slot({.id = 1, .gpa = 32 * MIB, .size = 4 * MIB, .readonly = true, .host_page = host});
    Tables4 t(p, TABLES);
    const uint64_t dirty = FLAGS | pte::A | pte::D;  // nothing for the walk to set
    t.map(DATA_GVA, 32 * MIB + 0x1000, dirty);
    t.map(DATA_GVA + 2 * MIB, 32 * MIB, dirty, 2);
    t.map(DATA_GVA + 4 * MIB, 34 * MIB, FLAGS, 2);  // clean: the walk sets A/D in slot 0
    p.poke(32 * MIB + 0x1010, 8, 0x5a5a);
    p.poke(34 * MIB + 0x10, 8, 0x6b);
    p.long_mode(t.root());
    for (uint8_t c : {0, 3}) {
      p.regs(cpl(c));
      const std::pair<uint64_t, uint64_t> targets[] = {
          {DATA_GVA + 0x10, 32 * MIB + 0x1010}, {DATA_GVA + 2 * MIB + 0x1010, 32 * MIB + 0x1010}, {DATA_GVA + 4 * MIB + 0x10, 34 * MIB + 0x10}};
      for (auto [gva, gpa] : targets) {
        ASSERT_TRUE(p.read(gva).ok());  // a readable SPTE exists now
        for (unsigned width : {1u, 8u}) {
          const AccessResult w = p.write(gva, 0xff, width);
          EXPECT_EQ(w.status, Status::ReadOnly);
          EXPECT_EQ(w.gpa, gpa);
        }
        EXPECT_TRUE(p.fetch(gva).ok());
      }
    }
    EXPECT_EQ(p.peek(32 * MIB + 0x1010), 0x5a5au);
    EXPECT_EQ(p.peek(34 * MIB + 0x10), 0x6bu);
    p.peek(t.entry(DATA_GVA + 4 * MIB, 2));  // A/D as the reference set them
    p.audit();
  }
}

// Every table in the read-only slot: they are used, their A/D bits are never set, and the guest
// cannot rewrite them through a window.
TEST_P(SecurityReadOnly, PageTablesInAReadOnlySlotAreUsedButNeverWritten) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.slot({.id = 1, .gpa = 32 * MIB, .size = 2 * MIB, .readonly = true});
  Tables4 t(p, 32 * MIB);
  const uint64_t leaf = t.map(DATA_GVA, DATA);
  t.map(DATA_GVA + 0x1000, DATA + 0x1000);
  t.map(WINDOW_GVA, leaf & ~0xfffull);
  p.long_mode(t.root());
  ASSERT_TRUE(p.write(DATA_GVA, 0x42).ok());
  EXPECT_EQ(p.read(DATA_GVA).value, 0x42u);
  EXPECT_EQ(p.peek(leaf) & (pte::A | pte::D), 0u);
  const AccessResult w = p.write(WINDOW_GVA + (leaf & 0xfff), (DATA + 0x1000) | FLAGS);
  EXPECT_EQ(w.status, Status::ReadOnly);
  EXPECT_EQ(w.gpa, leaf);
  p.invlpg(DATA_GVA);
  EXPECT_EQ(p.read(DATA_GVA).value, 0x42u);  // the PTE is what it was
  EXPECT_EQ(p.peek(leaf), DATA | FLAGS);
  for (uint64_t a = 32 * MIB; a < 32 * MIB + 0x6000; a += 8) p.peek(a);  // every entry as the reference's
  p.regs(cpl(3));
  ASSERT_TRUE(p.write(DATA_GVA + 0x1000, 1).ok());
  EXPECT_EQ(p.write(WINDOW_GVA + 8, 0).status, Status::ReadOnly);
  p.audit();
}

// ---- 4. nothing outside the memslots is reachable ---------------------------------------------

using SecurityBounds = Security;

// Leaves and tables pointing above MAXPHYADDR (reserved bits) and at gpas in no memslot (MMIO for
// a leaf, not present for a table), up to the last page below 2^52.
void outside(Engine e, unsigned maxphyaddr) {
  SCOPED_TRACE(::testing::Message() << "maxphyaddr " << maxphyaddr);
  Pair p(e, {.maxphyaddr = maxphyaddr});
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  const uint64_t top = 1ull << maxphyaddr;  // the first gpa above MAXPHYADDR
  // Bit 52 and up are ignored in long mode; with M=52 take the last page below 2^52 instead.
  const uint64_t above = maxphyaddr < 52 ? top : (1ull << 52) - 0x1000;
  std::vector<std::pair<uint64_t, uint64_t>> leaves = {  // gva, target
      {DATA_GVA, top - 0x1000}, {DATA_GVA + 0x1000, (1ull << 52) - 0x1000}, {DATA_GVA + 0x2000, above},
      {DATA_GVA + 0x3000, 16 * MIB}, {DATA_GVA + 0x4000, 0x8000'0000}, {DATA_GVA + 0x5000, pte::ADDR_MASK_52}};
  for (auto [gva, gpa] : leaves) t.map(gva, gpa);
  t.map(DATA_GVA + 2 * MIB, top - 2 * MIB, FLAGS, 2);
  t.map(DATA_GVA + 4 * MIB, (1ull << 52) - 2 * MIB, FLAGS, 2);
  t.map(2 * GIB, (1ull << 52) - GIB, FLAGS, 3);
  t.map(3 * GIB, top - GIB, FLAGS, 3);
  // Tables: a PDE and a PDPTE pointing at the last page below MAXPHYADDR and above it.
  t.map(4 * GIB, DATA);
  p.poke(t.entry(4 * GIB, 2), 8, (top - 0x1000) | FLAGS);
  p.poke(t.entry(4 * GIB + 2 * MIB, 2), 8, above | FLAGS);
  p.poke(t.entry(4 * GIB + GIB, 3), 8, (top - 0x1000) | FLAGS);
  p.poke(t.entry(4 * GIB + 2 * GIB, 3), 8, ((1ull << 52) - 0x1000) | FLAGS);
  p.long_mode(t.root());
  std::vector<uint64_t> gvas;
  for (auto [gva, gpa] : leaves) gvas.push_back(gva + 0x18);
  for (uint64_t g : {DATA_GVA + 2 * MIB + 0x1238, DATA_GVA + 4 * MIB + 0x18, 2 * GIB + 0x30'0018, 3 * GIB + 0x18,
                     4 * GIB + 0x18, 4 * GIB + 2 * MIB + 0x18, 5 * GIB + 0x18, 6 * GIB + 0x18})
    gvas.push_back(g);
  for (int round = 0; round < 2; ++round) {  // again: nothing cached may change the answer
    for (uint8_t c : {0, 3}) {
      p.regs(cpl(c));
      for (uint64_t gva : gvas) {
        for (AccessKind k : {AccessKind::Read, AccessKind::Write, AccessKind::Fetch}) {
          const AccessResult r = p.access(gva, k, k == AccessKind::Fetch ? 1 : 8, 0x6b);
          EXPECT_TRUE(r.status == Status::Fault || r.status == Status::Mmio) << std::hex << gva;
          if (r.status == Status::Mmio) {
            EXPECT_GE(r.gpa, 16 * MIB);
          }
          if (r.status == Status::Fault && (r.fault.error_code & pfec::RSVD)) {
            EXPECT_LT(maxphyaddr, 52u);
          }
        }
      }
    }
  }
  p.regs(cpl(0));
  EXPECT_EQ(p.read(DATA_GVA + 0x3018).status, Status::Mmio);
  EXPECT_EQ(p.read(DATA_GVA + 0x18).gpa, top - 0x1000 + 0x18);  // the last page: MMIO
  if (maxphyaddr == 52) {
    EXPECT_EQ(p.read(DATA_GVA + 0x1018).gpa, (1ull << 52) - 0x1000 + 0x18);
  } else {
    EXPECT_EQ(p.read(DATA_GVA + 0x1018).fault.error_code, pfec::P | pfec::RSVD);
    EXPECT_EQ(p.read(DATA_GVA + 0x2018).fault.error_code, pfec::P | pfec::RSVD);
    EXPECT_EQ(p.write(4 * GIB + 2 * MIB + 0x18, 1).fault.error_code, pfec::P | pfec::RSVD | pfec::W);
  }
  EXPECT_EQ(p.read(4 * GIB + 0x18).fault.error_code, 0u);  // table outside every slot: not present
  EXPECT_EQ(p.peek(16 * MIB - 8), 0u);
  p.audit();
}

TEST_P(SecurityBounds, EntriesAboveMaxphyaddrOrOutsideEverySlotNeverReachHostMemory) {
  for (unsigned m : {36u, 40u, 46u, 52u}) outside(GetParam(), m);
}

TEST_P(SecurityBounds, ACr3OutsideEverySlotWalksNothing) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.long_mode(0x4000'0000);
  for (uint64_t gva : {uint64_t{0}, DATA_GVA, uint64_t{0xffff'8000'0000'0000}}) {
    EXPECT_EQ(p.read(gva).fault.error_code, 0u);
    EXPECT_EQ(p.fetch(gva).fault.error_code, pfec::I);
  }
  p.audit();
}

// Every kind of access at CPL 0 and 3, twice (a cached answer must equal a fresh one); each must
// end as a fault or MMIO: these gvas reach no memory.
void probe_outside(Pair& p, const std::vector<uint64_t>& gvas) {
  for (int round = 0; round < 2; ++round)
    for (uint8_t c : {0, 3}) {
      p.regs(cpl(c));
      for (uint64_t gva : gvas)
        for (AccessKind k : {AccessKind::Read, AccessKind::Write, AccessKind::Fetch}) {
          const AccessResult r = p.access(gva, k, k == AccessKind::Fetch ? 1 : 4, 0x6b);
          EXPECT_TRUE(r.status == Status::Fault || r.status == Status::Mmio) << std::hex << gva;
        }
    }
  p.regs(cpl(0));
}

// 32-bit paging with PSE-36 (M'=40): 4 MiB pages above 4 GiB, a reserved PDE bit 21, a PTE and a
// 4 MiB page at the top of the 4 GiB space, a page table outside every slot.
TEST_P(SecurityBounds, ThirtyTwoBitEntriesOutsideTheSlots) {
  Pair p(GetParam(), {.maxphyaddr = 40});
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  const uint64_t pd = TABLES, pt = TABLES + 0x1000, big = pte::PS | FLAGS;
  p.poke(pd + 1 * 4, 4, (0x80u << 13) | big);             // 4 MiB at 2^39: MMIO
  p.poke(pd + 2 * 4, 4, (1u << 21) | big);                 // reserved bit 21
  p.poke(pd + 3 * 4, 4, pt | FLAGS);
  p.poke(pt + 0 * 4, 4, 0xffff'f000u | FLAGS);             // MMIO
  p.poke(pt + 1 * 4, 4, DATA | FLAGS);                     // the one real page
  p.poke(pd + 4 * 4, 4, 0xfff0'0000u | FLAGS);             // a table outside every slot
  p.poke(pd + 5 * 4, 4, 0xffc0'0000u | big);               // MMIO
  p.poke(pd + 6 * 4, 4, (0xffu << 13) | 0xffc0'0000u | big);  // the last 4 MiB below 2^40
  p.vcpu_with(paging(x86::cr0::PG | x86::cr0::PE | x86::cr0::WP, pd, x86::cr4::PSE, 0));
  probe_outside(p, {0x40'0010, 0x80'0010, 0xc0'0010, 0x100'0010, 0x140'0010, 0x1bf'fff0});
  EXPECT_EQ(p.read(0x40'0010).gpa, (1ull << 39) + 0x10);
  EXPECT_EQ(p.read(0x80'0010).fault.error_code, pfec::P | pfec::RSVD);
  EXPECT_EQ(p.read(0x1bf'fff0).gpa, (1ull << 40) - 0x10);
  EXPECT_EQ(p.read(0x100'0010).fault.error_code, 0u);
  EXPECT_TRUE(p.write(0xc0'1010, 5, 4).ok());
  EXPECT_EQ(p.peek(DATA + 0x10, 4), 5u);
  p.audit();
}

// PAE paging: bits M..62 reserved, bit 63 reserved without NXE, a PD outside every slot.
TEST_P(SecurityBounds, PaeEntriesOutsideTheSlots) {
  for (bool nxe : {false, true}) {
    SCOPED_TRACE(nxe ? "NXE=1" : "NXE=0");
    const unsigned m = 40;
    Pair p(GetParam(), {.maxphyaddr = m});
    p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
    const uint64_t pdpt = TABLES, pd = TABLES + 0x1000, pt = TABLES + 0x2000, top = 1ull << m;
    p.poke(pdpt, 8, pd | pte::P);
    p.poke(pdpt + 8, 8, 0xfff0'0000 | pte::P);  // a PD outside every slot
    p.poke(pd, 8, pt | FLAGS);
    p.poke(pd + 8, 8, (top - 2 * MIB) | pte::PS | FLAGS);  // MMIO
    p.poke(pd + 16, 8, top | pte::PS | FLAGS);             // reserved
    p.poke(pt + 0 * 8, 8, top | FLAGS);                    // reserved
    p.poke(pt + 1 * 8, 8, (top - 0x1000) | FLAGS);         // MMIO
    p.poke(pt + 2 * 8, 8, DATA | (1ull << 62) | FLAGS);    // reserved under PAE (M..62)
    p.poke(pt + 3 * 8, 8, DATA | pte::XD | FLAGS);         // NX, or reserved without NXE
    p.poke(pt + 4 * 8, 8, DATA | FLAGS);
    p.vcpu_with(paging(x86::cr0::PG | x86::cr0::PE | x86::cr0::WP, pdpt, x86::cr4::PAE, nxe ? x86::efer::NXE : 0));
    probe_outside(p, {0x10, 0x1010, 0x2010, 0x20'0010, 0x40'0010, 0x4000'0010});
    EXPECT_EQ(p.read(0x10).fault.error_code, pfec::P | pfec::RSVD);
    EXPECT_EQ(p.read(0x1010).gpa, top - 0x1000 + 0x10);
    EXPECT_EQ(p.read(0x2010).fault.error_code, pfec::P | pfec::RSVD);
    EXPECT_EQ(p.read(0x20'0010).gpa, top - 2 * MIB + 0x10);
    EXPECT_EQ(p.read(0x4000'0010).fault.error_code, 0u);
    const AccessResult nx = p.fetch(0x3010);
    EXPECT_EQ(nx.fault.error_code, nxe ? pfec::P | pfec::I : pfec::P | pfec::RSVD);
    EXPECT_EQ(p.read(0x3010).ok(), nxe);
    EXPECT_TRUE(p.write(0x4010, 9).ok());
    EXPECT_EQ(p.peek(DATA + 0x10), 9u);
    p.audit();
  }
}

// ---- 5. loops and tables in MMIO neither hang nor crash, and agree with the reference ------------

using SecurityLoops = Security;

// Reads, writes and fetches through gvas whose walks run through the loops. The guest rewrites
// entries through the loop windows too; each write is followed by a flush, as the contract asks.
void exercise(Pair& p, const std::vector<uint64_t>& gvas, uint64_t seed, unsigned ops) {
  Lcg rng{seed};
  unsigned completed = 0, writes = 0;
  for (unsigned i = 0; i < ops; ++i) {
    const uint64_t gva = gvas[rng.next() % gvas.size()] + (rng.next() % 512) * 8;
    switch (rng.next() % 8) {
      case 0: p.regs(cpl(uint8_t(rng.next() % 2 ? 3 : 0))); break;
      case 1: completed += p.fetch(gva).ok(); break;
      case 2: {
        // An entry to somewhere in the table area or the data page, or a cleared one.
        const uint64_t target = rng.next() % 3 == 0 ? 0 : ((TABLES + (rng.next() % 24) * 0x1000) | (rng.next() & 0x87));
        const AccessResult w = p.write(gva, target);
        if (w.ok()) {
          ++completed;
          ++writes;
          p.flush();
        }
        break;
      }
      default: completed += p.read(gva).ok(); break;
    }
  }
  p.flush();
  p.regs(cpl(0));
  EXPECT_GT(writes, 0u);
  EXPECT_GT(completed, ops / 10);  // a loop that only faults would test little
}

TEST_P(SecurityLoops, APml4EntryPointingAtThePml4) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  t.map(DATA_GVA, DATA);
  p.poke(t.root() + 511 * 8, 8, t.root() | FLAGS);  // the classic recursive slot
  p.long_mode(t.root());
  const uint64_t self = gva_of(511, 511, 511, 511);  // the PML4 itself, as data
  EXPECT_EQ(p.read(self + 511 * 8).value & pte::ADDR_MASK_52, t.root());
  EXPECT_EQ(p.read(self).value & pte::ADDR_MASK_52, p.peek(t.root()) & pte::ADDR_MASK_52);
  // One level less of recursion: PML4[0] is taken as a PTE, so the PDPT below it is the data.
  EXPECT_EQ(p.read(gva_of(511, 511, 511, 0) + 8).value, p.peek((p.peek(t.root()) & pte::ADDR_MASK_52) + 8));
  EXPECT_TRUE(p.fetch(self).ok());
  // The guest unmaps DATA_GVA by clearing PML4[0] through the recursive window, and restores it.
  const uint64_t pml4e0 = p.peek(t.root());
  ASSERT_TRUE(p.read(DATA_GVA).ok());
  ASSERT_TRUE(p.write(self, 0).ok());
  p.flush();
  EXPECT_EQ(p.read(DATA_GVA).fault.error_code, 0u);
  ASSERT_TRUE(p.write(self, pml4e0).ok());  // not present to present: no flush needed
  EXPECT_TRUE(p.read(DATA_GVA).ok());
  for (uint64_t seed = 1; seed <= 3; ++seed)
    exercise(p, {self, gva_of(511, 511, 511, 0), gva_of(511, 511, 0, 1), gva_of(511, 0, 1, 0), DATA_GVA}, seed, 400);
  p.audit();
}

TEST_P(SecurityLoops, APdEntryPointingAtItsOwnTable) {
  for (bool huge : {false, true}) {
    Pair p(GetParam());
    p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
    Tables4 t(p, TABLES);
    t.map(DATA_GVA, DATA);
    const uint64_t pde = t.entry(DATA_GVA, 2), pd = pde & ~0xfffull;
    p.poke(pd + 5 * 8, 8, pd | FLAGS | (huge ? pte::PS : 0));  // PS: an unaligned 2 MiB base, reserved
    p.long_mode(t.root());
    const uint64_t self = DATA_GVA + 5 * 2 * MIB;
    exercise(p, {self, self + 5 * 0x1000, self + 0x1000, DATA_GVA}, 2 + huge, 300);
    p.audit();
  }
}

TEST_P(SecurityLoops, TwoTablesPointingAtEachOther) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  t.map(DATA_GVA, DATA);
  const uint64_t x = t.allocate();
  p.poke(t.root() + 1 * 8, 8, x | FLAGS);       // PML4[1] -> X
  p.poke(x + 2 * 8, 8, t.root() | FLAGS);       // X[2] -> PML4
  p.long_mode(t.root());
  const uint64_t loop = gva_of(1, 2, 1, 2);      // PML4 -> X -> PML4 -> X -> the PML4 as data
  EXPECT_EQ(p.read(loop + 8).value & pte::ADDR_MASK_52, x);
  EXPECT_EQ(p.read(gva_of(1, 2, 1, 0)).status, Status::Fault);  // X[0] is empty
  for (uint64_t seed = 4; seed <= 6; ++seed)
    exercise(p, {loop, gva_of(1, 2, 0, 0), gva_of(1, 2, 1, 1), gva_of(1, 2, 1, 2), DATA_GVA}, seed, 400);
  p.audit();
}

// 32-bit paging (4-byte entries, PSE): the last PD entry points at the PD, as 32-bit kernels do.
TEST_P(SecurityLoops, AThirtyTwoBitPageDirectoryMappingItself) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  const uint64_t pd = TABLES, pt = TABLES + 0x1000;
  p.poke(pd, 4, pt | FLAGS);
  for (uint64_t i = 0; i < 16; ++i) p.poke(pt + i * 4, 4, (DATA + i * 0x1000) | FLAGS);
  p.poke(pd + 1023 * 4, 4, pd | FLAGS);
  p.vcpu_with(paging(x86::cr0::PG | x86::cr0::PE | x86::cr0::WP, pd, x86::cr4::PSE, 0));
  EXPECT_EQ(p.access(0xffff'f000, AccessKind::Read, 4).value & ~0xfffull, pt);  // the PD as data: PD[0]
  EXPECT_EQ(p.access(0xffc0'0000 + 4, AccessKind::Read, 4).value & ~0xfffull, DATA + 0x1000);  // the PT as data
  for (uint64_t seed = 7; seed <= 9; ++seed) exercise(p, {0xffff'f000, 0xffc0'0000, 0x0, 0x4000}, seed, 400);
  p.audit();
}

// PAE paging: a PD entry pointing at its own PD, under both NXE settings.
TEST_P(SecurityLoops, APaePageDirectoryMappingItself) {
  for (bool nxe : {false, true}) {
    Pair p(GetParam());
    p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
    const uint64_t pdpt = TABLES, pd = TABLES + 0x1000, pt = TABLES + 0x2000;
    p.poke(pdpt, 8, pd | pte::P);
    p.poke(pd, 8, pt | FLAGS);
    for (uint64_t i = 0; i < 16; ++i) p.poke(pt + i * 8, 8, (DATA + i * 0x1000) | FLAGS);
    p.poke(pd + 511 * 8, 8, pd | FLAGS);
    p.vcpu_with(paging(x86::cr0::PG | x86::cr0::PE | x86::cr0::WP, pdpt, x86::cr4::PAE, nxe ? x86::efer::NXE : 0));
    const uint64_t self = 511 * 2 * MIB;
    EXPECT_EQ(p.read(self + 511 * 0x1000).value & pte::ADDR_MASK_52, pt);  // the PD as data: PD[0]
    for (uint64_t seed = 10; seed <= 12; ++seed) exercise(p, {self + 511 * 0x1000, self, 0x0, 0x4000}, seed + nxe, 400);
    p.audit();
  }
}

TEST_P(SecurityLoops, TablesPointingIntoMmio) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  t.map(DATA_GVA, 64 * MIB);                       // a leaf into MMIO
  p.poke(t.root() + 8, 8, (64 * MIB) | FLAGS);     // PML4[1] -> no memslot
  t.map(2 * GIB, DATA);
  p.poke(t.entry(2 * GIB, 2), 8, (65 * MIB) | FLAGS);  // a PDE -> no memslot
  p.long_mode(t.root());
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(p.read(DATA_GVA).status, Status::Mmio);
    EXPECT_EQ(p.write(DATA_GVA, 1).status, Status::Mmio);
    EXPECT_EQ(p.read(gva_of(1, 0, 0, 0)).fault.error_code, 0u);
    EXPECT_EQ(p.write(2 * GIB, 1).fault.error_code, pfec::W);
  }
  // Memory appears there (zeroed: the tables are empty); then the VMM fills them in. Both are
  // not-present-to-present changes, which need no invalidation.
  p.slot({.id = 1, .gpa = 64 * MIB, .size = 2 * MIB});
  EXPECT_TRUE(p.read(DATA_GVA).ok());
  EXPECT_EQ(p.read(2 * GIB).fault.error_code, 0u);
  p.poke(65 * MIB, 8, DATA | FLAGS);
  EXPECT_TRUE(p.write(2 * GIB + 8, 3).ok());
  EXPECT_EQ(p.peek(DATA + 8), 3u);
  p.audit();
}

// ---- 6. CR0.WP=0 ---------------------------------------------------------------------------------

using SecurityWp = Security;

TEST_P(SecurityWp, SupervisorWritesToReadOnlyPagesSucceedWhileUserWritesFault) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  Tables4 t(p, TABLES);
  const uint64_t user_ro = DATA_GVA, kernel_ro = DATA_GVA + 0x1000, user_rw = DATA_GVA + 0x2000;
  t.map(user_ro, DATA, pte::P | pte::US);
  t.map(kernel_ro, DATA + 0x1000, pte::P);
  t.map(user_rw, DATA + 0x2000, FLAGS);
  const uint64_t no_wp = x86::cr0::PG | x86::cr0::PE;
  p.long_mode(t.root(), no_wp);
  for (int round = 0; round < 3; ++round) {
    p.regs(cpl(0));
    EXPECT_TRUE(p.write(user_ro, 10 + round).ok());
    EXPECT_TRUE(p.write(kernel_ro, 20 + round).ok());
    EXPECT_TRUE(p.fetch(user_ro).ok());
    p.regs(cpl(3));
    EXPECT_EQ(p.read(user_ro).value, uint64_t(10 + round));  // the supervisor's SPTE must not leave U out
    EXPECT_EQ(p.write(user_ro, 99).fault.error_code, pfec::P | pfec::W | pfec::U);
    EXPECT_EQ(p.read(kernel_ro).fault.error_code, pfec::P | pfec::U);
    EXPECT_EQ(p.write(kernel_ro, 99).fault.error_code, pfec::P | pfec::W | pfec::U);
    EXPECT_TRUE(p.write(user_rw, 30 + round).ok());
    p.regs(cpl(0));
    EXPECT_TRUE(p.write(user_ro + 8, 1).ok());  // back to the supervisor after the user's fault
  }
  // CR0.WP=1: now the supervisor faults too; and off again.
  p.regs(cr0_only(LONG_CR0));
  EXPECT_EQ(p.write(user_ro, 5).fault.error_code, pfec::P | pfec::W);
  EXPECT_EQ(p.write(kernel_ro, 5).fault.error_code, pfec::P | pfec::W);
  p.regs(cr0_only(no_wp));
  EXPECT_TRUE(p.write(kernel_ro, 6).ok());
  EXPECT_EQ(p.peek(DATA), 12u);
  EXPECT_EQ(p.peek(DATA + 0x1000), 6u);
  EXPECT_EQ(p.peek(DATA + 0x2000), 32u);
  p.audit();
}

// The same page as a user-read-only mapping and through a huge leaf.
TEST_P(SecurityWp, WpOffThroughAHugeLeafAndAliases) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.slot({.id = 1, .gpa = 32 * MIB, .size = 2 * MIB, .host_page = HostPageSize::Size2M});
  Tables4 t(p, TABLES);
  t.map(DATA_GVA, 32 * MIB, pte::P | pte::US, 2);
  t.map(DATA_GVA + 2 * MIB, 32 * MIB + 0x3000, FLAGS);  // an alias that may write
  p.long_mode(t.root(), x86::cr0::PG | x86::cr0::PE);
  for (int round = 0; round < 2; ++round) {
    p.regs(cpl(3));
    EXPECT_TRUE(p.write(DATA_GVA + 2 * MIB, 7 + round).ok());
    EXPECT_EQ(p.read(DATA_GVA + 0x3000).value, uint64_t(7 + round));
    EXPECT_EQ(p.write(DATA_GVA + 0x3000, 1).fault.error_code, pfec::P | pfec::W | pfec::U);
    p.regs(cpl(0));
    EXPECT_TRUE(p.write(DATA_GVA + 0x3008, 8 + round).ok());
    EXPECT_EQ(p.read(DATA_GVA + 2 * MIB + 8).value, uint64_t(8 + round));
  }
  p.audit();
}

// CR0.WP=0 lifts only the guest's R/W: a read-only memslot still refuses the write, and a write
// to a shadowed page table through a read-only guest mapping is still seen by the engine.
TEST_P(SecurityWp, WpOffWritesStillRespectTheHost) {
  Pair p(GetParam());
  p.slot({.id = 0, .gpa = 0, .size = 16 * MIB});
  p.slot({.id = 1, .gpa = 32 * MIB, .size = 2 * MIB, .readonly = true});
  Tables4 t(p, TABLES);
  const uint64_t leaf = t.map(DATA_GVA, DATA);
  t.map(DATA_GVA + 0x1000, 32 * MIB, pte::P | pte::A | pte::D);  // read-only page in a read-only slot
  t.map(DATA_GVA + 0x2000, 32 * MIB, FLAGS | pte::A | pte::D);   // writable page in a read-only slot
  t.map(WINDOW_GVA, leaf & ~0xfffull, pte::P);                  // the page table, read-only
  p.poke(32 * MIB, 8, 0x77);
  p.poke(DATA + 0x3000, 8, 0x33);
  p.long_mode(t.root(), x86::cr0::PG | x86::cr0::PE);
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(p.read(DATA_GVA + 0x1000).ok());
    EXPECT_EQ(p.write(DATA_GVA + 0x1000, 1).status, Status::ReadOnly);
    EXPECT_EQ(p.write(DATA_GVA + 0x2000, 1).status, Status::ReadOnly);
  }
  EXPECT_EQ(p.peek(32 * MIB), 0x77u);
  ASSERT_TRUE(p.read(DATA_GVA).ok());
  ASSERT_TRUE(p.write(WINDOW_GVA + (leaf & 0xfff), (DATA + 0x3000) | FLAGS).ok());
  p.invlpg(DATA_GVA);
  EXPECT_EQ(p.read(DATA_GVA).value, 0x33u);
  ASSERT_TRUE(p.write(WINDOW_GVA + (leaf & 0xfff), (DATA + 0x3000) | pte::P | pte::US).ok());  // now read-only
  p.invlpg(DATA_GVA);
  p.regs(cpl(3));
  EXPECT_EQ(p.write(DATA_GVA, 1).fault.error_code, pfec::P | pfec::W | pfec::U);
  EXPECT_EQ(p.write(WINDOW_GVA, 1).fault.error_code, pfec::P | pfec::W | pfec::U);
  p.audit();
}

#define SECURITY_INSTANTIATE(suite)                                                                              \
  INSTANTIATE_TEST_SUITE_P(Security, suite, ::testing::Values(Engine::None, Engine::Tdp, Engine::Shadow, Engine::ShadowSync), \
                           [](const ::testing::TestParamInfo<Engine>& info) { return std::string(engine_name(info.param)); })
SECURITY_INSTANTIATE(SecurityRights);
SECURITY_INSTANTIATE(SecurityStale);
SECURITY_INSTANTIATE(SecurityReadOnly);
SECURITY_INSTANTIATE(SecurityBounds);
SECURITY_INSTANTIATE(SecurityLoops);
SECURITY_INSTANTIATE(SecurityWp);

}  // namespace
}  // namespace vmmu
