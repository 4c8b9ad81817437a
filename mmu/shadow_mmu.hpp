#pragma once
// --mmu=shadow: shadow paging (KVM's shadow MMU, Documentation/virt/kvm/x86/mmu.rst). The
// simulated hardware walks shadow tables indexed by gva; each shadow page shadows one guest
// table (indirect, keyed by its gfn and a Role) or maps a linear gfn range under a guest huge
// page or with paging off (direct). A miss walks the guest's tables and builds the chain.
// Guest frames holding shadowed tables are write-protected; writes to them are emulated and
// update the shadow, or, for leaf tables, let the page go out of sync until the next sync point.
//
// Unlike KVM, leaves carry the guest's rights (U, X and a software W bit, plus the protection
// key) and the simulated hardware checks them in the guest's own context (CR0.WP, SMEP, SMAP,
// NXE, PKE, CPL, AC, PKRU); RW is the host's write permission, which binds every write. So the
// CR0.WP=0 trick (supervisor-writable, user-inaccessible SPTEs) is not needed, and protection
// keys work under shadow paging. Pages still keep the context in their role, as KVM's do.
//
// One mutex serializes the engine (KVM's shadow MMU takes mmu_lock for write on faults).
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "guest/walker.hpp"
#include "mmu/metadata_memory.hpp"
#include "mmu/mmu.hpp"
#include "mmu/page_pool.hpp"
#include "mmu/rmap_hints.hpp"
#include "mmu/shadow_page.hpp"
#include "mmu/write_track.hpp"

namespace vmmu::mmu {

struct ShadowOptions {
  uint64_t max_mmu_pages = 0;  // KVM's n_max_mmu_pages (0: no limit; else at least 64)
  // Bytes of metadata at most (the "mmu_memory" figure: pages, hash, rmap, parents...), least
  // recently used pages recycled first (0: no limit; else at least MIN_MAX_MMU_MEMORY).
  uint64_t max_mmu_memory = 0;
  bool unsync = true;          // written leaf tables go out of sync instead of being emulated
};
inline constexpr uint64_t MIN_MAX_MMU_PAGES = 64;

class ShadowMmu final : public Mmu {
 public:
  ShadowMmu(guest::Memslots& slots, ShadowOptions options = {});
  ~ShadowMmu() override;

  const char* name() const override { return "shadow"; }
  void vcpu_created(VcpuContext& vcpu) override;
  AccessResult access(VcpuContext& vcpu, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) override;

  void reset_context(VcpuContext& vcpu) override;
  void new_cr3(VcpuContext& vcpu) override;
  void invlpg(VcpuContext& vcpu, uint64_t gva) override;
  void flush(VcpuContext& vcpu) override;

  void memslot_leaving(guest::Memslot& slot) override;
  void dirty_logging_changed(guest::Memslot& slot) override;
  void dirty_log_cleared(guest::Memslot& slot, const std::vector<DirtyChunk>& chunks) override;
  void invalidate_start(uint64_t gfn, uint64_t npages) override;
  void harvest_accessed(guest::Memslot& slot, uint64_t gfn, uint64_t npages) override;
  void vmm_write(uint64_t gpa, unsigned width) override;

  void set_write_notifier(WriteTrackNotifier* notifier) override;
  void track_writes(uint64_t gfn, bool on) override;

  void audit(std::vector<std::string>& violations) const override;
  void report(nlohmann::ordered_json& stats, nlohmann::ordered_json& memory) const override;
  HardwareMapping hardware_mapping(const VcpuContext& vcpu, uint64_t gva) const override;

  uint64_t shadow_pages() const { return active_pages_; }
  // Every shadow page goes (KVM's kvm_mmu_zap_all); the guest sees no difference.
  void zap_all_pages() {
    std::lock_guard g(mutex_);
    zap_all();
  }
  // Has the host back `n` table pages ahead of the faults that will need them.
  void prefault_pages(uint64_t n) { pool_.prefault(n); }

 private:
  struct VcpuState;
  // Per gfn that a shadow page is keyed by (a guest table, or a direct page's base).
  struct GfnInfo {
    uint32_t head = 0;      // first page of the chain (pool index)
    uint32_t indirect = 0;  // indirect pages shadowing this gfn as a guest table
    uint32_t external = 0;  // track_writes() references
    bool unsync = false;    // its (level-1) pages are out of sync: the frame is writable
  };
  struct Counters {
    uint64_t pf_taken = 0, pf_fixed = 0, pf_guest = 0, pf_emulate = 0, pf_mmio = 0, walks = 0, walk_refs = 0;
    uint64_t mmu_cache_miss = 0, mmu_shadow_zapped = 0, mmu_pte_write = 0, mmu_pde_zapped = 0, mmu_flooded = 0;
    uint64_t mmu_recycled = 0, mmu_unsync = 0, mmu_sync = 0, invlpg = 0, remote_tlb_flush = 0, root_reuse = 0;
    uint64_t rmap_scans = 0;
  };
  using Walk = guest::GuestWalk;

  static VcpuState& state(VcpuContext& vcpu);

  // Roots and the shadow walk the simulated hardware does.
  void load_root(VcpuContext& vcpu, VcpuState& vs);
  void drop_current_root(VcpuState& vs, bool keep_as_previous);
  void clear_pae_root(VcpuState& vs);
  Role context_role(const VcpuContext& vcpu) const;
  uint64_t* root_table(VcpuState& vs) const;

  AccessResult perform(VcpuContext& vcpu, guest::Memslot& slot, uint64_t* p, uint64_t spte, unsigned level, uint64_t first_gfn,
                       uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value);

  // The fault path: a guest walk, then the shadow chain and the leaf.
  AccessResult fault(VcpuContext& vcpu, VcpuState& vs, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value);
  struct Child {
    uint64_t gfn;
    Role role;
  };
  Child child_of(const VcpuContext& vcpu, Role context, const Walk& w, uint64_t gva, uint64_t gfn, unsigned level) const;
  uint64_t* descend(VcpuContext& vcpu, VcpuState& vs, const Walk& w, uint64_t gva, uint64_t gfn, unsigned& target);
  unsigned max_level(const guest::Memslot& slot, uint64_t gfn, unsigned guest_level) const;
  void install_leaf(uint64_t* p, unsigned level, const guest::Memslot& slot, uint64_t gfn, uint64_t leaf);

  // Shadow pages: lookup by (gfn, role), creation, links, zapping, recycling.
  ShadowPage* get_page(VcpuContext& vcpu, uint64_t gfn, Role role);
  void link(uint64_t* p, ShadowPage* child);
  void add_parent(ShadowPage* sp, uint64_t* p);
  void remove_parent(ShadowPage* sp, uint64_t* p);
  template <class F>
  void for_each_parent(const ShadowPage* sp, F&& f) const;
  void zap_entry(uint64_t* p, unsigned level);  // a leaf or a link
  void drop_leaf(uint64_t* p, unsigned level);
  void zap_page(ShadowPage* sp);
  void zap_all();
  void make_pages_available();
  // Before an op changes anything: the small-block reserve and the hash tables' buckets for
  // what the op may add (the host's refusal surfaces here).
  void top_up_metadata();
  uint64_t metadata_bytes() const;  // what max_mmu_memory bounds
  bool alive(const ShadowPage* sp) const;
  template <class F>
  void for_each_page_of(uint64_t gfn, F&& f);  // f(ShadowPage*); f may zap the page it is given

  // Write tracking, unsync and sync (shadow_tracking.cpp).
  GfnInfo* gfn_info(uint64_t gfn);
  bool write_tracked(const GfnInfo* gi) const { return gi && (gi->external || (gi->indirect && !gi->unsync)); }
  // The fault path's question, answered without a hash lookup for most gfns.
  bool write_tracked(uint64_t gfn) { return shadowed_filter_[filter_slot(gfn)] && write_tracked(gfn_info(gfn)); }
  static unsigned filter_slot(uint64_t gfn) { return static_cast<unsigned>((gfn * 0x9e37'79b9'7f4a'7c15ull) >> (64 - FILTER_BITS)); }
  bool can_unsync(uint64_t gfn);
  void unsync_gfn(uint64_t gfn);
  void sync_all(VcpuContext& vcpu);
  void resync_gfn(VcpuContext& vcpu, uint64_t gfn);
  void sync_page(VcpuContext& vcpu, ShadowPage* sp);
  void write_protect(uint64_t gfn);
  uint64_t guest_entry_gpa(const ShadowPage* sp, unsigned index) const;
  void zap_written_entries(uint64_t gpa, unsigned width, bool guest_write);
  AccessResult emulate_write(VcpuContext& vcpu, guest::Memslot& slot, uint64_t gpa, unsigned width, uint64_t value);
  void account_shadowed(uint64_t gfn, int delta);  // large mappings disallowed over the gfn
  bool lpage_disallowed(unsigned level, uint64_t first_gfn) const;

  // The reverse map (shadow_tracking.cpp): every leaf SPTE mapping a gfn, or a range.
  RmapHints* hints(const guest::Memslot& slot, bool make);
  template <class F>
  void for_each_spte_of(uint64_t gfn, F&& f);  // f(sptep, level)
  template <class F>
  void for_each_spte_in(const guest::Memslot& slot, uint64_t gfn, uint64_t npages, F&& f);  // f(sptep, level, gfn)
  // The gfn a leaf SPTE maps (its first, for a huge one), from its host frame.
  bool gfn_of_leaf(uint64_t spte, uint64_t& gfn, guest::Memslot** slot = nullptr) const;
  static uint64_t huge_key(unsigned level, uint64_t gfn) { return (uint64_t{level} << 56) | (gfn >> (LEVEL_BITS * (level - 1))); }

  ShadowOptions options_;
  MetadataMemory memory_;  // before every container that allocates from it
  PagePool pool_;
  PageCache cache_;
  mutable std::mutex mutex_;
  WriteTrackNotifier* notifier_ = nullptr;

  std::pmr::unordered_map<uint64_t, GfnInfo> gfns_{&memory_};
  std::pmr::unordered_map<uint64_t, std::pmr::vector<uint64_t*>> extra_parents_{&memory_};  // page index -> parents beyond the first
  std::pmr::unordered_map<uint64_t, std::pmr::vector<uint64_t*>> huge_rmap_{&memory_};      // huge_key -> huge leaf SPTEs
  std::pmr::unordered_map<uint64_t, uint32_t> lpage_disallow_{&memory_};                    // huge_key -> shadowed gfns inside
  // A counting filter over the gfns that are shadowed or tracked: zero means neither.
  static constexpr unsigned FILTER_BITS = 12;
  std::vector<uint32_t> shadowed_filter_ = std::vector<uint32_t>(1u << FILTER_BITS);
  std::vector<std::pair<const guest::Memslot*, std::unique_ptr<RmapHints>>> hints_;
  std::pmr::vector<uint64_t> unsync_gfns_{&memory_};
  uint32_t lru_head_ = 0, lru_tail_ = 0;  // newest first
  uint64_t active_pages_ = 0;
  int64_t leaves_[4] = {};  // leaf SPTEs by level
  Counters n_;
};

}  // namespace vmmu::mmu
