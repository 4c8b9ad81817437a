// Resource limits (issue 7): the injectable host allocator and its fault-injecting double, the
// engines' small-metadata reserve, host refusals at every allocation of a scenario driven through
// the Vm API (each op that meets one fails cleanly, the audit stays clean, a retry succeeds and
// the guest sees what it would have seen), the byte budget, and 64 TiB memslots that cost
// memory only where they are touched. (Replays of .vmt workloads under refusals and budgets are in
// tests/sim/resource_limits_replay_test.cpp.)
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "guest/host_allocator.hpp"
#include "mmu/metadata_memory.hpp"
#include "mmu/page_pool.hpp"
#include "vm/vm.hpp"
#include "x86/control_registers.hpp"

namespace vmmu {
namespace {

using guest::FaultInjectingAllocator;
using guest::HostPageSize;
using x86::AccessKind;
constexpr uint64_t MIB = 1ull << 20, GIB = 1ull << 30, TIB = 1ull << 40;
constexpr uint64_t PTE_PRW_US = 0x7;  // present, writable, user
constexpr uint64_t PTE_PS = 0x80;

struct Engine {
  const char* name;
  VmConfig config;
};

std::vector<Engine> engines() {
  std::vector<Engine> e(5);
  e[0] = {"none", {}};
  e[1] = {"tdp", {}};
  e[1].config.mmu = MmuKind::Tdp;
  e[2] = {"tdp-dbit-lazy", {}};
  e[2].config.mmu = MmuKind::Tdp;
  e[2].config.tdp.dirty_log = mmu::DirtyLogMode::DirtyBit;
  e[2].config.tdp.eager_split = false;
  e[3] = {"shadow", {}};
  e[3].config.mmu = MmuKind::Shadow;
  e[4] = {"shadow-no-unsync", {}};
  e[4].config.mmu = MmuKind::Shadow;
  e[4].config.shadow.unsync = false;
  return e;
}

RegisterUpdate long_mode(uint64_t cr3) {
  RegisterUpdate u;
  u.cr0 = x86::cr0::PE | x86::cr0::PG;
  u.cr3 = cr3;
  u.cr4 = x86::cr4::PAE;
  u.efer = x86::efer::LME;
  return u;
}

std::string audit_text(const Vm& vm) {
  const auto v = vm.audit();
  return v.empty() ? std::string() : v.front();
}

// ---- the allocator and the reserve ------------------------------------------------------------

TEST(HostAllocator, FaultInjectionRefusesTheNthRequestOnlyOrEveryOneFromIt) {
  FaultInjectingAllocator a;
  a.fail_at = 2;
  void* p = a.allocate(64);
  EXPECT_THROW((void)a.allocate(64), guest::HostMemoryError);
  void* q = a.allocate(64);  // only the 2nd is refused
  a.commit(4096);
  EXPECT_EQ(a.requests(), 4u);
  EXPECT_EQ(a.refusals(), 1u);
  EXPECT_EQ(a.bytes_held(), 128u + 4096u);
  a.deallocate(p, 64);
  a.deallocate(q, 64);
  a.fail_from = true;
  EXPECT_THROW((void)a.allocate(8), guest::HostMemoryError);
  EXPECT_THROW(a.commit(8), guest::HostMemoryError);
  EXPECT_EQ(a.bytes_held(), 4096u);

  FaultInjectingAllocator limited;
  limited.byte_limit = 1000;
  void* r = limited.allocate(600);
  EXPECT_THROW((void)limited.allocate(600), guest::HostMemoryError);
  limited.deallocate(r, 600);
  limited.deallocate(limited.allocate(600), 600);
}

TEST(MetadataMemory, SmallBlocksComeFromTheReserveWithoutAskingTheHost) {
  FaultInjectingAllocator host;
  mmu::MetadataMemory memory(host);
  memory.top_up();
  EXPECT_EQ(host.requests(), 1u);  // one chunk
  host.fail_at = 2;
  host.fail_from = true;  // the host refuses everything from now on
  std::vector<void*> blocks;
  for (int i = 0; i < 100; ++i) blocks.push_back(memory.allocate(40));  // 100 * 48 bytes < the reserve
  EXPECT_EQ(host.requests(), 1u);
  EXPECT_EQ(memory.bytes_in_use(), 100u * 48u);
  EXPECT_THROW((void)memory.allocate(4096), guest::HostMemoryError);  // large: straight to the host
  for (void* b : blocks) memory.deallocate(b, 40);
  EXPECT_EQ(memory.bytes_in_use(), 0u);
  void* again = memory.allocate(33);  // reused from the free list
  memory.deallocate(again, 33);
}

TEST(PagePool, AFreshPageIsCommittedOnceAndReusedWithoutAsking) {
  FaultInjectingAllocator host;
  mmu::PagePool pool(host, 1024);
  mmu::ShadowPage* sp = pool.allocate();
  EXPECT_EQ(host.bytes_held(), mmu::PagePool::PAGE_BYTES);
  pool.release(sp);
  host.fail_at = 2;
  sp = pool.allocate();  // from the free list: no request
  EXPECT_EQ(host.requests(), 1u);
  EXPECT_THROW(pool.allocate(), guest::HostMemoryError);
  EXPECT_EQ(pool.pages_in_use(), 1u);
  pool.release(sp);
}

// ---- refusals at every allocation of a scenario ------------------------------------------------

// A 4-level guest over one 64 MiB memslot backed by 2 MiB host pages: tables at 1 MiB, data
// mapped by 4 KiB and 2 MiB guest pages; then dirty logging (which splits or drops huge
// mappings), more writes, the log, a host invalidation, aging, and the slot deleted.
class Scenario {
 public:
  explicit Scenario(Vm& vm) : vm_(vm) {}

  // Each step is one op; a host refusal fails it (counted) and it is tried once more.
  void run() {
    step([&] { vm_.add_memslot({.id = 0, .gpa = 0, .size = 64 * MIB, .host_page = HostPageSize::Size2M}); });
    step([&] { vcpu_ = &vm_.create_vcpu(0); });
    poke(0x100000, 0x101000 | PTE_PRW_US);  // PML4[0] -> PDPT
    poke(0x101000, 0x102000 | PTE_PRW_US);  // PDPT[0] -> PD
    poke(0x102000, 0x103000 | PTE_PRW_US);  // PD[0] -> PT (gva 0..2M)
    for (uint64_t i = 0; i < 8; ++i) poke(0x103000 + 8 * i, (0x200000 + i * 0x1000) | PTE_PRW_US);
    for (uint64_t i = 2; i < 6; ++i) poke(0x102000 + 8 * i, (i * 2 * MIB) | PTE_PRW_US | PTE_PS);  // 2 MiB pages
    step([&] {
      if (!vcpu_) throw UsageError("no vcpu");
      vcpu_->set_registers(long_mode(0x100000));
    });
    auto accesses = [&](uint64_t salt) {
      for (uint64_t i = 0; i < 8; ++i) access(i * 0x1000 + 8, AccessKind::Write, salt + i);
      for (uint64_t i = 2; i < 6; ++i) access(i * 2 * MIB + salt * 0x1000, AccessKind::Write, salt * i);
      for (uint64_t i = 0; i < 8; ++i) access(i * 0x1000 + 8, AccessKind::Read);
      for (uint64_t i = 2; i < 6; ++i) access(i * 2 * MIB + salt * 0x1000, AccessKind::Read);
    };
    accesses(1);
    step([&] { vm_.set_dirty_logging(0, true); });
    accesses(2);
    step([&] { record(vm_.dirty_gfns(0)); });
    step([&] { vm_.clear_dirty_gfns(0, vm_.dirty_gfns(0)); });
    accesses(3);
    step([&] { vm_.unmap(4 * MIB, 2 * MIB); });
    accesses(4);
    step([&] { record(vm_.age(0, 64 * MIB)); });
    step([&] { vm_.set_dirty_logging(0, false); });
    accesses(5);
    step([&] { vm_.delete_memslot(0); });
  }

  std::vector<uint64_t> results;  // values read, dirty and accessed gfns: what the guest and the VMM saw
  unsigned errors = 0;
  std::vector<std::string> audit_failures;
  bool tolerate_usage_errors = false;

 private:
  void step(const std::function<void()>& f) {
    ++steps_;
    for (int attempt = 0; attempt < 2; ++attempt) {
      try {
        f();
        check();
        return;
      } catch (const UsageError& e) {
        // Only when an earlier op failed for good (no memslot, no vCPU): its consequence.
        if (!tolerate_usage_errors) ADD_FAILURE() << "step " << steps_ << ": " << e.what();
        return;
      } catch (const guest::HostMemoryError&) {
        ++errors;
        check();
      }
    }
  }
  void check() {
    const std::string a = audit_text(vm_);
    if (!a.empty()) audit_failures.push_back(a);
  }
  void poke(uint64_t gpa, uint64_t value) {
    step([&] { vm_.write_guest(gpa, 8, value); });
  }
  void access(uint64_t gva, AccessKind kind, uint64_t value = 0) {
    step([&] {
      if (!vcpu_) throw UsageError("no vcpu");
      const AccessResult r = vcpu_->access(gva, kind, 8, value);
      results.push_back(static_cast<uint64_t>(r.status));
      results.push_back(r.value);
    });
  }
  void record(const std::vector<uint64_t>& gfns) {
    results.push_back(~0ull);
    results.insert(results.end(), gfns.begin(), gfns.end());
  }

  Vm& vm_;
  Vcpu* vcpu_ = nullptr;
  unsigned steps_ = 0;
};

TEST(ResourceLimits, EveryRefusedAllocationFailsOneOpCleanlyAndARetryGivesTheSameResults) {
  for (const Engine& e : engines()) {
    SCOPED_TRACE(e.name);
    FaultInjectingAllocator clean_host;
    VmConfig c = e.config;
    c.allocator = &clean_host;
    std::vector<uint64_t> expected;
    uint64_t requests = 0;
    {
      Vm vm(c);
      Scenario s(vm);
      s.run();
      ASSERT_EQ(s.errors, 0u);
      ASSERT_TRUE(s.audit_failures.empty()) << s.audit_failures.front();
      expected = s.results;
      requests = clean_host.requests();
    }
    ASSERT_GT(requests, 5u);
    std::printf("  %s: the scenario makes %llu host requests; each is refused in turn\n", e.name, static_cast<unsigned long long>(requests));
    for (uint64_t n = 1; n <= requests; ++n) {
      SCOPED_TRACE("refused request " + std::to_string(n) + " of " + std::to_string(requests));
      FaultInjectingAllocator host;
      host.fail_at = n;
      c.allocator = &host;
      Vm vm(c);
      Scenario s(vm);
      s.run();
      EXPECT_EQ(host.refusals(), 1u);
      EXPECT_EQ(s.errors, 1u);  // the op that met the refusal, and only it
      EXPECT_TRUE(s.audit_failures.empty()) << s.audit_failures.front();
      EXPECT_EQ(s.results, expected);
    }
    // The host refusing everything from request n on: ops fail, nothing breaks.
    for (uint64_t n : {requests / 3, requests / 2, requests - 1}) {
      SCOPED_TRACE("every request refused from " + std::to_string(n));
      FaultInjectingAllocator host;
      host.fail_at = n;
      host.fail_from = true;
      c.allocator = &host;
      Vm vm(c);
      Scenario s(vm);
      s.tolerate_usage_errors = true;
      s.run();
      EXPECT_GT(s.errors, 0u);
      EXPECT_TRUE(s.audit_failures.empty()) << s.audit_failures.front();
    }
  }
}

// ---- 64 TiB memslots ---------------------------------------------------------------------------

uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// One 64 TiB slot at gpa 0 and a 16 TiB one at 128 TiB (the host's 47-bit address space holds
// no more); a 4-level guest whose tables lie spread over both (first and last pages included)
// touches pages spread over both.
TEST(ResourceLimits, SixtyFourTibMemslotsCostOnlyWhatIsTouched) {
  constexpr uint64_t SLOT1 = 128 * TIB, SLOT1_SIZE = 16 * TIB;
  const std::vector<uint64_t> tables = {0,           64 * TIB - 0x1000, SLOT1,          SLOT1 + SLOT1_SIZE - 0x1000,
                                        3 * TIB,     9 * TIB + 0x5000,  21 * TIB,       40 * TIB + 2 * MIB,
                                        SLOT1 + TIB, 50 * TIB,          63 * TIB,       SLOT1 + 7 * TIB,
                                        5 * GIB,     SLOT1 + 3 * GIB,   33 * TIB + 0x9000, 12 * TIB};
  const std::vector<uint64_t> data = {0x1000,           64 * TIB - 0x2000, 17 * TIB + 0x5000, 33 * TIB + 2 * MIB,
                                      SLOT1 + 0x1000,   SLOT1 + SLOT1_SIZE - 0x2000, SLOT1 + 5 * TIB};
  ASSERT_EQ(tables.size(), 2 + 2 * data.size());  // PML4, PDPT, then a PD and a PT per page
  for (const Engine& e : engines()) {
    SCOPED_TRACE(e.name);
    const uint64_t before = resident_bytes();
    Vm vm(e.config);
    vm.add_memslot({.id = 0, .gpa = 0, .size = 64 * TIB});
    vm.add_memslot({.id = 1, .gpa = SLOT1, .size = SLOT1_SIZE});
    Vcpu& v = vm.create_vcpu(0);
    vm.write_guest(tables[0], 8, tables[1] | PTE_PRW_US);  // PML4[0] -> PDPT
    for (uint64_t i = 0; i < data.size(); ++i) {
      const uint64_t gva = (i + 1) * GIB, pd = tables[2 + 2 * i], pt = tables[3 + 2 * i];
      vm.write_guest(tables[1] + 8 * (i + 1), 8, pd | PTE_PRW_US);
      vm.write_guest(pd, 8, pt | PTE_PRW_US);
      vm.write_guest(pt, 8, data[i] | PTE_PRW_US);
      (void)gva;
    }
    ASSERT_FALSE(v.set_registers(long_mode(tables[0])));
    for (uint64_t i = 0; i < data.size(); ++i) ASSERT_TRUE(v.access((i + 1) * GIB + 0x10, AccessKind::Write, 8, 0xa0 + i).ok());
    for (uint64_t i = 0; i < data.size(); ++i) {
      const AccessResult r = v.access((i + 1) * GIB + 0x10, AccessKind::Read, 8);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r.value, 0xa0 + i);
      EXPECT_EQ(r.gpa, data[i] + 0x10);
    }
    EXPECT_EQ(audit_text(vm), "");
    const uint64_t grown = resident_bytes() - before;
    EXPECT_LT(grown, 16 * MIB);
    std::printf("  %s: resident memory grew by %.2f MiB for 80 TiB of memslots\n", e.name, double(grown) / double(MIB));

    // The accessed bitmaps: a pointer per GiB of slot, and 32 KiB for each GiB the guest used
    // (the tables it walked and the pages it touched), nothing else.
    std::set<uint64_t> gibs;
    for (uint64_t g : tables) gibs.insert(g >> 30);
    for (uint64_t g : data) gibs.insert(g >> 30);
    const nlohmann::ordered_json st = vm.stats();
    const uint64_t directory = (64 * TIB + SLOT1_SIZE) / GIB * 8;
    EXPECT_EQ(st["memory"]["age_bitmaps"].get<uint64_t>(), directory + gibs.size() * 32 * 1024);
    EXPECT_EQ(st["memory"]["dirty_bitmaps"].get<uint64_t>(), directory);  // no logging: no bits
    if (e.config.mmu == MmuKind::Shadow) {
      std::set<uint64_t> regions;  // 2 MiB regions with a 4 KiB leaf
      for (uint64_t g : data) regions.insert(g >> 21);
      EXPECT_EQ(st["memory"]["rmap_regions"].get<uint64_t>(), regions.size());
    }
    if (e.config.mmu != MmuKind::None) {  // shadow: plus its reverse-map hints' directory, 8 bytes per GiB of slot
      const uint64_t hint_directory = e.config.mmu == MmuKind::Shadow ? directory : 0;
      EXPECT_LT(st["memory"]["mmu_memory"].get<uint64_t>(), hint_directory + 256 * 1024u);
    }
  }
}

// ---- the byte budget ---------------------------------------------------------------------------

TEST(ResourceLimits, ABudgetTooSmallIsRefusedAtCreation) {
  VmConfig c;
  c.mmu = MmuKind::Tdp;
  c.tdp.max_mmu_memory = mmu::MIN_MAX_MMU_MEMORY - 1;
  EXPECT_THROW(Vm{c}, UsageError);
  c.mmu = MmuKind::Shadow;
  c.shadow.max_mmu_memory = 1000;
  EXPECT_THROW(Vm{c}, UsageError);
  c.shadow.max_mmu_memory = mmu::MIN_MAX_MMU_MEMORY;
  EXPECT_NO_THROW(Vm{c});
}

// Paging off, 64 MiB touched page by page: far more tables than the budget holds. Every value
// reads back, the engine stays within the budget after every access, and it recycled.
TEST(ResourceLimits, TheBudgetHoldsUnderPressureAndTheGuestSeesNoDifference) {
  for (const Engine& e : engines()) {
    if (e.config.mmu == MmuKind::None) continue;
    SCOPED_TRACE(e.name);
    VmConfig c = e.config;
    c.tdp.max_mmu_memory = c.shadow.max_mmu_memory = 160 * 1024;
    Vm vm(c);
    vm.add_memslot({.id = 0, .gpa = 0, .size = 64 * MIB});
    vm.add_memslot({.id = 1, .gpa = GIB, .size = 64 * MIB});
    Vcpu& v = vm.create_vcpu(0);
    uint64_t worst = 0;
    for (int round = 0; round < 2; ++round) {
      for (uint64_t gpa = 0; gpa < 64 * MIB; gpa += 512 * 1024) {
        for (uint64_t base : {uint64_t{0}, GIB}) {
          if (round == 0) {
            ASSERT_TRUE(v.access(base + gpa, AccessKind::Write, 8, base + gpa + 1).ok());
          } else {
            ASSERT_EQ(v.access(base + gpa, AccessKind::Read, 8).value, base + gpa + 1);
          }
          worst = std::max(worst, vm.stats()["memory"]["mmu_memory"].get<uint64_t>());
        }
      }
    }
    EXPECT_LE(worst, 160u * 1024);
    EXPECT_GT(vm.stats()["stats"]["mmu_recycled"].get<uint64_t>(), 0u);
    EXPECT_EQ(audit_text(vm), "");
  }
}

}  // namespace
}  // namespace vmmu
