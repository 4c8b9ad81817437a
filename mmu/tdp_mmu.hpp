#pragma once
// --mmu=tdp: two-dimensional paging (KVM's TDP MMU). The guest walks its own tables, every table
// read going through the TDP tables as hardware would; gfns map to host frames in tables indexed
// by gfn, built of direct shadow pages that keep no per-entry gfn array. One root serves every
// vCPU. Faults run under the shared lock and install SPTEs by compare-and-swap; structural changes
// (zaps, splits, root invalidation) hold the lock exclusively.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "mmu/mmu.hpp"
#include "mmu/page_pool.hpp"
#include "mmu/shadow_page.hpp"

namespace vmmu::mmu {

enum class DirtyLogMode : uint8_t {
  WriteProtect,  // SPTEs of logged slots are read-only until written (KVM without PML)
  DirtyBit,      // SPTEs stay writable; the simulated hardware sets D, `get` harvests it
};

struct TdpOptions {
  DirtyLogMode dirty_log = DirtyLogMode::WriteProtect;
  bool eager_split = true;  // split huge mappings when logging starts (else zap, refault at 4K)
  // Bytes of tables (with their headers) at most: over it, whole 1 GiB subtrees are zapped
  // round robin before an access (0: no limit; else at least MIN_MAX_MMU_MEMORY).
  uint64_t max_mmu_memory = 0;
};

class TdpMmu final : public Mmu {
 public:
  TdpMmu(guest::Memslots& slots, TdpOptions options = {});
  ~TdpMmu() override;

  const char* name() const override { return "tdp"; }
  void vcpu_created(VcpuContext& vcpu) override;
  AccessResult access(VcpuContext& vcpu, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) override;

  void memslot_leaving(guest::Memslot& slot) override;
  void memslots_changed() override;
  void dirty_logging_changing(guest::Memslot& slot) override;
  void dirty_logging_changed(guest::Memslot& slot) override;
  void dirty_log_sync(guest::Memslot& slot) override;
  void dirty_log_cleared(guest::Memslot& slot, const std::vector<DirtyChunk>& chunks) override;
  void invalidate_start(uint64_t gfn, uint64_t npages) override;
  void invalidate_end(uint64_t gfn, uint64_t npages) override;
  void harvest_accessed(guest::Memslot& slot, uint64_t gfn, uint64_t npages) override;

  void audit(std::vector<std::string>& violations) const override;
  void report(nlohmann::ordered_json& stats, nlohmann::ordered_json& memory) const override;
  HardwareMapping hardware_mapping(const VcpuContext& vcpu, uint64_t gpa) const override;

  // What a gfn resolves to, as the simulated hardware sees it; faults it in when needed.
  // (Public for benchmarks and tests: a first-touch TDP fault without a guest walk. Callers that
  // race with host invalidations go through Vcpu::access instead.)
  enum class Outcome : uint8_t { Mapped, Mmio, ReadOnly };
  struct Target {
    Outcome outcome = Outcome::Mapped;
    uint8_t* host = nullptr;  // the byte at the gfn's frame (Mapped only)
  };
  Target translate_gfn(VcpuContext& vcpu, uint64_t gfn, x86::AccessKind kind, bool set_accessed);

  uint64_t shadow_pages() const { return pool_.pages_in_use(); }
  // Has the host back `n` table pages ahead of the faults that will need them.
  void prefault_pages(uint64_t n) { pool_.prefault(n); }

 private:
  struct VcpuState;
  struct Leaf {
    uint64_t* sptep = nullptr;  // null: no entry reached (no root)
    uint64_t spte = 0;
    unsigned level = 0;
  };
  class Port;

  Leaf lookup(uint64_t gfn) const;
  // Installs a mapping (or an MMIO SPTE) for `gfn`; returns false when the caller should look
  // again (another vCPU won a race, or an invalidation is in progress).
  // `from` is where the lookup stopped (an empty or MMIO entry), so the fault does not walk
  // the upper levels again; `set_accessed` installs the leaf with A already set.
  bool fault(VcpuContext& vcpu, uint64_t gfn, x86::AccessKind kind, const Leaf& from, bool set_accessed, Target& out);
  void note_huge_access(uint64_t gfn);
  unsigned max_mapping_level(const guest::Memslot& slot, uint64_t gfn) const;
  uint64_t make_leaf(const guest::Memslot& slot, uint64_t gfn, unsigned level, bool writable) const;
  ShadowPage* new_page(VcpuState& vs, uint64_t gfn, unsigned level);
  void ensure_root(VcpuContext& vcpu);

  // Visits the non-empty entries of the current root that meet [gfn, gfn + npages), top down:
  // f(sptep, spte, level, first_gfn, wholly_inside) returns true to descend into a table. With
  // `yield`, the exclusive lock is let go between top-level entries.
  template <class F>
  void walk_range(uint64_t gfn, uint64_t npages, bool yield, F&& f);
  // Every leaf SPTE (present or MMIO) of the range: f(sptep, spte, level, leaf_first_gfn).
  template <class F>
  void for_each_leaf(uint64_t gfn, uint64_t npages, F&& f);
  // Drops one entry and everything below it, folding accessed/dirty state into the memslots.
  void zap_entry(uint64_t* sptep, unsigned level);
  void drop_spte(uint64_t spte, unsigned level);  // an SPTE already taken out of its table
  void free_table(uint64_t* table, unsigned level);
  void fold_leaf(uint64_t spte, unsigned level);
  void zap_range(uint64_t gfn, uint64_t npages);
  uint64_t* fill_split_table(ShadowPage* sp, uint64_t huge_spte, unsigned level, uint64_t first_gfn, uint64_t* parent) const;
  void split_huge(uint64_t* sptep, unsigned level, uint64_t first_gfn);
  bool split_on_fault(VcpuContext& vcpu, uint64_t* sptep, uint64_t huge_spte, unsigned level, uint64_t gfn);
  void invalidate_root();
  void free_invalid_roots();
  // The byte budget: pages an access may add at most, whether they fit, and the recycling.
  uint64_t access_pages() const { return 6ull * root_level_; }
  bool fits(uint64_t more_pages) const {
    return !options_.max_mmu_memory || (pool_.pages_in_use() + more_pages) * PagePool::PAGE_BYTES <= options_.max_mmu_memory;
  }
  void make_room(VcpuContext& vcpu);  // called with the lock shared; takes it exclusively meanwhile
  void recycle(uint64_t more_pages);   // exclusive lock
  void zap_huge_leaves(const guest::Memslot& slot);
  void zap_all_mmio();
  // Waits until every vCPU that was inside an access has left it (a remote TLB flush).
  void remote_tlb_flush();

  TdpOptions options_;
  PagePool pool_;
  std::atomic<ShadowPage*> root_{nullptr};
  uint64_t mmio_epoch_ = 0;  // memslot generation >> MMIO_GEN_BITS at the last zap of MMIO SPTEs
  unsigned root_level_ = 4;
  std::vector<ShadowPage*> invalid_roots_;
  mutable std::mutex invalid_roots_lock_;
  PageCache exclusive_cache_;  // pages for splits done under the exclusive lock

  // MMU-notifier protocol: faults that raced with an invalidation retry.
  std::atomic<uint64_t> invalidate_seq_{0};
  std::atomic<uint64_t> invalidate_in_progress_{0};
  uint64_t invalidate_gfn_ = 0, invalidate_end_gfn_ = 0;

  // Counters with KVM's names (per-vCPU ones live in VcpuState and are summed).
  std::atomic<uint64_t> mmu_shadow_zapped_{0}, remote_tlb_flush_{0}, mmio_zap_all_{0}, huge_splits_{0};
  uint64_t mmu_recycled_ = 0;        // pages freed to stay within max_mmu_memory (exclusive lock)
  uint64_t recycle_cursor_ = 0;      // the gfn where the next recycling starts
  std::atomic<int64_t> pages_[4] = {};  // leaf SPTEs by level (4k, 2m, 1g), less the per-vCPU installs
  int64_t leaf_count(unsigned level) const;
};

}  // namespace vmmu::mmu
