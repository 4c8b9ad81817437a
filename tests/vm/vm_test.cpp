// The library API with the reference MMU: memslots, registers and PDPTE loading, the VMM's
// own accesses, dirty logging, host invalidation and aging.
#include "vm/vm.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "guest/host_memory.hpp"
#include "x86/control_registers.hpp"
#include "x86/page_table_entry.hpp"

namespace vmmu {
namespace {

using namespace x86;

constexpr uint64_t PRESENT_RW_USER = pte::P | pte::RW | pte::US;

// A 4-level guest: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000, gva 0 -> gpa 0x5000.
class LongModeVm : public ::testing::Test {
 protected:
  void SetUp() override {
    vm.add_memslot({.id = 0, .gpa = 0, .size = 1 << 20});
    vm.write_guest(0x1000, 8, 0x2000 | PRESENT_RW_USER);
    vm.write_guest(0x2000, 8, 0x3000 | PRESENT_RW_USER);
    vm.write_guest(0x3000, 8, 0x4000 | PRESENT_RW_USER);
    vm.write_guest(0x4000, 8, 0x5000 | PRESENT_RW_USER);
    Vcpu& v = vm.create_vcpu(0);
    RegisterUpdate u;
    u.cr0 = cr0::PG | cr0::PE | cr0::WP;
    u.cr4 = cr4::PAE;
    u.efer = efer::LME;
    u.cr3 = 0x1000;
    EXPECT_FALSE(v.set_registers(u));
  }
  Vm vm;
};

TEST_F(LongModeVm, ReadWriteThroughTables) {
  Vcpu& v = vm.vcpu(0);
  auto w = v.access(0x10, AccessKind::Write, 4, 0xdeadbeef);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w.gpa, 0x5010u);
  auto r = v.access(0x10, AccessKind::Read, 4);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value, 0xdeadbeefu);
  EXPECT_EQ(vm.read_guest(0x5010, 4), 0xdeadbeefu);
  // The walk set A on every level and D on the leaf.
  EXPECT_EQ(vm.read_guest(0x4000, 8), 0x5000 | PRESENT_RW_USER | pte::A | pte::D);
  EXPECT_EQ(vm.read_guest(0x1000, 8), 0x2000 | PRESENT_RW_USER | pte::A);
}

TEST_F(LongModeVm, MmioAndReadOnlySlot) {
  vm.add_memslot({.id = 1, .gpa = 0x100000, .size = 0x1000, .readonly = true});
  vm.write_guest(0x4008, 8, 0x100000 | PRESENT_RW_USER);  // gva 0x1000 -> read-only slot
  vm.write_guest(0x4010, 8, 0x200000 | PRESENT_RW_USER);  // gva 0x2000 -> no slot (MMIO)
  vm.write_guest(0x100000, 8, 42);                         // the VMM may write a ro slot
  Vcpu& v = vm.vcpu(0);
  auto r = v.access(0x1000, AccessKind::Read);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value, 42u);
  auto w = v.access(0x1000, AccessKind::Write, 8, 7);
  EXPECT_EQ(w.status, AccessResult::Status::ReadOnly);
  EXPECT_EQ(w.gpa, 0x100000u);
  EXPECT_EQ(vm.read_guest(0x100000, 8), 42u);  // never performed
  auto m = v.access(0x2008, AccessKind::Read);
  EXPECT_EQ(m.status, AccessResult::Status::Mmio);
  EXPECT_EQ(m.gpa, 0x200008u);
}

TEST_F(LongModeVm, NonCanonicalIsGeneralProtection) {
  auto r = vm.vcpu(0).access(0x0000'8000'0000'0000ull, AccessKind::Read);
  ASSERT_EQ(r.status, AccessResult::Status::Fault);
  EXPECT_EQ(r.fault.vector, VECTOR_GP);
  EXPECT_EQ(r.fault.error_code, 0u);
}

TEST_F(LongModeVm, DirtyLogCountsGuestWritesAndADUpdatesOnly) {
  vm.set_dirty_logging(0, true);
  vm.write_guest(0x6000, 8, 1);  // a VMM write is not logged
  Vcpu& v = vm.vcpu(0);
  ASSERT_TRUE(v.access(0x0, AccessKind::Read).ok());  // sets A bits in 4 tables
  auto gfns = vm.dirty_gfns(0);
  EXPECT_EQ(gfns, (std::vector<uint64_t>{1, 2, 3, 4}));
  vm.clear_dirty_gfns(0, gfns);
  ASSERT_TRUE(v.access(0x0, AccessKind::Write, 8, 5).ok());  // D on the PTE, data page
  EXPECT_EQ(vm.dirty_gfns(0), (std::vector<uint64_t>{4, 5}));
  // A get without a clear keeps returning the same set.
  EXPECT_EQ(vm.dirty_gfns(0), (std::vector<uint64_t>{4, 5}));
  vm.clear_dirty_gfns(0, {5});
  EXPECT_EQ(vm.dirty_gfns(0), (std::vector<uint64_t>{4}));
  // The KVM-shaped bitmap API says the same.
  DirtyBitmap b = vm.get_dirty_log(0);
  EXPECT_EQ(b.npages, 256u);
  ASSERT_EQ(b.words.size(), 4u);
  EXPECT_EQ(b.words[0], 1ull << 4);
  vm.clear_dirty_log(0, 0, {1ull << 4});
  EXPECT_TRUE(vm.dirty_gfns(0).empty());
}

TEST_F(LongModeVm, UnmapMovesPagesAndPoisonsOldFrames) {
  Vcpu& v = vm.vcpu(0);
  ASSERT_TRUE(v.access(0x0, AccessKind::Write, 8, 0x1122334455667788ull).ok());
  const guest::Memslot& slot = *vm.memslots().find(5);
  uint8_t* old_frame = slot.host_page(5);
  vm.unmap(0x5000, 0x1000);
  EXPECT_NE(slot.host_page(5), old_frame);
  EXPECT_EQ(old_frame[0], guest::POISON_BYTE);
  EXPECT_EQ(old_frame[4095], guest::POISON_BYTE);
  auto r = v.access(0x0, AccessKind::Read);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value, 0x1122334455667788ull);
  // Moving it again recycles nothing that is still in use.
  uint8_t* second = slot.host_page(5);
  vm.unmap(0x5000, 0x1000);
  EXPECT_NE(slot.host_page(5), second);
  EXPECT_EQ(vm.read_guest(0x5000, 8), 0x1122334455667788ull);
}

TEST_F(LongModeVm, AgeReportsDataAccessesAndADWritesThenClears) {
  Vcpu& v = vm.vcpu(0);
  ASSERT_TRUE(v.access(0x0, AccessKind::Read).ok());
  EXPECT_EQ(vm.age(0, 0x10000), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_TRUE(vm.age(0, 0x10000).empty());
  // Table reads without an A/D update do not count: a TLB hit would not read them either.
  ASSERT_TRUE(v.access(0x8, AccessKind::Fetch, 1).ok());
  EXPECT_EQ(vm.age(0, 0x10000), (std::vector<uint64_t>{5}));
}

TEST(VmMemslots, RefusesBadSlots) {
  Vm vm;
  vm.add_memslot({.id = 0, .gpa = 0x100000, .size = 0x100000});
  EXPECT_THROW(vm.add_memslot({.id = 0, .gpa = 0x400000, .size = 0x1000}), UsageError);  // duplicate id
  EXPECT_THROW(vm.add_memslot({.id = 1, .gpa = 0x1ff000, .size = 0x2000}), UsageError);  // overlap
  EXPECT_THROW(vm.add_memslot({.id = 1, .gpa = 0x800, .size = 0x1000}), UsageError);     // misaligned
  EXPECT_THROW(vm.add_memslot({.id = 1, .gpa = 0x0, .size = 0}), UsageError);            // empty
  EXPECT_THROW(vm.add_memslot({.id = 1, .gpa = 0x0, .size = (64ull << 40) + 0x1000}), UsageError);
  EXPECT_THROW(vm.delete_memslot(9), UsageError);
  EXPECT_THROW(vm.move_memslot(0, 0x80800), UsageError);  // misaligned
  vm.add_memslot({.id = 1, .gpa = 0x400000, .size = 0x1000});
  EXPECT_THROW(vm.move_memslot(1, 0x1ff000), UsageError);  // onto slot 0
  vm.move_memslot(0, 0x80000);                              // overlapping only its old self is fine
  EXPECT_EQ(vm.memslots().find(0x80)->id(), 0u);
}

TEST(VmMemslots, HugeSlotCostsNothingUntilTouched) {
  Vm vm;
  vm.add_memslot({.id = 0, .gpa = 0, .size = 64ull << 40});  // 64 TiB
  vm.write_guest((64ull << 40) - 8, 8, 0xabcdef);
  EXPECT_EQ(vm.read_guest((64ull << 40) - 8, 8), 0xabcdefu);
  EXPECT_LT(vm.stats()["memory"]["memslots"].get<uint64_t>(), 1u << 20);
}

TEST(VmMemslots, MoveKeepsContentsAndDeleteMakesMmio) {
  Vm vm;
  vm.add_memslot({.id = 3, .gpa = 0x10000, .size = 0x2000});
  vm.write_guest(0x11000, 8, 99);
  vm.move_memslot(3, 0x40000);
  EXPECT_EQ(vm.read_guest(0x41000, 8), 99u);
  EXPECT_THROW(vm.read_guest(0x11000, 8), UsageError);
  Vcpu& v = vm.create_vcpu(0);
  EXPECT_EQ(v.access(0x41000, AccessKind::Read).value, 99u);  // paging off: identity
  vm.delete_memslot(3);
  EXPECT_EQ(v.access(0x41000, AccessKind::Read).status, AccessResult::Status::Mmio);
}

TEST(VcpuRegisters, RefusesImpossibleStates) {
  Vm vm;
  vm.set_cpu_model({.maxphyaddr = 40, .gbpages = true, .la57 = false});
  Vcpu& v = vm.create_vcpu(0);
  RegisterUpdate pg_without_pe;
  pg_without_pe.cr0 = cr0::PG;
  EXPECT_THROW(v.set_registers(pg_without_pe), UsageError);
  RegisterUpdate la57;
  la57.cr4 = cr4::LA57 | cr4::PAE;
  EXPECT_THROW(v.set_registers(la57), UsageError);
  RegisterUpdate pcide;
  pcide.cr4 = cr4::PCIDE;
  EXPECT_THROW(v.set_registers(pcide), UsageError);
  RegisterUpdate cr3_high;
  cr3_high.cr0 = cr0::PG | cr0::PE;
  cr3_high.cr4 = cr4::PAE;
  cr3_high.efer = efer::LME;
  cr3_high.cr3 = 1ull << 40;  // maxphyaddr 40: bit 40 is reserved
  EXPECT_THROW(v.set_registers(cr3_high), UsageError);
  EXPECT_EQ(v.state(), CpuState{});  // nothing changed
  EXPECT_THROW(vm.set_cpu_model({}), UsageError);  // after the first vcpu
}

TEST(VcpuRegisters, PaePdptesLoadAndReservedBitsGiveGp) {
  Vm vm;
  vm.set_cpu_model({.maxphyaddr = 36});
  vm.add_memslot({.id = 0, .gpa = 0, .size = 1 << 20});
  vm.write_guest(0x1000, 8, 0x2000 | pte::P);
  vm.write_guest(0x2000, 8, 0x3000 | PRESENT_RW_USER);  // PD[0]
  vm.write_guest(0x3000, 8, 0x7000 | PRESENT_RW_USER);  // PT[0]
  Vcpu& v = vm.create_vcpu(0);
  RegisterUpdate u;
  u.cr0 = cr0::PG | cr0::PE;
  u.cr4 = cr4::PAE;
  u.cr3 = 0x1000;
  ASSERT_FALSE(v.set_registers(u));
  EXPECT_EQ(v.pdptes().entry[0], 0x2000 | pte::P);
  EXPECT_EQ(v.access(0x0, AccessKind::Read).gpa, 0x7000u);
  // The PDPTEs are latched: a poke to the PDPT changes nothing until a reload.
  vm.write_guest(0x1000, 8, 0);
  EXPECT_TRUE(v.access(0x0, AccessKind::Read).ok());
  // Reserved bit 1 (R/W is reserved in a PDPTE) on reload: #GP, old state kept.
  vm.write_guest(0x1000, 8, 0x2000 | pte::P | pte::RW);
  auto f = v.flush();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->vector, VECTOR_GP);
  EXPECT_EQ(v.pdptes().entry[0], 0x2000 | pte::P);
  // A MOV CR3 to a PDPT with a bit above maxphyaddr set: #GP, CR3 unchanged.
  vm.write_guest(0x8000, 8, (1ull << 36) | pte::P);
  EXPECT_TRUE(v.mov_cr3(0x8000));
  EXPECT_EQ(v.state().cr3, 0x1000u);
  // A not-present PDPTE may hold anything.
  vm.write_guest(0x8000, 8, 0xffff'ffff'ffff'fffeull);
  EXPECT_FALSE(v.mov_cr3(0x8000));
  auto r = v.access(0x0, AccessKind::Read);
  ASSERT_EQ(r.status, AccessResult::Status::Fault);
  EXPECT_EQ(r.fault.error_code, 0u);
}

TEST(VcpuAccess, RefusesMalformedAccesses) {
  Vm vm;
  vm.add_memslot({.id = 0, .gpa = 0, .size = 1 << 20});
  Vcpu& v = vm.create_vcpu(0);
  EXPECT_THROW(v.access(0xffc, AccessKind::Read, 8), UsageError);          // crosses a page
  EXPECT_THROW(v.access(0x0, AccessKind::Write, 1, 0x100), UsageError);    // value too wide
  EXPECT_THROW(v.access(0x0, AccessKind::Read, 3), UsageError);            // width
  EXPECT_THROW(v.access(1ull << 32, AccessKind::Read, 8), UsageError);     // >= 2^32 outside long mode
}

}  // namespace
}  // namespace vmmu
