// Several vCPU threads write guest memory through an engine (TDP in both dirty-logging modes,
// shadow with and without unsync) while one thread harvests the
// dirty log (get, clear, then reads every page) and another moves pages (`unmap`) and ages them.
// Bounded by a count of writes, so it ends by itself. Checked: no write is ever missing from the
// log (a page whose contents changed between two harvests was in one of the two gets around the
// change), the guest's data survives the moves, and the audit is clean at the end.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "mmu/tdp_mmu.hpp"
#include "vm/vm.hpp"

namespace vmmu {
namespace {

using x86::AccessKind;

struct Engine {
  const char* name;
  VmConfig config;
};

Engine tdp(mmu::DirtyLogMode mode, const char* name) {
  Engine e{name, {}};
  e.config.mmu = MmuKind::Tdp;
  e.config.tdp.dirty_log = mode;
  return e;
}
Engine shadow(bool unsync, const char* name) {
  Engine e{name, {}};
  e.config.mmu = MmuKind::Shadow;
  e.config.shadow.unsync = unsync;
  return e;
}

uint64_t scale() {
  const char* s = std::getenv("VMMU_STRESS_SCALE");
  return s ? std::max(1L, std::atol(s)) : 1;
}

class EngineStress : public ::testing::TestWithParam<Engine> {};

TEST_P(EngineStress, NoDirtyWriteIsLostAndNothingIsLeftStale) {
  constexpr unsigned VCPUS = 2;
  constexpr uint64_t PAGES = 2048;  // 8 MiB, logged
  const uint64_t writes_per_vcpu = 60000 * scale();
  Vm vm(GetParam().config);
  vm.add_memslot({.id = 0, .gpa = 0, .size = PAGES * 4096, .log_dirty = true});
  std::vector<Vcpu*> vcpus;
  for (unsigned i = 0; i < VCPUS; ++i) vcpus.push_back(&vm.create_vcpu(i));

  // Each write stores a value never stored before, so a change of contents means a write.
  std::atomic<unsigned> writers_done{0};
  std::atomic<uint64_t> writes{0};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < VCPUS; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      for (uint64_t i = 1; i <= writes_per_vcpu; ++i) {
        const uint64_t page = rng() % PAGES;
        const uint64_t value = (uint64_t{t + 1} << 48) | i;
        const AccessResult r = vcpus[t]->access(page * 4096 + 8 * t, AccessKind::Write, 8, value);
        if (!r.ok()) std::abort();
        writes.fetch_add(1, std::memory_order_relaxed);
      }
      writers_done.fetch_add(1);
    });
  }
  std::atomic<bool> stop_host{false};
  std::thread host([&] {
    std::mt19937_64 rng(99);
    while (!stop_host.load()) {
      const uint64_t page = rng() % (PAGES - 4);
      vm.unmap(page * 4096, 4 * 4096);
      vm.age((rng() % (PAGES / 64)) * 64 * 4096, 64 * 4096);
      std::this_thread::yield();
    }
  });

  // The harvester: gets[r] and changed[r] as in the header comment.
  std::vector<std::set<uint64_t>> gets;
  std::vector<std::vector<uint64_t>> changed;
  std::vector<uint64_t> last(PAGES * 2, 0);
  auto harvest = [&] {
    const std::vector<uint64_t> g = vm.dirty_gfns(0);
    vm.clear_dirty_gfns(0, g);
    std::vector<uint64_t> ch;
    for (uint64_t page = 0; page < PAGES; ++page) {
      for (unsigned t = 0; t < VCPUS; ++t) {
        const uint64_t v = vm.read_guest(page * 4096 + 8 * t, 8);
        if (v != last[page * 2 + t]) {
          last[page * 2 + t] = v;
          ch.push_back(page);
        }
      }
    }
    gets.emplace_back(g.begin(), g.end());
    changed.push_back(std::move(ch));
  };
  while (writers_done.load() < VCPUS) harvest();
  for (auto& th : threads) th.join();
  stop_host = true;
  host.join();
  harvest();
  harvest();  // the writes seen last are logged by now

  uint64_t lost = 0;
  for (size_t r = 0; r + 1 < changed.size(); ++r) {
    for (uint64_t page : changed[r]) {
      if (!gets[r].count(page) && !gets[r + 1].count(page)) {
        if (++lost <= 5) {
          ADD_FAILURE() << "page " << page << " changed in harvest " << r << " of " << changed.size() << "; in gets "
                        << (r > 0 && gets[r - 1].count(page) ? "r-1 " : "") << (r + 2 < gets.size() && gets[r + 2].count(page) ? "r+2" : "");
        }
      }
    }
  }
  EXPECT_EQ(lost, 0u) << "pages changed between harvests without being in either get";
  EXPECT_EQ(writes.load(), VCPUS * writes_per_vcpu);
  EXPECT_GT(gets.size(), 2u);
  const auto v = vm.audit();
  EXPECT_TRUE(v.empty()) << (v.empty() ? "" : v.front());
  RecordProperty("writes", std::to_string(writes.load()));
  RecordProperty("harvests", std::to_string(gets.size()));
}

// A vCPU keeps writing while logging starts on its 2 MiB-mapped slot: TDP's eager split yields
// the lock between batches, so some writes hit huge leaves not yet split and split them on the
// fault path (shadow drops its huge leaves at once). Every write that began after logging was on must be in the log.
TEST_P(EngineStress, WritesDuringAnEagerSplitAreLogged) {
  constexpr uint64_t PAGES = 64 * 512;  // 128 MiB in 2 MiB pages
  Vm vm(GetParam().config);
  vm.add_memslot({.id = 0, .gpa = 0, .size = PAGES * 4096, .host_page = guest::HostPageSize::Size2M});
  Vcpu& v = vm.create_vcpu(0);
  for (uint64_t p = 0; p < PAGES; p += 512) ASSERT_TRUE(v.access(p * 4096, AccessKind::Write, 8, 1).ok());
  std::atomic<bool> logging{false}, stop{false};
  std::vector<uint64_t> must_be_logged;
  std::thread writer([&] {
    std::mt19937_64 rng(7);
    while (!stop.load()) {
      const uint64_t page = rng() % PAGES;
      const bool after = logging.load();
      if (!v.access(page * 4096 + 8, AccessKind::Write, 8, rng()).ok()) std::abort();
      if (after) must_be_logged.push_back(page);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(2));  // not timing-dependent: any interleaving must hold
  vm.set_dirty_logging(0, true);
  logging = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  stop = true;
  writer.join();
  const std::vector<uint64_t> gfns = vm.dirty_gfns(0);
  const std::set<uint64_t> logged(gfns.begin(), gfns.end());
  for (uint64_t page : must_be_logged) ASSERT_TRUE(logged.count(page)) << "page " << page << " written after logging began";
  const auto audit = vm.audit();
  EXPECT_TRUE(audit.empty()) << (audit.empty() ? "" : audit.front());
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineStress,
                         ::testing::Values(tdp(mmu::DirtyLogMode::WriteProtect, "tdp"), tdp(mmu::DirtyLogMode::DirtyBit, "tdp_dbit"),
                                           shadow(true, "shadow"), shadow(false, "shadow_unsync_off")),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace vmmu
