// The TDP engine: the seed's direct pages, huge mappings, MMIO generations, dirty logging in both
// of KVM's ways, host invalidation and aging, with the audit after each step.
#include "mmu/tdp_mmu.hpp"

#include <gtest/gtest.h>

#include "guest/host_memory.hpp"
#include "mmu/shadow_page.hpp"
#include "vm/vm.hpp"

namespace vmmu {
namespace {

using guest::HostPageSize;
using x86::AccessKind;
constexpr uint64_t MIB = 1ull << 20, GIB = 1ull << 30;

VmConfig tdp_config(mmu::DirtyLogMode mode = mmu::DirtyLogMode::WriteProtect, bool eager = true) {
  VmConfig c;
  c.mmu = MmuKind::Tdp;
  c.tdp.dirty_log = mode;
  c.tdp.eager_split = eager;
  return c;
}

uint64_t stat(Vm& vm, const char* name) { return vm.stats()["stats"][name].get<uint64_t>(); }
uint64_t memory(Vm& vm, const char* name) { return vm.stats()["memory"][name].get<uint64_t>(); }

void expect_audit_clean(Vm& vm) {
  const auto v = vm.audit();
  EXPECT_TRUE(v.empty()) << (v.empty() ? "" : v.front());
}

// Paging off: gva = gpa, so every access is one TDP translation.
TEST(TdpMmu, DirectPagesComputeTheirGfnsAtEveryLevel) {
  mmu::ShadowPage sp;
  sp.role = mmu::Role().with_level(2).with_direct(true);
  sp.gfn = 0x40000;  // a level-2 page spans 512 * 512 frames
  EXPECT_EQ(sp.gfn_at(0), 0x40000u);
  EXPECT_EQ(sp.gfn_at(3), 0x40000u + 3 * 512);
  sp.role = sp.role.with_level(3);
  EXPECT_EQ(sp.gfn_at(1), 0x40000u + (1u << 18));
}

TEST(TdpMmu, MapsAtTheLargestLevelTheSlotAllows) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = 2 * GIB, .host_page = HostPageSize::Size1G});
  vm.add_memslot({.id = 1, .gpa = 2 * GIB, .size = 4 * MIB, .host_page = HostPageSize::Size2M});
  vm.add_memslot({.id = 2, .gpa = 2 * GIB + 5 * MIB, .size = 4 * MIB, .host_page = HostPageSize::Size2M});  // not 2M-aligned
  Vcpu& v = vm.create_vcpu(0);
  ASSERT_TRUE(v.access(0x1234, AccessKind::Write, 4, 7).ok());
  ASSERT_TRUE(v.access(GIB + 0x5000, AccessKind::Read).ok());
  ASSERT_TRUE(v.access(2 * GIB + 0x1000, AccessKind::Read).ok());
  ASSERT_TRUE(v.access(2 * GIB + 6 * MIB, AccessKind::Read).ok());        // [6M, 8M) lies inside slot 2
  ASSERT_TRUE(v.access(2 * GIB + 5 * MIB + 0x1000, AccessKind::Read).ok());  // [4M, 6M) does not
  EXPECT_EQ(stat(vm, "pages_1g"), 2u);
  EXPECT_EQ(stat(vm, "pages_2m"), 2u);
  EXPECT_EQ(stat(vm, "pages_4k"), 1u);
  EXPECT_EQ(v.access(0x1234, AccessKind::Read, 4).value, 7u);
  expect_audit_clean(vm);
}

// Faults straight into the engine (no data access: touching 1 GiB of host memory would measure
// the host kernel, not the MMU).
void fault_in(Vm& vm, uint64_t gpa, uint64_t size, uint64_t step) {
  auto& tdp = static_cast<mmu::TdpMmu&>(vm.mmu());
  auto& ctx = vm.vcpu(0).mmu_context();
  for (uint64_t a = gpa; a < gpa + size; a += step)
    ASSERT_EQ(tdp.translate_gfn(ctx, a >> 12, AccessKind::Read, true).outcome, mmu::TdpMmu::Outcome::Mapped);
}

TEST(TdpMmu, OneGibAt4KCostsTheTablesAndLittleMore) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = GIB});
  vm.create_vcpu(0);
  fault_in(vm, 0, GIB, 4096);
  EXPECT_EQ(stat(vm, "shadow_pages"), 515u);  // 512 PTs, 1 PD, 1 PDPT, 1 PML4
  EXPECT_LE(memory(vm, "mapping_total"), uint64_t(2.05 * MIB));
  EXPECT_EQ(memory(vm, "translations"), 0u);
  // KVM's layouts for the same population (see mmu/kvm_layout.hpp): 2010 about half of pre-2010.
  const double today = memory(vm, "kvm_today") / double(MIB), y2010 = memory(vm, "kvm_2010") / double(MIB),
               pre = memory(vm, "kvm_pre2010") / double(MIB);
  EXPECT_NEAR(today, 2.10, 0.01);
  EXPECT_NEAR(y2010, 4.10, 0.02);
  EXPECT_NEAR(pre, 6.10, 0.02);
  expect_audit_clean(vm);
}

TEST(TdpMmu, OneGibAt2MIsThreeTablePages) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = GIB, .host_page = HostPageSize::Size2M});
  vm.create_vcpu(0);
  fault_in(vm, 8, GIB, 2 * MIB);
  EXPECT_EQ(stat(vm, "pages_2m"), 512u);
  EXPECT_LE(memory(vm, "mapping_total"), uint64_t(12.5 * 1024));
  expect_audit_clean(vm);
}

TEST(TdpMmu, MmioSptesGoStaleWithTheMemslotGeneration) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = MIB});
  Vcpu& v = vm.create_vcpu(0);
  EXPECT_EQ(v.access(0x200000, AccessKind::Read).status, AccessResult::Status::Mmio);
  EXPECT_EQ(v.access(0x200000, AccessKind::Read).status, AccessResult::Status::Mmio);  // cached: no new fault
  EXPECT_EQ(stat(vm, "pf_mmio_spte_created"), 1u);
  EXPECT_EQ(stat(vm, "mmio_exits_cached"), 1u);
  // A slot appears there: the cached MMIO SPTE is stale by generation, no walk needed.
  vm.add_memslot({.id = 1, .gpa = 0x200000, .size = 0x1000});
  vm.write_guest(0x200000, 8, 0x77);
  auto r = v.access(0x200000, AccessKind::Read);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value, 0x77u);
  expect_audit_clean(vm);
}

TEST(TdpMmu, MmioGenerationWrapZapsEveryMmioSpte) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = MIB});
  Vcpu& v = vm.create_vcpu(0);
  EXPECT_EQ(v.access(0x300000, AccessKind::Read).status, AccessResult::Status::Mmio);
  // 2^8 generations later the SPTE's generation bits would match again: all MMIO SPTEs go.
  for (int i = 0; i < 300; ++i) vm.set_dirty_logging(0, i % 2 == 0);
  vm.add_memslot({.id = 1, .gpa = 0x400000, .size = 0x1000});
  EXPECT_GE(stat(vm, "mmio_zap_all"), 1u);
  EXPECT_EQ(v.access(0x300000, AccessKind::Read).status, AccessResult::Status::Mmio);
  expect_audit_clean(vm);
}

TEST(TdpMmu, ReadOnlySlotIsMappedReadOnlyAndNeverWritten) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = MIB, .readonly = true});
  vm.write_guest(0x1000, 8, 5);
  Vcpu& v = vm.create_vcpu(0);
  EXPECT_EQ(v.access(0x1000, AccessKind::Write, 8, 9).status, AccessResult::Status::ReadOnly);
  EXPECT_EQ(v.access(0x1000, AccessKind::Read).value, 5u);
  EXPECT_EQ(v.access(0x1000, AccessKind::Write, 8, 9).status, AccessResult::Status::ReadOnly);
  EXPECT_EQ(vm.read_guest(0x1000, 8), 5u);
  expect_audit_clean(vm);
}

class TdpDirtyLog : public ::testing::TestWithParam<std::tuple<mmu::DirtyLogMode, bool>> {};

TEST_P(TdpDirtyLog, LogsExactlyTheGuestWritesAcrossSplitAndCollapse) {
  const auto [mode, eager] = GetParam();
  Vm vm(tdp_config(mode, eager));
  vm.add_memslot({.id = 0, .gpa = 0, .size = 8 * MIB, .host_page = HostPageSize::Size2M});
  Vcpu& v = vm.create_vcpu(0);
  for (uint64_t gpa = 0; gpa < 8 * MIB; gpa += 2 * MIB) ASSERT_TRUE(v.access(gpa, AccessKind::Write, 8, 1).ok());
  EXPECT_EQ(stat(vm, "pages_2m"), 4u);
  vm.set_dirty_logging(0, true);
  EXPECT_EQ(stat(vm, "pages_2m"), 0u);
  EXPECT_EQ(stat(vm, "pages_4k"), eager ? 4u * 512 : 0u);
  expect_audit_clean(vm);
  EXPECT_TRUE(vm.dirty_gfns(0).empty());  // writes before logging are not logged
  ASSERT_TRUE(v.access(0x3000, AccessKind::Write, 8, 2).ok());
  ASSERT_TRUE(v.access(0x3008, AccessKind::Read).ok());
  ASSERT_TRUE(v.access(0x200000, AccessKind::Read).ok());
  ASSERT_TRUE(v.access(0x401000, AccessKind::Write, 1, 3).ok());
  EXPECT_EQ(vm.dirty_gfns(0), (std::vector<uint64_t>{0x3, 0x401}));
  expect_audit_clean(vm);
  vm.clear_dirty_gfns(0, {0x3, 0x401});
  EXPECT_TRUE(vm.dirty_gfns(0).empty());
  ASSERT_TRUE(v.access(0x3000, AccessKind::Write, 8, 4).ok());  // re-protected: logged again
  EXPECT_EQ(vm.dirty_gfns(0), (std::vector<uint64_t>{0x3}));
  expect_audit_clean(vm);
  // Logging off: the 4 KiB tables go, and the next faults map 2 MiB again.
  vm.set_dirty_logging(0, false);
  ASSERT_TRUE(v.access(0x3000, AccessKind::Read).ok());
  ASSERT_TRUE(v.access(0x600000, AccessKind::Read).ok());
  EXPECT_EQ(stat(vm, "pages_2m"), 2u);
  EXPECT_EQ(v.access(0x401000, AccessKind::Read, 1).value, 3u);
  expect_audit_clean(vm);
}

INSTANTIATE_TEST_SUITE_P(Modes, TdpDirtyLog,
                         ::testing::Combine(::testing::Values(mmu::DirtyLogMode::WriteProtect, mmu::DirtyLogMode::DirtyBit),
                                            ::testing::Bool()));

TEST(TdpMmu, DirtyRingsPushEachPageOnceUntilReset) {
  for (MmuKind kind : {MmuKind::None, MmuKind::Tdp}) {
    VmConfig c;
    c.mmu = kind;
    Vm vm(c);
    vm.add_memslot({.id = 3, .gpa = 0x100000, .size = MIB, .log_dirty = true});
    vm.enable_dirty_ring(4);
    Vcpu& a = vm.create_vcpu(0);
    Vcpu& b = vm.create_vcpu(1);
    ASSERT_TRUE(a.access(0x101000, AccessKind::Write, 8, 1).ok());
    ASSERT_TRUE(a.access(0x101008, AccessKind::Write, 8, 2).ok());  // same page: no new entry
    ASSERT_TRUE(b.access(0x105000, AccessKind::Write, 8, 3).ok());
    EXPECT_EQ(a.harvest_dirty_ring(), (std::vector<mmu::DirtyRingEntry>{{3, 1}}));
    EXPECT_EQ(b.harvest_dirty_ring(), (std::vector<mmu::DirtyRingEntry>{{3, 5}}));
    ASSERT_TRUE(a.access(0x101000, AccessKind::Write, 8, 4).ok());  // not reset yet: still dirty
    EXPECT_TRUE(a.harvest_dirty_ring().empty());
    vm.reset_dirty_rings();
    EXPECT_TRUE(vm.dirty_gfns(3).empty());  // the bitmap saw the same pages cleared
    ASSERT_TRUE(a.access(0x101000, AccessKind::Write, 8, 5).ok());
    EXPECT_EQ(a.harvest_dirty_ring(), (std::vector<mmu::DirtyRingEntry>{{3, 1}}));
    for (uint64_t p = 0; p < 4; ++p) ASSERT_TRUE(b.access(0x110000 + p * 4096, AccessKind::Write, 1, 1).ok());
    EXPECT_TRUE(b.dirty_ring_full());
    expect_audit_clean(vm);
  }
}

TEST(TdpMmu, UnmapDropsEveryMappingOfTheOldFrames) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = 4 * MIB, .host_page = HostPageSize::Size2M});
  Vcpu& v = vm.create_vcpu(0);
  ASSERT_TRUE(v.access(0x5000, AccessKind::Write, 8, 0xabc).ok());
  EXPECT_EQ(stat(vm, "pages_2m"), 1u);
  uint8_t* old = vm.memslots().find(5)->host_page(5);
  vm.unmap(0x5000, 0x1000);
  EXPECT_EQ(old[0], guest::POISON_BYTE);
  expect_audit_clean(vm);
  auto r = v.access(0x5000, AccessKind::Read);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value, 0xabcu);
  // The 2 MiB region is no longer contiguous on the host: 4 KiB mappings from now on.
  EXPECT_EQ(stat(vm, "pages_2m"), 0u);
  EXPECT_EQ(stat(vm, "pages_4k"), 1u);
  expect_audit_clean(vm);
}

TEST(TdpMmu, AgeFoldsInTheBitsOfZappedSptes) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = MIB});
  vm.add_memslot({.id = 1, .gpa = 16 * MIB, .size = MIB});
  Vcpu& v = vm.create_vcpu(0);
  ASSERT_TRUE(v.access(0x2000, AccessKind::Read).ok());
  ASSERT_TRUE(v.access(16 * MIB + 0x3000, AccessKind::Read).ok());
  vm.move_memslot(1, 32 * MIB);  // fast zap: the root goes, its bits are folded later
  EXPECT_EQ(vm.age(0, MIB), (std::vector<uint64_t>{2}));
  EXPECT_EQ(vm.age(32 * MIB, MIB), (std::vector<uint64_t>{(32 * MIB >> 12) + 3}));
  EXPECT_TRUE(vm.age(0, MIB).empty());
  ASSERT_TRUE(v.access(0x2000, AccessKind::Read).ok());
  vm.unmap(0x2000, 0x1000);
  EXPECT_EQ(vm.age(0, MIB), (std::vector<uint64_t>{2}));
  expect_audit_clean(vm);
}

TEST(TdpMmu, MemslotDeleteAndMoveLeaveNoSpteBehind) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = 4 * MIB});
  vm.add_memslot({.id = 1, .gpa = 8 * MIB, .size = 4 * MIB, .host_page = HostPageSize::Size2M});
  Vcpu& v = vm.create_vcpu(0);
  ASSERT_TRUE(v.access(8 * MIB + 0x10, AccessKind::Write, 8, 1).ok());
  ASSERT_TRUE(v.access(0x10, AccessKind::Write, 8, 2).ok());
  vm.move_memslot(1, 16 * MIB);
  expect_audit_clean(vm);
  EXPECT_EQ(v.access(8 * MIB + 0x10, AccessKind::Read).status, AccessResult::Status::Mmio);
  EXPECT_EQ(v.access(16 * MIB + 0x10, AccessKind::Read).value, 1u);
  vm.delete_memslot(0);
  EXPECT_EQ(v.access(0x10, AccessKind::Read).status, AccessResult::Status::Mmio);
  expect_audit_clean(vm);
}

TEST(TdpMmu, GuestWalkGoesThroughTheTdpTables) {
  Vm vm(tdp_config());
  vm.add_memslot({.id = 0, .gpa = 0, .size = MIB});
  // A 4-level guest whose tables are at 0x1000..0x4000, mapping gva 0 -> 0x5000.
  vm.write_guest(0x1000, 8, 0x2007);
  vm.write_guest(0x2000, 8, 0x3007);
  vm.write_guest(0x3000, 8, 0x4007);
  vm.write_guest(0x4000, 8, 0x5007);
  Vcpu& v = vm.create_vcpu(0);
  RegisterUpdate u;
  u.cr0 = x86::cr0::PG | x86::cr0::PE;
  u.cr4 = x86::cr4::PAE;
  u.efer = x86::efer::LME;
  u.cr3 = 0x1000;
  ASSERT_FALSE(v.set_registers(u));
  ASSERT_TRUE(v.access(0x8, AccessKind::Write, 8, 1).ok());
  EXPECT_EQ(stat(vm, "pf_fixed"), 5u);  // four table pages and the data page
  EXPECT_EQ(vm.read_guest(0x4000, 8), 0x5067u);  // A and D set through the TDP mapping
  expect_audit_clean(vm);
}

}  // namespace
}  // namespace vmmu
