// The shadow engine's invariants (audit) and its counters and memory accounting (report).
#include <unordered_set>

#include <fmt/format.h>

#include "guest/guest_memory.hpp"
#include "mmu/kvm_layout.hpp"
#include "mmu/shadow_internal.hpp"

namespace vmmu::mmu {

using namespace shadow;

namespace {
constexpr const char* LEVEL_NAMES[] = {"", "pages_4k", "pages_2m", "pages_1g"};

// What a guest entry (at the level of the shadow page that shadows it) points at: the first
// gfn of a leaf's frames, or of the table below. `half` picks the 2 MiB half of a 4 MiB page.
struct GuestTarget {
  bool present = false, leaf = false;
  uint64_t gfn = 0;
};
GuestTarget guest_target(uint64_t e, unsigned level, bool gpte4, const Role& role, unsigned maxphyaddr, unsigned half) {
  GuestTarget t;
  t.present = e & x86::pte::P;
  const uint64_t frame_mask = gpte4 ? 0xffff'f000ull : (x86::pte::ADDR_MASK_52 & ((1ull << maxphyaddr) - 1));
  t.leaf = level == 1 || ((e & x86::pte::PS) && (!gpte4 || role.cr4_pse()));
  if (!t.leaf || level == 1) {
    t.gfn = (e & frame_mask) >> x86::PAGE_SHIFT;
    return t;
  }
  if (gpte4) {  // a 4 MiB page: bits 31:22, and PSE-36's bits (M'-1):32 from bits (M'-20):13
    const unsigned m36 = maxphyaddr < 40 ? maxphyaddr : 40;
    const uint64_t high = (e >> 13) & ((1ull << (m36 - 32)) - 1);
    t.gfn = (((e & 0xffc0'0000ull) | (high << 32)) >> x86::PAGE_SHIFT) + half * 512;
    return t;
  }
  t.gfn = (e & frame_mask & ~(level_bytes(level) - 1)) >> x86::PAGE_SHIFT;
  return t;
}
}  // namespace

void ShadowMmu::audit(std::vector<std::string>& v) const {
  std::lock_guard g(mutex_);
  auto* self = const_cast<ShadowMmu*>(this);
  const unsigned maxphyaddr = vcpus_.empty() ? 48 : vcpus_.front()->paging.maxphyaddr();
  uint64_t pages = 0;
  int64_t leaves[4] = {};
  std::unordered_map<uint64_t, uint32_t> indirect_by_gfn;
  for (uint32_t idx = lru_head_; idx; idx = pool_.header_at(idx)->next) {
    ++pages;
    const ShadowPage* sp = pool_.header_at(idx);
    const Role role = sp->role;
    const unsigned level = role.level();
    const uint64_t* table = pool_.table(sp);
    auto where = [&] { return fmt::format("shadow: page {} (gfn 0x{:x} level {}{})", idx, sp->gfn, level, role.direct() ? " direct" : ""); };
    if (!alive(sp)) v.push_back(where() + ": in the active list but not alive");
    const GfnInfo* gi = self->gfn_info(sp->gfn);
    bool hashed = false;
    for (uint32_t i = gi ? gi->head : 0; i; i = pool_.header_at(i)->hash_next) hashed |= i == idx;
    if (!hashed) v.push_back(where() + ": not in the hash chain of its gfn");
    if (role.direct() && (sp->gfn & (frames_per_page(level) - 1))) v.push_back(where() + ": direct page's base gfn is not aligned to its span");
    if (!role.direct()) ++indirect_by_gfn[sp->gfn];
    if (gi && gi->unsync && !role.direct() && level != 1) v.push_back(where() + ": out of sync above level 1");
    for_each_parent(sp, [&](const uint64_t* p) {
      if (!spte::is_present(*p) || spte::table_of(*p) != table) v.push_back(where() + ": a parent SPTE does not point at it");
    });
    const bool synced = !role.direct() && gi && !gi->unsync;
    for (unsigned i = 0; i < SPTE_PER_PAGE; ++i) {
      const uint64_t s = table[i];
      if (!s) continue;
      if (!spte::is_present(s)) {
        v.push_back(fmt::format("{}: entry {} is not present but not zero (0x{:x})", where(), i, s));
        continue;
      }
      // The guest entry this one shadows (indirect pages), read now.
      GuestTarget guest;
      uint8_t guest_acc = 0;
      unsigned guest_pkey = 0;
      if (synced) {
        const uint64_t gpa = guest_entry_gpa(sp, i);
        if (const guest::Memslot* ts = slots_.find(gpa >> x86::PAGE_SHIFT)) {
          uint8_t* at = ts->host_page(gpa >> x86::PAGE_SHIFT) + (gpa & x86::PAGE_OFFSET_MASK);
          const uint64_t e = role.has_4byte_gpte() ? guest::GuestMemory::atomic_load<uint32_t>(at) : guest::GuestMemory::atomic_load<uint64_t>(at);
          guest = guest_target(e, level, role.has_4byte_gpte(), role, maxphyaddr, i & 1);
          guest_acc = static_cast<uint8_t>(role.access() & entry_rights(e, role.efer_nx()));
          guest_pkey = role.has_4byte_gpte() ? 0 : static_cast<unsigned>((e & x86::pte::PKEY_MASK) >> x86::pte::PKEY_SHIFT);
          if (!(e & x86::pte::A) && !ts->readonly()) v.push_back(fmt::format("{}: entry {} is shadowed but the guest entry is not accessed", where(), i));
        }
        if (!guest.present) v.push_back(fmt::format("{}: entry {} is shadowed but the guest entry is not present", where(), i));
      }
      if (!spte::is_leaf(s, level)) {
        const ShadowPage* child = pool_.header(spte::table_of(s));
        if (!pool_.owns(spte::table_of(s)) || !alive(child)) {
          v.push_back(fmt::format("{}: entry {} points at a page that is not alive", where(), i));
          continue;
        }
        bool parent_known = false;
        for_each_parent(child, [&](const uint64_t* p) { parent_known |= p == &table[i]; });
        if (!parent_known) v.push_back(fmt::format("{}: entry {}'s child does not list it as a parent", where(), i));
        if (child->role.level() != level - 1) v.push_back(fmt::format("{}: entry {}'s child is at level {}", where(), i, child->role.level()));
        if (role.direct() && (!child->role.direct() || child->gfn != sp->gfn_at(i)))
          v.push_back(fmt::format("{}: entry {}'s child is not the direct page of gfn 0x{:x}", where(), i, sp->gfn_at(i)));
        if (synced && guest.present && child->gfn != guest.gfn)
          v.push_back(fmt::format("{}: entry {} links gfn 0x{:x}, the guest entry points at 0x{:x}", where(), i, child->gfn, guest.gfn));
        if (synced && guest.present && (child->role.direct() != guest.leaf))
          v.push_back(fmt::format("{}: entry {}'s child is {} but the guest entry is {}", where(), i, child->role.direct() ? "direct" : "indirect",
                                  guest.leaf ? "a huge leaf" : "a table"));
        continue;
      }
      ++leaves[level];
      uint64_t gfn = 0;
      guest::Memslot* slot = nullptr;
      if (!gfn_of_leaf(s, gfn, &slot)) {
        v.push_back(fmt::format("{}: entry {} maps host frame 0x{:x}, which no memslot holds", where(), i, spte::frame(s)));
        continue;
      }
      if (role.direct() && gfn != sp->gfn_at(i))
        v.push_back(fmt::format("{}: entry {} maps gfn 0x{:x}, its computed gfn is 0x{:x}", where(), i, gfn, sp->gfn_at(i)));
      if (synced && guest.present && (gfn != guest.gfn || !guest.leaf))
        v.push_back(fmt::format("{}: entry {} maps gfn 0x{:x}, the guest entry maps 0x{:x}", where(), i, gfn, guest.gfn));
      // No more rights than the guest's entries give (an SPTE in an out-of-sync page may be
      // stale until its sync point), nor than the host's.
      if (synced && guest.present && ((spte_rights(s) & ~guest_acc) || spte_pkey(s) != guest_pkey))
        v.push_back(fmt::format("{}: entry {} grants rights 0x{:x}/key {}, the guest 0x{:x}/key {}", where(), i, spte_rights(s), spte_pkey(s), guest_acc, guest_pkey));
      if (role.direct() && (spte_rights(s) & ~role.access())) v.push_back(fmt::format("{}: entry {} grants more than its role", where(), i));
      if (level > 1) {
        if (self->max_level(*slot, gfn, level) < level)
          v.push_back(fmt::format("{}: entry {} is a level-{} mapping of gfn 0x{:x} where a smaller one is required", where(), i, level, gfn));
        auto it = huge_rmap_.find(huge_key(level, gfn));
        if (it == huge_rmap_.end() || std::find(it->second.begin(), it->second.end(), &table[i]) == it->second.end())
          v.push_back(fmt::format("{}: huge entry {} (gfn 0x{:x}) is not in the reverse map", where(), i, gfn));
      } else {
        const RmapHints* h = self->hints(*slot, false);
        const uint16_t hint = h ? h->get(gfn - slot->base_gfn()) : RmapHints::NONE;
        if (hint != RmapHints::ANY && hint != RmapHints::tag(idx))
          v.push_back(fmt::format("{}: entry {} (gfn 0x{:x}) is not in the reverse map (hint {})", where(), i, gfn, hint));
      }
      if (s & spte::RW) {
        if (slot->readonly()) v.push_back(fmt::format("{}: entry {} is writable in read-only memslot {}", where(), i, slot->id()));
        for (uint64_t k = 0; k < frames_per_entry(level); ++k) {
          if (write_tracked(self->gfn_info(gfn + k))) {
            v.push_back(fmt::format("{}: entry {} is writable but gfn 0x{:x} is write-tracked", where(), i, gfn + k));
            break;
          }
        }
        if (slot->dirty_logging() && !slot->dirty_bitmap().test(gfn - slot->base_gfn()))
          v.push_back(fmt::format("{}: entry {} is writable in logged memslot {} but the log does not show gfn 0x{:x} dirty", where(), i, slot->id(), gfn));
      }
    }
  }
  // Totals and the side tables.
  if (pages != active_pages_) v.push_back(fmt::format("shadow: {} pages in the active list, {} counted", pages, active_pages_));
  if (pages + cache_.size() != pool_.pages_in_use())
    v.push_back(fmt::format("shadow: {} pages active and {} cached, but {} in use", pages, cache_.size(), pool_.pages_in_use()));
  for (unsigned l = 1; l <= 3; ++l) {
    if (leaves[l] != leaves_[l]) v.push_back(fmt::format("shadow: {} counts {} but the tables hold {}", LEVEL_NAMES[l], leaves_[l], leaves[l]));
  }
  for (const auto& [gfn, gi] : gfns_) {
    const auto it = indirect_by_gfn.find(gfn);
    const uint32_t n = it == indirect_by_gfn.end() ? 0 : it->second;
    if (gi.indirect != n) v.push_back(fmt::format("shadow: gfn 0x{:x} counts {} indirect pages, the hash holds {}", gfn, gi.indirect, n));
    if (gi.unsync && std::find(unsync_gfns_.begin(), unsync_gfns_.end(), gfn) == unsync_gfns_.end())
      v.push_back(fmt::format("shadow: gfn 0x{:x} is out of sync but not listed for the next sync", gfn));
  }
  for (const auto& [key, ptrs] : huge_rmap_) {
    const unsigned level = static_cast<unsigned>(key >> 56);
    for (const uint64_t* p : ptrs) {
      uint64_t gfn = 0;
      if (!pool_.owns(p) || !spte::is_present(*p) || !spte::is_leaf(*p, level) || !gfn_of_leaf(*p, gfn) || huge_key(level, gfn) != key)
        v.push_back(fmt::format("shadow: a huge reverse-map entry (level {}) points at no such leaf", level));
    }
  }
  for (const VcpuContext* vc : vcpus_) {
    const auto& vs = static_cast<const VcpuState&>(*vc->mmu_state);
    if (vs.root && (!alive(pool_.header_at(vs.root)) || !pool_.header_at(vs.root)->root_count))
      v.push_back(fmt::format("shadow: vcpu {}'s root is not a live, counted page", vc->id));
  }
}

// Exact, and cheap enough for every fault: the pages with their headers, every block the hash
// tables, lists and reverse-map hints hold from the metadata memory, and the filter.
uint64_t ShadowMmu::metadata_bytes() const {
  return active_pages_ * PagePool::PAGE_BYTES + memory_.bytes_in_use() + shadowed_filter_.size() * sizeof(uint32_t);
}

void ShadowMmu::report(nlohmann::ordered_json& stats, nlohmann::ordered_json& memory) const {
  std::lock_guard g(mutex_);
  stats["walks"] = n_.walks;
  stats["walk_refs"] = n_.walk_refs;
  stats["pf_taken"] = n_.pf_taken;
  stats["pf_fixed"] = n_.pf_fixed;
  stats["pf_guest"] = n_.pf_guest;
  stats["pf_emulate"] = n_.pf_emulate;
  stats["pf_mmio"] = n_.pf_mmio;
  stats["invlpg"] = n_.invlpg;
  stats["mmu_cache_miss"] = n_.mmu_cache_miss;
  stats["mmu_shadow_zapped"] = n_.mmu_shadow_zapped;
  stats["mmu_pte_write"] = n_.mmu_pte_write;
  stats["mmu_pde_zapped"] = n_.mmu_pde_zapped;
  stats["mmu_flooded"] = n_.mmu_flooded;
  stats["mmu_recycled"] = n_.mmu_recycled;
  stats["mmu_unsync"] = n_.mmu_unsync;
  stats["mmu_sync"] = n_.mmu_sync;
  stats["remote_tlb_flush"] = n_.remote_tlb_flush;
  stats["root_reuse"] = n_.root_reuse;
  stats["rmap_scans"] = n_.rmap_scans;
  for (unsigned l = 1; l <= 3; ++l) stats[LEVEL_NAMES[l]] = leaves_[l];
  uint64_t indirect = 0, unsync = 0;
  for (uint32_t i = lru_head_; i; i = pool_.header_at(i)->next) {
    const ShadowPage* sp = pool_.header_at(i);
    if (sp->role.direct()) continue;
    ++indirect;
    const auto it = gfns_.find(sp->gfn);
    if (it != gfns_.end() && it->second.unsync) ++unsync;
  }
  // Aliased gfns (mapped by more than one SPTE): what KVM would hold a pte_list_desc for.
  std::unordered_map<uint64_t, uint32_t> mappings;
  for (uint32_t i = lru_head_; i; i = pool_.header_at(i)->next) {
    const uint64_t* t = pool_.table(pool_.header_at(i));
    for (unsigned j = 0; j < SPTE_PER_PAGE; ++j) {
      if (spte::is_present(t[j]) && pool_.header_at(i)->role.level() == 1) ++mappings[t[j] & spte::FRAME_MASK];
    }
  }
  uint64_t aliased = 0;
  for (const auto& [frame, n] : mappings) aliased += n > 1;
  stats["shadow_pages"] = active_pages_;
  stats["indirect_pages"] = indirect;
  stats["indirect_pages_array_free"] = indirect;  // every one: gfns come from the host frames
  stats["unsync_pages"] = unsync;
  stats["aliased_gfns"] = aliased;

  const uint64_t tables = active_pages_ * 4096, headers = active_pages_ * sizeof(ShadowPage);
  uint64_t rmap = 0;
  for (const auto& [slot, h] : hints_) rmap += h->bytes();
  // Node-based maps: a node (key, value, next pointer, cached hash) and a bucket pointer each.
  auto map_bytes = [](const auto& m, uint64_t value_bytes) {
    return m.size() * (value_bytes + 8 + 2 * sizeof(void*)) + m.bucket_count() * sizeof(void*);
  };
  uint64_t huge_rmap = map_bytes(huge_rmap_, sizeof(std::vector<uint64_t*>));
  for (const auto& [key, ptrs] : huge_rmap_) huge_rmap += ptrs.capacity() * sizeof(uint64_t*);
  uint64_t parents = map_bytes(extra_parents_, sizeof(std::vector<uint64_t*>));
  for (const auto& [key, ptrs] : extra_parents_) parents += ptrs.capacity() * sizeof(uint64_t*);
  const uint64_t hash = map_bytes(gfns_, sizeof(GfnInfo)) + shadowed_filter_.size() * sizeof(uint32_t);
  const uint64_t lpage = map_bytes(lpage_disallow_, sizeof(uint32_t));
  memory["shadow_tables"] = tables;
  memory["shadow_headers"] = headers;
  memory["translations"] = 0;  // no page keeps a gfn array
  memory["rmap"] = rmap;
  uint64_t regions = 0;
  for (const auto& [slot, h] : hints_) regions += h->regions();
  memory["rmap_regions"] = regions;  // 2 MiB regions of guest memory with a hint array (made on first mapping)
  memory["rmap_aliases"] = 0;  // an alias costs no bytes (its hint says "any"), only lookups that scan
  memory["rmap_huge"] = huge_rmap;
  memory["parent_lists"] = parents;
  memory["page_hash"] = hash;
  memory["lpage_info"] = lpage;
  memory["mapping_total"] = tables + headers + rmap + huge_rmap + parents + hash + lpage;
  memory["mmu_memory"] = metadata_bytes();
  memory["page_pool_free"] = (pool_.pages_free() + cache_.size()) * 4096;
  const KvmLayoutModel kvm = kvm_layouts(slots_, active_pages_, indirect, aliased, /*tdp=*/false);
  memory["kvm_pre2010"] = kvm.pre2010;
  memory["kvm_2010"] = kvm.after2010;
  memory["kvm_today"] = kvm.today;
}

}  // namespace vmmu::mmu
