#pragma once
// Guest-physical memory as the VMM sees it: read, write and compare-and-swap on gpas through the
// memslots. These are host accesses: they mark nothing dirty or accessed.
#include <atomic>
#include <cstdint>
#include <cstring>

#include "guest/memslots.hpp"

namespace vmmu::guest {

class GuestMemory {
 public:
  explicit GuestMemory(const Memslots& slots) : slots_(slots) {}

  const Memslots& slots() const { return slots_; }

  // Host address of `gpa`, or nullptr when no memslot holds it (MMIO).
  uint8_t* host_address(uint64_t gpa) const {
    const Memslot* s = slots_.find(gpa >> x86::PAGE_SHIFT);
    return s ? s->host_page(gpa >> x86::PAGE_SHIFT) + (gpa & x86::PAGE_OFFSET_MASK) : nullptr;
  }

  // Little-endian value of `width` bytes (1, 2, 4, 8) within one page. A naturally aligned
  // access is one atomic access, as on hardware (vCPUs and the VMM race on guest memory);
  // a misaligned one is a plain copy.
  static uint64_t load(const uint8_t* p, unsigned width) {
    if ((reinterpret_cast<uintptr_t>(p) & (width - 1)) == 0) {
      switch (width) {
        case 1: return atomic_load<uint8_t>(const_cast<uint8_t*>(p));
        case 2: return atomic_load<uint16_t>(const_cast<uint8_t*>(p));
        case 4: return atomic_load<uint32_t>(const_cast<uint8_t*>(p));
        case 8: return atomic_load<uint64_t>(const_cast<uint8_t*>(p));
      }
    }
    uint64_t v = 0;
    std::memcpy(&v, p, width);
    return v;
  }
  static void store(uint8_t* p, unsigned width, uint64_t v) {
    if ((reinterpret_cast<uintptr_t>(p) & (width - 1)) == 0) {
      switch (width) {
        case 1: return atomic_store<uint8_t>(p, static_cast<uint8_t>(v));
        case 2: return atomic_store<uint16_t>(p, static_cast<uint16_t>(v));
        case 4: return atomic_store<uint32_t>(p, static_cast<uint32_t>(v));
        case 8: return atomic_store<uint64_t>(p, v);
      }
    }
    std::memcpy(p, &v, width);
  }

  bool read(uint64_t gpa, unsigned width, uint64_t& value) const {
    const uint8_t* p = host_address(gpa);
    if (!p) return false;
    value = load(p, width);
    return true;
  }
  bool write(uint64_t gpa, unsigned width, uint64_t value) const {
    uint8_t* p = host_address(gpa);
    if (!p) return false;
    store(p, width, value);
    return true;
  }

  // Atomic access to a naturally aligned entry (4 or 8 bytes) at a host address.
  template <class T>
  static T atomic_load(uint8_t* p) {
    return std::atomic_ref<T>(*reinterpret_cast<T*>(p)).load(std::memory_order_relaxed);
  }
  template <class T>
  static void atomic_store(uint8_t* p, T v) {
    std::atomic_ref<T>(*reinterpret_cast<T*>(p)).store(v, std::memory_order_relaxed);
  }
  template <class T>
  static bool atomic_cmpxchg(uint8_t* p, T expected, T desired) {
    return std::atomic_ref<T>(*reinterpret_cast<T*>(p)).compare_exchange_strong(expected, desired);
  }

 private:
  const Memslots& slots_;
};

}  // namespace vmmu::guest
