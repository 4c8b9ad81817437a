#pragma once
// One set-associative translation cache with true LRU replacement, laid out for a hit in a few
// nanoseconds: a flat array of 64-bit slots, a set per `ways` consecutive slots kept in
// most-recently-used-first order (a hit in way 0, the common case, moves nothing). A slot holds
// (tag + 1) << FLAG_BITS | flags; 0 is empty, and empty slots are always at the end of a set.
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sim/tlb_config.hpp"

namespace vmmu::sim {

class TlbCache {
 public:
  static constexpr unsigned FLAG_BITS = 4;
  static constexpr uint64_t FLAG_MASK = (1u << FLAG_BITS) - 1;

  TlbCache() = default;
  // Throws std::invalid_argument for a geometry hardware would not have (see TlbGeometry).
  explicit TlbCache(const TlbGeometry& g) {
    if (g.entries == 0) return;
    const uint32_t sets = g.ways ? g.entries / g.ways : 0;
    if (!g.ways || g.entries % g.ways || (sets & (sets - 1)))
      throw std::invalid_argument("TLB geometry " + std::to_string(g.entries) + " entries, " + std::to_string(g.ways) +
                                  " ways: entries must be a multiple of ways and entries/ways a power of two");
    ways_ = g.ways;
    set_mask_ = sets - 1;
    slots_.assign(g.entries, 0);
  }

  bool enabled() const { return ways_ != 0; }
  unsigned ways() const { return ways_; }
  unsigned sets() const { return set_mask_ + 1; }

  // The flags of `tag`'s entry (made most recently used), or -1. `index` picks the set (its low
  // bits); a tag must always come with the same index.
  int find(uint64_t tag, uint64_t index) {
    if (!ways_) return -1;  // a structure configured away: no slots to index
    uint64_t* set = set_of(index);
    const uint64_t want = tag + 1;
    for (unsigned w = 0; w < ways_; ++w) {
      const uint64_t s = set[w];
      if ((s >> FLAG_BITS) == want) {
        if (w) to_front(set, w);
        return static_cast<int>(s & FLAG_MASK);
      }
      if (!s) break;
    }
    return -1;
  }

  // Puts `tag` first in its set with `flags`; the least recently used entry goes when full.
  void insert(uint64_t tag, uint64_t index, unsigned flags) {
    if (!ways_) return;
    uint64_t* set = set_of(index);
    const uint64_t slot = ((tag + 1) << FLAG_BITS) | (flags & FLAG_MASK);
    unsigned w = 0;
    while (w < ways_ - 1 && set[w] && (set[w] >> FLAG_BITS) != tag + 1) ++w;
    // w: the tag's own way, the first empty one, or the last (LRU) way; shift the ones before it.
    set[w] = slot;
    if (w) to_front(set, w);
    used_ = true;
  }

  // Whether an entry may be held (false only when none is: a lookup can skip the structure).
  bool maybe_used() const { return used_; }

  // Drops `tag`'s entry; true when there was one.
  bool erase(uint64_t tag, uint64_t index) {
    if (!ways_) return false;
    uint64_t* set = set_of(index);
    for (unsigned w = 0; w < ways_ && set[w]; ++w) {
      if ((set[w] >> FLAG_BITS) != tag + 1) continue;
      std::memmove(set + w, set + w + 1, (ways_ - 1 - w) * sizeof(uint64_t));
      set[ways_ - 1] = 0;
      return true;
    }
    return false;
  }

  void clear() {
    if (used_) std::fill(slots_.begin(), slots_.end(), 0);
    used_ = false;
  }

  // Keeps only the entries with every bit of `flags` set (order kept, empty slots last).
  void keep_only(unsigned flags) {
    for (size_t base = 0; base < slots_.size(); base += ways_) {
      unsigned out = 0;
      for (unsigned w = 0; w < ways_; ++w) {
        const uint64_t s = slots_[base + w];
        if (s && (s & flags) == flags) slots_[base + out++] = s;
      }
      for (; out < ways_; ++out) slots_[base + out] = 0;
    }
    used_ = size() != 0;
  }

  unsigned size() const {
    unsigned n = 0;
    for (uint64_t s : slots_) n += s != 0;
    return n;
  }

 private:
  uint64_t* set_of(uint64_t index) { return &slots_[(index & set_mask_) * ways_]; }
  // Moves way w to the front, the ways before it one back: a rotation through a register (a
  // set is a few words; a memmove call would cost more than the move).
  static void to_front(uint64_t* set, unsigned w) {
    uint64_t carry = set[w];
    for (unsigned i = 0; i <= w; ++i) std::swap(carry, set[i]);
  }

  unsigned ways_ = 0;
  uint32_t set_mask_ = 0;
  bool used_ = false;  // an entry was inserted since the last clear()
  std::vector<uint64_t> slots_;
};

}  // namespace vmmu::sim
