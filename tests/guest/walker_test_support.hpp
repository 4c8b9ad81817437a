#pragma once
// Helpers shared by the walker tests: a small guest (CPU registers, PAE PDPTE registers and a
// fake memory with a table allocator) and a comparison of a walk against the SDM model.
#include <cstdint>
#include <cstdio>
#include <string>

#include "guest/walker.hpp"
#include "tests/guest/fake_memory.hpp"
#include "tests/guest/sdm_model.hpp"
#include "x86/cpu_state.hpp"
#include "x86/paging_context.hpp"

namespace vmmu::guest::test {

inline std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

inline sdm::Kind to_sdm(x86::AccessKind k) {
  return k == x86::AccessKind::Read ? sdm::Kind::Read : k == x86::AccessKind::Write ? sdm::Kind::Write : sdm::Kind::Fetch;
}

// A guest with MEMORY_SIZE bytes of RAM at gpa 0 for its tables (data frames may lie beyond: the
// walk never reads them). Tables are allocated from TABLES up; the root (or the PAE PDPT, which
// the walker never reads: its entries are registers) is at ROOT.
class Machine {
 public:
  static constexpr uint64_t MEMORY_SIZE = 128ull << 10;
  static constexpr uint64_t ROOT = 0x1000;
  static constexpr uint64_t TABLES = 0x2000;
  static constexpr uint64_t TABLE_FLAGS = sdm::P | sdm::RW | sdm::US;

  explicit Machine(x86::PagingMode mode, x86::CpuModel cpu_model = {}) : model(cpu_model), mode_(mode) {
    mem.add(0, MEMORY_SIZE);
    cpu.cr3 = ROOT;
    switch (mode) {
      case x86::PagingMode::Off: break;
      case x86::PagingMode::Bits32: cpu.cr0 = sdm::CR0_PE | sdm::CR0_PG; break;
      case x86::PagingMode::Pae:
        cpu.cr0 = sdm::CR0_PE | sdm::CR0_PG;
        cpu.cr4 = sdm::CR4_PAE;
        break;
      case x86::PagingMode::Level4:
        cpu.cr0 = sdm::CR0_PE | sdm::CR0_PG;
        cpu.cr4 = sdm::CR4_PAE;
        cpu.efer = sdm::EFER_LME;
        break;
      case x86::PagingMode::Level5:
        cpu.cr0 = sdm::CR0_PE | sdm::CR0_PG;
        cpu.cr4 = sdm::CR4_PAE | sdm::CR4_LA57;
        cpu.efer = sdm::EFER_LME;
        break;
    }
  }

  x86::PagingMode mode() const { return mode_; }
  unsigned entry_size() const { return mode_ == x86::PagingMode::Bits32 ? 4 : 8; }
  // Level of the first table the walker reads from memory.
  unsigned top_level() const {
    switch (mode_) {
      case x86::PagingMode::Off: return 0;
      case x86::PagingMode::Bits32:
      case x86::PagingMode::Pae: return 2;
      case x86::PagingMode::Level4: return 4;
      case x86::PagingMode::Level5: return 5;
    }
    return 0;
  }
  unsigned index(uint64_t gva, unsigned level) const {
    if (mode_ == x86::PagingMode::Bits32) return static_cast<unsigned>((gva >> (12 + 10 * (level - 1))) & 1023);
    return static_cast<unsigned>((gva >> (12 + 9 * (level - 1))) & 511);
  }
  uint64_t table_of(uint64_t e) const {
    return mode_ == x86::PagingMode::Bits32 ? (e & 0xffff'f000ull) : (e & 0x000f'ffff'ffff'f000ull);
  }
  uint64_t alloc_table() {
    const uint64_t t = next_table_;
    next_table_ += 0x1000;
    return t;
  }

  // Entry gpas of one translation, by level (0: that level is not in memory).
  struct Path {
    uint64_t gpa[6] = {0, 0, 0, 0, 0, 0};
  };

  // Maps `gva` to `frame` with a leaf at `leaf_level` (PS added above level 1), allocating
  // missing tables with `table_flags`. Existing table entries are kept as they are.
  Path map(uint64_t gva, uint64_t frame, unsigned leaf_level = 1, uint64_t leaf_flags = TABLE_FLAGS,
           uint64_t table_flags = TABLE_FLAGS) {
    Path path;
    uint64_t table = ROOT;
    unsigned level = top_level();
    if (mode_ == x86::PagingMode::Pae) {
      uint64_t& pdpte = pdptes.entry[(gva >> 30) & 3];
      if (!(pdpte & sdm::P)) pdpte = alloc_table() | sdm::P;
      table = table_of(pdpte);
    }
    for (; level > leaf_level; --level) {
      const uint64_t gpa = table + uint64_t{index(gva, level)} * entry_size();
      path.gpa[level] = gpa;
      uint64_t e = entry(gpa);
      if (!(e & sdm::P)) {
        e = alloc_table() | table_flags;
        set_entry(gpa, e);
      }
      table = table_of(e);
    }
    const uint64_t gpa = table + uint64_t{index(gva, leaf_level)} * entry_size();
    path.gpa[leaf_level] = gpa;
    set_entry(gpa, frame | leaf_flags | (leaf_level > 1 ? sdm::PS : 0));
    return path;
  }

  uint64_t entry(uint64_t gpa) const { return mem.load(gpa, entry_size()); }
  void set_entry(uint64_t gpa, uint64_t v) { mem.store(gpa, v, entry_size()); }
  void set_bits(uint64_t gpa, uint64_t bits) { set_entry(gpa, entry(gpa) | bits); }
  void clear_bits(uint64_t gpa, uint64_t bits) { set_entry(gpa, entry(gpa) & ~bits); }

  x86::PagingContext context() const { return x86::PagingContext(model, cpu); }

  // One walk, with a fresh access log.
  WalkResult walk(uint64_t gva, x86::AccessKind kind, bool user = false, bool ac = false, uint32_t pkru = 0) {
    mem.clear_log();
    const x86::PagingContext ctx(model, cpu);
    return walk_guest(ctx, pdptes, mem, gva, AccessMode{kind, user, ac, pkru});
  }

  // The same registers, for the SDM model.
  sdm::Cpu model_cpu(bool user = false, bool ac = false, uint32_t pkru = 0) const {
    sdm::Cpu c;
    c.cr0 = cpu.cr0;
    c.cr3 = cpu.cr3;
    c.cr4 = cpu.cr4;
    c.efer = cpu.efer;
    c.cpl = user ? 3 : 0;
    c.ac = ac;
    c.pkru = pkru;
    c.maxphyaddr = model.maxphyaddr;
    c.gbpages = model.gbpages;
    for (int i = 0; i < 4; ++i) c.pdpte[i] = pdptes.entry[i];
    return c;
  }

  x86::CpuModel model;
  x86::CpuState cpu;
  x86::PaePdptes pdptes;
  FakeMemory mem;

 private:
  x86::PagingMode mode_;
  uint64_t next_table_ = TABLES;
};

// Compares a walk (already done, its effects in `mem` and `mem`'s log) with what the SDM model
// predicted from the memory as it was before. Returns "" when they agree, else what differs.
inline std::string compare_with_model(const sdm::Outcome& want, const WalkResult& got, const FakeMemory& mem,
                                      uint64_t gva) {
  std::string diff;
  auto differ = [&](const char* what, uint64_t expected, uint64_t actual) {
    diff += std::string(what) + ": want " + hex(expected) + ", got " + hex(actual) + "; ";
  };
  if (mem.misaligned) diff += "misaligned entry read; ";
  if (mem.unbacked_updates) diff += "update of an entry outside memory; ";

  if (want.general_protection) {
    if (got.ok || got.fault.vector != x86::VECTOR_GP || got.fault.error_code != 0 || got.fault.address != 0)
      diff += "want #GP(0), got " + std::string(got.ok ? "a translation" : "vector " + std::to_string(got.fault.vector)) +
              "; ";
    if (!mem.reads.empty()) diff += "a #GP walk read memory; ";
    return diff;
  }
  if (want.fault) {
    if (got.ok) return diff + "want #PF " + hex(want.error_code) + ", got a translation to " + hex(got.walk.gpa);
    if (got.fault.vector != x86::VECTOR_PF) differ("vector", x86::VECTOR_PF, got.fault.vector);
    if (got.fault.error_code != want.error_code) differ("error code", want.error_code, got.fault.error_code);
    if (got.fault.address != gva) differ("fault address", gva, got.fault.address);
    if (!mem.updates.empty()) diff += "a faulting walk updated " + hex(mem.updates[0].gpa) + "; ";
    if (mem.reads.size() != want.reads) differ("entries read", want.reads, mem.reads.size());
    return diff;
  }
  if (!got.ok) {
    return diff + "want a translation to " + hex(want.gpa) + ", got vector " + std::to_string(got.fault.vector) +
           " error code " + hex(got.fault.error_code);
  }
  const GuestWalk& w = got.walk;
  if (w.gpa != want.gpa) differ("gpa", want.gpa, w.gpa);
  if (w.level != want.level) differ("level", want.level, w.level);
  const uint8_t acc = static_cast<uint8_t>((want.executable ? x86::acc::X : 0) | (want.writable ? x86::acc::W : 0) |
                                           (want.user_page ? x86::acc::U : 0));
  if (w.acc != acc) differ("acc", acc, w.acc);
  if (w.pkey != want.pkey) differ("pkey", want.pkey, w.pkey);
  if (w.refs != want.nused) differ("refs", want.nused, w.refs);
  if (want.nused > 0 && w.root_level != want.used[0].level) differ("root level", want.used[0].level, w.root_level);
  for (unsigned i = 0; i < want.nused; ++i) {
    const sdm::Used& u = want.used[i];
    if (w.pte_gpa[u.level] != u.gpa) differ("entry gpa", u.gpa, w.pte_gpa[u.level]);
  }
  // Reads: the walk's entries, once per attempt.
  if (want.nused == 0 ? !mem.reads.empty() : mem.reads.size() % want.nused != 0) {
    differ("entries read", want.nused, mem.reads.size());
  } else {
    for (size_t i = 0; i < mem.reads.size(); ++i) {
      if (mem.reads[i] != want.used[i % want.nused].gpa) {
        differ("entry read", want.used[i % want.nused].gpa, mem.reads[i]);
        break;
      }
    }
  }
  // A/D bits: every entry used holds what it held plus the bits the walk sets (the same entry
  // may be used at several levels), except in read-only memory; nothing else was written.
  for (unsigned i = 0; i < want.nused; ++i) {
    const sdm::Used& u = want.used[i];
    uint64_t expected = u.value;
    if (!mem.read_only(u.gpa)) {
      for (unsigned j = 0; j < want.nused; ++j) {
        if (want.used[j].gpa == u.gpa) expected |= want.used[j].set;
      }
    }
    uint64_t actual = 0;
    mem.peek(u.gpa, u.size, actual);
    if (actual != expected) {
      diff += "entry at " + hex(u.gpa) + " (level " + std::to_string(u.level) + "): want " + hex(expected) + ", got " +
              hex(actual) + "; ";
    }
  }
  for (const FakeMemory::Update& up : mem.updates) {
    bool used = false;
    for (unsigned i = 0; i < want.nused; ++i) used |= want.used[i].gpa == up.gpa;
    if (!used) diff += "update of an entry not used: " + hex(up.gpa) + "; ";
  }
  return diff;
}

}  // namespace vmmu::guest::test
