#pragma once
// What one guest access came to: data, a fault delivered to the guest, or an exit to the VMM.
#include <cstdint>

#include "x86/page_fault.hpp"

namespace vmmu::mmu {

struct AccessResult {
  enum class Status : uint8_t {
    Ok,        // performed; `value` holds what a read returned
    Fault,     // the guest takes `fault` (#PF or #GP)
    Mmio,      // the gpa is in no memslot: the VMM emulates it
    ReadOnly,  // a write to a read-only memslot: not performed, the VMM emulates it
    Retry,     // (inside the library) the host is invalidating the range: drop the lock, enter again
  };
  Status status = Status::Ok;
  uint64_t gpa = 0;
  uint64_t value = 0;
  x86::Fault fault{};

  bool ok() const { return status == Status::Ok; }
};

}  // namespace vmmu::mmu
