// Resource limits under replays of .vmt workloads (the shipped ones and random ones), in every
// engine configuration:
//  - the host refuses one allocation, for a sample of N over every allocation the replay makes:
//    the op that met the refusal prints the contract's "error" result, the audit is clean right
//    after it and at the end, the replay ends with exit status 3 (or 2 when the failed op was
//    one later lines depend on, such as a memslot add, as `vmmu replay` would), nothing crashes;
//  - a byte budget (--max-mmu-memory) small enough to force recycling: every line equals the
//    reference's (`--mmu=none`), and the engine's "mmu_memory" stays within the budget (plus a
//    stated slack) after every op.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "guest/host_allocator.hpp"
#include "sim/random_workload.hpp"
#include "sim/replayer.hpp"
#include "sim/vmt_reader.hpp"
#include "vm/vm.hpp"

namespace vmmu::sim {
namespace {

using guest::FaultInjectingAllocator;

struct Config {
  std::string name;
  VmConfig config;
};

std::vector<Config> configs(bool with_none) {
  std::vector<Config> c;
  if (with_none) c.push_back({"none", {}});
  VmConfig tdp;
  tdp.mmu = MmuKind::Tdp;
  c.push_back({"tdp", tdp});
  tdp.tdp.dirty_log = mmu::DirtyLogMode::DirtyBit;
  c.push_back({"tdp-dbit", tdp});
  VmConfig shadow;
  shadow.mmu = MmuKind::Shadow;
  c.push_back({"shadow", shadow});
  shadow.shadow.unsync = false;
  c.push_back({"shadow-no-unsync", shadow});
  return c;
}

struct Workload {
  std::string name;
  std::vector<Op> ops;
};

std::vector<Op> read_ops(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  VmtReader reader(in);
  std::vector<Op> ops;
  for (Op op; reader.next(op);) ops.push_back(op);
  return ops;
}

RandomWorkloadParams random_params(uint64_t seed) {
  RandomWorkloadParams p;
  p.seed = seed;
  p.ops = 150;
  p.vcpus = 2;
  p.guest_memory = 8ull << 20;
  p.audit_every_op = true;
  p.modes = seed % 2 ? std::vector<x86::PagingMode>{x86::PagingMode::Level4}
                     : std::vector<x86::PagingMode>{x86::PagingMode::Off, x86::PagingMode::Bits32, x86::PagingMode::Pae,
                                                    x86::PagingMode::Level4, x86::PagingMode::Level5};
  return p;
}

std::vector<Workload> workloads() {
  std::vector<Workload> w;
  const std::string dir = VMMU_SOURCE_DIR;
  w.push_back({"default.vmt", read_ops(dir + "/workloads/default.vmt")});
  std::vector<std::string> examples;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/workloads/examples"))
    if (e.path().extension() == ".vmt") examples.push_back(e.path().string());
  std::sort(examples.begin(), examples.end());
  for (const std::string& p : examples) w.push_back({std::filesystem::path(p).filename().string(), read_ops(p)});
  for (uint64_t seed : {11, 12}) w.push_back({"random seed " + std::to_string(seed), RandomWorkload(random_params(seed)).ops()});
  return w;
}

// An in-memory file, closed after the replayer that writes to it is gone.
struct MemoryFile {
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* file = open_memstream(&buf, &len);
  ~MemoryFile() {
    std::fclose(file);
    std::free(buf);
  }
};

// Replays into memory, op by op.
class Replay {
 public:
  explicit Replay(const VmConfig& config) : vm_(config), replayer_(vm_, out_.file) {}
  Vm& vm() { return vm_; }
  Replayer& replayer() { return replayer_; }
  std::string output() {
    replayer_.flush();
    std::fflush(out_.file);
    return std::string(out_.buf, out_.len);
  }

 private:
  Vm vm_;
  MemoryFile out_;
  Replayer replayer_;
};

std::string first(const std::vector<std::string>& v) { return v.empty() ? std::string() : v.front(); }

// ---- refusals ----------------------------------------------------------------------------------

TEST(ResourceLimitsReplay, ARefusedAllocationGivesAnErrorResultStatus3AndACleanAudit) {
  uint64_t replays = 0, refused_ops = 0, stopped = 0;
  for (const Workload& w : workloads()) {
    for (const Config& c : configs(true)) {
      SCOPED_TRACE(w.name + " under " + c.name);
      uint64_t requests = 0;
      {
        FaultInjectingAllocator host;
        VmConfig vc = c.config;
        vc.allocator = &host;
        Replay r(vc);
        for (const Op& op : w.ops) r.replayer().apply(op);
        ASSERT_EQ(r.replayer().exit_status(), 0);
        requests = host.requests();
      }
      std::set<uint64_t> sample;
      for (uint64_t n = 1; n <= std::min<uint64_t>(requests, 8); ++n) sample.insert(n);
      for (uint64_t i = 1; i <= 8; ++i) sample.insert(std::max<uint64_t>(1, requests * i / 8));
      for (uint64_t n : sample) {
        SCOPED_TRACE("refused request " + std::to_string(n) + " of " + std::to_string(requests));
        FaultInjectingAllocator host;
        host.fail_at = n;
        VmConfig vc = c.config;
        vc.allocator = &host;
        Replay r(vc);
        bool stopped_early = false;
        for (const Op& op : w.ops) {
          const uint64_t refusals = host.refusals(), errors = r.replayer().summary().host_errors;
          try {
            r.replayer().apply(op);
          } catch (const ReplayError&) {
            stopped_early = true;  // a later line needed what the failed op would have made
            break;
          }
          if (host.refusals() != refusals) {
            ++refused_ops;
            EXPECT_EQ(r.replayer().summary().host_errors, errors + 1) << "line " << op.line;
            const std::string out = r.output();
            const size_t last = out.rfind('\n', out.size() - 2);
            EXPECT_NE(out.find("\"error\":", last == std::string::npos ? 0 : last), std::string::npos) << "line " << op.line;
            EXPECT_EQ(first(r.vm().audit()), "") << "right after line " << op.line;
          }
        }
        ++replays;
        stopped += stopped_early;
        EXPECT_EQ(host.refusals(), 1u);
        if (!stopped_early) {
          EXPECT_EQ(r.replayer().exit_status(), 3);
        }
        EXPECT_EQ(first(r.vm().audit()), "") << "at the end";
      }
    }
  }
  std::printf("  %llu replays, %llu ops refused memory, %llu replays stopped by a later line (status 2)\n",
              static_cast<unsigned long long>(replays), static_cast<unsigned long long>(refused_ops),
              static_cast<unsigned long long>(stopped));
}

// ---- the byte budget ---------------------------------------------------------------------------

// The budget is checked before each fault (room for one) and each access (tdp); one op may go
// past it by a new memslot's reverse-map hint directory (8 bytes per GiB) and a hash table's
// bucket array growing, well under this.
constexpr uint64_t BUDGET_SLACK = 16 * 1024;

TEST(ResourceLimitsReplay, UnderASmallBudgetResultsEqualTheReferenceAndMetadataStaysWithin) {
  std::vector<Workload> ws;
  for (uint64_t seed : {21, 22, 23, 24}) {
    RandomWorkloadParams p = random_params(seed);
    p.guest_memory = 16ull << 20;
    p.ops = 250;
    p.features.age = false;    // an engine may report more pages than none (a huge host mapping)
    p.features.stats = false;  // counters differ between engines
    ws.push_back({"random seed " + std::to_string(seed), RandomWorkload(p).ops()});
  }
  for (uint64_t budget : {mmu::MIN_MAX_MMU_MEMORY, mmu::MIN_MAX_MMU_MEMORY + 32 * 1024}) {
    for (const Config& c : configs(false)) {
      uint64_t recycled = 0, worst = 0;
      for (const Workload& w : ws) {
        SCOPED_TRACE(w.name + " under " + c.name + " with --max-mmu-memory=" + std::to_string(budget));
        Replay reference(VmConfig{});
        for (const Op& op : w.ops) reference.replayer().apply(op);
        VmConfig vc = c.config;
        vc.tdp.max_mmu_memory = vc.shadow.max_mmu_memory = budget;
        Replay r(vc);
        for (const Op& op : w.ops) {
          r.replayer().apply(op);
          const uint64_t held = r.vm().stats()["memory"]["mmu_memory"].get<uint64_t>();
          worst = std::max(worst, held);
          ASSERT_LE(held, budget + BUDGET_SLACK) << "after line " << op.line;
        }
        EXPECT_EQ(r.replayer().exit_status(), 0);
        EXPECT_EQ(r.output(), reference.output());
        recycled += r.vm().stats()["stats"]["mmu_recycled"].get<uint64_t>();
      }
      if (budget == mmu::MIN_MAX_MMU_MEMORY) {
        EXPECT_GT(recycled, 0u) << c.name;
      }
      std::printf("  %s, budget %llu: most held %llu bytes, %llu pages recycled\n", c.name.c_str(),
                  static_cast<unsigned long long>(budget), static_cast<unsigned long long>(worst),
                  static_cast<unsigned long long>(recycled));
    }
  }
}

}  // namespace
}  // namespace vmmu::sim
