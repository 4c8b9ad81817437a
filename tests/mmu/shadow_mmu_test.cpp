// The shadow engine: the seed's case (both halves of a 32-bit guest's 4 MiB page, PSE-36
// included), write tracking and emulation, unsync and its sync points, write flooding, the
// page limit, the root cache, protection keys and CR0.WP under shadow paging, and the
// page-track API. Every test ends with the audit.
#include "mmu/shadow_mmu.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "vm/vm.hpp"
#include "x86/control_registers.hpp"
#include "x86/page_table_entry.hpp"

namespace vmmu {
namespace {

using guest::HostPageSize;
using x86::AccessKind;
namespace pte = x86::pte;
constexpr uint64_t MIB = 1ull << 20;
constexpr uint64_t LONG_CR0 = x86::cr0::PG | x86::cr0::PE | x86::cr0::WP;
constexpr uint64_t PAGE_FLAGS = pte::P | pte::RW | pte::US;

VmConfig shadow_config(bool unsync = true, uint64_t max_pages = 0) {
  VmConfig c;
  c.mmu = MmuKind::Shadow;
  c.shadow.unsync = unsync;
  c.shadow.max_mmu_pages = max_pages;
  return c;
}

uint64_t stat(Vm& vm, const char* name) { return vm.stats()["stats"][name].get<uint64_t>(); }

void expect_audit_clean(Vm& vm) {
  const auto v = vm.audit();
  EXPECT_TRUE(v.empty()) << (v.empty() ? "" : v.front());
}

// 4-level tables built by the VMM (pokes) in a table area, mapping gvas to gpas.
class Tables4 {
 public:
  Tables4(Vm& vm, uint64_t area) : vm_(vm), next_(area) { root_ = allocate(); }
  uint64_t root() const { return root_; }
  uint64_t allocate() {
    const uint64_t a = next_;
    next_ += 4096;
    return a;
  }
  // Maps `gva` to `gpa` with a leaf at `level` (PS above 1); returns the leaf entry's gpa.
  uint64_t map(uint64_t gva, uint64_t gpa, uint64_t flags = PAGE_FLAGS, unsigned level = 1) {
    uint64_t table = root_;
    for (unsigned l = 4; l > level; --l) {
      const uint64_t at = table + ((gva >> (12 + 9 * (l - 1))) & 511) * 8;
      uint64_t e = vm_.read_guest(at, 8);
      if (!(e & pte::P)) {
        e = allocate() | PAGE_FLAGS;
        vm_.write_guest(at, 8, e);
      }
      table = e & pte::ADDR_MASK_52;
    }
    const uint64_t at = table + ((gva >> (12 + 9 * (level - 1))) & 511) * 8;
    vm_.write_guest(at, 8, gpa | flags | (level > 1 ? pte::PS : 0));
    return at;
  }

 private:
  Vm& vm_;
  uint64_t next_, root_ = 0;
};

RegisterUpdate paging(uint64_t cr0, uint64_t cr3, uint64_t cr4, uint64_t efer = 0) {
  RegisterUpdate u;
  u.cr0 = cr0;
  u.cr3 = cr3;
  u.cr4 = cr4;
  u.efer = efer;
  return u;
}
RegisterUpdate user_mode() {
  RegisterUpdate u;
  u.cpl = 3;
  return u;
}
RegisterUpdate pkru(uint32_t value) {
  RegisterUpdate u;
  u.pkru = value;
  return u;
}

Vcpu& long_mode_vcpu(Vm& vm, uint64_t cr3, uint64_t cr0 = LONG_CR0, uint64_t cr4 = x86::cr4::PAE) {
  Vcpu& v = vm.create_vcpu(0);
  EXPECT_FALSE(v.set_registers(paging(cr0, cr3, cr4, x86::efer::LME | x86::efer::NXE)));
  return v;
}

// ---- the seed's case: a 32-bit guest's 4 MiB page is two 2 MiB direct pages -------------------

// One PDE maps 4 MiB; the shadow needs one direct page per 2 MiB half, each with the base gfn of
// its own half (a base rounded from the faulting gfn, never the PDE's base for both).
void check_both_halves(HostPageSize host, unsigned maxphyaddr, uint64_t page_gpa, uint64_t pde_extra) {
  Vm vm(shadow_config());
  vm.set_cpu_model({.maxphyaddr = maxphyaddr});
  vm.add_memslot({.id = 0, .gpa = 0, .size = 4 * MIB});                         // the page directory
  vm.add_memslot({.id = 1, .gpa = page_gpa, .size = 4 * MIB, .host_page = host});  // the 4 MiB page
  const uint64_t pd = 0x1000, gva = 0x0080'0000;  // PDE 2
  // Accessed and dirty already: a clean PDE would give a read-only direct page first and a
  // writable one (another role) at the first write.
  vm.write_guest(pd + 2 * 4, 4, (page_gpa & 0xffc0'0000) | pde_extra | pte::PS | pte::A | pte::D | PAGE_FLAGS);
  vm.write_guest(page_gpa + 0x10, 8, 0x1111);
  vm.write_guest(page_gpa + 2 * MIB + 0x20, 8, 0x2222);
  Vcpu& v = vm.create_vcpu(0);
  ASSERT_FALSE(v.set_registers(paging(x86::cr0::PG | x86::cr0::PE, pd, x86::cr4::PSE)));

  const AccessResult lower = v.access(gva + 0x10, AccessKind::Read);
  const AccessResult upper = v.access(gva + 2 * MIB + 0x20, AccessKind::Read);
  ASSERT_TRUE(lower.ok() && upper.ok());
  EXPECT_EQ(lower.gpa, page_gpa + 0x10);
  EXPECT_EQ(upper.gpa, page_gpa + 2 * MIB + 0x20);
  EXPECT_EQ(lower.value, 0x1111u);
  EXPECT_EQ(upper.value, 0x2222u);
  // Again, now through the SPTEs the faults built; then writes through both halves.
  EXPECT_EQ(v.access(gva + 0x10, AccessKind::Read).value, 0x1111u);
  EXPECT_EQ(v.access(gva + 2 * MIB + 0x20, AccessKind::Read).value, 0x2222u);
  ASSERT_TRUE(v.access(gva + 2 * MIB + 0x28, AccessKind::Write, 8, 0x3333).ok());
  EXPECT_EQ(vm.read_guest(page_gpa + 2 * MIB + 0x28, 8), 0x3333u);
  if (host == HostPageSize::Size2M) {
    EXPECT_EQ(stat(vm, "pages_2m"), 2u);  // a host huge mapping for each half
  } else {
    EXPECT_EQ(stat(vm, "pages_4k"), 2u);  // in two direct pages (the audit checks their gfns)
  }
  expect_audit_clean(vm);
}

TEST(ShadowSeedCase, Pse4MiBPageBothHalvesAt4K) { check_both_halves(HostPageSize::Size4K, 36, 0x0040'0000, 0); }
TEST(ShadowSeedCase, Pse4MiBPageBothHalvesAsHostHugePages) { check_both_halves(HostPageSize::Size2M, 36, 0x0040'0000, 0); }
// PSE-36: PDE bits 13+ give physical bits 32+; the upper half lies at 4 GiB + 6 MiB.
TEST(ShadowSeedCase, Pse36PageAbove4GiBBothHalves) { check_both_halves(HostPageSize::Size4K, 40, 0x1'0040'0000, 1u << 13); }
TEST(ShadowSeedCase, Pse36PageAbove4GiBAsHostHugePages) { check_both_halves(HostPageSize::Size2M, 40, 0x1'0040'0000, 1u << 13); }

// ---- write tracking --------------------------------------------------------------------------

struct LongModeGuest {
  Vm vm;
  Tables4 tables;
  Vcpu* vcpu = nullptr;
  explicit LongModeGuest(const VmConfig& config, uint64_t cr0 = LONG_CR0, uint64_t cr4 = x86::cr4::PAE)
      : vm(config), tables((vm.add_memslot({.id = 0, .gpa = 0, .size = 16 * MIB}), vm), 0x10000) {
    vcpu = &long_mode_vcpu(vm, tables.root(), cr0, cr4);
  }
};

// The guest writes its own PTE through a gva that maps the page table: the write is emulated
// (unsync off) and the shadow follows at once.
TEST(ShadowWriteTracking, AGuestWriteToItsTableIsEmulatedAndTheShadowFollows) {
  LongModeGuest g(shadow_config(/*unsync=*/false));
  const uint64_t data_gva = 0x4000'0000, table_gva = 0x5000'0000;
  const uint64_t pte_gpa = g.tables.map(data_gva, 0x20'0000);
  g.tables.map(table_gva, pte_gpa & ~0xfffull);  // the page table, mapped as data
  g.vm.write_guest(0x20'0000, 8, 0xaaaa);
  g.vm.write_guest(0x30'0000, 8, 0xbbbb);
  Vcpu& v = *g.vcpu;
  ASSERT_EQ(v.access(data_gva, AccessKind::Read).value, 0xaaaau);
  const AccessResult w = v.access(table_gva + (pte_gpa & 0xfff), AccessKind::Write, 8, 0x30'0000 | PAGE_FLAGS);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w.gpa, pte_gpa);
  EXPECT_GE(stat(g.vm, "pf_emulate"), 1u);
  EXPECT_GE(stat(g.vm, "mmu_pte_write"), 1u);
  v.invlpg(data_gva);  // what the contract asks of the guest; the shadow had followed already
  EXPECT_EQ(v.access(data_gva, AccessKind::Read).value, 0xbbbbu);
  expect_audit_clean(g.vm);
}

// With unsync, the same write leaves the leaf table writable; `invlpg` brings the entry back.
TEST(ShadowWriteTracking, ALeafTableGoesOutOfSyncUntilInvlpg) {
  LongModeGuest g(shadow_config(/*unsync=*/true));
  const uint64_t data_gva = 0x4000'0000, table_gva = 0x5000'0000;
  const uint64_t pte_gpa = g.tables.map(data_gva, 0x20'0000);
  g.tables.map(table_gva, pte_gpa & ~0xfffull);
  g.vm.write_guest(0x30'0000, 8, 0xbbbb);
  Vcpu& v = *g.vcpu;
  ASSERT_TRUE(v.access(data_gva, AccessKind::Read).ok());
  ASSERT_TRUE(v.access(table_gva + (pte_gpa & 0xfff), AccessKind::Write, 8, 0x30'0000 | PAGE_FLAGS).ok());
  EXPECT_EQ(stat(g.vm, "mmu_unsync"), 1u);
  EXPECT_EQ(stat(g.vm, "unsync_pages"), 1u);
  expect_audit_clean(g.vm);  // out of sync is allowed until a sync point
  v.invlpg(data_gva);
  EXPECT_EQ(v.access(data_gva, AccessKind::Read).value, 0xbbbbu);
  // A later flush syncs the page and write-protects its frame again.
  ASSERT_FALSE(v.flush());
  EXPECT_EQ(stat(g.vm, "unsync_pages"), 0u);
  expect_audit_clean(g.vm);
}

// A poke to a shadowed table: not a guest write, but the shadow follows.
TEST(ShadowWriteTracking, APokeToAShadowedTableUpdatesTheShadow) {
  LongModeGuest g(shadow_config());
  const uint64_t data_gva = 0x4000'0000;
  const uint64_t pte_gpa = g.tables.map(data_gva, 0x20'0000);
  g.vm.write_guest(0x30'0000, 8, 0xcccc);
  Vcpu& v = *g.vcpu;
  ASSERT_TRUE(v.access(data_gva, AccessKind::Read).ok());
  g.vm.write_guest(pte_gpa, 8, 0x30'0000 | PAGE_FLAGS);
  v.invlpg(data_gva);
  EXPECT_EQ(v.access(data_gva, AccessKind::Read).value, 0xccccu);
  expect_audit_clean(g.vm);
}

// Repeated writes to an upper-level table with no fault through it: the page is unshadowed.
// (The writes' own faults go through another page directory: a fault through the page would
// count as use.)
TEST(ShadowWriteTracking, WriteFloodingUnshadowsAnUpperLevelTable) {
  LongModeGuest g(shadow_config());
  const uint64_t data_gva = 0x4000'0000, pd_gva = 0x8000'0000;
  const uint64_t pte_gpa = g.tables.map(data_gva, 0x20'0000);
  // The page directory above it, mapped as data (found through the PDPT entry).
  const uint64_t pdpt = g.vm.read_guest(g.tables.root(), 8) & pte::ADDR_MASK_52;
  const uint64_t pd = g.vm.read_guest(pdpt + ((data_gva >> 30) & 511) * 8, 8) & pte::ADDR_MASK_52;
  g.tables.map(pd_gva, pd);
  Vcpu& v = *g.vcpu;
  ASSERT_TRUE(v.access(data_gva, AccessKind::Read).ok());
  (void)pte_gpa;
  for (unsigned i = 0; i < 4; ++i) ASSERT_TRUE(v.access(pd_gva + 8 * (100 + i), AccessKind::Write, 8, 0).ok());
  EXPECT_GE(stat(g.vm, "mmu_flooded"), 1u);
  EXPECT_TRUE(v.access(data_gva, AccessKind::Read).ok());
  expect_audit_clean(g.vm);
}

// ---- page limit and root cache ---------------------------------------------------------------

TEST(ShadowPages, ThePageLimitRecyclesWithoutTheGuestSeeingIt) {
  LongModeGuest g(shadow_config(true, mmu::MIN_MAX_MMU_PAGES));
  // 200 page tables' worth of mappings (one 4K page in each 2 MiB region).
  for (uint64_t i = 0; i < 200; ++i) g.tables.map(0x4000'0000 + i * 2 * MIB, 0x40'0000 + i * 4096);
  for (uint64_t i = 0; i < 200; ++i) g.vm.write_guest(0x40'0000 + i * 4096, 8, i);
  Vcpu& v = *g.vcpu;
  for (unsigned round = 0; round < 2; ++round) {
    for (uint64_t i = 0; i < 200; ++i) ASSERT_EQ(v.access(0x4000'0000 + i * 2 * MIB, AccessKind::Read).value, i);
  }
  EXPECT_GT(stat(g.vm, "mmu_recycled"), 100u);
  EXPECT_LE(stat(g.vm, "shadow_pages"), mmu::MIN_MAX_MMU_PAGES);
  expect_audit_clean(g.vm);
}

TEST(ShadowPages, CrThreeSwitchesReuseThePreviousRoots) {
  Vm vm(shadow_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = 16 * MIB});
  std::vector<Tables4> spaces;
  for (uint64_t i = 0; i < 3; ++i) {
    spaces.emplace_back(vm, 0x10'0000 + i * 0x10'0000);
    spaces.back().map(0x4000'0000, 0x80'0000 + i * 4096);
    vm.write_guest(0x80'0000 + i * 4096, 8, 100 + i);
  }
  Vcpu& v = long_mode_vcpu(vm, spaces[0].root());
  for (unsigned round = 0; round < 3; ++round) {
    for (uint64_t i = 0; i < 3; ++i) {
      ASSERT_FALSE(v.mov_cr3(spaces[i].root()));
      ASSERT_EQ(v.access(0x4000'0000, AccessKind::Read).value, 100 + i);
    }
  }
  EXPECT_GE(stat(vm, "root_reuse"), 6u);
  EXPECT_EQ(stat(vm, "mmu_cache_miss"), 12u);  // 4 pages per address space, built once
  expect_audit_clean(vm);
}

// ---- rights in the guest's context -----------------------------------------------------------

TEST(ShadowRights, CrZeroWpOffLetsTheSupervisorWriteAReadOnlyPage) {
  LongModeGuest g(shadow_config(), x86::cr0::PG | x86::cr0::PE);  // CR0.WP=0
  g.tables.map(0x4000'0000, 0x20'0000, pte::P | pte::US);  // read-only user page
  Vcpu& v = *g.vcpu;
  ASSERT_TRUE(v.access(0x4000'0000, AccessKind::Read).ok());
  EXPECT_TRUE(v.access(0x4000'0000, AccessKind::Write, 8, 5).ok());
  ASSERT_FALSE(v.set_registers(user_mode()));
  const AccessResult user = v.access(0x4000'0000, AccessKind::Write, 8, 6);
  ASSERT_EQ(user.status, AccessResult::Status::Fault);
  EXPECT_EQ(user.fault.error_code, x86::pfec::P | x86::pfec::W | x86::pfec::U);
  EXPECT_EQ(v.access(0x4000'0000, AccessKind::Read).value, 5u);
  expect_audit_clean(g.vm);
}

TEST(ShadowRights, ProtectionKeysWorkUnderShadowPaging) {
  LongModeGuest g(shadow_config(), LONG_CR0, x86::cr4::PAE | x86::cr4::PKE);
  g.tables.map(0x4000'0000, 0x20'0000, PAGE_FLAGS | (uint64_t{1} << pte::PKEY_SHIFT));  // key 1
  Vcpu& v = *g.vcpu;
  ASSERT_FALSE(v.set_registers(user_mode()));
  ASSERT_TRUE(v.access(0x4000'0000, AccessKind::Read).ok());  // the SPTE exists now
  ASSERT_FALSE(v.set_registers(pkru(1u << 2)));            // AD for key 1: nothing dropped
  const AccessResult denied = v.access(0x4000'0000, AccessKind::Read);
  ASSERT_EQ(denied.status, AccessResult::Status::Fault);
  EXPECT_EQ(denied.fault.error_code, x86::pfec::P | x86::pfec::U | x86::pfec::PK);
  ASSERT_FALSE(v.set_registers(pkru(1u << 3)));  // WD only: reads pass, writes fault
  EXPECT_TRUE(v.access(0x4000'0000, AccessKind::Read).ok());
  EXPECT_EQ(v.access(0x4000'0000, AccessKind::Write, 8, 1).status, AccessResult::Status::Fault);
  expect_audit_clean(g.vm);
}

// ---- the page-track API ----------------------------------------------------------------------

struct RecordingNotifier : mmu::WriteTrackNotifier {
  struct Write {
    uint32_t vcpu;
    uint64_t gpa, value;
    unsigned width;
  };
  std::vector<Write> writes;
  void track_write(uint32_t vcpu, uint64_t gpa, unsigned width, uint64_t value) override { writes.push_back({vcpu, gpa, value, width}); }
};

TEST(ShadowPageTrack, TrackedFramesReportEveryGuestWrite) {
  LongModeGuest g(shadow_config());
  g.tables.map(0x4000'0000, 0x20'0000);
  RecordingNotifier n;
  g.vm.set_write_notifier(&n);
  Vcpu& v = *g.vcpu;
  ASSERT_TRUE(v.access(0x4000'0000, AccessKind::Write, 8, 1).ok());  // writable before tracking
  g.vm.track_writes(0x200, true);
  ASSERT_TRUE(v.access(0x4000'0010, AccessKind::Write, 4, 0xdead).ok());
  ASSERT_TRUE(v.access(0x4000'0010, AccessKind::Read, 4).ok());  // reads are not reported
  ASSERT_EQ(n.writes.size(), 1u);
  EXPECT_EQ(n.writes[0].gpa, 0x20'0010u);
  EXPECT_EQ(n.writes[0].value, 0xdeadu);
  EXPECT_EQ(n.writes[0].width, 4u);
  EXPECT_EQ(g.vm.read_guest(0x20'0010, 4), 0xdeadu);
  expect_audit_clean(g.vm);
  g.vm.track_writes(0x200, false);
  ASSERT_TRUE(v.access(0x4000'0018, AccessKind::Write, 4, 1).ok());
  EXPECT_EQ(n.writes.size(), 1u);
  expect_audit_clean(g.vm);
}

TEST(ShadowPageTrack, OtherEnginesRefuse) {
  VmConfig tdp;
  tdp.mmu = MmuKind::Tdp;
  Vm vm(tdp);
  EXPECT_THROW(vm.track_writes(0, true), UsageError);
}

}  // namespace
}  // namespace vmmu
