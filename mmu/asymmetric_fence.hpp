#pragma once
// A fence split in two unequal halves, for a fast path run billions of times against a slow path
// run rarely (the software TLB's hit against the host's invalidations): the fast side pays only
// a compiler barrier, the slow side a membarrier(2) that makes every running thread of the process
// execute a full barrier. Where membarrier is missing (old kernels, seccomp) or a sanitizer that
// cannot see it is on, both halves are full fences.
#include <atomic>

namespace vmmu::mmu {

namespace detail {
bool membarrier_available();
// Set before main() runs; false (full fences: always safe) for anything running before that.
inline const bool asymmetric_fences = membarrier_available();
}  // namespace detail

// Orders the fast side's earlier stores before its later loads, against heavy_fence().
inline void light_fence() {
  if (detail::asymmetric_fences) [[likely]] {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

// Orders the slow side's earlier stores before its later loads, and every other thread's
// light_fence() likewise.
void heavy_fence();

}  // namespace vmmu::mmu
