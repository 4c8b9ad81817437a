#pragma once
// A vCPU's dirty ring (KVM's KVM_CAP_DIRTY_LOG_RING): beside the per-slot bitmap, each page the
// vCPU dirties (its log bit going from clear to set) is pushed as (slot, page). The VMM harvests
// the entries and then resets the rings, which clears those pages in the log and re-protects
// them, so their next write is pushed again. Past its size the ring is full: entries are still
// kept (KVM's soft limit), and `full()` tells the VMM to harvest before running the vCPU again.
#include <cstdint>
#include <mutex>
#include <vector>

namespace vmmu::mmu {

struct DirtyRingEntry {
  uint32_t slot = 0;
  uint64_t page = 0;  // slot-relative, as KVM's ring offsets
  friend bool operator==(const DirtyRingEntry&, const DirtyRingEntry&) = default;
};

class DirtyRing {
 public:
  explicit DirtyRing(uint32_t size) : size_(size) {}

  void push(uint32_t slot, uint64_t page) {
    std::lock_guard g(lock_);
    pending_.push_back({slot, page});
  }
  // Entries not yet harvested; they move to the harvested list that `take_harvested` empties.
  std::vector<DirtyRingEntry> harvest() {
    std::lock_guard g(lock_);
    std::vector<DirtyRingEntry> out;
    out.swap(pending_);
    harvested_.insert(harvested_.end(), out.begin(), out.end());
    return out;
  }
  std::vector<DirtyRingEntry> take_harvested() {
    std::lock_guard g(lock_);
    std::vector<DirtyRingEntry> out;
    out.swap(harvested_);
    return out;
  }
  bool full() const {
    std::lock_guard g(lock_);
    return pending_.size() + harvested_.size() >= size_;
  }
  uint32_t size() const { return size_; }

 private:
  uint32_t size_;
  mutable std::mutex lock_;
  std::vector<DirtyRingEntry> pending_, harvested_;
};

}  // namespace vmmu::mmu
