#pragma once
// A walker port (guest/walker.hpp) that reads guest tables straight from the memslots and changes
// nothing: no A/D bits set, no dirty log, no accessed bitmap. For looking at what a walk would
// give without the guest doing it (workload generators, the TLB model's walk of a miss).
#include <cstdint>

#include "guest/guest_memory.hpp"
#include "guest/memslots.hpp"
#include "guest/walker.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::guest {

class ReadOnlyPort {
 public:
  explicit ReadOnlyPort(const Memslots& slots) : slots_(slots) {}

  template <class Entry>
  bool read_entry(uint64_t gpa, Entry& out) {
    const Memslot* s = slots_.find(gpa >> x86::PAGE_SHIFT);
    if (!s) return false;
    out = GuestMemory::atomic_load<Entry>(s->host_page(gpa >> x86::PAGE_SHIFT) + (gpa & x86::PAGE_OFFSET_MASK));
    return true;
  }
  template <class Entry>
  EntryUpdate update_entry(uint64_t, Entry, Entry) {
    return EntryUpdate::Done;
  }

 private:
  const Memslots& slots_;
};

}  // namespace vmmu::guest
