#pragma once
// The guest page-table walker: one template over the paging format, the C++ form of KVM's
// paging_tmpl.h. It follows the SDM (Vol. 3A, ch. 4) with VMT-FORMAT.md's choices where the SDM
// leaves freedom: A/D bits are set only after the walk and its permission checks succeed, top
// level first, by compare-and-swap (a lost race restarts the walk); an entry outside every
// memslot faults with P=0; entries in read-only memory are used but not updated.
//
// The walker reaches guest memory only through a port, so the same code serves the reference
// (gpa -> memslot), TDP (every table read goes through the TDP tables) and unit tests (fakes):
//
//   struct Port {
//     // Reads the entry at `gpa`; false when no memslot backs it.
//     bool read_entry(uint64_t gpa, Entry& out);
//     // Replaces `old` by `updated` atomically; the outcome says whether it happened.
//     EntryUpdate update_entry(uint64_t gpa, Entry old, Entry updated);
//   };
#include <cstdint>

#include "guest/guest_walk.hpp"
#include "x86/access.hpp"
#include "x86/cpu_state.hpp"
#include "x86/page_fault.hpp"
#include "x86/page_table_entry.hpp"
#include "x86/paging_context.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::guest {

enum class EntryUpdate : uint8_t {
  Done,      // written
  Changed,   // the entry no longer holds `old`: walk again
  ReadOnly,  // the entry lives in read-only guest memory: left as it is
};

// Per-access CPU state that the paging context does not cover.
struct AccessMode {
  x86::AccessKind kind = x86::AccessKind::Read;
  bool user = false;  // CPL 3
  bool ac = false;    // RFLAGS.AC
  uint32_t pkru = 0;
};

namespace detail {

inline uint32_t access_error_code(const x86::PagingContext& ctx, const AccessMode& m) {
  uint32_t ec = 0;
  if (m.kind == x86::AccessKind::Write) ec |= x86::pfec::W;
  if (m.user) ec |= x86::pfec::U;
  if (m.kind == x86::AccessKind::Fetch && ctx.fetch_sets_id()) ec |= x86::pfec::I;
  return ec;
}

// Guest-physical address of a leaf at `level` for `gva`.
template <class F>
uint64_t leaf_address(const x86::PagingContext& ctx, uint64_t entry, unsigned level, uint64_t gva) {
  const uint64_t offset = gva & (F::level_size(level) - 1);
  if (level == 1) return (entry & ctx.frame_mask()) | offset;
  if constexpr (F::entry_size == 4) {
    // 4 MiB page: bits 31:22 from the PDE, bits (M'-1):32 from PDE bits (M'-20):13 (PSE-36).
    const unsigned m36 = ctx.maxphyaddr() < 40 ? ctx.maxphyaddr() : 40;
    const uint64_t high = (entry >> 13) & ((1ull << (m36 - 32)) - 1);
    return (entry & 0xffc0'0000ull) | (high << 32) | offset;
  } else {
    return (entry & ctx.frame_mask() & ~(F::level_size(level) - 1)) | offset;
  }
}

}  // namespace detail

// Walks the tables of format F for `gva`. `pdptes` is used only by PAE.
template <class F, class Port>
WalkResult walk(const x86::PagingContext& ctx, const x86::PaePdptes& pdptes, Port& port, uint64_t gva,
                const AccessMode& m) {
  using Entry = typename F::entry_type;
  WalkResult r;
  GuestWalk& w = r.walk;
  const uint32_t access_ec = detail::access_error_code(ctx, m);

  // A racing update of an entry restarts the walk; a walk that reads the same entry twice
  // (a self-referencing table) restarts once at most per entry it updates.
  for (unsigned attempt = 0;; ++attempt) {
    w = GuestWalk{};
    uint8_t acc = x86::acc::ALL;
    unsigned level = F::levels;
    uint64_t table = ctx.root();
    if constexpr (F::pdpt_registers) {
      const uint64_t pdpte = pdptes.entry[(gva >> 30) & 3];
      if (!(pdpte & x86::pte::P)) {
        r.ok = false;
        r.fault = x86::Fault::page_fault(access_ec, gva);
        return r;
      }
      table = pdpte & ctx.frame_mask();
      level = F::levels - 1;
    }
    w.root_level = static_cast<uint8_t>(level);

    for (;;) {
      const uint64_t entry_gpa = table + uint64_t{F::index(gva, level)} * F::entry_size;
      Entry raw{};
      ++w.refs;
      if (!port.read_entry(entry_gpa, raw)) {
        r.ok = false;
        r.fault = x86::Fault::page_fault(access_ec, gva);
        return r;
      }
      const uint64_t e = raw;
      w.pte[level] = e;
      w.pte_gpa[level] = entry_gpa;
      if (!(e & x86::pte::P)) {
        r.ok = false;
        r.fault = x86::Fault::page_fault(access_ec, gva);
        return r;
      }
      const bool leaf_ps = level > 1 && ctx.ps_allowed(level) && (e & x86::pte::PS);
      if (e & ctx.reserved_bits(level, leaf_ps)) {
        r.ok = false;
        r.fault = x86::Fault::page_fault(access_ec | x86::pfec::P | x86::pfec::RSVD, gva);
        return r;
      }
      acc &= static_cast<uint8_t>(e & (x86::acc::W | x86::acc::U)) | x86::acc::X;
      if (ctx.nxe() && (e & x86::pte::XD)) acc &= static_cast<uint8_t>(~x86::acc::X);
      if (leaf_ps || level == 1) break;
      table = e & ctx.frame_mask();
      --level;
    }

    w.level = static_cast<uint8_t>(level);
    w.acc = acc;
    w.gpa = detail::leaf_address<F>(ctx, w.pte[level], level, gva);
    if constexpr (F::entry_size == 8) {
      w.pkey = static_cast<uint8_t>((w.pte[level] & x86::pte::PKEY_MASK) >> x86::pte::PKEY_SHIFT);
    }

    const bool perm = ctx.permission_fault(m.kind, m.user, m.ac, acc);
    const bool pk = ctx.pkey_fault(m.kind, m.user, acc, m.pkru, w.pkey);
    if (perm || pk) {
      r.ok = false;
      r.fault = x86::Fault::page_fault(access_ec | x86::pfec::P | (pk ? x86::pfec::PK : 0), gva);
      return r;
    }

    // Accessed on every entry used, dirty on the leaf for writes; top level first.
    bool restart = false;
    for (unsigned l = w.root_level; l >= w.level && !restart; --l) {
      uint64_t updated = w.pte[l] | x86::pte::A;
      if (l == w.level && m.kind == x86::AccessKind::Write) updated |= x86::pte::D;
      if (updated == w.pte[l]) continue;
      switch (port.update_entry(w.pte_gpa[l], static_cast<Entry>(w.pte[l]), static_cast<Entry>(updated))) {
        case EntryUpdate::Done: w.pte[l] = updated; break;
        case EntryUpdate::ReadOnly: break;
        case EntryUpdate::Changed: restart = true; break;
      }
    }
    if (restart && attempt < 2 * MAX_LEVELS + 2) continue;
    r.ok = true;
    return r;
  }
}

// Identity translation with paging off: no checks, no references.
inline WalkResult walk_unpaged(uint64_t gva) {
  WalkResult r;
  r.ok = true;
  r.walk.gpa = gva;
  r.walk.acc = x86::acc::ALL;
  r.walk.level = 1;
  return r;
}

// Walks in whatever mode `ctx` is, including the long-mode canonical check (#GP(0)).
template <class Port>
WalkResult walk_guest(const x86::PagingContext& ctx, const x86::PaePdptes& pdptes, Port& port, uint64_t gva,
                      const AccessMode& m) {
  switch (ctx.mode()) {
    case x86::PagingMode::Off: return walk_unpaged(gva);
    case x86::PagingMode::Bits32: return walk<x86::Bits32Format>(ctx, pdptes, port, gva, m);
    case x86::PagingMode::Pae: return walk<x86::PaeFormat>(ctx, pdptes, port, gva, m);
    case x86::PagingMode::Level4:
    case x86::PagingMode::Level5: {
      if (!x86::is_canonical(gva, ctx.linear_width())) {
        WalkResult r;
        r.fault = x86::Fault::general_protection();
        return r;
      }
      return ctx.mode() == x86::PagingMode::Level4 ? walk<x86::Level4Format>(ctx, pdptes, port, gva, m)
                                                   : walk<x86::Level5Format>(ctx, pdptes, port, gva, m);
    }
  }
  return WalkResult{};
}

}  // namespace vmmu::guest
