#pragma once
// The set of memslots of a VM: gfn -> slot in O(log n), and a generation number bumped on every
// change so that cached MMIO decisions can be invalidated without a walk (KVM's memslot generation).
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <vector>

#include "guest/memslot.hpp"

namespace vmmu::guest {

// API misuse or invalid input at the library boundary (overlapping slot, unknown id, ...).
class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

class Memslots {
 public:
  explicit Memslots(HostAllocator& host = default_host_allocator()) : host_(&host) {}
  Memslots(const Memslots&) = delete;
  Memslots& operator=(const Memslots&) = delete;

  // Each throws UsageError naming what is wrong, and changes nothing then.
  Memslot& add(const MemslotSpec& spec);
  void remove(uint32_t id);
  void move(uint32_t id, uint64_t new_gpa);
  void check_move(uint32_t id, uint64_t new_gpa) const;  // throws what move() would
  bool set_dirty_logging(uint32_t id, bool on);  // false when it was so already

  Memslot* find(uint64_t gfn) const {
    auto it = std::upper_bound(by_gfn_.begin(), by_gfn_.end(), gfn,
                               [](uint64_t g, const Memslot* s) { return g < s->base_gfn(); });
    if (it == by_gfn_.begin()) return nullptr;
    Memslot* s = *(it - 1);
    return s->contains(gfn) ? s : nullptr;
  }
  Memslot* by_id(uint32_t id) const;
  Memslot& get(uint32_t id) const;  // throws UsageError for an unknown id

  const std::vector<Memslot*>& slots() const { return by_gfn_; }  // ascending gfn
  uint64_t generation() const { return generation_; }
  uint64_t metadata_bytes() const;
  FrameArena& frames() { return frames_; }
  // Where the VM's metadata gets host memory (the engines use it too).
  HostAllocator& allocator() const { return *host_; }

  // The host moves the pages of [gfn, gfn + npages) (which lie in one slot) to new frames and
  // poisons the old ones; the guest sees the same data. Returns how many pages moved.
  uint64_t relocate(uint64_t gfn, uint64_t npages);

  // The memslot and gfn that a host frame backs now, if any (a host frame maps back to its gfn
  // through the slot that contains it, or through the record of frames moved by `unmap`).
  Memslot* slot_of_frame(const uint8_t* frame, uint64_t& gfn) const;

  // Whether any memslot holds a gfn of [gfn, gfn + npages).
  bool any_in(uint64_t gfn, uint64_t npages) const {
    auto it = std::upper_bound(by_gfn_.begin(), by_gfn_.end(), gfn + npages - 1,
                               [](uint64_t g, const Memslot* s) { return g < s->base_gfn(); });
    return it != by_gfn_.begin() && (*(it - 1))->end_gfn() > gfn;
  }

 private:
  void check_free(uint64_t gfn, uint64_t npages, const Memslot* ignore) const;
  void sort();

  std::vector<std::unique_ptr<Memslot>> owned_;
  std::map<const uint8_t*, std::pair<uint32_t, uint64_t>> moved_frames_;  // frame -> (slot id, page)
  std::vector<Memslot*> by_gfn_;
  uint64_t generation_ = 0;
  HostAllocator* host_;
  FrameArena frames_;
};

}  // namespace vmmu::guest
