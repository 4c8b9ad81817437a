#pragma once
// An independent model of how the SDM (Vol. 3A, 4.3-4.7) translates one linear address, with
// VMT-FORMAT.md's choices where the SDM leaves freedom. It exists to check the walker, so it
// shares nothing with it: no x86::PagingContext, no x86 masks; every rule is plain if/else over
// raw register and entry bits, spelled as the SDM's tables spell them (a bit at a time rather
// than as precomputed masks).
#include <cstdint>

namespace vmmu::guest::test::sdm {

constexpr uint64_t bit(unsigned n) { return 1ull << n; }

// Paging-structure entry bits (SDM Tables 4-4 to 4-20).
inline constexpr uint64_t P = bit(0);
inline constexpr uint64_t RW = bit(1);
inline constexpr uint64_t US = bit(2);
inline constexpr uint64_t A = bit(5);
inline constexpr uint64_t D = bit(6);
inline constexpr uint64_t PS = bit(7);
inline constexpr uint64_t XD = bit(63);

// Page-fault error code (SDM 4.7).
inline constexpr uint32_t EC_P = 1u << 0;
inline constexpr uint32_t EC_W = 1u << 1;
inline constexpr uint32_t EC_U = 1u << 2;
inline constexpr uint32_t EC_RSVD = 1u << 3;
inline constexpr uint32_t EC_I = 1u << 4;
inline constexpr uint32_t EC_PK = 1u << 5;

// Control registers and EFER (SDM 2.5, 4.1).
inline constexpr uint64_t CR0_PE = bit(0);
inline constexpr uint64_t CR0_WP = bit(16);
inline constexpr uint64_t CR0_PG = bit(31);
inline constexpr uint64_t CR4_PSE = bit(4);
inline constexpr uint64_t CR4_PAE = bit(5);
inline constexpr uint64_t CR4_LA57 = bit(12);
inline constexpr uint64_t CR4_SMEP = bit(20);
inline constexpr uint64_t CR4_SMAP = bit(21);
inline constexpr uint64_t CR4_PKE = bit(22);
inline constexpr uint64_t EFER_LME = bit(8);
inline constexpr uint64_t EFER_NXE = bit(11);

enum class Kind { Read, Write, Fetch };
enum class Mode { Off, Bits32, Pae, Level4, Level5 };

struct Cpu {
  uint64_t cr0 = 0, cr3 = 0, cr4 = 0, efer = 0;
  unsigned cpl = 0;
  bool ac = false;
  uint32_t pkru = 0;
  unsigned maxphyaddr = 48;
  bool gbpages = true;
  uint64_t pdpte[4] = {0, 0, 0, 0};  // PAE: the PDPTE registers
};

// One entry the translation read, and the A/D bits a successful translation sets in it.
struct Used {
  uint64_t gpa = 0;
  uint64_t value = 0;
  unsigned size = 0;
  unsigned level = 0;
  uint64_t set = 0;
};

struct Outcome {
  bool general_protection = false;  // #GP(0): non-canonical in long mode
  bool fault = false;               // #PF with error_code
  uint32_t error_code = 0;
  uint64_t gpa = 0;
  unsigned level = 0;  // of the leaf
  bool user_page = false, writable = false, executable = false;  // combined rights
  unsigned pkey = 0;                                                // of a long-mode leaf
  unsigned reads = 0;  // entries read (or tried: a read outside memory counts)
  unsigned nused = 0;  // entries read
  Used used[5];
};

inline Mode mode_of(const Cpu& c) {
  if (!(c.cr0 & CR0_PG)) return Mode::Off;
  if (c.efer & EFER_LME) return (c.cr4 & CR4_LA57) ? Mode::Level5 : Mode::Level4;
  return (c.cr4 & CR4_PAE) ? Mode::Pae : Mode::Bits32;
}

// Physical-address bits (M-1):12 of an 8-byte entry.
inline uint64_t frame_bits(unsigned m) { return ((1ull << m) - 1) & ~0xfffull; }

// Does present entry `e` at `level` map a page rather than a table? (The PS rules of 4.3-4.5.)
inline bool maps_page(const Cpu& c, Mode mode, unsigned level, uint64_t e) {
  if (level == 1) return true;
  const bool ps = e & PS;
  switch (mode) {
    case Mode::Bits32: return level == 2 && ps && (c.cr4 & CR4_PSE);
    case Mode::Pae: return level == 2 && ps;
    case Mode::Level4:
    case Mode::Level5: return (level == 2 && ps) || (level == 3 && ps && c.gbpages);
    case Mode::Off: break;
  }
  return false;
}

// Is bit `b` of a present entry at `level` reserved? `page`: the entry maps a page.
inline bool reserved_bit(const Cpu& c, Mode mode, unsigned level, bool page, unsigned b) {
  const unsigned m = c.maxphyaddr;
  const bool nxe = c.efer & EFER_NXE;
  switch (mode) {
    case Mode::Bits32: {
      // 4 MiB page (Table 4-4) with PSE-36: bits 21:(M'-19) reserved, M' = min(M, 40).
      if (level == 2 && page) {
        const unsigned mp = m < 40 ? m : 40;
        return b >= mp - 19 && b <= 21;
      }
      return false;  // nothing else is reserved in 32-bit paging
    }
    case Mode::Pae:
      // Tables 4-8 to 4-11: bits 62:M, bit 63 without NXE, bits 20:13 of a 2 MiB PDE.
      if (b == 63) return !nxe;
      if (b >= m && b <= 62) return true;
      if (level == 2 && page && b >= 13 && b <= 20) return true;
      return false;
    case Mode::Level4:
    case Mode::Level5:
      // Tables 4-14 to 4-20: bits 51:M, bit 63 without NXE; PS (bit 7) in a PML5E or PML4E,
      // and in a PDPTE when 1 GiB pages do not exist; bits 29:13 of a 1 GiB PDPTE; bits 20:13
      // of a 2 MiB PDE. Bits 62:52 are ignored (62:59 are the protection key of a leaf).
      if (b == 63) return !nxe;
      if (b >= m && b <= 51) return true;
      if (b == 7 && level >= 4) return true;
      if (b == 7 && level == 3 && !c.gbpages) return true;
      if (level == 3 && page && b >= 13 && b <= 29) return true;
      if (level == 2 && page && b >= 13 && b <= 20) return true;
      return false;
    case Mode::Off: break;
  }
  return false;
}

// Protection-violation rules of SDM 4.6.1 for the combined rights of the translation.
inline bool access_denied(const Cpu& c, Kind kind, bool user_page, bool writable, bool executable) {
  const bool wp = c.cr0 & CR0_WP;
  const bool smep = c.cr4 & CR4_SMEP;
  const bool smap = c.cr4 & CR4_SMAP;
  if (c.cpl == 3) {
    // User-mode accesses: only user-mode addresses; writes need R/W=1 on every level (CR0.WP
    // does not matter); fetches need XD=0 on every level (when NXE=1).
    if (!user_page) return true;
    if (kind == Kind::Write && !writable) return true;
    if (kind == Kind::Fetch && !executable) return true;
    return false;
  }
  // Supervisor-mode (explicit) accesses.
  if (kind == Kind::Read) {
    if (user_page && smap && !c.ac) return true;  // SMAP
    return false;
  }
  if (kind == Kind::Write) {
    if (user_page && smap && !c.ac) return true;  // SMAP
    if (!writable && wp) return true;             // CR0.WP=0 lets supervisor writes through
    return false;
  }
  // Fetch.
  if (!executable) return true;
  if (user_page && smep) return true;  // SMEP
  return false;
}

// Protection keys (SDM 4.6.2): long mode with CR4.PKE, user-mode addresses, data accesses.
inline bool key_denies(const Cpu& c, Mode mode, Kind kind, bool user_page, uint64_t leaf) {
  if (mode != Mode::Level4 && mode != Mode::Level5) return false;
  if (!(c.cr4 & CR4_PKE)) return false;
  if (!user_page || kind == Kind::Fetch) return false;
  const unsigned key = static_cast<unsigned>((leaf >> 59) & 0xf);
  const bool ad = (c.pkru >> (2 * key)) & 1;
  const bool wd = (c.pkru >> (2 * key + 1)) & 1;
  if (ad) return true;
  if (wd && kind == Kind::Write && (c.cpl == 3 || (c.cr0 & CR0_WP))) return true;
  return false;
}

// Translates `gva` for an access of `kind`. `read(gpa, size, value)` returns false for a gpa
// outside every memslot.
template <class Read>
Outcome translate(const Cpu& c, Read&& read, uint64_t gva, Kind kind) {
  Outcome out;
  const Mode mode = mode_of(c);
  if (mode == Mode::Off) {
    out.gpa = gva;
    out.level = 1;
    out.user_page = out.writable = out.executable = true;
    return out;
  }
  if (mode == Mode::Level4 || mode == Mode::Level5) {
    // Canonical: bits 63:(N-1) all equal, N = 48 or 57 (SDM 3.3.7.1).
    const unsigned n = mode == Mode::Level5 ? 57 : 48;
    const uint64_t top = gva >> (n - 1);
    if (top != 0 && top != (~0ull >> (n - 1))) {
      out.general_protection = true;
      return out;
    }
  }

  const bool nxe = c.efer & EFER_NXE;
  uint32_t ec = 0;
  if (kind == Kind::Write) ec |= EC_W;
  if (c.cpl == 3) ec |= EC_U;
  if (kind == Kind::Fetch && ((c.cr4 & CR4_SMEP) || ((c.cr4 & CR4_PAE) && nxe))) ec |= EC_I;
  auto fault = [&](uint32_t code) {
    out.fault = true;
    out.error_code = code;
    return out;
  };

  const unsigned m = c.maxphyaddr;
  const unsigned size = mode == Mode::Bits32 ? 4 : 8;
  unsigned level = 0;
  uint64_t table = 0;
  switch (mode) {
    case Mode::Bits32:
      level = 2;
      table = c.cr3 & 0xffff'f000ull;
      break;
    case Mode::Pae: {
      const uint64_t pdpte = c.pdpte[(gva >> 30) & 3];
      if (!(pdpte & P)) return fault(ec);
      level = 2;
      table = pdpte & frame_bits(m);
      break;
    }
    case Mode::Level4:
      level = 4;
      table = c.cr3 & frame_bits(m);
      break;
    case Mode::Level5:
      level = 5;
      table = c.cr3 & frame_bits(m);
      break;
    case Mode::Off: break;
  }

  bool user_page = true, writable = true, executable = true;
  uint64_t e = 0;
  for (;;) {
    const uint64_t index =
        mode == Mode::Bits32 ? (gva >> (12 + 10 * (level - 1))) & 1023 : (gva >> (12 + 9 * (level - 1))) & 511;
    const uint64_t gpa = table + index * size;
    ++out.reads;
    if (!read(gpa, size, e)) return fault(ec);  // outside every memslot: not present
    Used& u = out.used[out.nused++];
    u.gpa = gpa;
    u.value = e;
    u.size = size;
    u.level = level;
    if (!(e & P)) return fault(ec);
    const bool page = maps_page(c, mode, level, e);
    for (uint64_t rest = e; rest != 0; rest &= rest - 1) {
      const unsigned b = static_cast<unsigned>(__builtin_ctzll(rest));
      if (reserved_bit(c, mode, level, page, b)) return fault(ec | EC_P | EC_RSVD);
    }
    if (!(e & RW)) writable = false;
    if (!(e & US)) user_page = false;
    if (mode != Mode::Bits32 && nxe && (e & XD)) executable = false;
    if (page) break;
    table = mode == Mode::Bits32 ? (e & 0xffff'f000ull) : (e & frame_bits(m));
    --level;
  }

  const bool denied = access_denied(c, kind, user_page, writable, executable);
  const bool key = key_denies(c, mode, kind, user_page, e);
  if (denied || key) return fault(ec | EC_P | (key ? EC_PK : 0));

  out.level = level;
  out.user_page = user_page;
  out.writable = writable;
  out.executable = executable;
  if (mode == Mode::Level4 || mode == Mode::Level5) out.pkey = static_cast<unsigned>((e >> 59) & 0xf);
  if (mode == Mode::Bits32) {
    if (level == 1) {
      out.gpa = (e & 0xffff'f000ull) | (gva & 0xfff);
    } else {
      // PSE-36: PDE bits (M'-20):13 are address bits (M'-1):32.
      const unsigned mp = m < 40 ? m : 40;
      const uint64_t high = (e >> 13) & ((1ull << (mp - 32)) - 1);
      out.gpa = (e & 0xffc0'0000ull) | (high << 32) | (gva & 0x3f'ffff);
    }
  } else {
    const unsigned shift = 12 + 9 * (level - 1);
    const uint64_t offset = (1ull << shift) - 1;
    out.gpa = (e & frame_bits(m) & ~offset) | (gva & offset);
  }
  // A on every entry used, D on the leaf for writes.
  for (unsigned i = 0; i < out.nused; ++i) out.used[i].set = A;
  if (kind == Kind::Write) out.used[out.nused - 1].set |= D;
  return out;
}

}  // namespace vmmu::guest::test::sdm
