#pragma once
// The result of walking the guest's page tables for one access.
#include <cstdint>

#include "x86/page_fault.hpp"

namespace vmmu::guest {

inline constexpr unsigned MAX_LEVELS = 5;

// A successful translation, with everything a shadow MMU needs to build SPTEs from it.
struct GuestWalk {
  uint64_t gpa = 0;        // the translated guest-physical address of the access
  uint8_t level = 1;       // level of the leaf: 1 = 4 KiB, 2 = 2/4 MiB, 3 = 1 GiB
  uint8_t root_level = 0;  // level of the first entry read from memory (0: paging off)
  uint8_t acc = 0;         // effective rights, x86::acc::U|W|X
  uint8_t pkey = 0;        // protection key of the leaf (long mode)
  uint8_t refs = 0;        // guest memory references the walk made (entries read)
  // Entries as the walk saw them (A/D updates included) and where it read them, by level.
  uint64_t pte[MAX_LEVELS + 1] = {};
  uint64_t pte_gpa[MAX_LEVELS + 1] = {};

  // Guest frame of the leaf's whole page (the 2/4 MiB or 1 GiB region's first frame).
  uint64_t leaf_pte() const { return pte[level]; }
};

// Either a translation or the fault the access raises.
struct WalkResult {
  bool ok = false;
  x86::Fault fault{};
  GuestWalk walk{};
};

}  // namespace vmmu::guest
