#pragma once
// KVM's mmu_lock as a reader-writer lock: guest accesses and faults hold it shared (faults install
// SPTEs by compare-and-swap), structural changes hold it exclusively. glibc's rwlock prefers
// readers, so vCPUs back off while a writer waits and a stream of faults cannot starve it.
#include <atomic>
#include <shared_mutex>
#include <thread>

namespace vmmu::mmu {

class MmuLock {
 public:
  void lock_shared() {
    while (writers_waiting_.load(std::memory_order_acquire)) std::this_thread::yield();
    m_.lock_shared();
  }
  void unlock_shared() { m_.unlock_shared(); }
  void lock() {
    writers_waiting_.fetch_add(1, std::memory_order_acq_rel);
    m_.lock();
    writers_waiting_.fetch_sub(1, std::memory_order_acq_rel);
  }
  void unlock() { m_.unlock(); }
  // Long exclusive work lets others in between batches (KVM's cond_resched_rwlock_write).
  void yield_exclusive() {
    m_.unlock();
    std::this_thread::yield();
    lock();
  }

 private:
  std::shared_mutex m_;
  std::atomic<int> writers_waiting_{0};
};

}  // namespace vmmu::mmu
