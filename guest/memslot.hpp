#pragma once
// One memslot: a range of guest-physical frames backed by host memory (KVM's kvm_memory_slot).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <map>

#include "guest/host_memory.hpp"
#include "guest/sparse_bitmap.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::guest {

// The page size of the host backing: the largest mapping an engine may use for the slot.
enum class HostPageSize : uint8_t { Size4K = 1, Size2M = 2, Size1G = 3 };  // value = mapping level

constexpr uint64_t bytes(HostPageSize s) {
  return s == HostPageSize::Size1G ? x86::SIZE_1G : s == HostPageSize::Size2M ? x86::SIZE_2M : x86::PAGE_SIZE;
}

inline constexpr uint64_t MAX_MEMSLOT_BYTES = 64ull << 40;  // 64 TiB
inline constexpr uint64_t MAX_GPA = 1ull << 52;              // architectural physical-address limit
inline constexpr uint32_t MAX_MEMSLOT_ID = 32767;

struct MemslotSpec {
  uint32_t id = 0;
  uint64_t gpa = 0;
  uint64_t size = 0;
  bool readonly = false;
  bool log_dirty = false;
  HostPageSize host_page = HostPageSize::Size4K;
};

class Memslot {
 public:
  explicit Memslot(const MemslotSpec& spec, HostAllocator& host = default_host_allocator());

  uint32_t id() const { return id_; }
  uint64_t base_gfn() const { return base_gfn_; }
  uint64_t npages() const { return npages_; }
  uint64_t end_gfn() const { return base_gfn_ + npages_; }
  bool contains(uint64_t gfn) const { return gfn >= base_gfn_ && gfn < end_gfn(); }
  bool readonly() const { return readonly_; }
  HostPageSize host_page() const { return host_page_; }

  // The host frame currently backing `gfn` (which must be in the slot).
  uint8_t* host_page(uint64_t gfn) const {
    const uint64_t offset = gfn - base_gfn_;
    if (!relocated_.empty()) [[unlikely]] {
      auto it = relocated_.find(offset);
      if (it != relocated_.end()) return it->second;
    }
    return host_->data() + (offset << x86::PAGE_SHIFT);
  }
  // The frame the slot's own mapping has at `gfn`, whether or not the host has moved the page.
  uint8_t* original_host_page(uint64_t gfn) const { return host_->data() + ((gfn - base_gfn_) << x86::PAGE_SHIFT); }
  bool relocated(uint64_t gfn) const { return relocated_.count(gfn - base_gfn_) != 0; }
  uint64_t relocated_pages() const { return relocated_.size(); }
  // Whether any page of [gfn, gfn + n) sits on a moved frame (its host frames are then not
  // contiguous, so no huge mapping may span it).
  bool relocated_in(uint64_t gfn, uint64_t n) const {
    if (relocated_.empty()) return false;
    auto it = relocated_.lower_bound(gfn - base_gfn_);
    return it != relocated_.end() && it->first < gfn - base_gfn_ + n;
  }

  // Dirty logging (slot-relative bit = gfn - base_gfn, so a moved slot keeps its log).
  bool dirty_logging() const { return dirty_logging_; }
  // True when the page was clean in the log until now.
  bool mark_dirty(uint64_t gfn) { return dirty_logging_ && dirty_.set(gfn - base_gfn_); }
  SparseBitmap& dirty_bitmap() { return dirty_; }
  const SparseBitmap& dirty_bitmap() const { return dirty_; }

  // Pages the guest used since the host last asked (`age`): the host's view of its pages'
  // accessed bits. Engines fold in the accessed bits of SPTEs they drop.
  void mark_accessed(uint64_t gfn) { accessed_.set(gfn - base_gfn_); }
  SparseBitmap& accessed_bitmap() { return accessed_; }
  const SparseBitmap& accessed_bitmap() const { return accessed_; }

  // Has the bitmaps' storage for `gfn` made now (may throw HostMemoryError): engines call it
  // before a change that maps the page, so that folding its accessed and dirty bits in later
  // (on a zap, an `age`, a harvest) allocates nothing. Logging starts with the dirty bitmap's
  // storage made wherever the accessed bitmap has some (Memslots::set_dirty_logging).
  // Made for the whole 1 GiB-aligned range around `gfn` (one or two chunks), where every
  // mapping of the gfn lies, so that hits through a huge mapping allocate nothing either.
  void prepare_bitmaps(uint64_t gfn) {
    constexpr uint64_t GIB_FRAMES = x86::SIZE_1G >> x86::PAGE_SHIFT;
    const uint64_t lo = std::max(gfn & ~(GIB_FRAMES - 1), base_gfn_) - base_gfn_;
    const uint64_t hi = std::min((gfn | (GIB_FRAMES - 1)) + 1, end_gfn()) - 1 - base_gfn_;
    accessed_.prepare(lo);
    accessed_.prepare(hi);
    if (dirty_logging_) {
      dirty_.prepare(lo);
      dirty_.prepare(hi);
    }
  }

  // Bytes of metadata held, bitmaps apart (not the guest memory itself).
  uint64_t metadata_bytes() const;

 private:
  friend class Memslots;

  uint32_t id_;
  uint64_t base_gfn_;
  uint64_t npages_;
  bool readonly_;
  bool dirty_logging_ = false;
  HostPageSize host_page_;
  std::unique_ptr<HostRegion> host_;
  std::map<uint64_t, uint8_t*> relocated_;  // slot offset -> frame after an unmap
  SparseBitmap dirty_;
  SparseBitmap accessed_;
};

}  // namespace vmmu::guest
