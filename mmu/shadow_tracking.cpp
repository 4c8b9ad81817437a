// The shadow engine's coherence with the guest and the host: write tracking of guest tables,
// emulated writes, out-of-sync pages and their sync points, the reverse map, and the host's
// operations (memslots, dirty log, invalidation, aging, the VMM's own writes).
#include <algorithm>

#include "guest/guest_memory.hpp"
#include "mmu/shadow_internal.hpp"

namespace vmmu::mmu {

using namespace shadow;

// ---------------------------------------------------------------------------------------------
// The reverse map

bool ShadowMmu::gfn_of_leaf(uint64_t s, uint64_t& gfn, guest::Memslot** slot) const {
  guest::Memslot* found = slots_.slot_of_frame(spte::host_address(s), gfn);
  if (slot) *slot = found;
  return found != nullptr;
}

RmapHints* ShadowMmu::hints(const guest::Memslot& slot, bool make) {
  for (auto& [s, h] : hints_) {
    if (s == &slot) return h.get();
  }
  if (!make) return nullptr;
  hints_.emplace_back(&slot, std::make_unique<RmapHints>(slot.npages(), memory_));
  return hints_.back().second.get();
}

// ---------------------------------------------------------------------------------------------
// Write tracking

void ShadowMmu::account_shadowed(uint64_t gfn, int delta) {
  shadowed_filter_[filter_slot(gfn)] += static_cast<uint32_t>(delta);
  for (unsigned level = 2; level <= 3; ++level) {
    const uint64_t key = huge_key(level, gfn);
    uint32_t& n = lpage_disallow_[key];
    n = static_cast<uint32_t>(static_cast<int64_t>(n) + delta);
    if (!n) lpage_disallow_.erase(key);
  }
}

bool ShadowMmu::lpage_disallowed(unsigned level, uint64_t first_gfn) const {
  return lpage_disallow_.count(huge_key(level, first_gfn)) != 0;
}

void ShadowMmu::write_protect(uint64_t gfn) {
  bool changed = false;
  for_each_spte_of(gfn, [&](uint64_t* p, unsigned level) {
    if (level > 1) {
      drop_leaf(p, level);  // no huge mapping over a shadowed table (it refaults smaller)
      changed = true;
    } else if (*p & spte::RW) {
      *p &= ~spte::RW;
      changed = true;
    }
  });
  if (changed) {
    ++n_.remote_tlb_flush;
    note_tlb_flush();
  }
}

void ShadowMmu::set_write_notifier(WriteTrackNotifier* notifier) {
  std::lock_guard g(mutex_);
  notifier_ = notifier;
}

void ShadowMmu::track_writes(uint64_t gfn, bool on) {
  std::lock_guard g(mutex_);
  if (on) {
    top_up_metadata();
    const bool was_tracked = write_tracked(gfn_info(gfn));
    // Out-of-sync pages of the frame cannot stay so: they are dropped (refaulted in sync).
    if (GfnInfo* gi = gfn_info(gfn); gi && gi->unsync) {
      for_each_page_of(gfn, [&](ShadowPage* sp) {
        if (!sp->role.direct()) zap_page(sp);
      });
    }
    ++gfns_[gfn].external;
    account_shadowed(gfn, +1);
    if (!was_tracked) write_protect(gfn);
    return;
  }
  GfnInfo* gi = gfn_info(gfn);
  if (!gi || !gi->external) throw guest::UsageError("track_writes: the gfn is not tracked");
  --gi->external;
  account_shadowed(gfn, -1);
  if (!gi->head && !gi->external) gfns_.erase(gfn);
}

// Where the guest entry that entry `index` of an indirect page shadows lies.
uint64_t ShadowMmu::guest_entry_gpa(const ShadowPage* sp, unsigned index) const {
  const uint64_t base = sp->gfn << x86::PAGE_SHIFT;
  if (!sp->role.has_4byte_gpte()) return base + uint64_t{index} * 8;
  // A 1024-entry guest table: a level-1 page holds half of it (512 entries), a level-2 page a
  // quarter (256 entries of 4 MiB, two 2 MiB shadow entries each).
  const unsigned guest_index = sp->role.level() == 1 ? sp->role.quadrant() * 512 + index : sp->role.quadrant() * 256 + index / 2;
  return base + uint64_t{guest_index} * 4;
}

void ShadowMmu::zap_written_entries(uint64_t gpa, unsigned width, bool guest_write) {
  const uint64_t gfn = gpa >> x86::PAGE_SHIFT;
  const unsigned first_byte = static_cast<unsigned>(gpa & x86::PAGE_OFFSET_MASK);
  const unsigned last_byte = first_byte + width - 1;
  ++n_.mmu_pte_write;
  for_each_page_of(gfn, [&](ShadowPage* sp) {
    if (sp->role.direct()) return;
    // Every shadow entry whose guest entry the bytes touch (a misaligned or partial write
    // included; a 4-byte entry may be two shadow entries, or in another quadrant's page).
    uint64_t* table = pool_.table(sp);
    const unsigned level = sp->role.level();
    const unsigned size = sp->role.has_4byte_gpte() ? 4 : 8;
    for (unsigned e = first_byte / size; e <= last_byte / size; ++e) {
      if (size == 8) {
        zap_entry(&table[e], level);
      } else if (level == 1) {
        if (e / 512 == sp->role.quadrant()) zap_entry(&table[e % 512], level);
      } else if (e / 256 == sp->role.quadrant()) {
        zap_entry(&table[(e % 256) * 2], level);
        zap_entry(&table[(e % 256) * 2 + 1], level);
      }
    }
    // KVM's write-flooding rule: a table written again and again with no fault going through
    // it in between is probably not a table any more; leaf tables go out of sync instead.
    if (guest_write && (level > 1 || !options_.unsync) && ++sp->write_flooding >= 3) {
      zap_page(sp);
      ++n_.mmu_flooded;
    }
  });
}

AccessResult ShadowMmu::emulate_write(VcpuContext& vcpu, guest::Memslot& slot, uint64_t gpa, unsigned width, uint64_t value) {
  ++n_.pf_emulate;
  const uint64_t gfn = gpa >> x86::PAGE_SHIFT;
  vcpu.mark_dirty(slot, gfn);
  slot.mark_accessed(gfn);
  guest::GuestMemory::store(slot.host_page(gfn) + (gpa & x86::PAGE_OFFSET_MASK), width, value);
  const GfnInfo* gi = gfn_info(gfn);
  const bool external = gi && gi->external;
  if (gi && gi->indirect) zap_written_entries(gpa, width, true);
  if (external && notifier_) notifier_->track_write(vcpu.id, gpa, width, value);
  AccessResult r;
  r.gpa = gpa;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Unsync: a written leaf table is left writable and brought up to date at the sync points.

bool ShadowMmu::can_unsync(uint64_t gfn) {
  const GfnInfo* gi = gfn_info(gfn);
  if (!options_.unsync || !gi || gi->external || gi->unsync) return false;
  for (uint32_t i = gi->head; i; i = pool_.header_at(i)->hash_next) {
    const ShadowPage* sp = pool_.header_at(i);
    if (!sp->role.direct() && sp->role.level() != 1) return false;  // KVM's rule: leaf tables only
  }
  return true;
}

void ShadowMmu::unsync_gfn(uint64_t gfn) {
  GfnInfo& gi = gfns_.at(gfn);
  gi.unsync = true;
  unsync_gfns_.push_back(gfn);
  n_.mmu_unsync += gi.indirect;
}

void ShadowMmu::sync_all(VcpuContext& vcpu) {
  std::pmr::vector<uint64_t> gfns(&memory_);
  gfns.swap(unsync_gfns_);
  for (uint64_t gfn : gfns) resync_gfn(vcpu, gfn);
}

void ShadowMmu::resync_gfn(VcpuContext& vcpu, uint64_t gfn) {
  if (const GfnInfo* gi = gfn_info(gfn); !gi || !gi->unsync) return;
  std::erase(unsync_gfns_, gfn);
  // Pages of this vCPU's context are compared with the guest entry by entry; pages of another
  // context are dropped (their entries' meaning depends on registers this vCPU does not have).
  const uint32_t context = context_role(vcpu).context_bits();
  for_each_page_of(gfn, [&](ShadowPage* sp) {
    if (sp->role.direct()) return;
    if (sp->role.context_bits() == context) {
      sync_page(vcpu, sp);
    } else {
      zap_page(sp);
    }
  });
  ++n_.mmu_sync;
  GfnInfo* gi = gfn_info(gfn);
  if (!gi) return;
  gi->unsync = false;
  if (write_tracked(gi)) write_protect(gfn);
}

void ShadowMmu::sync_page(VcpuContext& vcpu, ShadowPage* sp) {
  const x86::PagingContext& c = vcpu.paging;
  uint64_t* table = pool_.table(sp);
  for (unsigned i = 0; i < SPTE_PER_PAGE; ++i) {
    const uint64_t s = table[i];
    if (!spte::is_present(s)) continue;
    // The SPTE stays only if the guest entry still gives exactly it: present, accessed (unless
    // it lies in read-only memory, where walks set no A bit), no reserved bits, the same frame, the same rights and key, and dirty if the SPTE is writable.
    const uint64_t gpa = guest_entry_gpa(sp, i);
    const guest::Memslot* ts = slots_.find(gpa >> x86::PAGE_SHIFT);
    bool keep = ts != nullptr;
    if (keep) {
      uint8_t* where = ts->host_page(gpa >> x86::PAGE_SHIFT) + (gpa & x86::PAGE_OFFSET_MASK);
      const uint64_t e = sp->role.has_4byte_gpte() ? guest::GuestMemory::atomic_load<uint32_t>(where)
                                                   : guest::GuestMemory::atomic_load<uint64_t>(where);
      const uint64_t gfn = (e & c.frame_mask()) >> x86::PAGE_SHIFT;
      const guest::Memslot* slot = slots_.find(gfn);
      const unsigned pkey = sp->role.has_4byte_gpte() ? 0 : static_cast<unsigned>((e & x86::pte::PKEY_MASK) >> x86::pte::PKEY_SHIFT);
      const uint8_t acc = static_cast<uint8_t>(sp->role.access() & entry_rights(e, c.nxe()));
      keep = (e & x86::pte::P) && ((e & x86::pte::A) || ts->readonly()) && !(e & c.reserved_bits(1, false)) && slot &&
             spte::host_address(s) == slot->host_page(gfn) && spte_rights(s) == acc && spte_pkey(s) == pkey &&
             (!(s & spte::RW) || (e & x86::pte::D));
    }
    if (!keep) drop_leaf(&table[i], 1);
  }
}

// ---------------------------------------------------------------------------------------------
// The host's operations

void ShadowMmu::memslot_leaving(guest::Memslot&) {
  std::lock_guard g(mutex_);
  // Its frames go, and so may guest tables in it: every shadow page goes (KVM zaps all too).
  zap_all();
}

void ShadowMmu::dirty_logging_changed(guest::Memslot& slot) {
  std::lock_guard g(mutex_);
  if (!slot.dirty_logging()) return;  // mappings grow back to huge as the guest faults again
  for_each_spte_in(slot, slot.base_gfn(), slot.npages(), [&](uint64_t* p, unsigned level, uint64_t) {
    if (level > 1) {
      drop_leaf(p, level);  // a logged slot is mapped at 4K
    } else {
      *p &= ~spte::RW;
    }
  });
  ++n_.remote_tlb_flush;
  note_tlb_flush();
}

void ShadowMmu::dirty_log_cleared(guest::Memslot& slot, const std::vector<DirtyChunk>& chunks) {
  std::lock_guard g(mutex_);
  uint64_t count = 0;
  for (const DirtyChunk& c : chunks) count += static_cast<uint64_t>(__builtin_popcountll(c.mask));
  auto protect = [](uint64_t* p, unsigned level) {
    if (level == 1) *p &= ~spte::RW;
  };
  if (count <= 64) {
    for (const DirtyChunk& c : chunks) {
      for (uint64_t m = c.mask; m; m &= m - 1)
        for_each_spte_of(slot.base_gfn() + c.first + static_cast<uint64_t>(__builtin_ctzll(m)), protect);
    }
  } else {
    // One pass over every leaf; chunks come in ascending order of `first`.
    for_each_spte_in(slot, slot.base_gfn(), slot.npages(), [&](uint64_t* p, unsigned level, uint64_t gfn) {
      const uint64_t page = gfn - slot.base_gfn();
      auto it = std::lower_bound(chunks.begin(), chunks.end(), page & ~63ull,
                                 [](const DirtyChunk& c, uint64_t first) { return c.first < first; });
      if (it != chunks.end() && it->first == (page & ~63ull) && ((it->mask >> (page & 63)) & 1)) protect(p, level);
    });
  }
  ++n_.remote_tlb_flush;
  note_tlb_flush();
}

void ShadowMmu::invalidate_start(uint64_t gfn, uint64_t npages) {
  std::lock_guard g(mutex_);
  guest::Memslot* slot = slots_.find(gfn);
  if (!slot) return;
  for_each_spte_in(*slot, gfn, npages, [&](uint64_t* p, unsigned level, uint64_t) { drop_leaf(p, level); });
  ++n_.remote_tlb_flush;
  note_tlb_flush();
}

void ShadowMmu::harvest_accessed(guest::Memslot& slot, uint64_t gfn, uint64_t npages) {
  std::lock_guard g(mutex_);
  for_each_spte_in(slot, gfn, npages, [&](uint64_t* p, unsigned level, uint64_t first) {
    if (!(*p & spte::A)) return;
    // A huge leaf's pages were recorded one by one as they were used; clear its bit only when
    // the whole leaf is in the range.
    if (level > 1) {
      if (first >= gfn && first + frames_per_entry(level) <= gfn + npages) *p &= ~spte::A;
      return;
    }
    *p &= ~spte::A;
    slot.mark_accessed(first);
  });
}

void ShadowMmu::vmm_write(uint64_t gpa, unsigned width) {
  std::lock_guard g(mutex_);
  // Not a guest write (no dirty log, no flood count), but every shadow of the entries it
  // touched goes, synced or not, as for an emulated write.
  if (const GfnInfo* gi = gfn_info(gpa >> x86::PAGE_SHIFT); gi && gi->indirect) zap_written_entries(gpa, width, false);
}

}  // namespace vmmu::mmu
