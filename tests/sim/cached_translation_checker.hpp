#pragma once
// Test support: checks a workload against VMT-FORMAT.md's rule on cached translations, read
// strictly: a change to an entry (other than not present -> present) must be *followed*, before
// a vCPU that used the entry uses it again, by that vCPU's `invlpg` of the address (leaf entries)
// or its `flush`, `cr3` or paging `regs`. The checker replays the workload on a reference Vm and
// remembers, per vCPU, every entry a walk of it used (by gpa, with its value). A guest write or
// poke that changes a remembered present entry marks it stale for that vCPU; the invalidations
// above clear the marks (`cr3` not those of global leaves under CR4.PGE); an access whose walk
// reads a stale entry is a violation. Remembered entries stay remembered across invalidations:
// a vCPU that flushed *before* a change has not dropped what it may cache *after* it (a table
// freed and reused under the root it has loaded).
#include <cstdint>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "sim/replayer.hpp"
#include "sim/vmt_reader.hpp"
#include "vm/vm.hpp"
#include "x86/control_registers.hpp"
#include "x86/page_table_entry.hpp"

namespace vmmu::sim::test {

class CachedTranslationChecker {
 public:
  void apply(const Op& op) {
    switch (op.kind) {
      case OpKind::Read:
      case OpKind::Write:
      case OpKind::Fetch: {
        const uint32_t v = op.id;
        const std::vector<Step> path = walk(v, op.addr);
        for (const Step& s : path) {
          auto it = used_[v].find(s.gpa);
          if (it != used_[v].end() && it->second.stale && violations_.size() < 20)
            violations_.push_back(fmt::format("line {}: vcpu {} {} 0x{:x} reads the level-{} entry at gpa 0x{:x}, changed to 0x{:x} since "
                                              "it used it, with no invalidation after the change",
                                              op.line, v, op_name(op.kind), op.addr, s.level, s.gpa, s.entry));
        }
        const x86::AccessKind kind = op.kind == OpKind::Read ? x86::AccessKind::Read : op.kind == OpKind::Write ? x86::AccessKind::Write : x86::AccessKind::Fetch;
        const std::vector<Before> before = kind == x86::AccessKind::Write ? remembered_at(translate(v, op.addr), op.width) : std::vector<Before>{};
        vm_.vcpu(v).access(op.addr, kind, op.width, op.value);
        changed(before);
        for (const Step& s : walk(v, op.addr)) {
          if (!(s.entry & x86::pte::P)) break;
          used_[v][s.gpa] = Used{s.entry, s.bytes, s.leaf, s.leaf && (s.entry & x86::pte::G), key_of(v, op.addr, s.level), s.level, false};
        }
        return;
      }
      case OpKind::Poke: {
        const std::vector<Before> before = remembered_at(op.addr, op.width);
        replayer_.apply(op);
        changed(before);
        return;
      }
      case OpKind::Invlpg:
        replayer_.apply(op);
        for (auto& [gpa, u] : used_[op.id])
          if (u.leaf && u.key == key_of(op.id, op.addr, u.level)) u.stale = false;
        return;
      case OpKind::Cr3: {
        replayer_.apply(op);
        const bool pge = vm_.vcpu(op.id).state().cr4 & x86::cr4::PGE;
        for (auto& [gpa, u] : used_[op.id])
          if (!(pge && u.global)) u.stale = false;
        return;
      }
      case OpKind::Flush: replayer_.apply(op); clear(op.id); return;
      case OpKind::Regs:
        replayer_.apply(op);
        if (op.regs.touches_paging()) clear(op.id);
        return;
      default: replayer_.apply(op); return;
    }
  }

  const std::vector<std::string>& violations() const { return violations_; }

  // Replays .vmt text; returns the violations found.
  static std::vector<std::string> check_text(const std::string& vmt) {
    CachedTranslationChecker c;
    std::istringstream in(vmt);
    VmtReader reader(in);
    for (Op op; reader.next(op);) c.apply(op);
    return c.violations_;
  }

 private:
  struct Used {
    uint64_t entry;
    unsigned bytes;
    bool leaf, global;
    uint64_t key;  // the address bits above the span of the entry
    unsigned level;
    bool stale;
  };
  struct Step {
    unsigned level;
    uint64_t gpa, entry;
    unsigned bytes;
    bool leaf;
  };

  static constexpr uint64_t AD = x86::pte::A | x86::pte::D;

  void clear(uint32_t v) {
    for (auto& [gpa, u] : used_[v]) u.stale = false;
  }

  struct Before {
    Used* used;
    uint64_t gpa, value;
  };

  // Where a write of `va` lands now (the checker sees guest writes by gpa), or ~0.
  uint64_t translate(uint32_t v, uint64_t va) {
    const std::vector<Step> path = walk(v, va);
    if (path.empty() || !(path.back().entry & x86::pte::P)) return ~0ull;
    const Step& leaf = path.back();
    const uint64_t span = 1ull << (12 + (leaf.level - 1) * bits(v));
    const uint64_t frame = leaf.bytes == 4 ? leaf.entry & 0xffff'f000ull : leaf.entry & x86::pte::ADDR_MASK_52;
    return (frame & ~(span - 1)) + (va & (span - 1));
  }

  // The remembered entries that [gpa, gpa + width) overlaps, with their values now.
  std::vector<Before> remembered_at(uint64_t gpa, unsigned width) {
    std::vector<Before> out;
    if (gpa == ~0ull) return out;
    for (auto& [v, used] : used_) {
      for (uint64_t base : {gpa & ~7ull, gpa & ~3ull, (gpa + width - 1) & ~7ull, (gpa + width - 1) & ~3ull}) {
        auto it = used.find(base);
        if (it == used.end()) continue;
        bool seen = false;
        for (const Before& b : out) seen |= b.used == &it->second;
        if (!seen) out.push_back(Before{&it->second, base, vm_.read_guest(base, it->second.bytes)});
      }
    }
    return out;
  }

  // After the write: a present entry that changed goes stale (not present -> present is free).
  void changed(const std::vector<Before>& before) {
    for (const Before& b : before) {
      const uint64_t now = vm_.read_guest(b.gpa, b.used->bytes);
      if ((b.value & x86::pte::P) && (now & ~AD) != (b.value & ~AD)) b.used->stale = true;
    }
  }

  unsigned bits(uint32_t v) { return vm_.vcpu(v).state().mode() == x86::PagingMode::Bits32 ? 10 : 9; }
  uint64_t key_of(uint32_t v, uint64_t va, unsigned level) {
    const x86::PagingMode m = vm_.vcpu(v).state().mode();
    const uint64_t width_mask = m == x86::PagingMode::Level5 ? (1ull << 57) - 1 : m == x86::PagingMode::Level4 ? (1ull << 48) - 1 : 0xffff'ffffull;
    return (va & width_mask) >> (12 + (level - 1) * bits(v));
  }

  // The entries a walk of `va` reads now, root first, up to the leaf or the first not present
  // (PAE's PDPTEs are registers: not entries in memory here).
  std::vector<Step> walk(uint32_t v, uint64_t va) {
    const x86::CpuState& s = vm_.vcpu(v).state();
    std::vector<Step> steps;
    const x86::PagingMode m = s.mode();
    if (m == x86::PagingMode::Off) return steps;
    const bool four_byte = m == x86::PagingMode::Bits32;
    const unsigned eb = four_byte ? 4 : 8;
    unsigned level = m == x86::PagingMode::Bits32 ? 2 : m == x86::PagingMode::Pae ? 2 : m == x86::PagingMode::Level4 ? 4 : 5;
    uint64_t table = four_byte ? s.cr3 & 0xffff'f000ull : s.cr3 & x86::pte::ADDR_MASK_52;
    if (m == x86::PagingMode::Pae) {
      const uint64_t pdpte = vm_.vcpu(v).pdptes().entry[(va >> 30) & 3];
      if (!(pdpte & x86::pte::P)) return steps;
      table = pdpte & x86::pte::ADDR_MASK_52;
    }
    for (;; --level) {
      const unsigned idx = static_cast<unsigned>((va >> (12 + (level - 1) * bits(v))) & ((1u << bits(v)) - 1));
      const uint64_t gpa = table + uint64_t{idx} * eb;
      if (!vm_.memslots().find(gpa >> 12)) break;
      const uint64_t e = vm_.read_guest(gpa, eb);
      const bool leaf = level == 1 || (e & x86::pte::PS);
      steps.push_back(Step{level, gpa, e, eb, leaf});
      if (!(e & x86::pte::P) || leaf) break;
      table = four_byte ? e & 0xffff'f000ull : e & x86::pte::ADDR_MASK_52;
    }
    return steps;
  }

  Vm vm_{VmConfig{MmuKind::None}};
  Replayer replayer_{vm_, nullptr};
  std::unordered_map<uint32_t, std::unordered_map<uint64_t, Used>> used_;
  std::vector<std::string> violations_;
};

}  // namespace vmmu::sim::test
