// Property tests of the walker: random page tables (self-references, shared tables, read-only
// tables, entries outside memory, stray reserved bits included) under random CPU state. For every
// access kind and CPL the walker must agree with the SDM model (sdm_model.hpp): its gpa equals the
// model's naive recomputation, a fault leaves memory byte-for-byte unchanged, a success sets
// exactly the model's A/D bits, and walking again gives the same result and writes nothing.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "guest/walker.hpp"
#include "tests/guest/walker_test_support.hpp"

namespace vmmu::guest::test {
namespace {

using x86::AccessKind;
using x86::PagingMode;
using sdm::bit;

// Deterministic by default: a fixed seed unless RC_PARAMS says otherwise (set before rapidcheck
// reads its configuration, which it does lazily at the first property).
const bool fixed_seed = [] { return ::setenv("RC_PARAMS", "seed=20240611", 0) == 0; }();

// Uniform draws whatever rapidcheck's current size (its generators shrink their ranges at small
// sizes, which would make every early case an all-zero table).
template <class T>
T uniform(T lo, T hi) {  // [lo, hi)
  return *rc::gen::resize(rc::kNominalSize, rc::gen::inRange(lo, hi));
}
bool one_in(int n) { return uniform(0, n) == 0; }
bool coin() { return uniform(0, 2) == 0; }
uint64_t any64() { return *rc::gen::resize(rc::kNominalSize, rc::gen::arbitrary<uint64_t>()); }

// Table pages: six in RAM, two in a read-only slot.
constexpr unsigned TABLE_PAGES = 8;
constexpr uint64_t RAM_PAGES = 6;
constexpr uint64_t RO_BASE = 0x10000;
uint64_t page_gpa(unsigned k) { return k < RAM_PAGES ? k * 0x1000ull : RO_BASE + (k - RAM_PAGES) * 0x1000ull; }

// A random entry at `level`: mostly present, pointing at one of the table pages (or, for a large
// page, at an aligned frame), with random flags, and now and then a frame outside memory, a
// misaligned large page or one stray high bit (reserved or not, depending on the mode and M).
uint64_t random_entry(PagingMode mode, unsigned level, unsigned maxphyaddr) {
  using namespace sdm;
  const bool long_mode = mode == PagingMode::Level4 || mode == PagingMode::Level5;
  uint64_t e = 0;
  const bool ps = level > 1 && one_in(level >= 4 ? 20 : 4);
  const unsigned frame_kind = uniform(0, 20);
  if (ps && frame_kind < 14) {
    const unsigned shift = mode == PagingMode::Bits32 ? 22 : 12 + 9 * (level - 1);
    e = any64() & frame_bits(maxphyaddr) & ~((1ull << shift) - 1);
    if (mode == PagingMode::Bits32) e |= (any64() & 0xff) << 13;  // PSE-36 bits
  } else if (frame_kind < 18) {
    e = page_gpa(uniform(0u, TABLE_PAGES));
  } else if (frame_kind < 19) {
    e = any64() & frame_bits(maxphyaddr);
  }
  if (ps) e |= PS | (coin() ? bit(12) : 0);  // PAT of a large page
  if (!one_in(20)) e |= P;
  if (!one_in(4)) e |= RW;
  if (!one_in(4)) e |= US;
  if (coin()) e |= A;
  if (coin()) e |= D;
  if (one_in(10)) e |= XD;
  e |= (uniform(0, 16) & 0xfull) << 8;  // G and the software bits 11:9
  e |= (uniform(0, 4) & 0x3ull) << 3;   // PWT, PCD
  if (one_in(long_mode ? 2 : 20)) {
    e |= static_cast<uint64_t>(uniform(0, 16)) << 59;  // protection key (reserved under PAE)
  }
  if (one_in(12)) e |= bit(uniform(12u, 64u));
  return e;
}

uint64_t random_gva(PagingMode mode) {
  const uint64_t raw = any64();
  if (mode == PagingMode::Bits32 || mode == PagingMode::Pae) return raw & 0xffff'ffffull;
  if (one_in(10)) return raw;  // usually non-canonical
  const unsigned width = mode == PagingMode::Level5 ? 57 : 48;
  return static_cast<uint64_t>(static_cast<int64_t>(raw << (64 - width)) >> (64 - width));
}

void check_random_walks(PagingMode mode) {
  using namespace sdm;
  constexpr unsigned WIDTHS[] = {32, 36, 39, 40, 46, 48, 52};
  const x86::CpuModel model{WIDTHS[uniform(0, 7)], coin(), true};
  Machine m(mode, model);  // for the registers; memory is replaced below
  FakeMemory mem;
  mem.add(0, RAM_PAGES * 0x1000);
  mem.add(RO_BASE, (TABLE_PAGES - RAM_PAGES) * 0x1000, true);

  m.cpu.cr0 |= coin() ? CR0_WP : 0;
  m.cpu.cr4 |= (coin() ? CR4_PSE : 0) | (coin() ? CR4_SMEP : 0) |
               (coin() ? CR4_SMAP : 0) | (coin() ? CR4_PKE : 0);
  m.cpu.efer |= coin() ? EFER_NXE : 0;
  m.cpu.cr3 = page_gpa(uniform(0u, TABLE_PAGES)) | (coin() ? 0x18 : 0);
  if (mode == PagingMode::Pae) {
    for (uint64_t& pdpte : m.pdptes.entry) {
      pdpte = !one_in(8) ? (page_gpa(uniform(0u, TABLE_PAGES)) | P) : 0;
    }
  }
  const uint64_t gva = random_gva(mode);

  // Fill, in every table page, the entries this gva indexes at every level (so the walk meets
  // generated entries whichever pages it goes through).
  const unsigned size = m.entry_size();
  for (unsigned k = 0; k < TABLE_PAGES; ++k) {
    for (unsigned level = 1; level <= m.top_level(); ++level) {
      const uint64_t e = random_entry(mode, level, model.maxphyaddr);
      mem.store(page_gpa(k) + uint64_t{m.index(gva, level)} * size, size == 4 ? (e & 0xffff'ffffull) : e, size);
    }
  }

  const x86::PagingContext ctx(m.model, m.cpu);
  const uint32_t pkru = static_cast<uint32_t>(any64());
  for (AccessKind kind : {AccessKind::Read, AccessKind::Write, AccessKind::Fetch}) {
    for (unsigned cpl : {0u, 3u}) {
      for (bool ac : {false, true}) {
        FakeMemory run = mem;
        const std::vector<uint8_t> before = run.snapshot();
        const sdm::Cpu c = m.model_cpu(cpl == 3, ac, pkru);
        const sdm::Outcome want = sdm::translate(
            c, [&](uint64_t gpa, unsigned sz, uint64_t& v) { return run.peek(gpa, sz, v); }, gva, to_sdm(kind));
        const AccessMode am{kind, cpl == 3, ac, pkru};
        const WalkResult got = walk_guest(ctx, m.pdptes, run, gva, am);
        const std::string what = std::string(x86::name(kind)) + " cpl=" + std::to_string(cpl) + " ac=" +
                                 std::to_string(ac) + " gva=" + hex(gva) + ": ";

        if (kind == AccessKind::Read && cpl == 0 && !ac) {
          // The distribution rapidcheck prints: what the supervisor read met.
          RC_TAG(want.general_protection ? "#GP"
                 : !want.fault          ? "translates at level " + std::to_string(want.level)
                 : !(want.error_code & EC_P)   ? std::string("not present")
                 : (want.error_code & EC_RSVD) ? std::string("reserved bit")
                                               : std::string("protection"));
        }
        const std::string diff = compare_with_model(want, got, run, gva);
        if (!diff.empty()) RC_FAIL(what + diff);
        if (got.ok) {
          RC_ASSERT(got.walk.gpa == want.gpa);  // the naive recomputation
        } else {
          RC_ASSERT(run.snapshot() == before);  // a fault changes nothing
          RC_ASSERT(run.writes() == 0u);
        }
        // A second walk sees the bits the first one set: same result, nothing written.
        const std::vector<uint8_t> after = run.snapshot();
        run.clear_log();
        const WalkResult again = walk_guest(ctx, m.pdptes, run, gva, am);
        RC_ASSERT(again.ok == got.ok);
        RC_ASSERT(again.fault == got.fault);
        RC_ASSERT(again.walk.gpa == got.walk.gpa);
        RC_ASSERT(run.writes() == 0u);
        RC_ASSERT(run.snapshot() == after);
      }
    }
  }
}

RC_GTEST_PROP(WalkerProperty, Level4AgreesWithTheSdmModel, ()) { check_random_walks(PagingMode::Level4); }
RC_GTEST_PROP(WalkerProperty, Level5AgreesWithTheSdmModel, ()) { check_random_walks(PagingMode::Level5); }
RC_GTEST_PROP(WalkerProperty, PaeAgreesWithTheSdmModel, ()) { check_random_walks(PagingMode::Pae); }
RC_GTEST_PROP(WalkerProperty, Bits32AgreesWithTheSdmModel, ()) { check_random_walks(PagingMode::Bits32); }

TEST(WalkerProperty, SeedIsFixedUnlessOverridden) { EXPECT_TRUE(fixed_seed); }

}  // namespace
}  // namespace vmmu::guest::test
