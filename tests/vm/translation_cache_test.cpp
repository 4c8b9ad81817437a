// The vCPUs' software TLB (mmu/translation_cache.hpp) under both engines: repeats skip the engine,
// and every event after which a hardware TLB could not be trusted makes the next access see the
// guest's tables, the memslots and the host as they are.
#include <gtest/gtest.h>

#include <algorithm>

#include "mmu/translation_cache.hpp"
#include "vm/vm.hpp"
#include "x86/control_registers.hpp"
#include "x86/page_table_entry.hpp"

namespace vmmu {
namespace {

using namespace x86;

constexpr uint64_t USER_RW = pte::P | pte::RW | pte::US;

// Flushes only move a stamp kept in each entry's tag; when it wraps, old entries must not come
// back to life (and a full 64-bit page number must not be taken for a stamp).
TEST(TranslationCache, StampsWrapWithoutReviving) {
  mmu::TranslationCache tc(64);
  uint8_t page[4096] = {};
  const uint64_t high = 0xffff'f000'0000'0000;  // a page number that fills all 52 bits
  tc.fill(0x5000, 0x9000, page, AccessKind::Read, false, PAGE_SHIFT);
  tc.fill(high, 0xa000, page, AccessKind::Read, false, PAGE_SHIFT);
  ASSERT_NE(tc.find(0x5008, AccessKind::Read, false), nullptr);
  ASSERT_NE(tc.find(high, AccessKind::Read, false), nullptr);
  EXPECT_EQ(tc.find(0x5008, AccessKind::Write, false), nullptr);
  EXPECT_EQ(tc.find(0x5008, AccessKind::Read, true), nullptr);
  for (int i = 0; i < 3 * 4096 + 7; ++i) {
    tc.flush();
    ASSERT_EQ(tc.find(0x5008, AccessKind::Read, false), nullptr) << "after " << i + 1 << " flushes";
    ASSERT_EQ(tc.find(high, AccessKind::Read, false), nullptr) << "after " << i + 1 << " flushes";
    if (i % 1000 == 0) {  // entries filled at later stamps also go at their next flush
      tc.fill(0x5000, 0x9000, page, AccessKind::Read, false, PAGE_SHIFT);
      ASSERT_NE(tc.find(0x5000, AccessKind::Read, false), nullptr);
    }
  }
  tc.fill(0x5000, 0x9000, page, AccessKind::Write, false, PAGE_SHIFT);
  const mmu::TranslationCache::Hit* h = tc.find(0x5010, AccessKind::Read, false);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->gpa, 0x9000u);
  tc.invlpg(0x5fff);
  EXPECT_EQ(tc.find(0x5010, AccessKind::Write, false), nullptr);
}

// A 4-level guest in an 8 MiB slot: PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
// gva 0x0 -> 0x5000 (data), 0x1000 -> the PT and 0x3000 -> the PD (so the guest can rewrite its
// own entries), 0x2000 -> 0x6000; gva 0x200000 is a 2 MiB page at gpa 0x200000.
class TranslationCacheTest : public ::testing::TestWithParam<MmuKind> {
 protected:
  void SetUp() override {
    VmConfig c;
    c.mmu = GetParam();
    vm = std::make_unique<Vm>(c);
    vm->add_memslot({.id = 0, .gpa = 0, .size = 8 << 20});
    vm->write_guest(0x1000, 8, 0x2000 | USER_RW);
    vm->write_guest(0x2000, 8, 0x3000 | USER_RW);
    vm->write_guest(0x3000, 8, 0x4000 | USER_RW);
    vm->write_guest(0x3008, 8, 0x200000 | USER_RW | pte::PS);
    vm->write_guest(0x4000, 8, 0x5000 | USER_RW);
    vm->write_guest(0x4008, 8, 0x4000 | USER_RW);
    vm->write_guest(0x4010, 8, 0x6000 | USER_RW);
    vm->write_guest(0x4018, 8, 0x3000 | USER_RW);
    vm->write_guest(0x5000, 8, 0x55);
    vm->write_guest(0x6000, 8, 0x66);
    vm->write_guest(0x7000, 8, 0x77);
    vm->write_guest(0x201000, 8, 0x21);
    vm->write_guest(0x401000, 8, 0x41);
    Vcpu& v = vm->create_vcpu(0);
    RegisterUpdate u;
    u.cr0 = cr0::PG | cr0::PE | cr0::WP;
    u.cr4 = cr4::PAE;
    u.efer = efer::LME;
    u.cr3 = 0x1000;
    ASSERT_FALSE(v.set_registers(u));
  }
  Vcpu& vcpu() { return vm->vcpu(0); }
  uint64_t read(uint64_t gva) {
    const AccessResult r = vcpu().access(gva, AccessKind::Read);
    EXPECT_TRUE(r.ok()) << "gva 0x" << std::hex << gva;
    return r.value;
  }
  uint64_t stat(const char* name) { return vm->stats()["stats"][name].get<uint64_t>(); }
  std::unique_ptr<Vm> vm;
};

TEST_P(TranslationCacheTest, RepeatsSkipTheEngine) {
  if (GetParam() != MmuKind::Tdp) GTEST_SKIP() << "only the TDP engine counts a guest walk per access it sees";
  for (int i = 0; i < 100; ++i) EXPECT_EQ(read(0x0), 0x55u);
  EXPECT_EQ(stat("walks"), 1u);
  EXPECT_EQ(stat("reads"), 100u);  // every access is still counted
  VmConfig c;
  c.mmu = MmuKind::Tdp;
  c.translation_cache_entries = 3;
  EXPECT_THROW(Vm{c}, UsageError);
}

TEST_P(TranslationCacheTest, TheGuestsRemapIsSeenAfterItsInvlpg) {
  EXPECT_EQ(read(0x2000), 0x66u);
  ASSERT_TRUE(vcpu().access(0x1000 + 2 * 8, AccessKind::Write, 8, 0x7000 | USER_RW).ok());  // PT entry 2
  vcpu().invlpg(0x2000);
  EXPECT_EQ(read(0x2000), 0x77u);
}

TEST_P(TranslationCacheTest, InvlpgAnywhereInALargePageDropsAllOfIt) {
  EXPECT_EQ(read(0x201000), 0x21u);
  ASSERT_TRUE(vcpu().access(0x3000 + 8, AccessKind::Write, 8, 0x400000 | USER_RW | pte::PS).ok());  // PD entry 1
  vcpu().invlpg(0x3ff000);  // another 4 KiB of the same 2 MiB page
  EXPECT_EQ(read(0x201000), 0x41u);
}

TEST_P(TranslationCacheTest, PrivilegesAreKeptApart) {
  ASSERT_TRUE(vcpu().access(0x1000 + 2 * 8, AccessKind::Write, 8, 0x6000 | pte::P | pte::RW).ok());  // supervisor only
  vcpu().invlpg(0x2000);
  EXPECT_EQ(read(0x2000), 0x66u);
  RegisterUpdate user;
  user.cpl = 3;
  ASSERT_FALSE(vcpu().set_registers(user));
  const AccessResult r = vcpu().access(0x2000, AccessKind::Read);
  ASSERT_EQ(r.status, AccessResult::Status::Fault);
  EXPECT_EQ(r.fault.error_code, pfec::P | pfec::U);
  RegisterUpdate kernel;
  kernel.cpl = 0;
  ASSERT_FALSE(vcpu().set_registers(kernel));
  EXPECT_EQ(read(0x2000), 0x66u);
}

TEST_P(TranslationCacheTest, AWriteAfterReadsSetsTheDirtyBit) {
  EXPECT_EQ(read(0x2000), 0x66u);
  EXPECT_FALSE(vm->read_guest(0x4010, 8) & pte::D);
  ASSERT_TRUE(vcpu().access(0x2000, AccessKind::Write, 8, 1).ok());
  EXPECT_TRUE(vm->read_guest(0x4010, 8) & pte::D);
}

TEST_P(TranslationCacheTest, AgingSeesCachedPagesUsedAgain) {
  read(0x0);
  const std::vector<uint64_t> first = vm->age(0x5000, 0x1000);
  EXPECT_EQ(first, std::vector<uint64_t>{0x5});
  EXPECT_TRUE(vm->age(0x5000, 0x1000).empty());
  read(0x0);
  EXPECT_EQ(vm->age(0x5000, 0x1000), std::vector<uint64_t>{0x5});
}

TEST_P(TranslationCacheTest, AClearedPageIsLoggedAtItsNextWrite) {
  vm->set_dirty_logging(0, true);
  ASSERT_TRUE(vcpu().access(0x2000, AccessKind::Write, 8, 1).ok());
  std::vector<uint64_t> dirty = vm->dirty_gfns(0);
  EXPECT_TRUE(std::count(dirty.begin(), dirty.end(), 0x6u));
  vm->clear_dirty_gfns(0, dirty);
  EXPECT_FALSE(std::count(vm->dirty_gfns(0).begin(), vm->dirty_gfns(0).end(), 0x6u));
  ASSERT_TRUE(vcpu().access(0x2000, AccessKind::Write, 8, 2).ok());
  dirty = vm->dirty_gfns(0);
  EXPECT_TRUE(std::count(dirty.begin(), dirty.end(), 0x6u));
}

TEST_P(TranslationCacheTest, HostInvalidationMovesThePageUnderIt) {
  ASSERT_TRUE(vcpu().access(0x2000, AccessKind::Write, 8, 0x1234).ok());
  vm->unmap(0x6000, 0x1000);
  EXPECT_EQ(read(0x2000), 0x1234u);
  ASSERT_TRUE(vcpu().access(0x2000, AccessKind::Write, 8, 0x5678).ok());
  EXPECT_EQ(vm->read_guest(0x6000, 8), 0x5678u);  // into the new frame, where the VMM reads
}

TEST_P(TranslationCacheTest, VmmWritesToTheTablesAreSeen) {
  EXPECT_EQ(read(0x2000), 0x66u);
  vm->write_guest(0x4010, 8, 0x7000 | USER_RW);  // the VMM rewrites the PTE, no INVLPG
  EXPECT_EQ(read(0x2000), 0x77u);
}

TEST_P(TranslationCacheTest, AMovedMemslotIsMmioWhereItWas) {
  vm->add_memslot({.id = 1, .gpa = 0x1000000, .size = 0x1000});
  vm->write_guest(0x1000000, 8, 0x99);
  ASSERT_TRUE(vcpu().access(0x1000 + 2 * 8, AccessKind::Write, 8, 0x1000000 | USER_RW).ok());
  vcpu().invlpg(0x2000);
  EXPECT_EQ(read(0x2000), 0x99u);
  vm->move_memslot(1, 0x2000000);
  EXPECT_EQ(vcpu().access(0x2000, AccessKind::Read).status, AccessResult::Status::Mmio);
}

INSTANTIATE_TEST_SUITE_P(Engines, TranslationCacheTest, ::testing::Values(MmuKind::Tdp, MmuKind::Shadow),
                         [](const auto& info) { return std::string(name(info.param)); });

}  // namespace
}  // namespace vmmu
