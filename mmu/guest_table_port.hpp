#pragma once
// The walker's port onto guest memory for software walks (the reference, and a shadow MMU's
// walk of the guest's tables): entries are read through the memslots; an A/D update is a guest
// write, so it is dirty-logged and marks the page accessed.
#include <cstdint>

#include "guest/guest_memory.hpp"
#include "guest/memslots.hpp"
#include "guest/walker.hpp"
#include "mmu/vcpu_context.hpp"

namespace vmmu::mmu {

class GuestTablePort {
 public:
  // `vcpu`, when given, is whose dirty ring the A/D updates go to.
  explicit GuestTablePort(const guest::Memslots& slots, VcpuContext* vcpu = nullptr) : slots_(slots), vcpu_(vcpu) {}

  template <class Entry>
  bool read_entry(uint64_t gpa, Entry& out) {
    guest::Memslot* s = slots_.find(gpa >> x86::PAGE_SHIFT);
    if (!s) return false;
    // Reads come before any A/D update: the update's bitmap storage is made here, so the host
    // refuses (if it does) before the walk changed anything.
    if (!s->readonly()) s->prepare_bitmaps(gpa >> x86::PAGE_SHIFT);
    out = guest::GuestMemory::atomic_load<Entry>(s->host_page(gpa >> x86::PAGE_SHIFT) + (gpa & x86::PAGE_OFFSET_MASK));
    return true;
  }

  template <class Entry>
  guest::EntryUpdate update_entry(uint64_t gpa, Entry old, Entry updated) {
    const uint64_t gfn = gpa >> x86::PAGE_SHIFT;
    guest::Memslot* s = slots_.find(gfn);
    if (!s || s->readonly()) return guest::EntryUpdate::ReadOnly;
    if (!guest::GuestMemory::atomic_cmpxchg<Entry>(s->host_page(gfn) + (gpa & x86::PAGE_OFFSET_MASK), old, updated))
      return guest::EntryUpdate::Changed;
    if (vcpu_) {
      vcpu_->mark_dirty(*s, gfn);
    } else {
      s->mark_dirty(gfn);
    }
    s->mark_accessed(gfn);
    ++updates;
    return guest::EntryUpdate::Done;
  }

  uint64_t updates = 0;

 private:
  const guest::Memslots& slots_;
  VcpuContext* vcpu_;
};

}  // namespace vmmu::mmu
