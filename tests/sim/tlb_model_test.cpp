// The TLB and page-walk cost model: exact counts on hand-built page tables in every mode, the
// hardware's invalidation rules, and that turning the model on changes no result.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "sim/random_workload.hpp"
#include "sim/replayer.hpp"
#include "sim/tlb_cache.hpp"
#include "sim/tlb_model.hpp"
#include "sim/vmt_reader.hpp"
#include "vm/vm.hpp"

namespace vmmu::sim {
namespace {

struct TlbRun {
  TlbCounters tlb;
  std::vector<std::string> lines;
};

TlbRun run(const std::string& vmt, MmuKind mmu, const TlbConfig& config = {}, bool model = true) {
  TlbRun r;
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* out = open_memstream(&buf, &len);
  {
    Vm vm(VmConfig{mmu});
    ReplayOptions o;
    o.tlb = model;
    o.tlb_config = config;
    Replayer replayer(vm, out, o);
    std::istringstream in("vmt 1\n" + vmt);
    VmtReader reader(in);
    for (Op op; reader.next(op);) replayer.apply(op);
    replayer.flush();
    r.tlb = replayer.summary().tlb;
  }
  std::fclose(out);
  std::istringstream lines(std::string(buf, len));
  for (std::string l; std::getline(lines, l);) r.lines.push_back(l);
  std::free(buf);
  return r;
}

TlbConfig no_psc() { return TlbConfig().without_paging_structure_caches(); }

constexpr uint64_t PTE = 0x7;  // P, RW, U

// A 4-level guest: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000, PT[i] -> 0x100000 + i
// pages (`g` ORs bits into those leaves); PD[1] is a 2 MiB page at 0x200000.
std::string long_mode_guest(const std::string& host = "4k", bool pge = false, uint64_t g = 0) {
  std::string s = fmt::format("memslot 0 0 0x1000000 host={}\nvcpu 0\n", host);
  s += fmt::format("poke 0x1000 8 {:#x}\npoke 0x2000 8 {:#x}\npoke 0x3000 8 {:#x}\n", 0x2000 | PTE, 0x3000 | PTE, 0x4000 | PTE);
  s += fmt::format("poke 0x3008 8 {:#x}\n", 0x200000 | 0x80 | PTE);
  for (unsigned i = 0; i < 80; ++i) s += fmt::format("poke {:#x} 8 {:#x}\n", 0x4000 + 8 * i, (0x100000 + 0x1000 * i) | PTE | g);
  s += fmt::format("regs 0 cr0=0x80000001 cr4={:#x} efer=0x100 cr3=0x1000\n", 0x20 | (pge ? 0x80 : 0));
  return s;
}

// A 5-level guest on a CPU with 52-bit gpas (so TDP is 5-level too): PML5 0x5000 -> the above.
std::string five_level_guest() {
  std::string s = "cpu maxphyaddr=52 la57=1\n" + long_mode_guest();
  s += fmt::format("poke 0x5000 8 {:#x}\n", 0x1000 | PTE);
  s += "regs 0 cr4=0x1020 cr3=0x5000\n";
  return s;
}

// A 32-bit guest: PD 0x1000 -> PT 0x2000 -> 0x100000.
std::string bits32_guest() {
  return fmt::format("memslot 0 0 0x1000000\nvcpu 0\npoke 0x1000 4 {:#x}\npoke 0x2000 4 {:#x}\nregs 0 cr0=0x80000001 cr3=0x1000\n",
                     0x2000 | PTE, 0x100000 | PTE);
}

// A PAE guest: PDPT 0x1000 (registers) -> PD 0x2000 -> PT 0x3000 -> 0x100000.
std::string pae_guest() {
  return fmt::format(
      "memslot 0 0 0x1000000\nvcpu 0\npoke 0x1000 8 0x2001\npoke 0x2000 8 {:#x}\npoke 0x3000 8 {:#x}\n"
      "regs 0 cr0=0x80000001 cr4=0x20 cr3=0x1000\n",
      0x3000 | PTE, 0x100000 | PTE);
}

TEST(TlbCache, LruEvictsTheLeastRecentlyUsedWayOfASet) {
  TlbCache c(TlbGeometry{4, 2});  // 2 sets of 2 ways
  c.insert(0, 0, 0);
  c.insert(2, 2, 0);                  // same set (even)
  EXPECT_GE(c.find(0, 0), 0);         // 0 is now the most recent
  c.insert(4, 4, 0);                  // evicts 2
  EXPECT_LT(c.find(2, 2), 0);
  EXPECT_GE(c.find(0, 0), 0);
  EXPECT_GE(c.find(4, 4), 0);
  c.insert(1, 1, TlbModel::GLOBAL);   // the odd set is untouched by the above
  c.keep_only(TlbModel::GLOBAL);
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(c.find(1, 1), static_cast<int>(TlbModel::GLOBAL));
  EXPECT_TRUE(c.erase(1, 1));
  EXPECT_EQ(c.size(), 0u);
  EXPECT_THROW(TlbCache(TlbGeometry{12, 4}), std::invalid_argument);  // 3 sets
}

TEST(TlbModel, NativeColdMissIsFourReferencesAndAWarmPdeCacheMakesItOne) {
  const TlbRun r = run(long_mode_guest() + "read 0 0x0\nread 0 0x1000\nread 0 0x8\n", MmuKind::None);
  EXPECT_EQ(r.tlb.accesses, 3u);
  EXPECT_EQ(r.tlb.walks, 2u);
  EXPECT_EQ(r.tlb.walk_refs, 5u);  // 4, then 1 through the cached PDE
  EXPECT_EQ(r.tlb.walk_ref_histogram[4], 1u);
  EXPECT_EQ(r.tlb.walk_ref_histogram[1], 1u);
  EXPECT_EQ(r.tlb.psc_hits[2], 1u);
  EXPECT_EQ(r.tlb.l1_hits, 1u);
}

TEST(TlbModel, TdpFourOverFourColdIs24AndFiveOverFiveIs35) {
  const TlbRun four = run(long_mode_guest() + "read 0 0x0\n", MmuKind::Tdp, no_psc());
  EXPECT_EQ(four.tlb.walks, 1u);
  EXPECT_EQ(four.tlb.walk_refs, 24u);
  EXPECT_EQ(four.tlb.nested_walks, 5u);
  EXPECT_EQ(four.tlb.nested_refs, 20u);
  EXPECT_EQ(four.tlb.walk_ref_histogram[24], 1u);
  const TlbRun five = run(five_level_guest() + "read 0 0x0\n", MmuKind::Tdp, no_psc());
  EXPECT_EQ(five.tlb.walk_refs, 35u);
  EXPECT_EQ(five.tlb.walk_ref_histogram[35], 1u);
  // With the default caches, the nested walks of the guest tables after the first one start
  // below the cached nested PDE (tables and data lie in one 2 MiB region): (4 + 1) + 3 * (1 + 1) + 1.
  const TlbRun cached = run(long_mode_guest() + "read 0 0x0\n", MmuKind::Tdp);
  EXPECT_EQ(cached.tlb.walk_refs, 12u);
  EXPECT_EQ(cached.tlb.nested_psc_hits[2], 4u);
}

TEST(TlbModel, LargePagesShortenWalksInBothDimensions) {
  EXPECT_EQ(run(long_mode_guest() + "read 0 0x200000\n", MmuKind::None, no_psc()).tlb.walk_refs, 3u);
  EXPECT_EQ(run(long_mode_guest() + "read 0 0x200000\n", MmuKind::Tdp, no_psc()).tlb.walk_refs, 3u * 5 + 4);
  // host=2m: the TDP tables map the guest's memory with 2 MiB leaves: 3-reference nested walks.
  EXPECT_EQ(run(long_mode_guest("2m") + "read 0 0x0\n", MmuKind::Tdp, no_psc()).tlb.walk_refs, 4u * 4 + 3);
  EXPECT_EQ(run(long_mode_guest("2m") + "read 0 0x200000\n", MmuKind::Tdp, no_psc()).tlb.walk_refs, 3u * 4 + 3);
  // A 2 MiB entry covers its whole region: the next access to another 4 KiB of it hits.
  const TlbRun r = run(long_mode_guest("2m") + "read 0 0x200000\nread 0 0x3ff000\n", MmuKind::Tdp);
  EXPECT_EQ(r.tlb.walks, 1u);
  EXPECT_EQ(r.tlb.l1_hits, 1u);
  // But a 2 MiB guest page over 4 KiB host mappings is cached as 4 KiB entries (the combined size).
  const TlbRun split = run(long_mode_guest("4k") + "read 0 0x200000\nread 0 0x3ff000\n", MmuKind::Tdp);
  EXPECT_EQ(split.tlb.walks, 2u);
}

TEST(TlbModel, Cr3KeepsGlobalEntriesOnlyWithPge) {
  const std::string ops = "read 0 0x0\ncr3 0 0x1000\nread 0 0x0\n";
  const TlbRun with_pge = run(long_mode_guest("4k", true, 0x100) + ops, MmuKind::None);
  EXPECT_EQ(with_pge.tlb.walks, 1u);
  EXPECT_EQ(with_pge.tlb.l1_hits, 1u);
  EXPECT_EQ(with_pge.tlb.cr3_flushes, 1u);
  const TlbRun without_pge = run(long_mode_guest("4k", false, 0x100) + ops, MmuKind::None);
  EXPECT_EQ(without_pge.tlb.walks, 2u);
  const TlbRun not_global = run(long_mode_guest("4k", true, 0) + ops, MmuKind::None);
  EXPECT_EQ(not_global.tlb.walks, 2u);
  // TDP caches combined entries with the guest's G bit; KVM's SPTEs have none.
  EXPECT_EQ(run(long_mode_guest("4k", true, 0x100) + ops, MmuKind::Tdp).tlb.walks, 1u);
  EXPECT_EQ(run(long_mode_guest("4k", true, 0x100) + ops, MmuKind::Shadow).tlb.walks, 2u);
  // A full flush drops global entries too.
  EXPECT_EQ(run(long_mode_guest("4k", true, 0x100) + "read 0 0x0\nflush 0\nread 0 0x0\n", MmuKind::None).tlb.walks, 2u);
}

TEST(TlbModel, InvlpgDropsOnlyThatPage) {
  const TlbRun r = run(long_mode_guest() + "read 0 0x0\nread 0 0x1000\ninvlpg 0 0x0\nread 0 0x1000\nread 0 0x0\n", MmuKind::None);
  EXPECT_EQ(r.tlb.walks, 3u);
  EXPECT_EQ(r.tlb.l1_hits, 1u);
  EXPECT_EQ(r.tlb.invlpgs, 1u);
  // INVLPG also emptied the paging-structure caches: the third walk reads all four levels.
  EXPECT_EQ(r.tlb.walk_refs, 4u + 1 + 4);
}

TEST(TlbModel, SetConflictsEvictToTheStlbAndThenToAWalk) {
  // Five pages whose 4 KiB numbers are equal modulo 16 fill one 4-way set of the L1 dTLB.
  std::string ops;
  for (unsigned i = 0; i < 5; ++i) ops += fmt::format("read 0 {:#x}\n", i * 16 * 0x1000);
  ops += "read 0 0x0\n";
  const TlbRun r = run(long_mode_guest() + ops, MmuKind::None);
  EXPECT_EQ(r.tlb.walks, 5u);
  EXPECT_EQ(r.tlb.stlb_hits, 1u);
  TlbConfig no_stlb;
  no_stlb.stlb = {};
  const TlbRun w = run(long_mode_guest() + ops, MmuKind::None, no_stlb);
  EXPECT_EQ(w.tlb.walks, 6u);
  // Separate instruction and data TLBs: a fetch does not hit what a read filled (but the STLB does).
  const TlbRun f = run(long_mode_guest() + "read 0 0x0\nfetch 0 0x0\n", MmuKind::None);
  EXPECT_EQ(f.tlb.stlb_hits, 1u);
  EXPECT_EQ(f.tlb.l1_hits, 0u);
}

// Repeats of the last page hit (which the model counts without a lookup) count as lookups would,
// whatever changed the L1 TLB in between.
TEST(TlbModel, RepeatsOfTheLastPageHitCountAsLookups) {
  std::string ops = "read 0 0x0\nread 0 0x8\n";                                     // walk, L1 hit
  for (unsigned i = 1; i < 5; ++i) ops += fmt::format("read 0 {:#x}\n", i * 16 * 0x1000);  // evict 0x0 from L1
  ops += "read 0 0x10\nread 0 0x18\n";           // STLB hit, then L1 hit
  ops += "write 0 0x20 8 1\nwrite 0 0x28 8 1\n";  // a clean entry: dirty walk, then L1 hit
  ops += "fetch 0 0x30\nfetch 0 0x31\n";         // the instruction side: STLB hit, then L1 hit
  ops += "invlpg 0 0x0\nread 0 0x40\nread 0 0x48\n";  // walk, L1 hit
  ops += "cr3 0 0x1000\nfetch 0 0x32\nread 0 0x50\n";  // a walk, then an STLB hit (not L1)
  const TlbRun r = run(long_mode_guest() + ops, MmuKind::None);
  EXPECT_EQ(r.tlb.walks, 1u + 4 + 1 + 1 + 1);
  EXPECT_EQ(r.tlb.dirty_walks, 1u);
  EXPECT_EQ(r.tlb.stlb_hits, 3u);
  EXPECT_EQ(r.tlb.l1_hits, 5u);
}

TEST(TlbModel, AWriteToACleanEntryWalksToSetDirty) {
  const TlbRun r = run(long_mode_guest() + "read 0 0x0\nwrite 0 0x0 8 1\nwrite 0 0x0 8 2\n", MmuKind::None);
  EXPECT_EQ(r.tlb.walks, 2u);
  EXPECT_EQ(r.tlb.dirty_walks, 1u);
  EXPECT_EQ(r.tlb.l1_hits, 1u);
}

TEST(TlbModel, FaultsCreateNoEntry) {
  // gva 0x400000 is PD[2]: not present. Two faulting walks of 3 references, nothing cached.
  const TlbRun r = run(long_mode_guest() + "read 0 0x400000\nread 0 0x400000\n", MmuKind::None, no_psc());
  EXPECT_EQ(r.tlb.walks, 2u);
  EXPECT_EQ(r.tlb.faulting_walks, 2u);
  EXPECT_EQ(r.tlb.walk_refs, 6u);
  // Non-canonical: #GP before any translation.
  EXPECT_EQ(run(long_mode_guest() + "read 0 0x800000000000\n", MmuKind::None).tlb.untranslated, 1u);
}

TEST(TlbModel, ShadowWalksTheShadowTablesToTheirDepth) {
  EXPECT_EQ(run(long_mode_guest() + "read 0 0x0\n", MmuKind::Shadow, no_psc()).tlb.walk_refs, 4u);
  EXPECT_EQ(run(five_level_guest() + "read 0 0x0\n", MmuKind::Shadow, no_psc()).tlb.walk_refs, 5u);
  // 32-bit and PAE guests: a PAE-style shadow root, its four entries in PDPTE registers.
  EXPECT_EQ(run(bits32_guest() + "read 0 0x0\n", MmuKind::Shadow, no_psc()).tlb.walk_refs, 2u);
  EXPECT_EQ(run(pae_guest() + "read 0 0x0\n", MmuKind::Shadow, no_psc()).tlb.walk_refs, 2u);
  // Natively: 32-bit reads PD and PT; PAE's PDPTEs are registers too.
  EXPECT_EQ(run(bits32_guest() + "read 0 0x0\n", MmuKind::None, no_psc()).tlb.walk_refs, 2u);
  EXPECT_EQ(run(pae_guest() + "read 0 0x0\n", MmuKind::None, no_psc()).tlb.walk_refs, 2u);
  // Under TDP a PAE guest's two table reads each need a nested walk: 2 * (4 + 1) + 4.
  EXPECT_EQ(run(pae_guest() + "read 0 0x0\n", MmuKind::Tdp, no_psc()).tlb.walk_refs, 14u);
}

TEST(TlbModel, EngineFlushesEmptyEveryTlb) {
  // Deleting a memslot makes the engine zap and flush remote TLBs: the model flushes too.
  const std::string ops = "memslot 1 0x2000000 0x200000\nread 0 0x0\nmemslot-delete 1\nread 0 0x0\n";
  for (MmuKind m : {MmuKind::Tdp, MmuKind::Shadow}) {
    const TlbRun r = run(long_mode_guest() + ops, m);
    EXPECT_GE(r.tlb.engine_flushes, 1u) << name(m);
    EXPECT_EQ(r.tlb.walks, 2u) << name(m);
  }
  // The reference has no tables of its own: nothing to flush.
  EXPECT_EQ(run(long_mode_guest() + ops, MmuKind::None).tlb.walks, 1u);
}

TEST(TlbModel, StatsGainATlbKeyOnlyWhenTheModelRuns) {
  const std::string vmt = long_mode_guest() + "read 0 0x0\nstats\n";
  const TlbRun on = run(vmt, MmuKind::Tdp);
  const TlbRun off = run(vmt, MmuKind::Tdp, {}, false);
  ASSERT_FALSE(on.lines.empty());
  EXPECT_NE(on.lines.back().find("\"tlb\":{\"accesses\":1,"), std::string::npos) << on.lines.back();
  EXPECT_NE(on.lines.back().find("\"walk_ref_histogram\":["), std::string::npos);
  EXPECT_EQ(off.lines.back().find("\"tlb\""), std::string::npos);
}

// Strips the model's key from a `stats` line.
std::string without_tlb(std::string line) {
  const size_t at = line.find(",\"tlb\":");
  if (at != std::string::npos) line = line.substr(0, at) + "}";
  return line;
}

RC_GTEST_PROP(TlbModel, NeverChangesAResult, ()) {
  RandomWorkloadParams p;
  p.seed = *rc::gen::inRange<uint64_t>(1, 1u << 30);
  p.ops = 150;
  p.vcpus = *rc::gen::inRange<uint32_t>(1, 3);
  p.modes = {*rc::gen::element(x86::PagingMode::Bits32, x86::PagingMode::Pae, x86::PagingMode::Level4, x86::PagingMode::Level5)};
  const RandomWorkload w(p);
  std::ostringstream text;
  write_vmt(text, w.ops());
  std::string vmt = text.str();
  vmt = vmt.substr(vmt.find('\n') + 1);  // run() adds the header
  for (MmuKind m : {MmuKind::None, MmuKind::Tdp, MmuKind::Shadow}) {
    const TlbRun on = run(vmt, m), off = run(vmt, m, {}, false);
    RC_ASSERT(on.lines.size() == off.lines.size());
    for (size_t i = 0; i < on.lines.size(); ++i) RC_ASSERT(without_tlb(on.lines[i]) == off.lines[i]);
    RC_ASSERT(on.tlb.accesses > 0);
    RC_ASSERT(on.tlb.hits() + on.tlb.walks + on.tlb.untranslated == on.tlb.accesses);
  }
}

}  // namespace
}  // namespace vmmu::sim
