// Several vCPU threads write guest memory through an engine (TDP in both dirty-logging modes,
// shadow with and without unsync) while one thread harvests the dirty log (get, clear, then reads
// every page) and another moves pages (`unmap`), ages them and, in one test, adds, moves and
// deletes a memslot the vCPUs read. Bounded by a count of writes, so it ends by itself. Checked: no
// write is ever missing from the log (a page whose contents changed between two harvests was in
// one of the two gets around the change), the guest's data survives the moves, no read sees a
// memslot state other than the one it ran in, and the audit is clean at the end.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
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

// A second memslot the host keeps changing under the vCPUs: added at SLOT_A, moved to SLOT_B,
// deleted, added again. Its pages hold the number of the addition that created them. The host
// publishes each stable state through a sequence count (odd while changing), so a vCPU access that
// began and ended in one stable state must see exactly that state: a stale mapping would show an
// old generation, or data where there is no slot.
constexpr uint32_t MOVING_SLOT = 1;
constexpr uint64_t MOVING_PAGES = 16;
constexpr uint64_t SLOT_A = 64ull << 20, SLOT_B = 128ull << 20;
constexpr uint64_t MIN_SLOT_CHANGES = 60;

struct SlotState {
  uint64_t gpa = 0;  // where the moving slot is; 0: nowhere
  uint64_t generation = 0;
};

class MovingSlot {
 public:
  explicit MovingSlot(Vm& vm) : vm_(vm), states_(new SlotState[MAX_STATES]) {}

  // One change of the host thread; false once the bounded number of states is used up.
  bool step() {
    const size_t n = count_.load();
    if (n >= MAX_STATES) return false;
    SlotState next = states_[n - 1];
    seq_.fetch_add(1);  // odd: changing
    if (next.gpa == 0) {
      next = {SLOT_A, next.generation + 1};
      vm_.add_memslot({.id = MOVING_SLOT, .gpa = SLOT_A, .size = MOVING_PAGES * 4096});
      for (uint64_t p = 0; p < MOVING_PAGES; ++p) vm_.write_guest(SLOT_A + p * 4096, 8, next.generation);
    } else if (next.gpa == SLOT_A) {
      next.gpa = SLOT_B;
      vm_.move_memslot(MOVING_SLOT, SLOT_B);
    } else {
      next.gpa = 0;
      vm_.delete_memslot(MOVING_SLOT);
    }
    states_[n] = next;
    count_.store(n + 1);
    seq_.fetch_add(1);  // even again: states_[seq / 2] holds
    return true;
  }

  // A vCPU reads page `page` of the moving slot at SLOT_A or SLOT_B; false if the result is
  // impossible in the state the read ran in (reads overlapping a change are not judged).
  bool check_read(Vcpu& v, uint64_t page, bool at_b) const {
    const uint64_t before = seq_.load();
    const uint64_t gpa = (at_b ? SLOT_B : SLOT_A) + page * 4096;
    const AccessResult r = v.access(gpa, AccessKind::Read, 8);
    if (before % 2 || seq_.load() != before) return true;
    const SlotState& s = states_[before / 2];
    if (s.gpa == (at_b ? SLOT_B : SLOT_A)) return r.ok() && r.value == s.generation;
    return r.status == AccessResult::Status::Mmio;
  }
  uint64_t changes() const { return count_.load() - 1; }

 private:
  static constexpr size_t MAX_STATES = 3000;  // allocated up front: readers index it while it grows
  Vm& vm_;
  std::unique_ptr<SlotState[]> states_;  // [0, count_): the states so far; states_[0]: no slot
  std::atomic<size_t> count_{1};
  std::atomic<uint64_t> seq_{0};
};

// `vcpus` threads write guest memory (and, with `memslot_changes`, read the moving slot) while
// one thread harvests the dirty log and another unmaps and ages pages (and changes the memslots).
void stress(const VmConfig& config, unsigned vcpu_count, uint64_t writes_per_vcpu, bool memslot_changes) {
  constexpr uint64_t PAGES = 2048;  // 8 MiB, logged
  Vm vm(config);
  vm.add_memslot({.id = 0, .gpa = 0, .size = PAGES * 4096, .log_dirty = true});
  std::vector<Vcpu*> vcpus;
  for (unsigned i = 0; i < vcpu_count; ++i) vcpus.push_back(&vm.create_vcpu(i));
  MovingSlot moving(vm);

  // Each write stores a value never stored before, so a change of contents means a write.
  std::atomic<unsigned> writers_done{0};
  std::atomic<uint64_t> writes{0}, stale_reads{0}, judged_reads{0};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < vcpu_count; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      // Past its writes, a vCPU keeps reading until the host has made enough memslot changes.
      for (uint64_t i = 1; i <= writes_per_vcpu || (memslot_changes && moving.changes() < MIN_SLOT_CHANGES); ++i) {
        if (i <= writes_per_vcpu) {
          const uint64_t page = rng() % PAGES;
          const uint64_t value = (uint64_t{t + 1} << 48) | i;
          const AccessResult r = vcpus[t]->access(page * 4096 + 8 * t, AccessKind::Write, 8, value);
          if (!r.ok()) std::abort();
          writes.fetch_add(1, std::memory_order_relaxed);
        } else {
          std::this_thread::yield();  // let the host thread make its changes
        }
        if (memslot_changes && i % 4 == 0) {
          judged_reads.fetch_add(1, std::memory_order_relaxed);
          if (!moving.check_read(*vcpus[t], rng() % MOVING_PAGES, rng() % 2)) stale_reads.fetch_add(1);
        }
      }
      writers_done.fetch_add(1);
    });
  }
  std::atomic<bool> stop_host{false};
  std::thread host([&] {
    std::mt19937_64 rng(99);
    for (uint64_t round = 0; !stop_host.load(); ++round) {
      const uint64_t page = rng() % (PAGES - 4);
      vm.unmap(page * 4096, 4 * 4096);
      vm.age((rng() % (PAGES / 64)) * 64 * 4096, 64 * 4096);
      if (memslot_changes) moving.step();
      std::this_thread::yield();
    }
  });

  // The harvester: gets[r] and changed[r] as in the header comment.
  std::vector<std::set<uint64_t>> gets;
  std::vector<std::vector<uint64_t>> changed;
  std::vector<uint64_t> last(PAGES * vcpu_count, 0);
  auto harvest = [&] {
    const std::vector<uint64_t> g = vm.dirty_gfns(0);
    vm.clear_dirty_gfns(0, g);
    std::vector<uint64_t> ch;
    for (uint64_t page = 0; page < PAGES; ++page) {
      for (unsigned t = 0; t < vcpu_count; ++t) {
        const uint64_t v = vm.read_guest(page * 4096 + 8 * t, 8);
        if (v != last[page * vcpu_count + t]) {
          last[page * vcpu_count + t] = v;
          ch.push_back(page);
        }
      }
    }
    gets.emplace_back(g.begin(), g.end());
    changed.push_back(std::move(ch));
  };
  while (writers_done.load() < vcpu_count) harvest();
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
  EXPECT_EQ(writes.load(), vcpu_count * writes_per_vcpu);
  EXPECT_GT(gets.size(), 2u);
  EXPECT_EQ(stale_reads.load(), 0u) << "reads of the moving slot that saw another state than the one they ran in";
  if (memslot_changes) {
    EXPECT_GT(moving.changes(), 0u);
  }
  const auto v = vm.audit();
  EXPECT_TRUE(v.empty()) << (v.empty() ? "" : v.front());
  ::testing::Test::RecordProperty("writes", std::to_string(writes.load()));
  ::testing::Test::RecordProperty("harvests", std::to_string(gets.size()));
  ::testing::Test::RecordProperty("memslot_changes", std::to_string(moving.changes()));
  ::testing::Test::RecordProperty("judged_slot_reads", std::to_string(judged_reads.load()));
}

TEST_P(EngineStress, NoDirtyWriteIsLostAndNothingIsLeftStale) { stress(GetParam().config, 2, 60000 * scale(), false); }

// Four vCPU threads, and memslot changes beside unmap and age.
TEST_P(EngineStress, FourVcpusWithMemslotChanges) { stress(GetParam().config, 4, 20000 * scale(), true); }

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
