// The guest OS model: its workloads replay the same under none, tdp and shadow with every audit passing,
// in every paging mode it models, and the kernel really forks, copies on write, exits, unmaps
// and protects.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "sim/guest_os/guest_os.hpp"
#include "sim/guest_os/scenario.hpp"
#include "sim/guest_os/vmt_stream_writer.hpp"
#include "tests/sim/replay_support.hpp"

namespace vmmu::sim::guest_os {
namespace {

struct Generated {
  std::string vmt;
  GuestOsCounts counts;
};

Generated generate(const ScenarioParams& p) {
  std::ostringstream out;
  VmtStreamWriter writer(out, p.os.describe());
  Generated g;
  g.counts = run_default_scenario(p, [&](const Op& op) { writer(op); });
  g.vmt = out.str();
  EXPECT_EQ(writer.ops(), g.counts.ops);
  return g;
}

ScenarioParams small(x86::PagingMode mode) {
  ScenarioParams p;
  p.os.mode = mode;
  p.os.memory = 128ull << 20;
  p.os.page_copy_words = 8;
  p.rounds = 4;
  p.slice = 150;
  return p;
}

void expect_kernel_did_everything(const GuestOsCounts& c) {
  EXPECT_GT(c.forks, 0u);
  EXPECT_GT(c.cow_copies, 0u);
  EXPECT_GT(c.execs, 0u);
  EXPECT_GT(c.exits, 0u);
  EXPECT_GT(c.munmaps, 0u);
  EXPECT_GT(c.mprotects, 0u);
  EXPECT_GT(c.demand_pages, 0u);
  EXPECT_GT(c.zero_page_maps, 0u);
  EXPECT_GT(c.context_switches, 0u);
  EXPECT_GT(c.invlpgs, 0u);
  EXPECT_GT(c.tlb_flushes, 0u);
  EXPECT_GT(c.tables_freed, 0u);
  EXPECT_GT(c.table_writes, 0u);
}

class GuestOsModes : public ::testing::TestWithParam<x86::PagingMode> {};

TEST_P(GuestOsModes, ScenarioReplaysTheSameInEveryMode) {
  const Generated g = generate(small(GetParam()));
  expect_kernel_did_everything(g.counts);
  EXPECT_GT(g.counts.huge_pages, 0u);
  test::expect_same_in_every_mode(g.vmt);
}

TEST_P(GuestOsModes, SmallPagesEverywhere) {
  ScenarioParams p = small(GetParam());
  p.os.direct_map = DirectMapPages::Size4K;
  p.os.thp = false;
  p.os.zero_page = false;
  p.os.vcpus = 3;
  p.seed = 7;
  const Generated g = generate(p);
  EXPECT_EQ(g.counts.huge_pages, 0u);
  EXPECT_EQ(g.counts.zero_page_maps, 0u);
  EXPECT_GT(g.counts.cow_copies + g.counts.cow_reuses, 0u);
  test::expect_same_in_every_mode(g.vmt);
}

INSTANTIATE_TEST_SUITE_P(Modes, GuestOsModes,
                         ::testing::Values(x86::PagingMode::Bits32, x86::PagingMode::Pae, x86::PagingMode::Level4,
                                           x86::PagingMode::Level5),
                         [](const auto& info) {
                           switch (info.param) {
                             case x86::PagingMode::Bits32: return std::string("Bits32");
                             case x86::PagingMode::Pae: return std::string("Pae");
                             case x86::PagingMode::Level5: return std::string("Level5");
                             default: return std::string("Level4");
                           }
                         });

TEST(GuestOs, TheRuleCheckerSeesAMissingInvlpg) {
  // Without its invlpg ops the scenario breaks the rule (copy-on-write retries, unmapped and
  // protected pages): the checker that passes the real workloads is not blind.
  std::istringstream in(generate(small(x86::PagingMode::Level4)).vmt);
  std::string without;
  for (std::string line; std::getline(in, line);) without += (line.starts_with("invlpg ") ? "# " + line : line) + "\n";
  EXPECT_FALSE(test::CachedTranslationChecker::check_text(without).empty());
}

TEST(GuestOs, SameSeedSameWorkload) {
  ScenarioParams p = small(x86::PagingMode::Level4);
  p.seed = 3;
  const Generated a = generate(p), b = generate(p);
  EXPECT_EQ(a.vmt, b.vmt);
  p.seed = 4;
  EXPECT_NE(generate(p).vmt, a.vmt);
}

TEST(GuestOs, BootingFourGibibytesIsLazy) {
  // Largest direct-map pages: a handful of entries, whatever the memory size.
  std::ostringstream out;
  VmtStreamWriter writer(out, "boot");
  GuestOsParams p;
  p.memory = 4ull << 30;
  GuestOs os(p, [&](const Op& op) { writer(op); });
  os.boot();
  EXPECT_LT(os.counts().ops, 200u);
  EXPECT_LT(os.counts().table_writes, 16u);
}

TEST(GuestOs, PageTableWritesAreGuestWritesThroughTheDirectMap) {
  // After boot, no page table is written by `poke`: every entry change is a guest write to a
  // direct-map address.
  ScenarioParams p = small(x86::PagingMode::Level4);
  p.rounds = 2;
  std::istringstream in(generate(p).vmt);
  bool paging = false;
  unsigned kernel_writes = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("regs 0 cr0=0x8")) paging = true;
    if (!paging) continue;
    if (line.starts_with("write ") && line.find(" 0xffff888") != std::string::npos) ++kernel_writes;
  }
  EXPECT_TRUE(paging);
  EXPECT_GT(kernel_writes, 100u);
}

TEST(GuestOs, AccessOutsideTheMappingsIsRefused) {
  GuestOsParams p;
  p.memory = 64ull << 20;
  GuestOs os(p, [](const Op&) {});
  os.boot();
  const uint32_t init = os.spawn(ProgramImage{});
  EXPECT_THROW(os.access(init, x86::AccessKind::Read, 0x1000, 8), std::invalid_argument);
  EXPECT_THROW(os.access(init, x86::AccessKind::Write, os.program(init).text, 8, 1), std::invalid_argument);
  os.access(init, x86::AccessKind::Read, os.program(init).text, 8);
}

}  // namespace
}  // namespace vmmu::sim::guest_os
