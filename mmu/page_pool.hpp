#pragma once
// Where shadow pages come from. Tables live in one arena reserved with MAP_NORESERVE; headers sit
// in a parallel array at the same index, so the header of a table is found from the table's
// address alone (KVM keeps it in struct page). Faults take pages only from a per-vCPU
// PageCache topped up beforehand (KVM's kvm_mmu_memory_cache): the fault path allocates nothing.
// A page never used before is committed through the VM's HostAllocator (which may refuse, at
// top-up time); freed pages wait in the free list and are reused without asking again.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "guest/host_allocator.hpp"
#include "mmu/shadow_page.hpp"

namespace vmmu::mmu {

class PagePool {
 public:
  explicit PagePool(guest::HostAllocator& host = guest::default_host_allocator(), uint64_t max_pages = 1ull << 22);  // 16 GiB of tables at most
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  // A zeroed page with a fresh header; throws HostMemoryError when the arena is exhausted.
  ShadowPage* allocate();
  // Returns a page whose table is already all zero (the caller cleared it while zapping).
  void release(ShadowPage* sp);

  uint64_t* table(const ShadowPage* sp) const { return tables_ + (index(sp) * SPTE_PER_PAGE); }
  ShadowPage* header(const uint64_t* table_or_spte) const {
    const uint64_t i = (reinterpret_cast<uintptr_t>(table_or_spte) - reinterpret_cast<uintptr_t>(tables_)) >> 12;
    return headers_ + i;
  }
  ShadowPage* header_at(uint32_t i) const { return i ? headers_ + i : nullptr; }
  uint32_t index(const ShadowPage* sp) const { return static_cast<uint32_t>(sp - headers_); }
  bool owns(const uint64_t* p) const {
    return p >= tables_ && p < tables_ + max_pages_ * SPTE_PER_PAGE;
  }

  // Has the host back `n` more pages now, so later faults do not pay the host's page faults
  // (KVM's caches hold pages the kernel already gave it). They wait in the free list.
  void prefault(uint64_t n);

  uint64_t pages_in_use() const { return in_use_.load(std::memory_order_relaxed); }
  uint64_t high_water() const { return next_; }  // every index ever handed out is below it
  uint64_t pages_free() const { return free_.size(); }
  static constexpr uint64_t PAGE_BYTES = 4096 + sizeof(ShadowPage);  // a table and its header

 private:
  guest::HostAllocator& host_;
  uint64_t max_pages_;
  uint64_t* tables_ = nullptr;
  ShadowPage* headers_ = nullptr;
  uint64_t next_ = 1;  // index 0 is never used, so 0 can mean "no page" in links
  std::atomic<uint64_t> in_use_{0};  // read without the lock (budget checks)
  std::vector<uint32_t> free_;
  std::mutex lock_;
};

// The smallest byte budget for an engine's metadata (--max-mmu-memory): room for the tables one
// access may need at worst, so that recycling can always make room.
inline constexpr uint64_t MIN_MAX_MMU_MEMORY = 128 * 1024;

// A vCPU's private stock of pages for one fault (a walk needs at most one page per level).
class PageCache {
 public:
  static constexpr unsigned CAPACITY = 8;
  void top_up(PagePool& pool, unsigned min = 5) {
    while (n_ < min) pages_[n_++] = pool.allocate();
  }
  ShadowPage* take() { return n_ ? pages_[--n_] : nullptr; }
  void give_back(ShadowPage* sp) { pages_[n_++] = sp; }
  void drain(PagePool& pool) {
    while (n_) pool.release(pages_[--n_]);
  }
  unsigned size() const { return n_; }

 private:
  ShadowPage* pages_[CAPACITY] = {};
  unsigned n_ = 0;
};

}  // namespace vmmu::mmu
