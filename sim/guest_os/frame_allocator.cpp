#include "sim/guest_os/frame_allocator.hpp"

#include "x86/paging_format.hpp"

namespace vmmu::sim::guest_os {

void FrameAllocator::next_epoch() {
  ++epoch_;
  while (!cooling_.empty() && cooling_.begin()->first + 2 <= epoch_) {
    const std::vector<uint64_t>& ready = cooling_.begin()->second;
    zero_.insert(zero_.end(), ready.begin(), ready.end());
    cooling_.erase(cooling_.begin());
  }
}

std::optional<uint64_t> FrameAllocator::table() {
  if (!zero_.empty()) {
    const uint64_t gpa = zero_.back();
    zero_.pop_back();
    return gpa;
  }
  if (next_ + x86::PAGE_SIZE > limit_) return std::nullopt;
  const uint64_t gpa = next_;
  next_ += x86::PAGE_SIZE;
  return gpa;
}

std::optional<Frame> FrameAllocator::page() {
  if (!dirty_.empty()) {
    const uint64_t gpa = dirty_.back();
    dirty_.pop_back();
    return Frame{gpa, false};
  }
  if (auto t = table()) return Frame{*t, true};
  return std::nullopt;
}

std::optional<Frame> FrameAllocator::huge(uint64_t size) {
  if (auto it = huge_.find(size); it != huge_.end() && !it->second.empty()) {
    const uint64_t gpa = it->second.back();
    it->second.pop_back();
    return Frame{gpa, false};
  }
  const uint64_t start = (next_ + size - 1) & ~(size - 1);
  if (start + size > limit_) return std::nullopt;
  // The frames skipped to align are still zero: they serve page tables later.
  for (uint64_t gpa = next_; gpa < start; gpa += x86::PAGE_SIZE) zero_.push_back(gpa);
  next_ = start + size;
  return Frame{start, true};
}

}  // namespace vmmu::sim::guest_os
