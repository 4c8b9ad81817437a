#pragma once
// The guest kernel's page allocator. Lazy: frames come from a bump pointer the first time, so
// booting a large guest touches nothing it does not use; freed frames are kept on lists. Frames
// never used are zero, and so are freed page tables (the kernel clears every entry before it
// frees one), which is what a new page table must be.
//
// A freed page table waits two flush epochs before reuse (an epoch ends once every vCPU has
// dropped its cached translations): the contract wants an invalidation *after* an entry changes
// and before a vCPU that used it can reach it again, and a reused table can be reached from a
// root that vCPU already has loaded.
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace vmmu::sim::guest_os {

struct Frame {
  uint64_t gpa = 0;
  bool zero = false;  // known to hold only zeros
};

class FrameAllocator {
 public:
  // Hands out the gpas [first, limit), both 4 KiB aligned.
  FrameAllocator(uint64_t first, uint64_t limit) : next_(first), limit_(limit) {}

  // A zeroed 4 KiB frame for a page table.
  std::optional<uint64_t> table();
  // A 4 KiB frame for data (reused frames first: they are cache-hot in a real kernel).
  std::optional<Frame> page();
  // A naturally aligned frame of `size` bytes (2 or 4 MiB) for a transparent huge page.
  std::optional<Frame> huge(uint64_t size);

  void free_table(uint64_t gpa) { cooling_[epoch_].push_back(gpa); }
  // A new flush epoch: tables freed two epochs ago become free.
  void next_epoch();
  bool cooling() const { return !cooling_.empty(); }
  void free_page(uint64_t gpa) { dirty_.push_back(gpa); }
  void free_huge(uint64_t gpa, uint64_t size) { huge_[size].push_back(gpa); }

  uint64_t bump() const { return next_; }  // every frame below it has been handed out once

 private:
  uint64_t next_, limit_;
  uint64_t epoch_ = 0;
  std::vector<uint64_t> zero_, dirty_;
  std::map<uint64_t, std::vector<uint64_t>> cooling_;  // epoch freed -> page tables
  std::map<uint64_t, std::vector<uint64_t>> huge_;  // size -> free huge frames
};

}  // namespace vmmu::sim::guest_os
