// The shadow engine's core: roots, the simulated hardware's walk of the shadow tables, the fault
// path that builds them from a guest walk, and the life of shadow pages.
#include "mmu/shadow_mmu.hpp"

#include <algorithm>
#include <cassert>

#include "guest/guest_memory.hpp"
#include "mmu/guest_table_port.hpp"
#include "mmu/shadow_internal.hpp"
#include "mmu/spte.hpp"

namespace vmmu::mmu {

using namespace shadow;

ShadowMmu::ShadowMmu(guest::Memslots& slots, ShadowOptions options)
    : Mmu(slots), options_(options), memory_(slots.allocator()), pool_(slots.allocator()) {
  if (options_.max_mmu_pages && options_.max_mmu_pages < MIN_MAX_MMU_PAGES)
    throw guest::UsageError("--max-mmu-pages must be at least 64");
  if (options_.max_mmu_memory && options_.max_mmu_memory < MIN_MAX_MMU_MEMORY)
    throw guest::UsageError("--max-mmu-memory must be at least 131072 (128K)");
}

ShadowMmu::~ShadowMmu() = default;  // the pool's arena goes with it

void ShadowMmu::vcpu_created(VcpuContext& vcpu) {
  Mmu::vcpu_created(vcpu);
  vcpu.mmu_state = std::make_unique<VcpuState>();
}

Role ShadowMmu::context_role(const VcpuContext& vcpu) const {
  const x86::PagingContext& c = vcpu.paging;
  Role r = Role().with_guest_root_level(guest_root_level(c.mode())).with_4byte_gpte(c.mode() == x86::PagingMode::Bits32);
  if (c.mode() == x86::PagingMode::Off) return r;
  return r.with_efer_nx(c.nxe())
      .with_cr0_wp(c.wp())
      .with_smep_andnot_wp(c.smep() && !c.wp())
      .with_smap_andnot_wp(c.smap() && !c.wp())
      .with_cr4_pse(c.mode() == x86::PagingMode::Bits32 && c.pse())
      .with_pke(c.pke());
}

// ---------------------------------------------------------------------------------------------
// Roots: a page for 4- and 5-level guests; four entries (one per GiB, as the PDPTEs) for PAE,
// 32-bit and unpaged guests, whose level-2 pages are found again on the next fault.

uint64_t* ShadowMmu::root_table(VcpuState& vs) const {
  return vs.root_level >= 4 ? pool_.table(pool_.header_at(vs.root)) : vs.pae_root;
}

void ShadowMmu::load_root(VcpuContext& vcpu, VcpuState& vs) {
  const x86::PagingMode mode = vcpu.paging.mode();
  if (mode != x86::PagingMode::Level4 && mode != x86::PagingMode::Level5) {
    vs.root_level = 3;
    return;
  }
  const unsigned level = mode == x86::PagingMode::Level5 ? 5 : 4;
  const Role role = context_role(vcpu).with_level(level).with_access(x86::acc::ALL);
  const uint64_t gfn = vcpu.paging.root() >> x86::PAGE_SHIFT;
  // KVM's prev_roots: a `cr3` back to a recent address space reuses its root as it is.
  for (unsigned i = 0; i < VcpuState::PREVIOUS_ROOTS; ++i) {
    const ShadowPage* sp = pool_.header_at(vs.prev[i]);
    if (sp && sp->gfn == gfn && sp->role == role) {
      vs.root = vs.prev[i];
      std::copy(vs.prev + i + 1, vs.prev + VcpuState::PREVIOUS_ROOTS, vs.prev + i);
      vs.prev[VcpuState::PREVIOUS_ROOTS - 1] = 0;
      ++n_.root_reuse;
      break;
    }
  }
  if (!vs.root) vs.root = pool_.index(get_page(vcpu, gfn, role));
  ++pool_.header_at(vs.root)->root_count;
  vs.root_level = level;
}

void ShadowMmu::clear_pae_root(VcpuState& vs) {
  for (uint64_t& e : vs.pae_root) {
    if (!spte::is_present(e)) continue;
    remove_parent(pool_.header(spte::table_of(e)), &e);
    e = 0;
  }
}

void ShadowMmu::drop_current_root(VcpuState& vs, bool keep_as_previous) {
  if (vs.root) {
    --pool_.header_at(vs.root)->root_count;
    if (keep_as_previous) {
      std::copy_backward(vs.prev, vs.prev + VcpuState::PREVIOUS_ROOTS - 1, vs.prev + VcpuState::PREVIOUS_ROOTS);
      vs.prev[0] = vs.root;
    }
    vs.root = 0;
  }
  clear_pae_root(vs);
  vs.root_level = 0;
}

void ShadowMmu::reset_context(VcpuContext& vcpu) {
  std::lock_guard g(mutex_);
  auto& vs = state(vcpu);
  sync_all(vcpu);
  drop_current_root(vs, false);
  std::fill(vs.prev, vs.prev + VcpuState::PREVIOUS_ROOTS, 0);
}

void ShadowMmu::new_cr3(VcpuContext& vcpu) {
  std::lock_guard g(mutex_);
  sync_all(vcpu);  // non-global translations go: out-of-sync pages are brought up to date
  drop_current_root(state(vcpu), true);
}

void ShadowMmu::flush(VcpuContext& vcpu) {
  std::lock_guard g(mutex_);
  sync_all(vcpu);
  auto& vs = state(vcpu);
  if (vs.root_level == 3) clear_pae_root(vs);  // the PDPTEs were reloaded
}

void ShadowMmu::invlpg(VcpuContext& vcpu, uint64_t gva) {
  std::lock_guard g(mutex_);
  ++n_.invlpg;
  if (!gva_walkable(vcpu.paging, gva)) return;
  // Synced pages follow the guest already. Out-of-sync ones drop the entry for this gva, in
  // every such page and not only on the path from the current root: a page off that path (its
  // link zapped, or a PAE root entry reloaded) would bring the stale entry back when relinked.
  // Dropping an entry of another gva that shares the index costs a refault, nothing more.
  const unsigned index = spte_index(gva >> x86::PAGE_SHIFT, 1);
  for (uint64_t gfn : unsync_gfns_) {
    for_each_page_of(gfn, [&](ShadowPage* sp) {
      if (sp->role.direct() || (sp->role.has_4byte_gpte() && sp->role.quadrant() != quadrant_of(gva, 1))) return;
      uint64_t* p = &pool_.table(sp)[index];
      if (spte::is_present(*p)) drop_leaf(p, 1);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The simulated hardware: a walk of the shadow tables, then the guest's rights in the guest's
// context and the host's write permission. Anything it cannot do goes to the fault path.

AccessResult ShadowMmu::access(VcpuContext& vcpu, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) {
  std::lock_guard g(mutex_);
  auto& vs = state(vcpu);
  if (vs.root_level && gva_walkable(vcpu.paging, gva)) {
    uint64_t* table = root_table(vs);
    for (unsigned level = vs.root_level;; --level) {
      uint64_t* p = &table[entry_index(gva, level, vs.root_level)];
      const uint64_t s = *p;
      if (!spte::is_present(s)) break;
      if (!spte::is_leaf(s, level)) {
        table = spte::table_of(s);
        continue;
      }
      if (!hardware_allows(vcpu, s, kind)) break;
      // Which gfn the host frame holds (the result reports the gpa).
      const uintptr_t frame = s & spte::FRAME_MASK;
      if (vs.slot_generation != slots_.generation() || frame < vs.slot_lo || frame >= vs.slot_hi) {
        uint64_t first = 0;
        guest::Memslot* slot = slots_.slot_of_frame(reinterpret_cast<uint8_t*>(frame), first);
        if (!slot) break;  // cannot happen while the audit holds; the fault path will tell
        vs.slot = slot;
        vs.slot_generation = slots_.generation();
        vs.slot_lo = reinterpret_cast<uintptr_t>(slot->original_host_page(slot->base_gfn()));
        vs.slot_hi = vs.slot_lo + (slot->npages() << x86::PAGE_SHIFT);
        if (frame < vs.slot_lo || frame >= vs.slot_hi) {  // a frame the host moved: not cached
          vs.slot_generation = ~0ull;
          return perform(vcpu, *slot, p, s, level, first, gva, kind, width, value);
        }
      }
      const uint64_t first = vs.slot->base_gfn() + ((frame - vs.slot_lo) >> x86::PAGE_SHIFT);
      return perform(vcpu, *vs.slot, p, s, level, first, gva, kind, width, value);
    }
  }
  return fault(vcpu, vs, gva, kind, width, value);
}

Mmu::HardwareMapping ShadowMmu::hardware_mapping(const VcpuContext& vcpu, uint64_t gva) const {
  std::lock_guard g(mutex_);
  auto& vs = state(const_cast<VcpuContext&>(vcpu));
  if (!vs.root_level || !gva_walkable(vcpu.paging, gva)) return {};
  const uint64_t* table = root_table(vs);
  for (unsigned level = vs.root_level;; --level) {
    const uint64_t s = table[entry_index(gva, level, vs.root_level)];
    if (!spte::is_present(s) || spte::is_leaf(s, level))
      return {static_cast<uint8_t>(vs.root_level), static_cast<uint8_t>(level), spte::is_present(s)};
    table = spte::table_of(s);
  }
}

AccessResult ShadowMmu::perform(VcpuContext& vcpu, guest::Memslot& slot, uint64_t* p, uint64_t s, unsigned level, uint64_t first,
                                uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) {
  const uint64_t offset = gva & (level_bytes(level) - 1);
  AccessResult r;
  r.gpa = (first << x86::PAGE_SHIFT) + offset;
  uint8_t* host = spte::host_address(s) + offset;
  const bool write = kind == x86::AccessKind::Write;
  if (level == 1) {
    const uint64_t need = spte::A | (write ? spte::D : 0);
    if ((s & need) != need) *p = s | need;
  } else {
    slot.mark_accessed(r.gpa >> x86::PAGE_SHIFT);  // one A bit per huge SPTE could not answer `age`
  }
  if (kind == x86::AccessKind::Read) r.value = guest::GuestMemory::load(host, width);
  if (write) guest::GuestMemory::store(host, width, value);
  // Through a present SPTE with A (and D) set: a repeat needs nothing the software TLB lacks.
  // Under a huge SPTE or in a direct page (a guest large page, or no guest paging) the guest
  // page may be as large as 1 GiB.
  const bool large = level > 1 || pool_.header(p)->role.direct();
  if (vcpu.translations) vcpu.translations->fill(gva, r.gpa, host, kind, vcpu.state.cpl == 3, large ? 30 : x86::PAGE_SHIFT);
  return r;
}

// ---------------------------------------------------------------------------------------------
// The fault path

AccessResult ShadowMmu::fault(VcpuContext& vcpu, VcpuState& vs, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) {
  ++n_.pf_taken;
  make_pages_available();
  cache_.top_up(pool_, FAULT_PAGES);  // everything the fault may build, before it builds
  top_up_metadata();
  if (!vs.root_level) load_root(vcpu, vs);

  GuestTablePort port(slots_, &vcpu);
  const guest::AccessMode mode{kind, vcpu.state.cpl == 3, vcpu.state.ac, vcpu.state.pkru};
  const guest::WalkResult wr = guest::walk_guest(vcpu.paging, vcpu.pdptes, port, gva, mode);
  const bool paging = vcpu.paging.mode() != x86::PagingMode::Off;
  if (paging) ++n_.walks;
  n_.walk_refs += wr.walk.refs;
  AccessResult r;
  if (!wr.ok) {
    ++n_.pf_guest;
    r.status = AccessResult::Status::Fault;
    r.fault = wr.fault;
    return r;
  }
  const Walk& w = wr.walk;
  r.gpa = w.gpa;
  const uint64_t gfn = w.gpa >> x86::PAGE_SHIFT;
  guest::Memslot* slot = slots_.find(gfn);
  if (!slot) {
    ++n_.pf_mmio;  // not cached: every MMIO access walks the guest again
    r.status = AccessResult::Status::Mmio;
    return r;
  }
  const bool write = kind == x86::AccessKind::Write;
  if (write && slot->readonly()) {
    r.status = AccessResult::Status::ReadOnly;
    return r;
  }
  // The storage the leaf's reverse-map hint and the page's bitmaps need, before any change.
  hints(*slot, true)->prepare(gfn - slot->base_gfn());
  slot->prepare_bitmaps(gfn);
  if (write && write_tracked(gfn) && can_unsync(gfn)) unsync_gfn(gfn);

  // The chain down to the leaf. Building it may shadow a table inside the leaf's own region (a
  // table that maps itself): then a huge leaf is no longer allowed there, so go down further.
  const unsigned guest_level = paging ? w.level : 2;
  unsigned target = max_level(*slot, gfn, guest_level);
  uint64_t* p;
  for (;;) {
    p = descend(vcpu, vs, w, gva, gfn, target);
    const unsigned allowed = max_level(*slot, gfn, guest_level);
    if (allowed >= target) break;
    target = allowed;
  }

  const bool tracked = write_tracked(gfn);
  const bool emulate = write && tracked;
  uint8_t acc = paging ? w.acc : x86::acc::ALL;
  const bool guest_dirty = !paging || (w.pte[w.level] & x86::pte::D);
  if (paging && target < w.level && !guest_dirty) acc &= static_cast<uint8_t>(~x86::acc::W);  // as its direct page's role
  const bool writable = !slot->readonly() && !tracked && guest_dirty &&
                        ((acc & x86::acc::W) || !vcpu.paging.wp() || !paging) && (!slot->dirty_logging() || write);
  const uint64_t first = gfn & ~(frames_per_entry(target) - 1);
  uint64_t leaf = reinterpret_cast<uintptr_t>(slot->host_page(first)) | spte::P | rights_bits(acc, paging ? w.pkey : 0);
  if (target > 1) leaf |= spte::PS;
  if (!slot->readonly()) leaf |= spte::HOST_WRITABLE;
  if (writable) leaf |= spte::RW;
  install_leaf(p, target, *slot, gfn, leaf);
  ++n_.pf_fixed;

  if (emulate) return emulate_write(vcpu, *slot, w.gpa, width, value);
  // A write is done here even when the SPTE could not be made writable: the guest's leaf may
  // lie in read-only memory, where the walk cannot set D (each such write comes back here).
  if (write) vcpu.mark_dirty(*slot, gfn);  // before the write lands (a `clear` in between sees it)
  slot->mark_accessed(gfn);
  uint8_t* host = slot->host_page(gfn) + (w.gpa & x86::PAGE_OFFSET_MASK);
  if (kind == x86::AccessKind::Read) r.value = guest::GuestMemory::load(host, width);
  if (write) guest::GuestMemory::store(host, width, value);
  return r;
}

ShadowMmu::Child ShadowMmu::child_of(const VcpuContext& vcpu, Role ctx, const Walk& w, uint64_t gva, uint64_t gfn, unsigned level) const {
  const unsigned cl = level - 1;
  const uint64_t direct_base = gfn & ~(frames_per_page(cl) - 1);  // the seed's trap: round to the span
  if (vcpu.paging.mode() == x86::PagingMode::Off)
    return {direct_base, ctx.with_level(cl).with_direct(true).with_access(x86::acc::ALL)};
  if (cl >= w.level) {
    // The guest table the walk read at level cl, with the rights of the entries above it.
    uint8_t acc = x86::acc::ALL;
    for (unsigned l = level; l <= w.root_level; ++l) acc &= entry_rights(w.pte[l], vcpu.paging.nxe());
    Role r = ctx.with_level(cl).with_access(acc);
    if (ctx.has_4byte_gpte()) r = r.with_quadrant(quadrant_of(gva, cl));
    return {w.pte_gpa[cl] >> x86::PAGE_SHIFT, r};
  }
  // Under a guest huge page: a direct page with the leaf's rights (W only once it is dirty, so a
  // write through it faults and sets D, as KVM's protect_clean_gpte) and protection key.
  const bool dirty = w.pte[w.level] & x86::pte::D;
  const uint8_t acc = dirty ? w.acc : static_cast<uint8_t>(w.acc & ~x86::acc::W);
  return {direct_base, ctx.with_level(cl).with_direct(true).with_access(acc).with_pkey(w.pkey)};
}

uint64_t* ShadowMmu::descend(VcpuContext& vcpu, VcpuState& vs, const Walk& w, uint64_t gva, uint64_t gfn, unsigned& target) {
  const Role context = context_role(vcpu);
  uint64_t* table = root_table(vs);
  for (unsigned level = vs.root_level;; --level) {
    uint64_t* p = &table[entry_index(gva, level, vs.root_level)];
    uint64_t s = *p;
    const bool is_table = spte::is_present(s) && !spte::is_leaf(s, level);
    if (level == target && !is_table) return p;
    if (spte::is_present(s) && !is_table) {  // a huge leaf where this walk needs a table
      zap_entry(p, level);
      s = 0;
    }
    const Child c = child_of(vcpu, context, w, gva, gfn, level);
    if (spte::is_present(s)) {
      ShadowPage* child = pool_.header(spte::table_of(s));
      if (child->gfn == c.gfn && child->role == c.role) {
        child->write_flooding = 0;  // used by a fault: not a flood
        if (level == target) target = level - 1;  // smaller mappings exist here already
        table = spte::table_of(s);
        continue;
      }
      zap_entry(p, level);  // a link this walk does not agree with (KVM's validate_direct_spte)
      if (level == target) return p;
    }
    ShadowPage* sp = get_page(vcpu, c.gfn, c.role);
    link(p, sp);
    sp->write_flooding = 0;
    table = pool_.table(sp);
  }
}

unsigned ShadowMmu::max_level(const guest::Memslot& slot, uint64_t gfn, unsigned guest_level) const {
  if (slot.dirty_logging()) return 1;
  const unsigned cap = std::min(guest_level, static_cast<unsigned>(slot.host_page()));
  for (unsigned level = cap; level >= 2; --level) {
    const uint64_t n = frames_per_entry(level);
    const uint64_t first = gfn & ~(n - 1);
    if (first < slot.base_gfn() || first + n > slot.end_gfn()) continue;
    if ((reinterpret_cast<uintptr_t>(slot.original_host_page(first)) >> x86::PAGE_SHIFT) & (n - 1)) continue;
    if (slot.relocated_in(first, n)) continue;  // the host moved some of its pages
    if (lpage_disallowed(level, first)) continue;  // a shadowed guest table lies inside
    return level;
  }
  return 1;
}

void ShadowMmu::install_leaf(uint64_t* p, unsigned level, const guest::Memslot& slot, uint64_t gfn, uint64_t leaf) {
  const uint64_t old = *p;
  if (spte::is_present(old)) {
    if (spte::is_leaf(old, level) && (old & spte::FRAME_MASK) == (leaf & spte::FRAME_MASK)) {
      *p = leaf | (old & (spte::A | spte::D));  // the same frame with new rights: the rmap stays
      return;
    }
    zap_entry(p, level);
  }
  const uint64_t first = gfn & ~(frames_per_entry(level) - 1);
  const ShadowPage* sp = pool_.header(p);
  // The reverse map first: a list that must grow may need the host, and then nothing changed.
  if (level > 1) push_back_or_erase(huge_rmap_, huge_key(level, first), p);
  *p = leaf;
  ++leaves_[level];
  if (sp->role.direct()) sp->set_gfn(static_cast<unsigned>(p - pool_.table(sp)), first);  // the seed's formula (debug)
  if (level == 1) hints(slot, true)->add(gfn - slot.base_gfn(), RmapHints::tag(pool_.index(sp)));  // prepared: no allocation
}

// ---------------------------------------------------------------------------------------------
// Shadow pages

bool ShadowMmu::alive(const ShadowPage* sp) const { return sp && (sp->flags & PAGE_ALIVE); }

ShadowMmu::GfnInfo* ShadowMmu::gfn_info(uint64_t gfn) {
  auto it = gfns_.find(gfn);
  return it == gfns_.end() ? nullptr : &it->second;
}

ShadowPage* ShadowMmu::get_page(VcpuContext& vcpu, uint64_t gfn, Role role) {
  if (GfnInfo* gi = gfn_info(gfn)) {
    for (uint32_t i = gi->head; i; i = pool_.header_at(i)->hash_next) {
      ShadowPage* sp = pool_.header_at(i);
      if (sp->role != role) continue;
      // Linked from a new place, an out-of-sync page is brought up to date first (as KVM
      // syncs what it finds in its hash): entries changed since its last sync point may be
      // reached through the new link before any invlpg could name them.
      if (gi->unsync && !role.direct()) resync_gfn(vcpu, gfn);
      return sp;
    }
    // A new page makes the frame write-tracked again: out-of-sync pages of it come back first.
    if (!role.direct() && gi->unsync) resync_gfn(vcpu, gfn);
  }
  ShadowPage* sp = cache_.take();
  assert(sp && "the page cache was topped up before the fault");
  sp->gfn = gfn;
  sp->role = role;
  sp->flags = PAGE_ALIVE;
  const uint32_t idx = pool_.index(sp);
  GfnInfo& gi = gfns_[gfn];
  sp->hash_next = gi.head;
  gi.head = idx;
  sp->prev = 0;
  sp->next = lru_head_;
  if (lru_head_) pool_.header_at(lru_head_)->prev = idx;
  lru_head_ = idx;
  if (!lru_tail_) lru_tail_ = idx;
  ++active_pages_;
  ++n_.mmu_cache_miss;
  if (!role.direct()) {
    const bool was_tracked = write_tracked(&gi);
    ++gi.indirect;
    account_shadowed(gfn, +1);
    if (!was_tracked) write_protect(gfn);
  }
  return sp;
}

void ShadowMmu::link(uint64_t* p, ShadowPage* child) {
  add_parent(child, p);  // first: it may need the host, and then nothing changed
  *p = spte::make_table(pool_.table(child));
}

void ShadowMmu::add_parent(ShadowPage* sp, uint64_t* p) {
  if (!sp->parent_spte) {
    sp->parent_spte = p;
    return;
  }
  push_back_or_erase(extra_parents_, pool_.index(sp), p);
  sp->flags |= PAGE_MORE_PARENTS;
}

void ShadowMmu::remove_parent(ShadowPage* sp, uint64_t* p) {
  if (!(sp->flags & PAGE_MORE_PARENTS)) {
    assert(sp->parent_spte == p);
    sp->parent_spte = nullptr;
    return;
  }
  auto it = extra_parents_.find(pool_.index(sp));
  auto& more = it->second;
  if (sp->parent_spte == p) {
    sp->parent_spte = more.back();
    more.pop_back();
  } else {
    auto pos = std::find(more.begin(), more.end(), p);
    assert(pos != more.end());
    *pos = more.back();
    more.pop_back();
  }
  if (more.empty()) {
    extra_parents_.erase(it);
    sp->flags &= static_cast<uint16_t>(~PAGE_MORE_PARENTS);
  }
}

void ShadowMmu::zap_entry(uint64_t* p, unsigned level) {
  const uint64_t s = *p;
  if (!spte::is_present(s)) {
    *p = 0;
    return;
  }
  note_tlb_flush();  // KVM flushes remote TLBs after zapping a present SPTE
  if (spte::is_leaf(s, level)) {
    drop_leaf(p, level);
    return;
  }
  remove_parent(pool_.header(spte::table_of(s)), p);
  *p = 0;
  ++n_.mmu_pde_zapped;
}

void ShadowMmu::drop_leaf(uint64_t* p, unsigned level) {
  const uint64_t s = *p;
  *p = 0;
  --leaves_[level];
  uint64_t gfn = 0;
  guest::Memslot* slot = nullptr;
  const bool known = gfn_of_leaf(s, gfn, &slot);
  if (known && level == 1 && (s & spte::A)) slot->mark_accessed(gfn);  // the host's `age` keeps it
  if (level == 1) return;  // its hint stays: a superset, tightened by the next lookup
  auto remove_from = [&](auto& v) {
    auto pos = std::find(v.begin(), v.end(), p);
    if (pos == v.end()) return false;
    *pos = v.back();
    v.pop_back();
    return true;
  };
  if (known) {
    auto it = huge_rmap_.find(huge_key(level, gfn));
    if (it != huge_rmap_.end() && remove_from(it->second)) {
      if (it->second.empty()) huge_rmap_.erase(it);
      return;
    }
  }
  for (auto it = huge_rmap_.begin(); it != huge_rmap_.end(); ++it) {  // its frame is gone: search
    if (remove_from(it->second)) {
      if (it->second.empty()) huge_rmap_.erase(it);
      return;
    }
  }
}

void ShadowMmu::zap_page(ShadowPage* sp) {
  const uint32_t idx = pool_.index(sp);
  // Every SPTE pointing at the page goes (roots' PAE entries included), then its own entries.
  std::vector<uint64_t*> parents;
  for_each_parent(sp, [&](uint64_t* p) { parents.push_back(p); });
  for (uint64_t* p : parents) *p = 0;
  sp->parent_spte = nullptr;
  if (sp->flags & PAGE_MORE_PARENTS) extra_parents_.erase(idx);
  uint64_t* table = pool_.table(sp);
  for (unsigned i = 0; i < SPTE_PER_PAGE; ++i) {
    if (table[i]) zap_entry(&table[i], sp->role.level());
  }
  for (VcpuContext* v : vcpus_) {
    auto& vs = state(*v);
    if (vs.root == idx) {
      vs.root = 0;
      vs.root_level = 0;  // loaded again at the next access
    }
    auto* end = std::remove(vs.prev, vs.prev + VcpuState::PREVIOUS_ROOTS, idx);
    std::fill(end, vs.prev + VcpuState::PREVIOUS_ROOTS, 0);
  }
  // Out of the hash chain of its gfn, and out of write tracking.
  GfnInfo& gi = gfns_.at(sp->gfn);
  if (gi.head == idx) {
    gi.head = sp->hash_next;
  } else {
    ShadowPage* q = pool_.header_at(gi.head);
    while (q->hash_next != idx) q = pool_.header_at(q->hash_next);
    q->hash_next = sp->hash_next;
  }
  if (!sp->role.direct()) {
    --gi.indirect;
    account_shadowed(sp->gfn, -1);
    if (!gi.indirect) gi.unsync = false;
  }
  if (!gi.head && !gi.external) gfns_.erase(sp->gfn);
  // Out of the active list.
  if (sp->prev) pool_.header_at(sp->prev)->next = sp->next; else lru_head_ = sp->next;
  if (sp->next) pool_.header_at(sp->next)->prev = sp->prev; else lru_tail_ = sp->prev;
  --active_pages_;
  sp->flags = 0;
  sp->root_count = 0;
  pool_.release(sp);
  ++n_.mmu_shadow_zapped;
}

void ShadowMmu::zap_all() {
  while (lru_head_) zap_page(pool_.header_at(lru_head_));
  hints_.clear();  // no SPTE is left: every hint is stale
  unsync_gfns_.clear();
}

void ShadowMmu::make_pages_available() {
  const uint64_t budget = options_.max_mmu_memory;
  if (!options_.max_mmu_pages && !budget) return;
  // Room for one more fault: FAULT_PAGES pages and the small metadata that comes with them.
  auto over_budget = [&] { return budget && metadata_bytes() + FAULT_BYTES > budget; };
  auto over = [&] { return (options_.max_mmu_pages && active_pages_ + FAULT_PAGES > options_.max_mmu_pages) || over_budget(); };
  // KVM's n_max_mmu_pages: the oldest pages go first; roots in use stay.
  for (uint32_t i = lru_tail_; i && over();) {
    ShadowPage* sp = pool_.header_at(i);
    i = sp->prev;
    if (sp->root_count) continue;
    zap_page(sp);
    ++n_.mmu_recycled;
  }
  if (!over_budget()) return;
  // Still over the byte budget with only roots in use: everything goes, roots and reverse-map
  // hints included (each vCPU loads its root again at its next access).
  n_.mmu_recycled += active_pages_;
  zap_all();
  if (over_budget())
    throw guest::HostMemoryError("--max-mmu-memory=" + std::to_string(budget) + " cannot hold one more fault (" +
                                 std::to_string(metadata_bytes()) + " bytes held with no shadow page left)");
}

void ShadowMmu::top_up_metadata() {
  memory_.top_up();
  // Rehashing allocates a whole bucket array: done here, not in the middle of a change.
  gfns_.reserve(gfns_.size() + FAULT_PAGES + 1);
  lpage_disallow_.reserve(lpage_disallow_.size() + 2 * (FAULT_PAGES + 1));
  extra_parents_.reserve(extra_parents_.size() + FAULT_PAGES);
  huge_rmap_.reserve(huge_rmap_.size() + 1);
  unsync_gfns_.reserve(unsync_gfns_.size() + 1);
}

}  // namespace vmmu::mmu
