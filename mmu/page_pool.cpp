#include "mmu/page_pool.hpp"

#include <sys/mman.h>

#include <cstring>
#include <new>

#include "guest/host_memory.hpp"

namespace vmmu::mmu {

namespace {
void* reserve(uint64_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw guest::HostMemoryError("cannot reserve the shadow page arena");
  return p;
}
}  // namespace

PagePool::PagePool(guest::HostAllocator& host, uint64_t max_pages) : host_(host), max_pages_(max_pages) {
  tables_ = static_cast<uint64_t*>(reserve(max_pages * 4096));
  headers_ = static_cast<ShadowPage*>(reserve(max_pages * sizeof(ShadowPage)));
}

PagePool::~PagePool() {
  munmap(tables_, max_pages_ * 4096);
  munmap(headers_, max_pages_ * sizeof(ShadowPage));
}

ShadowPage* PagePool::allocate() {
  std::lock_guard g(lock_);
  uint64_t i;
  if (!free_.empty()) {
    i = free_.back();
    free_.pop_back();
  } else {
    if (next_ >= max_pages_) throw guest::HostMemoryError("the shadow page arena is exhausted");
    host_.commit(PAGE_BYTES);  // may refuse: nothing taken yet
    i = next_++;
  }
  ++in_use_;
  return new (headers_ + i) ShadowPage{};
}

void PagePool::prefault(uint64_t n) {
  std::vector<ShadowPage*> pages;
  pages.reserve(n);
  try {
    for (uint64_t i = 0; i < n; ++i) {
      ShadowPage* sp = allocate();
      static_cast<volatile uint64_t*>(table(sp))[0] = 0;  // the host's fault happens here
      pages.push_back(sp);
    }
  } catch (const guest::HostMemoryError&) {
    for (ShadowPage* sp : pages) release(sp);
    throw;
  }
  for (ShadowPage* sp : pages) release(sp);
}

void PagePool::release(ShadowPage* sp) {
  std::lock_guard g(lock_);
  free_.push_back(index(sp));
  --in_use_;
}

}  // namespace vmmu::mmu
