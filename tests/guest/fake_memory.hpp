#pragma once
// A fake guest-physical memory for walker tests, in Hedron's style: a few regions of plain bytes
// that implement the walker's memory port and record every entry read and every update_entry, so
// a test can assert which entries got A/D bits, in what order, and that a fault wrote nothing.
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "guest/walker.hpp"

namespace vmmu::guest::test {

class FakeMemory {
 public:
  struct Update {
    uint64_t gpa;
    uint64_t old_value;
    uint64_t new_value;
    unsigned size;
    EntryUpdate outcome;
  };

  // Adds `size` zeroed bytes at `base`; `read_only` makes update_entry refuse (a read-only slot).
  void add(uint64_t base, uint64_t size, bool read_only = false) {
    regions_.push_back(Region{base, std::vector<uint8_t>(size, 0), read_only});
  }

  bool backed(uint64_t gpa, unsigned size) const { return find(gpa, size) != nullptr; }
  bool read_only(uint64_t gpa) const {
    const Region* r = find(gpa, 1);
    return r && r->read_only;
  }

  // Host-side access for building tables and checking results: never recorded.
  bool peek(uint64_t gpa, unsigned size, uint64_t& out) const {
    const Region* r = find(gpa, size);
    if (!r) return false;
    out = 0;
    std::memcpy(&out, r->bytes.data() + (gpa - r->base), size);
    return true;
  }
  uint64_t load(uint64_t gpa, unsigned size = 8) const {
    uint64_t v = 0;
    if (!peek(gpa, size, v)) fail_unbacked(gpa);
    return v;
  }
  void store(uint64_t gpa, uint64_t value, unsigned size = 8) {
    Region* r = find(gpa, size);
    if (!r) fail_unbacked(gpa);
    std::memcpy(r->bytes.data() + (gpa - r->base), &value, size);
  }
  void fill(uint8_t byte) {
    for (Region& r : regions_) std::memset(r.bytes.data(), byte, r.bytes.size());
  }

  // Every byte of every region, in region order (to compare whole memories).
  std::vector<uint8_t> snapshot() const {
    std::vector<uint8_t> all;
    for (const Region& r : regions_) all.insert(all.end(), r.bytes.begin(), r.bytes.end());
    return all;
  }

  // The walker's port.
  template <class Entry>
  bool read_entry(uint64_t gpa, Entry& out) {
    reads.push_back(gpa);
    if (gpa % sizeof(Entry) != 0) ++misaligned;
    uint64_t v = 0;
    if (!peek(gpa, sizeof(Entry), v)) return false;
    out = static_cast<Entry>(v);
    return true;
  }
  template <class Entry>
  EntryUpdate update_entry(uint64_t gpa, Entry old, Entry updated) {
    if (before_update) before_update(*this, gpa);
    EntryUpdate outcome = EntryUpdate::Done;
    uint64_t current = 0;
    Region* r = find(gpa, sizeof(Entry));
    if (!r) {
      ++unbacked_updates;  // the walker must only update entries it could read
      outcome = EntryUpdate::ReadOnly;
    } else if (r->read_only) {
      outcome = EntryUpdate::ReadOnly;
    } else {
      std::memcpy(&current, r->bytes.data() + (gpa - r->base), sizeof(Entry));
      if (static_cast<Entry>(current) != old) {
        outcome = EntryUpdate::Changed;
      } else {
        std::memcpy(r->bytes.data() + (gpa - r->base), &updated, sizeof(Entry));
      }
    }
    updates.push_back(Update{gpa, old, updated, static_cast<unsigned>(sizeof(Entry)), outcome});
    return outcome;
  }

  void clear_log() {
    reads.clear();
    updates.clear();
    misaligned = 0;
    unbacked_updates = 0;
  }
  // Updates that changed memory.
  size_t writes() const {
    size_t n = 0;
    for (const Update& u : updates) n += u.outcome == EntryUpdate::Done;
    return n;
  }

  std::vector<uint64_t> reads;
  std::vector<Update> updates;
  unsigned misaligned = 0;
  unsigned unbacked_updates = 0;
  // Runs before each update_entry (to model another vCPU racing with the walk).
  std::function<void(FakeMemory&, uint64_t gpa)> before_update;

 private:
  struct Region {
    uint64_t base;
    std::vector<uint8_t> bytes;
    bool read_only;
  };

  const Region* find(uint64_t gpa, unsigned size) const {
    for (const Region& r : regions_) {
      if (gpa >= r.base && size <= r.bytes.size() && gpa - r.base <= r.bytes.size() - size) return &r;
    }
    return nullptr;
  }
  Region* find(uint64_t gpa, unsigned size) {
    return const_cast<Region*>(static_cast<const FakeMemory*>(this)->find(gpa, size));
  }
  [[noreturn]] static void fail_unbacked(uint64_t gpa) {
    throw std::out_of_range("FakeMemory: no region holds gpa " + std::to_string(gpa));
  }

  std::vector<Region> regions_;
};

}  // namespace vmmu::guest::test
