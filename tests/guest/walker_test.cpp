// Unit tests of the guest page-table walker with hand-built tables, per paging mode: every
// permission rule, every error-code bit, every leaf size, reserved bits, A/D updates.
// Each walk is also checked against the SDM model (sdm_model.hpp), so the hand-written
// expectations here vouch for the model that the combination and property tests rely on.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "guest/walker.hpp"
#include "tests/guest/walker_test_support.hpp"

namespace vmmu::guest::test {
namespace {

using x86::AccessKind;
using x86::PagingMode;

constexpr AccessKind kRead = AccessKind::Read;
constexpr AccessKind kWrite = AccessKind::Write;
constexpr AccessKind kFetch = AccessKind::Fetch;

using sdm::A;
using sdm::bit;
using sdm::D;
using sdm::P;
using sdm::PS;
using sdm::RW;
using sdm::US;
using sdm::XD;
constexpr uint64_t PRESENT_USER_RW = P | RW | US;

using sdm::EC_I;
using sdm::EC_P;
using sdm::EC_PK;
using sdm::EC_RSVD;
using sdm::EC_U;
using sdm::EC_W;

// The access bits of an error code (W/R, U/S) for an access.
uint32_t ec_of(AccessKind kind, bool user) { return (kind == kWrite ? EC_W : 0) | (user ? EC_U : 0); }

// A linear address with distinct indices at every level of the mode.
uint64_t test_gva(PagingMode mode) {
  switch (mode) {
    case PagingMode::Off:
    case PagingMode::Bits32:
    case PagingMode::Pae: return 0x4060'1234;
    case PagingMode::Level4: return 0x0000'2a80'4060'1234;
    case PagingMode::Level5: return 0x00ab'2a80'4060'1234;
  }
  return 0;
}

constexpr uint64_t FRAME = 0x34'5000;  // a 4 KiB data frame inside memory, away from the tables

std::string mode_name(const ::testing::TestParamInfo<PagingMode>& info) {
  switch (info.param) {
    case PagingMode::Off: return "Off";
    case PagingMode::Bits32: return "Bits32";
    case PagingMode::Pae: return "Pae";
    case PagingMode::Level4: return "Level4";
    case PagingMode::Level5: return "Level5";
  }
  return "Unknown";
}

// Walks and checks the walk against the SDM model computed from the memory before it.
WalkResult checked_walk(Machine& m, uint64_t gva, AccessKind kind, bool user = false, bool ac = false,
                        uint32_t pkru = 0) {
  const sdm::Cpu c = m.model_cpu(user, ac, pkru);
  const FakeMemory& mem = m.mem;
  const sdm::Outcome want = sdm::translate(
      c, [&](uint64_t gpa, unsigned size, uint64_t& v) { return mem.peek(gpa, size, v); }, gva, to_sdm(kind));
  const WalkResult got = m.walk(gva, kind, user, ac, pkru);
  const std::string diff = compare_with_model(want, got, m.mem, gva);
  EXPECT_EQ(diff, "") << "walk of " << hex(gva) << " (" << x86::name(kind) << (user ? ", user" : ", supervisor")
                      << ") disagrees with the SDM model";
  return got;
}

::testing::AssertionResult Faults(const WalkResult& r, uint32_t ec, uint64_t gva) {
  if (r.ok) return ::testing::AssertionFailure() << "translated to " << hex(r.walk.gpa) << ", want #PF " << hex(ec);
  if (r.fault.vector != x86::VECTOR_PF)
    return ::testing::AssertionFailure() << "vector " << int{r.fault.vector} << ", want #PF";
  if (r.fault.error_code != ec)
    return ::testing::AssertionFailure() << "error code " << hex(r.fault.error_code) << ", want " << hex(ec);
  if (r.fault.address != gva)
    return ::testing::AssertionFailure() << "address " << hex(r.fault.address) << ", want " << hex(gva);
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult Translates(const WalkResult& r, uint64_t gpa) {
  if (!r.ok) {
    return ::testing::AssertionFailure() << "fault vector " << int{r.fault.vector} << " error code "
                                         << hex(r.fault.error_code) << ", want gpa " << hex(gpa);
  }
  if (r.walk.gpa != gpa) return ::testing::AssertionFailure() << "gpa " << hex(r.walk.gpa) << ", want " << hex(gpa);
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult IsGeneralProtection(const WalkResult& r) {
  if (r.ok) return ::testing::AssertionFailure() << "translated to " << hex(r.walk.gpa);
  if (r.fault.vector != x86::VECTOR_GP || r.fault.error_code != 0 || r.fault.address != 0) {
    return ::testing::AssertionFailure() << "vector " << int{r.fault.vector} << " error code "
                                         << hex(r.fault.error_code);
  }
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------------
// Paging off and canonical addresses.

TEST(WalkerPagingOff, IsTheIdentityAndReadsNothing) {
  Machine m(PagingMode::Off);
  for (AccessKind kind : {kRead, kWrite, kFetch}) {
    for (bool user : {false, true}) {
      const WalkResult r = checked_walk(m, 0xfedc'b123, kind, user);
      EXPECT_TRUE(Translates(r, 0xfedc'b123));
      EXPECT_EQ(r.walk.level, 1);
      EXPECT_EQ(r.walk.refs, 0);
      EXPECT_EQ(r.walk.acc, x86::acc::ALL);
      EXPECT_TRUE(m.mem.reads.empty());
      EXPECT_TRUE(m.mem.updates.empty());
    }
  }
}

TEST(WalkerCanonical, Level4NonCanonicalIsGeneralProtection) {
  Machine m(PagingMode::Level4);
  m.map(0x1000, FRAME);
  for (uint64_t gva : {0x0000'8000'0000'0000ull, 0x7fff'ffff'ffff'f000ull, 0xffff'7fff'ffff'ffffull,
                       0x8000'0000'0000'0000ull, 0x0001'0000'0000'1000ull, 0x00ab'2a80'4060'1234ull}) {
    for (AccessKind kind : {kRead, kWrite, kFetch}) {
      const WalkResult r = checked_walk(m, gva, kind, true);
      EXPECT_TRUE(IsGeneralProtection(r)) << hex(gva);
      EXPECT_TRUE(m.mem.reads.empty());
      EXPECT_TRUE(m.mem.updates.empty());
    }
  }
}

TEST(WalkerCanonical, Level4HighHalfWalks) {
  Machine m(PagingMode::Level4);
  for (uint64_t gva : {0xffff'8000'0000'0123ull, 0xffff'ffff'ffff'f456ull, 0x0000'7fff'ffff'f789ull}) {
    const Machine::Path path = m.map(gva, FRAME);
    EXPECT_EQ(path.gpa[4], Machine::ROOT + 8 * ((gva >> 39) & 511));
    EXPECT_TRUE(Translates(checked_walk(m, gva, kRead), FRAME | (gva & 0xfff)));
  }
}

TEST(WalkerCanonical, Level5UsesWidth57) {
  Machine m(PagingMode::Level5);
  for (uint64_t gva : {0x0000'8000'0000'0123ull, 0x00ff'ffff'ffff'f456ull, 0xff00'0000'0000'0789ull,
                       0xffff'8000'0000'0abcull}) {
    const Machine::Path path = m.map(gva, FRAME);
    EXPECT_EQ(path.gpa[5], Machine::ROOT + 8 * ((gva >> 48) & 511));
    EXPECT_TRUE(Translates(checked_walk(m, gva, kRead), FRAME | (gva & 0xfff))) << hex(gva);
  }
  for (uint64_t gva : {0x0100'0000'0000'0000ull, 0xfeff'ffff'ffff'f000ull, 0x8000'0000'0000'0000ull}) {
    EXPECT_TRUE(IsGeneralProtection(checked_walk(m, gva, kWrite))) << hex(gva);
    EXPECT_TRUE(m.mem.reads.empty());
  }
}

// ---------------------------------------------------------------------------------------------
// Rules every paging mode shares.

class WalkerAllModes : public ::testing::TestWithParam<PagingMode> {};
INSTANTIATE_TEST_SUITE_P(Modes, WalkerAllModes,
                         ::testing::Values(PagingMode::Bits32, PagingMode::Pae, PagingMode::Level4, PagingMode::Level5),
                         mode_name);

TEST_P(WalkerAllModes, Translates4KiBAndSetsAccessedThenDirty) {
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, FRAME);
  const unsigned top = m.top_level();

  WalkResult r = checked_walk(m, gva, kRead);
  ASSERT_TRUE(Translates(r, FRAME | 0x234));
  EXPECT_EQ(r.walk.level, 1);
  EXPECT_EQ(r.walk.root_level, top);
  EXPECT_EQ(r.walk.refs, top);
  EXPECT_EQ(r.walk.acc, x86::acc::ALL);
  for (unsigned l = 1; l <= top; ++l) {
    EXPECT_EQ(r.walk.pte_gpa[l], path.gpa[l]) << "level " << l;
    EXPECT_EQ(m.entry(path.gpa[l]) & (A | D), A) << "level " << l;
    EXPECT_EQ(r.walk.pte[l], m.entry(path.gpa[l])) << "level " << l;
  }
  // Top level first, each update the width of an entry.
  ASSERT_EQ(m.mem.updates.size(), top);
  for (unsigned i = 0; i < top; ++i) {
    EXPECT_EQ(m.mem.updates[i].gpa, path.gpa[top - i]);
    EXPECT_EQ(m.mem.updates[i].size, m.entry_size());
    EXPECT_EQ(m.mem.updates[i].outcome, EntryUpdate::Done);
  }

  // Every A is set now: another read writes nothing.
  r = checked_walk(m, gva, kRead);
  EXPECT_TRUE(Translates(r, FRAME | 0x234));
  EXPECT_TRUE(m.mem.updates.empty());

  // A write sets D on the leaf only, and only once.
  r = checked_walk(m, gva, kWrite);
  EXPECT_TRUE(Translates(r, FRAME | 0x234));
  ASSERT_EQ(m.mem.updates.size(), 1u);
  EXPECT_EQ(m.mem.updates[0].gpa, path.gpa[1]);
  EXPECT_EQ(m.entry(path.gpa[1]) & (A | D), A | D);
  for (unsigned l = 2; l <= top; ++l) EXPECT_EQ(m.entry(path.gpa[l]) & D, 0u) << "level " << l;
  r = checked_walk(m, gva, kWrite);
  EXPECT_TRUE(m.mem.updates.empty());
}

TEST_P(WalkerAllModes, WriteFirstSetsAccessedAndDirtyTogether) {
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, FRAME);
  ASSERT_TRUE(Translates(checked_walk(m, gva, kWrite, true), FRAME | 0x234));
  EXPECT_EQ(m.mem.updates.size(), m.top_level());  // one update per entry, A and D at once
  EXPECT_EQ(m.entry(path.gpa[1]) & (A | D), A | D);
}

TEST_P(WalkerAllModes, NotPresentAtEachLevel) {
  const unsigned top = Machine(GetParam()).top_level();
  for (unsigned level = 1; level <= top; ++level) {
    for (AccessKind kind : {kRead, kWrite, kFetch}) {
      for (bool user : {false, true}) {
        Machine m(GetParam());
        const uint64_t gva = test_gva(GetParam());
        const Machine::Path path = m.map(gva, FRAME);
        // The other bits of a not-present entry are ignored, reserved ones included.
        m.set_entry(path.gpa[level], m.entry(path.gpa[level]) & ~P & 0xffff'ffffull);
        m.set_bits(path.gpa[level], bit(13) | bit(21) | PS);
        const std::vector<uint8_t> before = m.mem.snapshot();
        const WalkResult r = checked_walk(m, gva, kind, user);
        EXPECT_TRUE(Faults(r, ec_of(kind, user), gva)) << "level " << level << " " << x86::name(kind);
        EXPECT_EQ(m.mem.reads.size(), top - level + 1);
        EXPECT_TRUE(m.mem.updates.empty());
        EXPECT_EQ(m.mem.snapshot(), before);
      }
    }
  }
}

TEST_P(WalkerAllModes, TableOutsideMemoryFaultsNotPresent) {
  const unsigned top = Machine(GetParam()).top_level();
  for (unsigned level = 2; level <= top; ++level) {
    Machine m(GetParam());
    const uint64_t gva = test_gva(GetParam());
    const Machine::Path path = m.map(gva, FRAME);
    // Point the entry at a table beyond the end of memory (below 4 GiB for 32-bit paging).
    m.set_entry(path.gpa[level], 0x8000'0000 | PRESENT_USER_RW);
    for (AccessKind kind : {kRead, kWrite}) {
      const WalkResult r = checked_walk(m, gva, kind, true);
      EXPECT_TRUE(Faults(r, ec_of(kind, true), gva)) << "level " << level;
      EXPECT_TRUE(m.mem.updates.empty());
      EXPECT_EQ(m.mem.reads.back(), 0x8000'0000 + uint64_t{m.index(gva, level - 1)} * m.entry_size());
    }
  }
}

TEST_P(WalkerAllModes, LeafOutsideMemoryStillTranslates) {
  // A gpa outside every memslot is MMIO: the walk itself succeeds.
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  m.map(gva, 0xfff0'0000);
  EXPECT_TRUE(Translates(checked_walk(m, gva, kWrite), 0xfff0'0234));
}

struct PermissionCase {
  const char* name;
  uint64_t upper_clear;  // bits cleared in one upper-level entry
  uint64_t leaf_clear;   // bits cleared in the leaf
  bool wp, smep, smap, ac, user;
  AccessKind kind;
  bool faults;
};

// SDM 4.6.1, rule by rule (EFER.NXE=0 here; NX has its own tests).
const PermissionCase PERMISSION_CASES[] = {
    {"user read, user page", 0, 0, true, false, false, false, true, kRead, false},
    {"user read, leaf supervisor", 0, US, false, false, false, false, true, kRead, true},
    {"user read, upper supervisor", US, 0, false, false, false, false, true, kRead, true},
    {"user write, writable", 0, 0, true, false, false, false, true, kWrite, false},
    {"user write, leaf read-only", 0, RW, true, false, false, false, true, kWrite, true},
    {"user write, upper read-only", RW, 0, true, false, false, false, true, kWrite, true},
    {"user write, read-only, WP=0 does not help users", 0, RW, false, false, false, false, true, kWrite, true},
    {"user read, read-only", RW, RW, true, false, false, false, true, kRead, false},
    {"user fetch, user page", 0, 0, false, false, false, false, true, kFetch, false},
    {"user fetch, supervisor page", 0, US, false, false, false, false, true, kFetch, true},
    {"user fetch, user page, SMEP", 0, 0, false, true, false, false, true, kFetch, false},
    {"user read, user page, SMAP", 0, 0, false, false, true, false, true, kRead, false},
    {"user write, user page, SMAP", 0, 0, true, false, true, false, true, kWrite, false},
    {"user read, supervisor page, SMAP, AC", 0, US, false, false, true, true, true, kRead, true},
    {"user read, supervisor page, AC", US, 0, false, false, false, true, true, kRead, true},
    {"supervisor read, supervisor page", 0, US, true, true, true, false, false, kRead, false},
    {"supervisor read, user page", 0, 0, true, true, false, false, false, kRead, false},
    {"supervisor write, read-only, WP=0", 0, RW, false, false, false, false, false, kWrite, false},
    {"supervisor write, upper read-only, WP=0", RW, 0, false, false, false, false, false, kWrite, false},
    {"supervisor write, read-only, WP=1", 0, RW, true, false, false, false, false, kWrite, true},
    {"supervisor write, upper read-only, WP=1", RW, 0, true, false, false, false, false, kWrite, true},
    {"supervisor write, read-only user page, WP=0", 0, RW, false, false, false, false, false, kWrite, false},
    {"supervisor read, user page, SMAP", 0, 0, false, false, true, false, false, kRead, true},
    {"supervisor read, user page, SMAP, AC", 0, 0, false, false, true, true, false, kRead, false},
    {"supervisor read, user page, AC without SMAP", 0, 0, false, false, false, true, false, kRead, false},
    {"supervisor write, user page, SMAP", 0, 0, false, false, true, false, false, kWrite, true},
    {"supervisor write, user page, SMAP, AC", 0, 0, false, false, true, true, false, kWrite, false},
    {"supervisor write, read-only user page, SMAP, AC, WP=1", 0, RW, true, false, true, true, false, kWrite, true},
    {"supervisor write, read-only user page, SMAP, AC, WP=0", 0, RW, false, false, true, true, false, kWrite, false},
    {"supervisor read, upper supervisor, SMAP", US, 0, false, false, true, false, false, kRead, false},
    {"supervisor write, leaf supervisor, SMAP", 0, US, false, false, true, false, false, kWrite, false},
    {"supervisor fetch, user page", 0, 0, false, false, false, false, false, kFetch, false},
    {"supervisor fetch, user page, SMAP", 0, 0, false, false, true, false, false, kFetch, false},
    {"supervisor fetch, user page, SMEP", 0, 0, false, true, false, false, false, kFetch, true},
    {"supervisor fetch, user page, SMEP, SMAP, AC", 0, 0, false, true, true, true, false, kFetch, true},
    {"supervisor fetch, leaf supervisor, SMEP", 0, US, false, true, false, false, false, kFetch, false},
    {"supervisor fetch, upper supervisor, SMEP", US, 0, false, true, false, false, false, kFetch, false},
    {"supervisor fetch, read-only, SMEP", RW, RW, true, true, false, false, false, kFetch, true},
};

TEST_P(WalkerAllModes, PermissionRules) {
  const unsigned top = Machine(GetParam()).top_level();
  for (const PermissionCase& c : PERMISSION_CASES) {
    // The upper-level bit is cleared at each level above the leaf in turn.
    for (unsigned upper = 2; upper <= (c.upper_clear ? top : 2); ++upper) {
      SCOPED_TRACE(std::string(c.name) + ", upper level " + std::to_string(upper));
      Machine m(GetParam());
      const uint64_t gva = test_gva(GetParam());
      const Machine::Path path = m.map(gva, FRAME);
      m.clear_bits(path.gpa[upper], c.upper_clear);
      m.clear_bits(path.gpa[1], c.leaf_clear);
      if (c.wp) m.cpu.cr0 |= sdm::CR0_WP;
      if (c.smep) m.cpu.cr4 |= sdm::CR4_SMEP;
      if (c.smap) m.cpu.cr4 |= sdm::CR4_SMAP;
      const std::vector<uint8_t> before = m.mem.snapshot();
      const WalkResult r = checked_walk(m, gva, c.kind, c.user, c.ac);
      if (c.faults) {
        const uint32_t ec = EC_P | ec_of(c.kind, c.user) | (c.kind == kFetch && c.smep ? EC_I : 0);
        EXPECT_TRUE(Faults(r, ec, gva));
        EXPECT_TRUE(m.mem.updates.empty());
        EXPECT_EQ(m.mem.snapshot(), before);
      } else {
        EXPECT_TRUE(Translates(r, FRAME | 0x234));
        EXPECT_EQ(m.entry(path.gpa[1]) & (A | D), c.kind == kWrite ? A | D : A);
      }
    }
  }
}

TEST_P(WalkerAllModes, InstructionFetchBitNeedsSmepOrPaeWithNxe) {
  // SDM 4.7: I/D is 1 for fetches with CR4.SMEP=1, or with CR4.PAE=1 and EFER.NXE=1.
  const bool pae_format = GetParam() != PagingMode::Bits32;
  for (bool smep : {false, true}) {
    for (bool nxe : {false, true}) {
      SCOPED_TRACE(std::string("SMEP=") + (smep ? "1" : "0") + " NXE=" + (nxe ? "1" : "0"));
      Machine m(GetParam());
      const uint64_t gva = test_gva(GetParam());
      const Machine::Path path = m.map(gva, FRAME);
      if (smep) m.cpu.cr4 |= sdm::CR4_SMEP;
      if (nxe) m.cpu.efer |= sdm::EFER_NXE;
      const uint32_t i = (smep || (pae_format && nxe)) ? EC_I : 0;
      // A protection fault (user fetch from a supervisor page).
      m.clear_bits(path.gpa[1], US);
      EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch, true), EC_P | EC_U | i, gva));
      // Reads and writes never set it.
      EXPECT_TRUE(Faults(checked_walk(m, gva, kRead, true), EC_P | EC_U, gva));
      EXPECT_TRUE(Faults(checked_walk(m, gva, kWrite, true), EC_P | EC_W | EC_U, gva));
      // A not-present fault.
      m.clear_bits(path.gpa[1], P);
      EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch), i, gva));
      // A reserved-bit fault (bit 21 of a 4 MiB PDE; bit 51 of an 8-byte entry).
      m.set_bits(path.gpa[1], P);
      if (pae_format) {
        m.set_bits(path.gpa[2], bit(51));
      } else {
        m.cpu.cr4 |= sdm::CR4_PSE;
        m.set_entry(path.gpa[2], 0x40'0000 | PS | PRESENT_USER_RW | bit(21));
      }
      EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch, true), EC_P | EC_RSVD | EC_U | i, gva));
    }
  }
}

TEST_P(WalkerAllModes, ReadOnlyMemoryIsUsedButNotUpdated) {
  // All tables in a read-only slot: the walk succeeds and writes nothing.
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  m.map(gva, FRAME);
  FakeMemory ro;
  ro.add(0, Machine::MEMORY_SIZE, true);
  for (uint64_t gpa = 0; gpa < Machine::MEMORY_SIZE; gpa += 8) ro.store(gpa, m.mem.load(gpa));
  m.mem = ro;
  const std::vector<uint8_t> before = m.mem.snapshot();
  for (AccessKind kind : {kRead, kWrite}) {
    const WalkResult r = checked_walk(m, gva, kind);
    EXPECT_TRUE(Translates(r, FRAME | 0x234));
    EXPECT_EQ(m.mem.snapshot(), before);
    ASSERT_EQ(m.mem.updates.size(), m.top_level());
    for (const FakeMemory::Update& u : m.mem.updates) EXPECT_EQ(u.outcome, EntryUpdate::ReadOnly);
    EXPECT_EQ(r.walk.pte[1] & (A | D), 0u);  // the walk reports the entries as they are
  }
}

TEST_P(WalkerAllModes, ReadOnlyRootOnlyLeavesTheRootAlone) {
  // The root table in a read-only slot, the rest in RAM: A/D on the rest only.
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const unsigned top = m.top_level();
  FakeMemory split;
  split.add(0x10'0000, 0x1000, true);   // the root table
  split.add(0x20'0000, 0x10'0000);      // everything else
  m.mem = split;
  // Build by hand: root at 0x100000, then tables at 0x200000, 0x201000, ...
  uint64_t table = 0x10'0000;
  uint64_t next = 0x20'0000;
  Machine::Path path;
  if (GetParam() == PagingMode::Pae) {
    // The PDPTE register points at the read-only page, which then holds the page directory.
    m.pdptes.entry[(gva >> 30) & 3] = table | P;
  } else {
    m.cpu.cr3 = table;
  }
  for (unsigned level = top; level >= 1; --level) {
    path.gpa[level] = table + uint64_t{m.index(gva, level)} * m.entry_size();
    const uint64_t target = level == 1 ? FRAME : next;
    m.mem.store(path.gpa[level], target | PRESENT_USER_RW, m.entry_size());
    table = next;
    next += 0x1000;
  }
  const WalkResult r = checked_walk(m, gva, kWrite);
  EXPECT_TRUE(Translates(r, FRAME | 0x234));
  EXPECT_EQ(m.entry(path.gpa[top]) & (A | D), 0u);
  for (unsigned l = 1; l < top; ++l) EXPECT_EQ(m.entry(path.gpa[l]) & A, A) << "level " << l;
  EXPECT_EQ(m.entry(path.gpa[1]) & D, D);
}

TEST_P(WalkerAllModes, FaultsWriteNothing) {
  // Protection faults, found after every entry was read, still set no A bit anywhere.
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, FRAME);
  m.clear_bits(path.gpa[1], RW);
  m.cpu.cr0 |= sdm::CR0_WP;
  const std::vector<uint8_t> before = m.mem.snapshot();
  EXPECT_TRUE(Faults(checked_walk(m, gva, kWrite, true), EC_P | EC_W | EC_U, gva));
  EXPECT_TRUE(Faults(checked_walk(m, gva, kWrite, false), EC_P | EC_W, gva));
  m.clear_bits(path.gpa[2], US);
  EXPECT_TRUE(Faults(checked_walk(m, gva, kRead, true), EC_P | EC_U, gva));
  m.set_bits(path.gpa[2], US);
  EXPECT_EQ(m.mem.snapshot(), before);
  EXPECT_EQ(m.mem.reads.size(), m.top_level());
}

TEST_P(WalkerAllModes, RacingZapRestartsTheWalk) {
  // Another vCPU clears the leaf between the walk's read and its A/D update: the update fails,
  // the walk restarts and sees the entry gone.
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, FRAME);
  bool raced = false;
  m.mem.before_update = [&](FakeMemory& mem, uint64_t) {
    if (!raced) mem.store(path.gpa[1], 0, m.entry_size());
    raced = true;
  };
  const WalkResult r = m.walk(gva, kWrite, true);
  EXPECT_TRUE(Faults(r, EC_W | EC_U, gva));
  EXPECT_EQ(m.entry(path.gpa[1]), 0u);
  ASSERT_FALSE(m.mem.updates.empty());
  EXPECT_EQ(m.mem.updates.back().outcome, EntryUpdate::Changed);
  EXPECT_EQ(m.mem.reads.size(), 2u * m.top_level());
}

TEST_P(WalkerAllModes, RacingAccessedUpdateIsMerged) {
  // Another vCPU sets A on the leaf first: the walk restarts and then adds D only.
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, FRAME);
  bool raced = false;
  m.mem.before_update = [&](FakeMemory& mem, uint64_t) {
    if (!raced) mem.store(path.gpa[1], mem.load(path.gpa[1], m.entry_size()) | A, m.entry_size());
    raced = true;
  };
  const WalkResult r = m.walk(gva, kWrite);
  EXPECT_TRUE(Translates(r, FRAME | 0x234));
  EXPECT_EQ(m.entry(path.gpa[1]) & (A | D), A | D);
  EXPECT_EQ(r.walk.pte[1], m.entry(path.gpa[1]));
  for (unsigned l = 2; l <= m.top_level(); ++l) EXPECT_EQ(m.entry(path.gpa[l]) & (A | D), A) << "level " << l;
}

TEST_P(WalkerAllModes, EndlessRacesTerminate) {
  // A racer that changes an ignored bit of the leaf before every update: the walker must give
  // up retrying at some point rather than loop forever.
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, FRAME);
  m.mem.before_update = [&](FakeMemory& mem, uint64_t) {
    mem.store(path.gpa[1], mem.load(path.gpa[1], m.entry_size()) ^ bit(9), m.entry_size());
  };
  const WalkResult r = m.walk(gva, kWrite);
  EXPECT_LT(m.mem.updates.size(), 100u);
  if (r.ok) {
    EXPECT_EQ(r.walk.gpa, FRAME | 0x234);
  }
}

// ---------------------------------------------------------------------------------------------
// 32-bit paging.

TEST(Walker32, PsIsIgnoredWithoutPse) {
  Machine m(PagingMode::Bits32);
  const uint64_t gva = 0x4060'1234;
  const Machine::Path path = m.map(gva, FRAME);
  // PS is ignored: the PDE points at a table (whose address bits 21:13 would be reserved bits
  // of a 4 MiB PDE).
  m.set_bits(path.gpa[2], PS);
  const WalkResult r = checked_walk(m, gva, kWrite);
  EXPECT_TRUE(Translates(r, FRAME | 0x234));
  EXPECT_EQ(r.walk.level, 1);
  EXPECT_EQ(r.walk.refs, 2);
  EXPECT_EQ(m.entry(path.gpa[2]) & (A | D), A);  // D only on the leaf, which is the PTE
}

TEST(Walker32, FourMiBPages) {
  Machine m(PagingMode::Bits32);
  m.cpu.cr4 |= sdm::CR4_PSE;
  const uint64_t gva = 0x4060'1234;
  const Machine::Path path = m.map(gva, 0xc0'0000, 2);
  WalkResult r = checked_walk(m, gva, kRead, true);
  EXPECT_TRUE(Translates(r, 0xc0'0000 | (gva & 0x3f'ffff)));
  EXPECT_EQ(r.walk.level, 2);
  EXPECT_EQ(r.walk.refs, 1);
  EXPECT_EQ(m.entry(path.gpa[2]) & (A | D), A);
  r = checked_walk(m, gva, kWrite, true);
  EXPECT_TRUE(Translates(r, 0xc0'0000 | (gva & 0x3f'ffff)));
  EXPECT_EQ(m.entry(path.gpa[2]) & (A | D), A | D);
  // PAT (bit 12) is neither reserved nor an address bit.
  // (Walked at an address with bit 12 clear, where a leaked PAT bit would show.)
  m.set_bits(path.gpa[2], bit(12));
  const uint64_t even = gva & ~0x1000ull;
  EXPECT_TRUE(Translates(checked_walk(m, even, kRead), 0xc0'0000 | (even & 0x3f'ffff)));
}

TEST(Walker32, NoExecuteDisableBit) {
  // 4-byte entries have no XD: EFER.NXE changes nothing, fetches are allowed everywhere.
  Machine m(PagingMode::Bits32);
  m.cpu.efer |= sdm::EFER_NXE;
  const uint64_t gva = 0x4060'1234;
  const Machine::Path path = m.map(gva, FRAME);
  m.clear_bits(path.gpa[1], RW);
  EXPECT_TRUE(Translates(checked_walk(m, gva, kFetch, true), FRAME | 0x234));
  EXPECT_TRUE(Translates(checked_walk(m, gva, kFetch, false), FRAME | 0x234));
  EXPECT_TRUE(checked_walk(m, gva, kFetch).walk.acc & x86::acc::X);
}

TEST(Walker32, ProtectionKeysDoNotApply) {
  Machine m(PagingMode::Bits32);
  m.cpu.cr4 |= sdm::CR4_PKE;
  const uint64_t gva = 0x4060'1234;
  m.map(gva, FRAME);
  EXPECT_TRUE(Translates(checked_walk(m, gva, kRead, true, false, 0xffff'ffff), FRAME | 0x234));
  EXPECT_TRUE(Translates(checked_walk(m, gva, kWrite, false, false, 0xffff'ffff), FRAME | 0x234));
}

class WalkerPse36 : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Maxphyaddr, WalkerPse36, ::testing::Values(32u, 36u, 39u, 40u, 46u, 52u));

TEST_P(WalkerPse36, HighAddressAndReservedBits) {
  // M' = min(M, 40): PDE bits (M'-20):13 are address bits (M'-1):32, bits 21:(M'-19) reserved.
  const unsigned m_ = GetParam();
  const unsigned mp = m_ < 40 ? m_ : 40;
  const uint64_t gva = 0x4060'1234;
  for (unsigned b = 13; b <= 21; ++b) {
    SCOPED_TRACE("PDE bit " + std::to_string(b));
    Machine m(PagingMode::Bits32, x86::CpuModel{m_, true, true});
    m.cpu.cr4 |= sdm::CR4_PSE;
    const Machine::Path path = m.map(gva, 0x80'0000, 2);
    m.set_bits(path.gpa[2], bit(b));
    if (b <= mp - 20) {
      EXPECT_TRUE(Translates(checked_walk(m, gva, kRead), (1ull << (b + 19)) | 0x80'0000 | (gva & 0x3f'ffff)));
    } else {
      EXPECT_GE(b, mp - 19);
      for (AccessKind kind : {kRead, kWrite}) {
        EXPECT_TRUE(Faults(checked_walk(m, gva, kind, true), EC_P | EC_RSVD | EC_U | ec_of(kind, false), gva));
        EXPECT_TRUE(m.mem.updates.empty());
      }
    }
  }
  // Every high address bit at once.
  Machine m(PagingMode::Bits32, x86::CpuModel{m_, true, true});
  m.cpu.cr4 |= sdm::CR4_PSE;
  const uint64_t high = (1ull << (mp - 32)) - 1;  // address bits (M'-1):32
  m.map(gva, 0xffc0'0000 | (high << 13), 2);
  EXPECT_TRUE(Translates(checked_walk(m, gva, kRead), (high << 32) | 0xffc0'0000 | (gva & 0x3f'ffff)));
}

// ---------------------------------------------------------------------------------------------
// PAE paging.

TEST(WalkerPae, NotPresentPdpteFaultsWithoutReadingMemory) {
  Machine m(PagingMode::Pae);
  const uint64_t gva = 0x4060'1234;
  m.map(gva, FRAME);
  m.pdptes.entry[1] = 0;
  for (AccessKind kind : {kRead, kWrite, kFetch}) {
    for (bool user : {false, true}) {
      EXPECT_TRUE(Faults(checked_walk(m, gva, kind, user), ec_of(kind, user), gva));
      EXPECT_TRUE(m.mem.reads.empty());
    }
  }
  m.cpu.efer |= sdm::EFER_NXE;
  EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch, true), EC_U | EC_I, gva));
}

TEST(WalkerPae, PdptePointingOutsideMemoryFaultsNotPresent) {
  Machine m(PagingMode::Pae);
  const uint64_t gva = 0x4060'1234;
  m.map(gva, FRAME);
  m.pdptes.entry[1] = 0x8000'0000 | P;
  EXPECT_TRUE(Faults(checked_walk(m, gva, kWrite, true), EC_W | EC_U, gva));
  EXPECT_EQ(m.mem.reads.size(), 1u);
  EXPECT_TRUE(m.mem.updates.empty());
}

TEST(WalkerPae, Bits31To30SelectThePdpte) {
  Machine m(PagingMode::Pae);
  for (uint64_t i = 0; i < 4; ++i) m.map((i << 30) | 0x1234, FRAME + (i << 12));
  for (uint64_t i = 0; i < 4; ++i) {
    const WalkResult r = checked_walk(m, (i << 30) | 0x1234, kRead);
    EXPECT_TRUE(Translates(r, FRAME + (i << 12) + 0x234));
    EXPECT_EQ(r.walk.pte_gpa[2], m.table_of(m.pdptes.entry[i]));
  }
}

TEST(WalkerPae, PdptesAreRegistersNotMemory) {
  // Garbage in the PDPT page at CR3 does not matter, and the walk never sets A there (PDPTEs
  // have no A bit).
  Machine m(PagingMode::Pae);
  const uint64_t gva = 0x4060'1234;
  m.map(gva, FRAME);
  for (uint64_t gpa = Machine::ROOT; gpa < Machine::ROOT + 32; gpa += 8) m.mem.store(gpa, ~0ull);
  const WalkResult r = checked_walk(m, gva, kWrite);
  EXPECT_TRUE(Translates(r, FRAME | 0x234));
  EXPECT_EQ(r.walk.root_level, 2);
  EXPECT_EQ(r.walk.refs, 2);
  for (uint64_t gpa : m.mem.reads) EXPECT_FALSE(gpa >= Machine::ROOT && gpa < Machine::ROOT + 0x1000);
  EXPECT_EQ(m.mem.load(Machine::ROOT + 8), ~0ull);
}

TEST(WalkerPae, TwoMiBPages) {
  Machine m(PagingMode::Pae);
  const uint64_t gva = 0x4060'1234;
  const Machine::Path path = m.map(gva, 0x60'0000, 2);
  WalkResult r = checked_walk(m, gva, kWrite);
  EXPECT_TRUE(Translates(r, 0x60'0000 | (gva & 0x1f'ffff)));
  EXPECT_EQ(r.walk.level, 2);
  EXPECT_EQ(r.walk.refs, 1);
  EXPECT_EQ(m.entry(path.gpa[2]) & (A | D), A | D);
  // PAT (bit 12): not reserved, not an address bit.
  m.set_bits(path.gpa[2], bit(12));
  const uint64_t even = gva & ~0x1000ull;  // a leaked PAT bit would show in the gpa
  EXPECT_TRUE(Translates(checked_walk(m, even, kRead), 0x60'0000 | (even & 0x1f'ffff)));
  // Bits 20:13 are reserved.
  for (unsigned b = 13; b <= 20; ++b) {
    m.set_bits(path.gpa[2], bit(b));
    EXPECT_TRUE(Faults(checked_walk(m, gva, kRead), EC_P | EC_RSVD, gva)) << "bit " << b;
    m.clear_bits(path.gpa[2], bit(b));
  }
}

class WalkerPaeMaxphyaddr : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Maxphyaddr, WalkerPaeMaxphyaddr, ::testing::Values(32u, 36u, 39u, 40u, 46u, 52u));

TEST_P(WalkerPaeMaxphyaddr, Bits62ToMAreReserved) {
  const unsigned mx = GetParam();
  const uint64_t gva = 0x4060'1234;
  for (unsigned level : {1u, 2u}) {
    for (unsigned b = 32; b <= 62; ++b) {
      SCOPED_TRACE("level " + std::to_string(level) + " bit " + std::to_string(b));
      Machine m(PagingMode::Pae, x86::CpuModel{mx, true, true});
      m.cpu.efer |= sdm::EFER_NXE;
      const Machine::Path path = m.map(gva, FRAME);
      m.set_bits(path.gpa[level], bit(b));
      const WalkResult r = checked_walk(m, gva, kWrite);
      if (b >= mx) {
        EXPECT_TRUE(Faults(r, EC_P | EC_RSVD | EC_W, gva));
        EXPECT_TRUE(m.mem.updates.empty());
      } else if (level == 1) {
        EXPECT_TRUE(Translates(r, bit(b) | FRAME | 0x234));  // an address bit
      } else {
        EXPECT_TRUE(Faults(r, EC_W, gva));  // the page table is now outside memory
      }
    }
  }
}

TEST(WalkerPae, Bit63IsReservedWithoutNxe) {
  const uint64_t gva = 0x4060'1234;
  for (unsigned level : {1u, 2u}) {
    Machine m(PagingMode::Pae);
    const Machine::Path path = m.map(gva, FRAME);
    m.set_bits(path.gpa[level], XD);
    EXPECT_TRUE(Faults(checked_walk(m, gva, kRead), EC_P | EC_RSVD, gva));
    EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch, true), EC_P | EC_RSVD | EC_U, gva));
    m.cpu.efer |= sdm::EFER_NXE;
    EXPECT_TRUE(Translates(checked_walk(m, gva, kRead, true), FRAME | 0x234));
    EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch, true), EC_P | EC_U | EC_I, gva));
    EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch, false), EC_P | EC_I, gva));
  }
}

TEST(WalkerPae, ProtectionKeysDoNotApply) {
  Machine m(PagingMode::Pae);
  m.cpu.cr4 |= sdm::CR4_PKE;
  const uint64_t gva = 0x4060'1234;
  m.map(gva, FRAME);
  EXPECT_TRUE(Translates(checked_walk(m, gva, kRead, true, false, 0xffff'ffff), FRAME | 0x234));
  EXPECT_TRUE(Translates(checked_walk(m, gva, kWrite, true, false, 0xffff'ffff), FRAME | 0x234));
}

// ---------------------------------------------------------------------------------------------
// 4-level and 5-level paging.

class WalkerLongMode : public ::testing::TestWithParam<PagingMode> {};
INSTANTIATE_TEST_SUITE_P(Modes, WalkerLongMode, ::testing::Values(PagingMode::Level4, PagingMode::Level5), mode_name);

TEST_P(WalkerLongMode, TwoMiBPages) {
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, 0x60'0000, 2);
  const WalkResult r = checked_walk(m, gva, kWrite, true);
  EXPECT_TRUE(Translates(r, 0x60'0000 | (gva & 0x1f'ffff)));
  EXPECT_EQ(r.walk.level, 2);
  EXPECT_EQ(r.walk.refs, m.top_level() - 1);
  EXPECT_EQ(m.entry(path.gpa[2]) & (A | D), A | D);
  EXPECT_EQ(m.entry(path.gpa[3]) & (A | D), A);
  m.set_bits(path.gpa[2], bit(12));  // PAT: not an address bit
  const uint64_t even = gva & ~0x1000ull;
  EXPECT_TRUE(Translates(checked_walk(m, even, kRead), 0x60'0000 | (even & 0x1f'ffff)));
  for (unsigned b = 13; b <= 20; ++b) {
    m.set_bits(path.gpa[2], bit(b));
    EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch, true), EC_P | EC_RSVD | EC_U, gva)) << "bit " << b;
    m.clear_bits(path.gpa[2], bit(b));
  }
}

TEST_P(WalkerLongMode, OneGiBPages) {
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, 0x1'4000'0000, 3);
  const WalkResult r = checked_walk(m, gva, kWrite);
  EXPECT_TRUE(Translates(r, 0x1'4000'0000 | (gva & 0x3fff'ffff)));
  EXPECT_EQ(r.walk.level, 3);
  EXPECT_EQ(r.walk.refs, m.top_level() - 2);
  EXPECT_EQ(m.entry(path.gpa[3]) & (A | D), A | D);
  EXPECT_EQ(m.entry(path.gpa[4]) & (A | D), A);
  m.set_bits(path.gpa[3], bit(12));  // PAT: not an address bit
  const uint64_t even = gva & ~0x1000ull;
  EXPECT_TRUE(Translates(checked_walk(m, even, kRead), 0x1'4000'0000 | (even & 0x3fff'ffff)));
  for (unsigned b = 13; b <= 29; ++b) {
    m.set_bits(path.gpa[3], bit(b));
    EXPECT_TRUE(Faults(checked_walk(m, gva, kWrite), EC_P | EC_RSVD | EC_W, gva)) << "bit " << b;
    m.clear_bits(path.gpa[3], bit(b));
  }
}

TEST_P(WalkerLongMode, WithoutGbpagesPsInAPdpteIsReserved) {
  Machine m(GetParam(), x86::CpuModel{48, false, true});
  const uint64_t gva = test_gva(GetParam());
  m.map(gva, 0x4000'0000, 3);
  for (AccessKind kind : {kRead, kWrite, kFetch}) {
    EXPECT_TRUE(Faults(checked_walk(m, gva, kind, true), EC_P | EC_RSVD | ec_of(kind, true), gva));
    EXPECT_TRUE(m.mem.updates.empty());
  }
  // 2 MiB pages still work.
  Machine m2(GetParam(), x86::CpuModel{48, false, true});
  m2.map(gva, 0x60'0000, 2);
  EXPECT_TRUE(Translates(checked_walk(m2, gva, kRead), 0x60'0000 | (gva & 0x1f'ffff)));
}

TEST_P(WalkerLongMode, PsInPml4eAndPml5eIsReserved) {
  for (unsigned level = 4; level <= Machine(GetParam()).top_level(); ++level) {
    Machine m(GetParam());
    const uint64_t gva = test_gva(GetParam());
    const Machine::Path path = m.map(gva, FRAME);
    m.set_bits(path.gpa[level], PS);
    EXPECT_TRUE(Faults(checked_walk(m, gva, kRead), EC_P | EC_RSVD, gva)) << "level " << level;
    EXPECT_EQ(m.mem.reads.size(), m.top_level() - level + 1);
    EXPECT_TRUE(m.mem.updates.empty());
  }
}

TEST_P(WalkerLongMode, Bit63IsReservedWithoutNxeAtEveryLevel) {
  for (unsigned level = 1; level <= Machine(GetParam()).top_level(); ++level) {
    Machine m(GetParam());
    const uint64_t gva = test_gva(GetParam());
    const Machine::Path path = m.map(gva, FRAME);
    m.set_bits(path.gpa[level], XD);
    EXPECT_TRUE(Faults(checked_walk(m, gva, kWrite, true), EC_P | EC_RSVD | EC_W | EC_U, gva)) << "level " << level;
    m.cpu.efer |= sdm::EFER_NXE;
    EXPECT_TRUE(Translates(checked_walk(m, gva, kWrite, true), FRAME | 0x234)) << "level " << level;
  }
}

TEST_P(WalkerLongMode, ExecuteDisableAtEveryLevel) {
  for (unsigned level = 1; level <= Machine(GetParam()).top_level(); ++level) {
    SCOPED_TRACE("level " + std::to_string(level));
    Machine m(GetParam());
    m.cpu.efer |= sdm::EFER_NXE;
    const uint64_t gva = test_gva(GetParam());
    const Machine::Path path = m.map(gva, FRAME);
    m.set_bits(path.gpa[level], XD);
    const std::vector<uint8_t> before = m.mem.snapshot();
    EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch, false), EC_P | EC_I, gva));
    EXPECT_TRUE(Faults(checked_walk(m, gva, kFetch, true), EC_P | EC_U | EC_I, gva));
    EXPECT_EQ(m.mem.snapshot(), before);
    const WalkResult r = checked_walk(m, gva, kRead, true);
    EXPECT_TRUE(Translates(r, FRAME | 0x234));
    EXPECT_EQ(r.walk.acc, x86::acc::U | x86::acc::W);
    EXPECT_TRUE(Translates(checked_walk(m, gva, kWrite), FRAME | 0x234));
  }
}

class WalkerLongMaxphyaddr : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Maxphyaddr, WalkerLongMaxphyaddr, ::testing::Values(32u, 36u, 39u, 40u, 46u, 52u));

TEST_P(WalkerLongMaxphyaddr, Bits51ToMAreReservedAndBits62To52Ignored) {
  const unsigned mx = GetParam();
  const uint64_t gva = test_gva(PagingMode::Level4);
  for (unsigned level = 1; level <= 4; ++level) {
    for (unsigned b = 32; b <= 62; ++b) {
      SCOPED_TRACE("level " + std::to_string(level) + " bit " + std::to_string(b));
      Machine m(PagingMode::Level4, x86::CpuModel{mx, true, true});
      const Machine::Path path = m.map(gva, FRAME);
      m.set_bits(path.gpa[level], bit(b));
      const WalkResult r = checked_walk(m, gva, kRead, true);
      if (b >= mx && b <= 51) {
        EXPECT_TRUE(Faults(r, EC_P | EC_RSVD | EC_U, gva));
      } else if (b >= 52) {
        EXPECT_TRUE(Translates(r, FRAME | 0x234));  // ignored (62:59 is the key, PKE=0)
      } else if (level == 1) {
        EXPECT_TRUE(Translates(r, bit(b) | FRAME | 0x234));
      } else {
        EXPECT_TRUE(Faults(r, EC_U, gva));  // the next table is outside memory
      }
    }
  }
}

TEST_P(WalkerLongMode, NotPresentEntryIgnoresItsOtherBits) {
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, FRAME);
  m.set_entry(path.gpa[3], bit(51) | bit(63) | PS | RW | US);
  EXPECT_TRUE(Faults(checked_walk(m, gva, kWrite), EC_W, gva));
}

TEST_P(WalkerLongMode, ReservedBitAboveStopsTheWalk) {
  // A reserved bit in an upper entry is reported even if a lower entry is not present.
  Machine m(GetParam());
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, FRAME);
  m.set_bits(path.gpa[3], bit(50));
  m.clear_bits(path.gpa[1], P);
  EXPECT_TRUE(Faults(checked_walk(m, gva, kRead), EC_P | EC_RSVD, gva));
}

// Protection keys (SDM 4.6.2).
struct KeyCase {
  const char* name;
  uint32_t pkru;  // for key 5 (bits 11:10); other keys get AD=WD=1 to catch a wrong key
  bool user_page;
  bool wp, user;
  AccessKind kind;
  bool pke;
  uint32_t ec;  // 0: translates
};

constexpr uint32_t AD5 = 1u << 10;
constexpr uint32_t WD5 = 1u << 11;

const KeyCase KEY_CASES[] = {
    {"user read, no restriction", 0, true, true, true, kRead, true, 0},
    {"user read, AD", AD5, true, true, true, kRead, true, EC_P | EC_U | EC_PK},
    {"user write, AD", AD5, true, true, true, kWrite, true, EC_P | EC_W | EC_U | EC_PK},
    {"user read, WD", WD5, true, true, true, kRead, true, 0},
    {"user write, WD", WD5, true, false, true, kWrite, true, EC_P | EC_W | EC_U | EC_PK},
    {"user fetch, AD and WD", AD5 | WD5, true, true, true, kFetch, true, 0},
    {"supervisor read of a user page, AD", AD5, true, true, false, kRead, true, EC_P | EC_PK},
    {"supervisor write of a user page, WD, WP=1", WD5, true, true, false, kWrite, true, EC_P | EC_W | EC_PK},
    {"supervisor write of a user page, WD, WP=0", WD5, true, false, false, kWrite, true, 0},
    {"supervisor fetch of a user page, AD", AD5, true, true, false, kFetch, true, 0},
    {"supervisor read of a supervisor page, AD", AD5, false, true, false, kRead, true, 0},
    {"supervisor write of a supervisor page, WD", WD5, false, true, false, kWrite, true, 0},
    {"user read of a supervisor page, AD: no PK", AD5, false, true, true, kRead, true, EC_P | EC_U},
    {"CR4.PKE=0", AD5 | WD5, true, true, true, kWrite, false, 0},
};

TEST_P(WalkerLongMode, ProtectionKeys) {
  for (const KeyCase& c : KEY_CASES) {
    for (bool leaf_not_user : {false, true}) {  // which level makes a supervisor page
      if (c.user_page && leaf_not_user) continue;
      SCOPED_TRACE(std::string(c.name) + (leaf_not_user ? ", leaf U/S=0" : ", upper U/S=0"));
      Machine m(GetParam());
      const uint64_t gva = test_gva(GetParam());
      const Machine::Path path = m.map(gva, FRAME | (5ull << 59));
      m.set_bits(path.gpa[2], 9ull << 59);  // ignored bits of a table entry
      if (!c.user_page) m.clear_bits(path.gpa[leaf_not_user ? 1 : 3], US);
      if (c.wp) m.cpu.cr0 |= sdm::CR0_WP;
      if (c.pke) m.cpu.cr4 |= sdm::CR4_PKE;
      const uint32_t pkru = c.pkru | (0xffff'ffffu & ~(AD5 | WD5));
      const WalkResult r = checked_walk(m, gva, c.kind, c.user, false, pkru);
      if (c.ec == 0) {
        EXPECT_TRUE(Translates(r, FRAME | 0x234));
        EXPECT_EQ(r.walk.pkey, 5);
      } else {
        EXPECT_TRUE(Faults(r, c.ec, gva));
        EXPECT_TRUE(m.mem.updates.empty());
      }
    }
  }
}

TEST_P(WalkerLongMode, ProtectionKeyBitJoinsOtherFaults) {
  // The PK bit reports the key's verdict even when the access also breaks a page permission.
  Machine m(GetParam());
  m.cpu.cr4 |= sdm::CR4_PKE;
  m.cpu.cr0 |= sdm::CR0_WP;
  const uint64_t gva = test_gva(GetParam());
  const Machine::Path path = m.map(gva, FRAME | (5ull << 59));
  m.clear_bits(path.gpa[1], RW);
  EXPECT_TRUE(Faults(checked_walk(m, gva, kWrite, true, false, WD5), EC_P | EC_W | EC_U | EC_PK, gva));
  EXPECT_TRUE(Faults(checked_walk(m, gva, kWrite, true, false, 0), EC_P | EC_W | EC_U, gva));
  // SMAP and a key together.
  m.cpu.cr4 |= sdm::CR4_SMAP;
  EXPECT_TRUE(Faults(checked_walk(m, gva, kRead, false, false, AD5), EC_P | EC_PK, gva));
  EXPECT_TRUE(Faults(checked_walk(m, gva, kRead, false, true, AD5), EC_P | EC_PK, gva));
  // Keys come from 2 MiB and 1 GiB leaves too.
  for (unsigned leaf : {2u, 3u}) {
    Machine h(GetParam());
    h.cpu.cr4 |= sdm::CR4_PKE;
    const Machine::Path hp = h.map(gva, (leaf == 2 ? 0x60'0000ull : 0x4000'0000ull) | (7ull << 59), leaf);
    h.set_bits(hp.gpa[leaf + 1], 5ull << 59);
    const uint32_t ad7 = 1u << 14;
    EXPECT_TRUE(Faults(checked_walk(h, gva, kRead, true, false, ad7), EC_P | EC_U | EC_PK, gva));
    EXPECT_TRUE(checked_walk(h, gva, kRead, true, false, AD5).ok);
  }
  // A reserved-bit fault ends the walk before keys are looked at.
  m.set_bits(path.gpa[1], bit(51));
  EXPECT_TRUE(Faults(checked_walk(m, gva, kRead, true, false, AD5), EC_P | EC_RSVD | EC_U, gva));
}

TEST(Walker4, SelfReferencingPml4) {
  // PML4[i] points at the PML4 itself; a gva whose every index is i walks the same entry four
  // times and ends on the PML4 page. The walk terminates and the entry ends with A (and D).
  for (AccessKind kind : {kRead, kWrite}) {
    Machine m(PagingMode::Level4);
    const uint64_t i = 0x1ed;
    const uint64_t self = Machine::ROOT + 8 * i;
    m.mem.store(self, Machine::ROOT | PRESENT_USER_RW);
    const uint64_t gva = (i << 39) | (i << 30) | (i << 21) | (i << 12) | 0xabc;  // canonical: bit 47 = 1
    const uint64_t canonical = gva | 0xffff'0000'0000'0000ull;
    const WalkResult r = checked_walk(m, canonical, kind);
    ASSERT_TRUE(Translates(r, Machine::ROOT | 0xabc));
    EXPECT_EQ(r.walk.level, 1);
    EXPECT_EQ(m.mem.load(self), Machine::ROOT | PRESENT_USER_RW | A | (kind == kWrite ? D : 0));
    EXPECT_EQ(r.walk.pte[1], m.mem.load(self));
    EXPECT_LE(m.mem.updates.size(), 8u);
    for (unsigned l = 1; l <= 4; ++l) EXPECT_EQ(r.walk.pte_gpa[l], self);
    // Once the bits are set, walking again changes nothing.
    checked_walk(m, canonical, kind);
    EXPECT_EQ(m.mem.writes(), 0u);
  }
  // The usual recursive mapping: PML4[i] -> PML4, reaching the page directory pointer tables.
  Machine m(PagingMode::Level4);
  const uint64_t gva = 0x1234'5678'9000;
  const Machine::Path path = m.map(gva, FRAME);
  const uint64_t i = 0x100;
  m.mem.store(Machine::ROOT + 8 * i, Machine::ROOT | PRESENT_USER_RW);
  const uint64_t pml4i = (gva >> 39) & 511, pdpti = (gva >> 30) & 511, pdi = (gva >> 21) & 511;
  const uint64_t pd_alias = 0xffff'0000'0000'0000ull | (i << 39) | (pml4i << 30) | (pdpti << 21) | (pdi << 12);
  const uint64_t page_table = m.table_of(m.entry(path.gpa[2]));
  const WalkResult r = checked_walk(m, pd_alias, kWrite);
  EXPECT_TRUE(Translates(r, page_table));  // the page table, reached through its PDE as a PTE
  EXPECT_EQ(m.entry(path.gpa[2]) & (A | D), A | D);
}

TEST(Walker4, SelfReferenceInReadOnlyMemory) {
  Machine m(PagingMode::Level4);
  FakeMemory ro;
  ro.add(0, 0x10000, true);
  const uint64_t i = 0x1ed;
  ro.store(Machine::ROOT + 8 * i, Machine::ROOT | PRESENT_USER_RW);
  m.mem = ro;
  const uint64_t gva = 0xffff'0000'0000'0000ull | (i << 39) | (i << 30) | (i << 21) | (i << 12);
  EXPECT_TRUE(Translates(checked_walk(m, gva, kWrite), Machine::ROOT));
  EXPECT_EQ(m.mem.writes(), 0u);
  EXPECT_EQ(m.mem.load(Machine::ROOT + 8 * i), Machine::ROOT | PRESENT_USER_RW);
}

TEST(Walker4, RootIgnoresCr3CacheBits) {
  // CR3's PWT and PCD bits are not part of the root's address.
  Machine m(PagingMode::Level4, x86::CpuModel{36, true, true});
  const uint64_t gva = test_gva(PagingMode::Level4);
  m.map(gva, FRAME);
  m.cpu.cr3 = Machine::ROOT | 0x18;
  EXPECT_TRUE(Translates(checked_walk(m, gva, kRead), FRAME | 0x234));
}

TEST(Walker5, OneGiBPageAndPml5Accessed) {
  Machine m(PagingMode::Level5);
  const uint64_t gva = test_gva(PagingMode::Level5);
  const Machine::Path path = m.map(gva, 0x4000'0000, 3);
  const WalkResult r = checked_walk(m, gva, kWrite);
  EXPECT_TRUE(Translates(r, 0x4000'0000 | (gva & 0x3fff'ffff)));
  EXPECT_EQ(r.walk.root_level, 5);
  EXPECT_EQ(r.walk.refs, 3);
  EXPECT_EQ(m.entry(path.gpa[5]) & (A | D), A);
  EXPECT_EQ(m.entry(path.gpa[4]) & (A | D), A);
  EXPECT_EQ(m.entry(path.gpa[3]) & (A | D), A | D);
}

}  // namespace
}  // namespace vmmu::guest::test
