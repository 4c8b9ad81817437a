#pragma once
// One interface for translating and performing guest accesses, implemented by the reference
// (a guest walk every time) and by the engines (TDP, shadow). The Vm calls the hooks as KVM's
// common code calls into its MMU: after paging-register changes, on memslot changes, around host
// invalidations, and for the VMM's own writes to guest memory.
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "guest/memslots.hpp"
#include "mmu/asymmetric_fence.hpp"
#include "mmu/access_result.hpp"
#include "mmu/mmu_lock.hpp"
#include "mmu/vcpu_context.hpp"
#include "mmu/write_track.hpp"
#include "x86/access.hpp"

namespace vmmu::mmu {

// 64 consecutive pages of a memslot's dirty bitmap: bit i of `mask` is page `first + i`
// (slot-relative), the unit of KVM_CLEAR_DIRTY_LOG.
struct DirtyChunk {
  uint64_t first = 0;
  uint64_t mask = 0;
};

class Mmu {
 public:
  explicit Mmu(guest::Memslots& slots) : slots_(slots) {}
  virtual ~Mmu() = default;
  Mmu(const Mmu&) = delete;
  Mmu& operator=(const Mmu&) = delete;

  virtual const char* name() const = 0;

  // KVM's mmu_lock: the Vm holds it shared around each guest access and exclusively around
  // memslot changes; engines take it themselves for their own long operations.
  MmuLock& lock() { return lock_; }

  // A vCPU was created (engines attach their per-vCPU state; remote flushes wait on it).
  virtual void vcpu_created(VcpuContext& vcpu) { vcpus_.push_back(&vcpu); }

  // Translates and performs one access of `width` bytes within one page.
  virtual AccessResult access(VcpuContext& vcpu, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) = 0;

  // Cached translations of a vCPU: CR0/CR3/CR4/EFER changed (all go), MOV CR3 (non-global go),
  // INVLPG (that address, any page size), full flush (all, global included).
  virtual void reset_context(VcpuContext&) {}
  virtual void new_cr3(VcpuContext&) {}
  virtual void invlpg(VcpuContext&, uint64_t /*gva*/) {}
  virtual void flush(VcpuContext&) {}

  // Memslot changes, with the exclusive lock held. A slot about to be deleted or moved loses
  // every mapping of its old range before the change (`memslot_leaving`); a new or moved slot
  // is announced after it (`memslot_arrived`), and so is a change of dirty logging.
  virtual void memslot_leaving(guest::Memslot&) {}
  virtual void memslot_arrived(guest::Memslot&) {}
  virtual void dirty_logging_changing(guest::Memslot&) {}  // before: the old log is still there
  virtual void dirty_logging_changed(guest::Memslot&) {}
  // After any change of the memslots (their generation moved on).
  virtual void memslots_changed() {}
  // Before the dirty bitmap is read (engines that log by D bits harvest them here) and after
  // the VMM cleared `chunks` of it (engines re-protect exactly those pages).
  virtual void dirty_log_sync(guest::Memslot&) {}
  virtual void dirty_log_cleared(guest::Memslot&, const std::vector<DirtyChunk>& /*chunks*/) {}

  // Host invalidation of [gfn, gfn + npages) (KVM's MMU notifier): no mapping of the old frames
  // may survive `invalidate_start`; the host moves the pages between start and end.
  virtual void invalidate_start(uint64_t /*gfn*/, uint64_t /*npages*/) {}
  virtual void invalidate_end(uint64_t /*gfn*/, uint64_t /*npages*/) {}
  // Fold the accessed state the engine holds for [gfn, gfn + npages) into the memslot's
  // accessed bitmap and clear it (the host's `age`).
  virtual void harvest_accessed(guest::Memslot&, uint64_t /*gfn*/, uint64_t /*npages*/) {}

  // The VMM wrote guest memory at [gpa, gpa + width): stay coherent with it.
  virtual void vmm_write(uint64_t /*gpa*/, unsigned /*width*/) {}

  // KVM's page-track API: guest writes to a tracked gfn are emulated and reported to the
  // notifier. Engines without it refuse (UsageError).
  virtual void set_write_notifier(WriteTrackNotifier*) { no_write_tracking(); }
  virtual void track_writes(uint64_t /*gfn*/, bool /*on*/) { no_write_tracking(); }

  // For cost models (sim/tlb_model): where the simulated hardware's own tables map `address`
  // now, read without side effects. TDP: a gpa, in the TDP tables; shadow: a gva, in the vCPU's
  // shadow tables (root level 3 is the PAE-style root, four PDPTE registers). `none` has none.
  struct HardwareMapping {
    uint8_t root_level = 0;  // 0: no tables
    uint8_t level = 0;       // level of the leaf, or of the entry where the walk stopped
    bool present = false;    // a leaf maps the address
  };
  virtual HardwareMapping hardware_mapping(const VcpuContext& /*vcpu*/, uint64_t /*address*/) const { return {}; }

  // Moves whenever the engine owes every vCPU a flush of its hardware TLB (KVM's
  // kvm_flush_remote_tlbs: after zapping or write-protecting SPTEs; INVEPT under TDP). Cost
  // models drop their cached translations when it moves; it is not a stat.
  uint64_t tlb_flush_count() const { return tlb_flushes_.load(std::memory_order_relaxed); }

  // The vCPUs' software TLBs (mmu/translation_cache.hpp) are valid while this stays put.
  uint64_t translation_generation() const { return translation_generation_.load(std::memory_order_seq_cst); }
  // Every vCPU drops its software TLB before its next access, and none is still inside an access
  // that used one when this returns (host frames may move after it).
  void drop_translation_caches() {
    translation_generation_.fetch_add(1, std::memory_order_seq_cst);
    wait_for_accesses();
  }

  // Invariant violations, each a line of text; empty when everything holds.
  virtual void audit(std::vector<std::string>& /*violations*/) const {}
  // Counters into `stats`, bytes by category into `memory` (with "mapping_total").
  virtual void report(nlohmann::ordered_json& stats, nlohmann::ordered_json& memory) const = 0;

 protected:
  [[noreturn]] void no_write_tracking() const {
    throw guest::UsageError(std::string("write tracking is not available with --mmu=") + name() + " (use --mmu=shadow)");
  }

  // The engine zapped or write-protected SPTEs: hardware TLBs and software ones are stale.
  void note_tlb_flush() {
    tlb_flushes_.fetch_add(1, std::memory_order_relaxed);
    translation_generation_.fetch_add(1, std::memory_order_seq_cst);
  }
  // Waits until every vCPU that was inside an access has left it (the wait of a remote TLB flush).
  // The heavy half of the fence a software-TLB hit enters its epoch with (Vcpu::access).
  void wait_for_accesses() const {
    heavy_fence();
    for (const VcpuContext* v : vcpus_) {
      const uint64_t e = v->access_epoch.load(std::memory_order_seq_cst);
      if (!(e & 1)) continue;
      while (v->access_epoch.load(std::memory_order_seq_cst) == e) std::this_thread::yield();
    }
  }

  guest::Memslots& slots_;
  std::vector<VcpuContext*> vcpus_;
  MmuLock lock_;
  std::atomic<uint64_t> tlb_flushes_{0};
  std::atomic<uint64_t> translation_generation_{0};
};

}  // namespace vmmu::mmu
