#pragma once
// The per-vCPU state an MMU reads: registers, the paging context derived from them, the PAE
// PDPTEs latched at the last load, the engine's own per-vCPU state, and the access epoch that
// remote TLB flushes wait on.
#include <atomic>
#include <cstdint>
#include <memory>

#include "guest/memslot.hpp"
#include "mmu/dirty_ring.hpp"
#include "mmu/translation_cache.hpp"
#include "x86/cpu_state.hpp"
#include "x86/paging_context.hpp"

namespace vmmu::mmu {

// An engine's per-vCPU data (page caches, cached roots, ...).
struct VcpuMmuState {
  virtual ~VcpuMmuState() = default;
};

// Makes a vCPU's access epoch odd for its lifetime, even again however the access leaves (a host
// allocation failure throws out of it): a remote TLB flush must never wait for an access that
// ended.
class AccessEpoch {
 public:
  explicit AccessEpoch(std::atomic<uint64_t>& epoch) : e_(epoch) { e_.fetch_add(1, std::memory_order_seq_cst); }
  // Only the vCPU's own thread writes its epoch: leaving needs no locked instruction.
  ~AccessEpoch() { e_.store(e_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }
  AccessEpoch(const AccessEpoch&) = delete;
  AccessEpoch& operator=(const AccessEpoch&) = delete;

 private:
  std::atomic<uint64_t>& e_;
};

struct VcpuContext {
  uint32_t id = 0;
  x86::CpuState state{};
  x86::PagingContext paging{};
  x86::PaePdptes pdptes{};
  std::unique_ptr<VcpuMmuState> mmu_state;
  // Odd while the vCPU is inside an access: a remote TLB flush waits until every vCPU that was
  // inside one has left it, so no access is still in flight through an SPTE it took away.
  std::atomic<uint64_t> access_epoch{0};
  std::unique_ptr<DirtyRing> dirty_ring;  // when the VM logs through rings too
  // The vCPU's software TLB (engines only; null when the VM runs without one). Only the vCPU's
  // own thread touches it.
  std::unique_ptr<TranslationCache> translations;

  // A guest write by this vCPU dirtied `gfn` of `slot`: into the log, and into the ring when
  // the page was clean there.
  void mark_dirty(guest::Memslot& slot, uint64_t gfn) {
    if (slot.mark_dirty(gfn) && dirty_ring) dirty_ring->push(slot.id(), gfn - slot.base_gfn());
  }
};

}  // namespace vmmu::mmu
