// Combination test in the spirit of kvm-unit-tests' x86/access.c: for one linear address, cross
// the bits of the leaf PTE and of the PDE above it (P, R/W, U/S, A, D, XD, PS and a reserved
// bit) with CR0.WP, EFER.NXE, CR4.SMEP, CR4.SMAP with RFLAGS.AC, CR4.PKE with PKRU's AD/WD for
// the leaf's key, CPL 0/3 and read/write/fetch; walk; and compare fault, error code, gpa, level,
// rights and the A/D bits left in memory with the SDM model (sdm_model.hpp), which decides every
// case by plain if/else over the bits and never asks the walker or x86::PagingContext.
//
// Pruned as access.c prunes, skipping combinations where a bit cannot change the outcome: a
// not-present entry has one form (every other bit set, to show they are ignored); entries below
// a leaf or a faulting entry are not varied; at most one reserved bit is set at a time (XD with
// EFER.NXE=0 counts as one); D is varied only in leaves; RFLAGS.AC only with CR4.SMAP=1; PKRU is
// varied only in long mode with CR4.PKE=1 (and tried all-ones with PKE=0 and outside long mode).
// One fake memory is reused and only the entries are rewritten per case.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "guest/walker.hpp"
#include "tests/guest/walker_test_support.hpp"

namespace vmmu::guest::test {
namespace {

using x86::AccessKind;
using x86::PagingMode;
using sdm::bit;

constexpr unsigned LEAF_KEY = 5;
constexpr uint32_t KEY_AD = 1u << (2 * LEAF_KEY);
constexpr uint32_t KEY_WD = 1u << (2 * LEAF_KEY + 1);

// One address's tables in one mode, and the bit patterns that are crossed.
struct Layout {
  explicit Layout(PagingMode mode, x86::CpuModel model) : m(mode, model) {}

  Machine m;
  uint64_t gva = 0;
  Machine::Path path;
  uint64_t upper_value[6] = {};  // entries above the PDE, rewritten before every case
  uint64_t page_table = 0;       // what a non-leaf PDE points at
  uint64_t frame_4k = 0;
  uint64_t frame_large = 0;          // a 2 MiB / 4 MiB frame (PSE-36 high bits included)
  uint64_t leaf_key = 0;             // protection-key bits of a long-mode leaf
  uint64_t table_ignored = 0;        // ignored high bits put into a non-leaf PDE
  std::vector<uint64_t> rsvd_large;  // one reserved bit each, for a large-page PDE
  std::vector<uint64_t> rsvd_table;  // for a PDE that points at a table
  std::vector<uint64_t> rsvd_pte;    // for a PTE
  bool has_xd = true;
  bool long_mode = false;
};

Layout make_layout(PagingMode mode) {
  using namespace sdm;
  switch (mode) {
    case PagingMode::Level4: {
      Layout l(mode, x86::CpuModel{46, true, true});
      l.gva = 0x0000'5a5a'c060'2234;  // bit 12 clear: a leaked PAT bit would show
      l.long_mode = true;
      l.frame_4k = 0x1234'5678'9000;
      l.frame_large = 0x2345'6780'0000 | bit(12);  // PAT set
      l.leaf_key = uint64_t{LEAF_KEY} << 59;
      l.table_ignored = 0xaull << 59;
      l.rsvd_large = {bit(13), bit(51)};  // bits 20:13 of a 2 MiB PDE; bits 51:M
      l.rsvd_table = {bit(51)};
      l.rsvd_pte = {bit(51)};
      return l;
    }
    case PagingMode::Pae: {
      Layout l(mode, x86::CpuModel{36, true, true});
      l.gva = 0xc060'2234;
      l.frame_4k = 0x8'7654'3000;
      l.frame_large = 0x8'7640'0000 | bit(12);
      l.rsvd_large = {bit(13), bit(52)};  // bit 52: reserved under PAE (62:M), not in long mode
      l.rsvd_table = {bit(40)};
      l.rsvd_pte = {bit(62)};
      return l;
    }
    case PagingMode::Bits32: {
      Layout l(mode, x86::CpuModel{36, true, true});
      l.gva = 0xc060'2234;
      l.has_xd = false;
      l.frame_4k = 0x8765'4000;
      l.frame_large = 0x8740'0000 | bit(12) | bit(13) | bit(16);  // PAT; PSE-36 address bits 32, 35
      l.rsvd_large = {bit(17)};                          // bits 21:(M'-19) = 21:17 with M=36
      return l;
    }
    default: break;
  }
  return Layout(mode, {});
}

struct Tables {
  uint64_t pde, pte;
};

// The PDE/PTE pairs crossed for one setting of EFER.NXE and CR4.PSE.
std::vector<Tables> table_variants(const Layout& l, bool nxe, bool pse) {
  using namespace sdm;
  std::vector<Tables> out;
  const uint64_t xd = l.has_xd ? XD : 0;
  uint64_t all_rsvd_pte = 0, all_rsvd_table = 0;
  for (uint64_t r : l.rsvd_pte) all_rsvd_pte |= r;
  for (uint64_t r : l.rsvd_table) all_rsvd_table |= r;
  const uint64_t pte_unused = l.frame_4k | P | RW | US;
  const uint64_t pte_not_present = (l.frame_4k | l.leaf_key | RW | US | A | D | xd | all_rsvd_pte) & ~P;

  // Not-present PDE: every other bit set, and ignored.
  out.push_back({(l.page_table | RW | US | A | D | PS | xd | all_rsvd_table) & ~P, pte_unused});

  for (bool ps : {false, true}) {
    const bool large = ps && (l.m.mode() != PagingMode::Bits32 || pse);
    for (unsigned flags = 0; flags < 32; ++flags) {
      const bool w = flags & 1, u = flags & 2, a = flags & 4, d = flags & 8, nx = flags & 16;
      if (d && !large) continue;  // D is ignored in a table entry
      if (nx && !l.has_xd) continue;
      const uint64_t bits = P | (w ? RW : 0) | (u ? US : 0) | (a ? A : 0) | (d ? D : 0) | (nx ? XD : 0) | (ps ? PS : 0);
      const bool nx_reserved = nx && !nxe;
      if (large) {
        const uint64_t pde = l.frame_large | l.leaf_key | bits;
        out.push_back({pde, pte_unused});
        if (!nx_reserved) {
          for (uint64_t r : l.rsvd_large) out.push_back({pde | r, pte_unused});
        }
        continue;
      }
      const uint64_t pde = l.page_table | l.table_ignored | bits;
      if (!nx_reserved) {
        for (uint64_t r : l.rsvd_table) out.push_back({pde | r, pte_unused});
      }
      if (nx_reserved) {
        out.push_back({pde, pte_unused});
        continue;
      }
      out.push_back({pde, pte_not_present});
      for (unsigned pflags = 0; pflags < 32; ++pflags) {
        const bool pw = pflags & 1, pu = pflags & 2, pa = pflags & 4, pd = pflags & 8, pnx = pflags & 16;
        if (pnx && !l.has_xd) continue;
        const uint64_t pte = l.frame_4k | l.leaf_key | P | (pw ? RW : 0) | (pu ? US : 0) | (pa ? A : 0) |
                             (pd ? D : 0) | (pnx ? XD : 0);
        out.push_back({pde, pte});
        if (!(pnx && !nxe)) {
          for (uint64_t r : l.rsvd_pte) out.push_back({pde, pte | r});
        }
      }
    }
  }
  return out;
}

struct KeySetting {
  bool pke;
  uint32_t pkru;
};

struct Stats {
  uint64_t cases = 0, ok = 0, not_present = 0, reserved = 0, protection = 0, pkey = 0, mismatches = 0;
};

std::string describe(const Layout& l, const sdm::Cpu& c, AccessKind kind, const Tables& t) {
  std::string s = std::string(x86::name(l.m.mode())) + " " + x86::name(kind) + " cpl=" + std::to_string(c.cpl) +
                  " cr0=" + hex(c.cr0) + " cr4=" + hex(c.cr4) + " efer=" + hex(c.efer) +
                  " ac=" + (c.ac ? "1" : "0") + " pkru=" + hex(c.pkru) + " pde=" + hex(t.pde) + " pte=" + hex(t.pte);
  return s;
}

Stats run_combinations(PagingMode mode) {
  using namespace sdm;
  Layout l = make_layout(mode);
  Machine& m = l.m;
  // Build the path with A clear everywhere, then remember the entries above the PDE.
  l.path = m.map(l.gva, l.frame_4k);
  l.page_table = m.table_of(m.entry(l.path.gpa[2]));
  for (unsigned level = 3; level <= m.top_level(); ++level) l.upper_value[level] = m.entry(l.path.gpa[level]);
  const uint64_t pde_gpa = l.path.gpa[2];
  const uint64_t pte_gpa = l.path.gpa[1];

  std::vector<KeySetting> keys;
  if (l.long_mode) {
    const uint32_t others = 0xffff'ffffu & ~(KEY_AD | KEY_WD);  // a wrong key would fault
    keys = {{false, 0}, {false, 0xffff'ffffu}, {true, others}, {true, others | KEY_AD}, {true, others | KEY_WD},
            {true, 0xffff'ffffu}};
  } else {
    keys = {{false, 0}, {true, 0xffff'ffffu}};
  }

  Stats st;
  const uint64_t base_cr4 = m.cpu.cr4;
  for (bool pse : {false, true}) {
    if (pse && mode != PagingMode::Bits32) continue;
    for (bool nxe : {false, true}) {
      const std::vector<Tables> variants = table_variants(l, nxe, pse);
      for (bool wp : {false, true}) {
        for (bool smep : {false, true}) {
          for (bool smap : {false, true}) {
            for (const KeySetting& key : keys) {
              m.cpu.cr0 = CR0_PE | CR0_PG | (wp ? CR0_WP : 0);
              m.cpu.cr4 = base_cr4 | (pse ? CR4_PSE : 0) | (smep ? CR4_SMEP : 0) | (smap ? CR4_SMAP : 0) |
                          (key.pke ? CR4_PKE : 0);
              m.cpu.efer = (l.long_mode ? EFER_LME : 0) | (nxe ? EFER_NXE : 0);
              const x86::PagingContext ctx(m.model, m.cpu);
              for (unsigned cpl : {0u, 3u}) {
                for (bool ac : {false, true}) {
                  if (ac && !smap) continue;
                  const sdm::Cpu c = m.model_cpu(cpl == 3, ac, key.pkru);
                  for (AccessKind kind : {AccessKind::Read, AccessKind::Write, AccessKind::Fetch}) {
                    const AccessMode am{kind, cpl == 3, ac, key.pkru};
                    for (const Tables& t : variants) {
                      for (unsigned level = 3; level <= m.top_level(); ++level)
                        m.set_entry(l.path.gpa[level], l.upper_value[level]);
                      m.set_entry(pde_gpa, t.pde);
                      m.set_entry(pte_gpa, t.pte);
                      m.mem.clear_log();
                      const FakeMemory& mem = m.mem;
                      const sdm::Outcome want = sdm::translate(
                          c, [&](uint64_t gpa, unsigned size, uint64_t& v) { return mem.peek(gpa, size, v); }, l.gva,
                          to_sdm(kind));
                      const WalkResult got = walk_guest(ctx, m.pdptes, m.mem, l.gva, am);
                      const std::string diff = compare_with_model(want, got, m.mem, l.gva);
                      ++st.cases;
                      if (!want.fault) {
                        ++st.ok;
                      } else if (!(want.error_code & EC_P)) {
                        ++st.not_present;
                      } else if (want.error_code & EC_RSVD) {
                        ++st.reserved;
                      } else if (want.error_code & EC_PK) {
                        ++st.pkey;
                      } else {
                        ++st.protection;
                      }
                      if (!diff.empty()) {
                        if (++st.mismatches <= 20) ADD_FAILURE() << describe(l, c, kind, t) << ": " << diff;
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  std::printf("[ combos   ] %s: %llu cases: %llu translate, %llu not present, %llu reserved, %llu protection, "
              "%llu protection key\n",
              x86::name(mode), static_cast<unsigned long long>(st.cases), static_cast<unsigned long long>(st.ok),
              static_cast<unsigned long long>(st.not_present), static_cast<unsigned long long>(st.reserved),
              static_cast<unsigned long long>(st.protection), static_cast<unsigned long long>(st.pkey));
  return st;
}

TEST(WalkerCombinations, Level4) {
  const Stats st = run_combinations(PagingMode::Level4);
  EXPECT_EQ(st.mismatches, 0u);
  EXPECT_GT(st.cases, 500'000u);
  EXPECT_GT(st.ok, 0u);
  EXPECT_GT(st.not_present, 0u);
  EXPECT_GT(st.reserved, 0u);
  EXPECT_GT(st.protection, 0u);
  EXPECT_GT(st.pkey, 0u);
}

TEST(WalkerCombinations, Pae) {
  const Stats st = run_combinations(PagingMode::Pae);
  EXPECT_EQ(st.mismatches, 0u);
  EXPECT_GT(st.cases, 100'000u);
  EXPECT_GT(st.ok, 0u);
  EXPECT_GT(st.reserved, 0u);
  EXPECT_GT(st.protection, 0u);
  EXPECT_EQ(st.pkey, 0u);  // keys exist only in long mode
}

TEST(WalkerCombinations, Bits32) {
  const Stats st = run_combinations(PagingMode::Bits32);
  EXPECT_EQ(st.mismatches, 0u);
  EXPECT_GT(st.cases, 50'000u);
  EXPECT_GT(st.ok, 0u);
  EXPECT_GT(st.reserved, 0u);  // PSE-36 reserved bits of 4 MiB pages
  EXPECT_GT(st.protection, 0u);
  EXPECT_EQ(st.pkey, 0u);
}

}  // namespace
}  // namespace vmmu::guest::test
