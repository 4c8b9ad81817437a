#include "oracle/random_cases.hpp"

#include <algorithm>
#include <random>

#include <fmt/format.h>

namespace vmmu::oracle {

namespace {

constexpr uint64_t TABLES_BASE = 0x100000, TABLES_END = 0x3f00000;   // slot 0: tables and 4 KiB data pages
constexpr uint64_t SCRATCH_1G = 0x3f00000;                           // data of 1 GiB pages (frame 0)
constexpr uint64_t LARGE_BASE = 0x8000000, LARGE_SIZE = 64ull << 20; // slot 1: frames of 2/4 MiB pages

class Gen {
 public:
  Gen(uint64_t seed, uint64_t batch, HarnessMode mode, bool pse, bool pke)
      : rng_(seed * 0x9e3779b97f4a7c15ull + batch * 0x632be59bd9b4e019ull + uint64_t(mode)), mode_(mode), pse_(pse), pke_(pke) {}

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  uint64_t below(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  uint64_t bits() { return rng_(); }

  RandomBatch make(unsigned cases) {
    RandomBatch b;
    static const unsigned ms[] = {36, 40, 46, 52};
    m_ = ms[below(4)];
    gbpages_ = true;  // QEMU's walker ignores CPUID's Page1GB (docs/ORACLES.md): keep the checks sharp
    b.header = fmt::format("vmt 1\ncpu maxphyaddr={} gbpages={} la57={}\nmemslot 0 0 64M\nmemslot 1 {:#x} {}M\nvcpu 0\n",
                           m_, gbpages_ ? 1 : 0, mode_ == HarnessMode::Level5 ? 1 : 0, LARGE_BASE, LARGE_SIZE >> 20);
    b.vmt = b.header;
    uint64_t line = 6;
    for (unsigned c = 0; c < cases; ++c) {
      if (next_page_ + 8 * 4096 > TABLES_END) next_page_ = TABLES_BASE;  // reuse: every case rewrites what it uses
      std::string text = one_case();
      b.case_first_line.push_back(line);
      line += uint64_t(std::count(text.begin(), text.end(), '\n'));
      b.vmt += text;
      b.case_text.push_back(std::move(text));
    }
    return b;
  }

 private:
  bool wide() const { return mode_ != HarnessMode::Bits32; }
  bool long_mode() const { return mode_ == HarnessMode::Level4 || mode_ == HarnessMode::Level5; }
  unsigned levels() const {
    switch (mode_) {
      case HarnessMode::Bits32: return 2;
      case HarnessMode::Pae: return 3;
      case HarnessMode::Level4: return 4;
      case HarnessMode::Level5: return 5;
    }
    return 4;
  }
  unsigned shift(unsigned level) const { return wide() ? 12 + 9 * (level - 1) : 12 + 10 * (level - 1); }
  uint64_t index(uint64_t gva, unsigned level) const {
    if (mode_ == HarnessMode::Pae && level == 3) return (gva >> 30) & 3;
    return (gva >> shift(level)) & (wide() ? 511 : 1023);
  }
  uint64_t page() {
    const uint64_t p = next_page_;
    next_page_ += 4096;
    return p;
  }

  uint64_t random_gva() {
    uint64_t gva = 0;
    switch (mode_) {
      case HarnessMode::Bits32: gva = below(0xffc00000ull); break;
      case HarnessMode::Pae: gva = below(0xc0000000ull); break;
      case HarnessMode::Level4: {
        gva = bits() & ((1ull << 48) - 1);
        if (((gva >> 39) & 511) == 511) gva &= ~(1ull << 39);
        if (gva >> 47) gva |= 0xffff000000000000ull;
        if (chance(0.03)) gva ^= 1ull << (48 + below(16));  // non-canonical: #GP
        break;
      }
      case HarnessMode::Level5: {
        gva = bits() & ((1ull << 57) - 1);
        if (((gva >> 48) & 511) == 511) gva &= ~(1ull << 48);
        if (gva >> 56) gva |= 0xfe00000000000000ull;
        if (chance(0.03)) gva ^= 1ull << (57 + below(7));
        break;
      }
    }
    return gva;
  }

  // A reserved bit of a non-leaf or 4 KiB entry above MAXPHYADDR (8-byte entries).
  uint64_t high_reserved_bit() {
    const unsigned top = mode_ == HarnessMode::Pae ? 62 : 51;
    if (m_ > top) return 0;
    return 1ull << (m_ + below(top - m_ + 1));
  }

  std::string one_case() {
    std::string out;
    uint64_t gva = random_gva();
    const unsigned width_choices[] = {1, 2, 4, 8};
    const double k = std::uniform_real_distribution<double>(0, 1)(rng_);
    const char* kind = k < 0.45 ? "read" : k < 0.8 ? "write" : "fetch";
    const bool fetch = kind[0] == 'f';
    unsigned width = fetch ? 1 : width_choices[below(4)];
    if (!wide() && width == 8 && chance(0.5)) width = 4;
    gva &= ~uint64_t(width - 1);
    const bool key_bits = long_mode();

    const uint64_t root = page();
    uint64_t table = root;
    std::vector<std::pair<uint64_t, unsigned>> entries;  // gpa, width of each entry written
    const unsigned es = wide() ? 8 : 4;
    std::optional<uint64_t> data_gpa;
    for (unsigned level = levels(); level >= 1; --level) {
      const uint64_t slot = table + index(gva, level) * es;
      uint64_t e = 0;
      const bool present = chance(level == 1 ? 0.92 : 0.95);
      bool leaf = level == 1;
      uint64_t next = 0;
      if (!present) {
        e = bits() & (wide() ? ~1ull : 0xfffffffeull);
        if (!wide()) e &= 0xfffffffe;
      } else if (mode_ == HarnessMode::Pae && level == 3) {
        next = page();
        e = next | 1 | (chance(0.1) ? 0x18 & bits() : 0) | (bits() & 0xe00);
        if (chance(0.03)) e |= chance(0.5) ? (1ull << (1 + below(2))) : (1ull << (5 + below(4)));
      } else {
        const bool can_large = (level == 2 && (wide() || pse_)) || (level == 3 && long_mode());
        if (!leaf && can_large && chance(level == 2 ? 0.3 : 0.15)) leaf = true;
        e = 1;
        if (chance(0.75)) e |= 2;
        if (chance(0.8)) e |= 4;
        if (chance(0.1)) e |= bits() & 0x18;
        if (chance(0.5)) e |= 0x20;
        if (leaf && chance(0.5)) e |= 0x40;
        if (chance(0.3)) e |= 0x100;  // G (ignored above the leaf)
        e |= bits() & 0xe00;          // ignored bits 11:9
        if (wide() && chance(0.2)) e |= 1ull << 63;
        if (wide() && chance(0.1)) e |= (bits() & 0x7f) << 52;  // ignored (or key bits: see below)
        if (wide() && !long_mode()) e &= ~(0x7full << 52);  // PAE: bits 62:M are reserved, not ignored
        if (!leaf) {
          next = page();
          e |= next;
          if (level == 2 && !pse_ && !wide() && chance(0.2)) e |= 0x80;  // PS ignored without CR4.PSE
        } else if (level == 1) {
          const uint64_t data = page();
          data_gpa = data + (gva & 0xfff);
          e |= data;
          if (chance(0.2)) e |= 0x80;  // PAT
        } else {
          // large page: PS, a frame aligned to the page size, maybe PAT (bit 12)
          e |= 0x80;
          const uint64_t size = 1ull << shift(level);
          uint64_t frame;
          if (size >= (1ull << 30)) {
            frame = 0;
            gva = (gva & ~(size - 1)) | ((SCRATCH_1G + below(1ull << 20)) & ~uint64_t(width - 1));
          } else {
            frame = LARGE_BASE + below(LARGE_SIZE / (4ull << 20)) * (4ull << 20);
            gva = (gva & ~(size - 1)) | (bits() & (size - 1) & ~uint64_t(width - 1));
          }
          data_gpa = frame + (gva & (size - 1));
          e |= frame;
          if (chance(0.2)) e |= 0x1000;
          if (chance(0.05)) {
            if (wide()) {
              e |= 1ull << (13 + below(shift(level) - 13));  // bits (page shift - 1):13 are reserved
            } else {
              // PSE-36 with M' = min(M, 40): bits 21:(M'-19) are reserved; lower ones are address bits
              const unsigned lo = std::min(m_, 40u) - 19;
              e |= 1ull << (lo + below(21 - lo + 1));
            }
          }
        }
        if (wide() && chance(0.04)) e |= high_reserved_bit();
        if (leaf && key_bits && chance(0.5)) e = (e & ~(0xfull << 59)) | ((bits() & 0xf) << 59);
      }
      out += fmt::format("poke {:#x} {} {:#x}\n", slot, es, e);
      entries.emplace_back(slot, es);
      if (!present || leaf) break;
      table = next;
    }
    if (data_gpa) {
      if (fetch) out += fmt::format("poke {:#x} 1 0xc3\n", *data_gpa);
      else out += fmt::format("poke {:#x} 8 {:#x}\n", *data_gpa & ~7ull, bits());
    }
    // registers
    uint64_t cr0 = 0x80000001 | (chance(0.5) ? 0x10000 : 0);
    uint64_t cr4 = 0, efer = 0;
    if (mode_ != HarnessMode::Bits32) cr4 |= 0x20;
    if (mode_ == HarnessMode::Level5) cr4 |= 0x1000;
    if (pse_ || (wide() && chance(0.5))) cr4 |= 0x10;
    if (chance(0.3)) cr4 |= 0x80;
    if (chance(0.3)) cr4 |= 0x100000;
    if (chance(0.3)) cr4 |= 0x200000;
    if (long_mode() && pke_ && chance(0.4)) cr4 |= 0x400000;
    if (long_mode()) efer |= 0x100;
    if (chance(0.7)) efer |= 0x800;
    const unsigned cpl = chance(0.5) ? 3 : 0;
    const unsigned ac = chance(0.3) ? 1 : 0;
    const uint64_t pkru = chance(0.5) ? bits() & 0xffffffff : 0;
    out += fmt::format("regs 0 cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} cpl={} ac={} pkru={:#x}\n", cr0, root, cr4,
                       efer, cpl, ac, pkru);
    if (fetch) out += fmt::format("fetch 0 {:#x}\n", gva);
    else if (kind[0] == 'r') out += fmt::format("read 0 {:#x} {}\n", gva, width);
    else out += fmt::format("write 0 {:#x} {} {:#x}\n", gva, width, bits() & (width == 8 ? ~0ull : (1ull << (8 * width)) - 1));
    for (const auto& [gpa, w] : entries) out += fmt::format("peek {:#x} {}\n", gpa, w);
    if (data_gpa && kind[0] == 'w') out += fmt::format("peek {:#x} 8\n", *data_gpa & ~7ull);  // what the write wrote
    return out;
  }

  std::mt19937_64 rng_;
  HarnessMode mode_;
  bool pse_, pke_;
  unsigned m_ = 40;
  bool gbpages_ = true;
  uint64_t next_page_ = TABLES_BASE;
};

}  // namespace

RandomBatch random_batch(uint64_t seed, uint64_t batch, HarnessMode mode, bool pse, unsigned cases, bool pke) {
  return Gen(seed, batch, mode, pse, pke).make(cases);
}

std::string reproducer(const RandomBatch& b, uint64_t line) {
  std::size_t c = 0;
  while (c + 1 < b.case_first_line.size() && b.case_first_line[c + 1] <= line) ++c;
  if (b.case_text.empty()) return b.header;
  return b.header + b.case_text[c];
}

}  // namespace vmmu::oracle
