#pragma once
// Where the metadata that grows with the guest gets its host memory: memslot bitmaps, the
// engines' reverse-map hints and hash tables (as a std::pmr::memory_resource), and the page
// pool's table pages (`commit`: pages of an arena reserved up front, put to use one by one).
// A VM has one, given in VmConfig; the default takes from the heap and the arenas. Tests
// substitute a FaultInjectingAllocator to make the host refuse at a chosen allocation.
//
// The host refuses by throwing HostMemoryError, which an op reports as the contract's "error"
// result. Callers ask only where a refusal changes nothing: before an op changes state (KVM's
// memory caches, topped up before a fault), never in the middle of a change.
//
// (It lives in guest/ rather than mmu/ because the memslots' bitmaps, below the engines,
// allocate through it too.)
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <new>
#include <string>

#include "guest/host_memory.hpp"

namespace vmmu::guest {

class HostAllocator : public std::pmr::memory_resource {
 public:
  // `bytes` more of an arena reserved earlier are about to be used (a fresh page-pool page):
  // the host may refuse. Arena pages are recycled by their owner, never given back.
  virtual void commit(uint64_t bytes) = 0;

 protected:
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

// The heap (operator new) and the arenas as they are (the kernel backs a page when touched).
class DefaultHostAllocator final : public HostAllocator {
 public:
  void commit(uint64_t) override {}

 private:
  void* do_allocate(std::size_t bytes, std::size_t align) override {
    try {
      return ::operator new(bytes, std::align_val_t(align));
    } catch (const std::bad_alloc&) {
      throw HostMemoryError("host allocation of " + std::to_string(bytes) + " bytes failed");
    }
  }
  void do_deallocate(void* p, std::size_t, std::size_t align) override { ::operator delete(p, std::align_val_t(align)); }
};

inline HostAllocator& default_host_allocator() {
  static DefaultHostAllocator instance;
  return instance;
}

// For tests: counts every request (allocations and commits) and refuses the `fail_at`-th one
// (1-based; 0: none), or every request from then on with `fail_from`, or any request that
// would take the bytes held above `byte_limit`. Otherwise it serves from `upstream`.
class FaultInjectingAllocator final : public HostAllocator {
 public:
  explicit FaultInjectingAllocator(HostAllocator& upstream = default_host_allocator()) : upstream_(upstream) {}

  uint64_t fail_at = 0;
  bool fail_from = false;
  uint64_t byte_limit = ~0ull;

  uint64_t requests() const { return requests_; }
  uint64_t refusals() const { return refusals_; }
  uint64_t bytes_held() const { return held_; }  // allocated and not freed, plus committed
  void reset_counts() { requests_ = refusals_ = 0; }

  void commit(uint64_t bytes) override {
    check(bytes);
    upstream_.commit(bytes);
    held_ += bytes;
  }

 private:
  void check(uint64_t bytes) {
    ++requests_;
    const bool refuse = (fail_at && (requests_ == fail_at || (fail_from && requests_ > fail_at))) || held_ + bytes > byte_limit;
    if (refuse) {
      ++refusals_;
      throw HostMemoryError("host memory refused (fault injection: request " + std::to_string(requests_) + ")");
    }
  }
  void* do_allocate(std::size_t bytes, std::size_t align) override {
    check(bytes);
    void* p = upstream_.allocate(bytes, align);
    held_ += bytes;
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
    upstream_.deallocate(p, bytes, align);
    held_ -= bytes;
  }

  HostAllocator& upstream_;
  uint64_t requests_ = 0, refusals_ = 0, held_ = 0;
};

}  // namespace vmmu::guest
