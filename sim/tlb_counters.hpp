#pragma once
// What the TLB model counted over a replay (summed over vCPUs); docs/TLB-MODEL.md defines each.
#include <cstdint>

#include <nlohmann/json.hpp>

namespace vmmu::sim {

struct TlbCounters {
  static constexpr unsigned MAX_WALK_REFS = 35;  // 5-level over 5-level, nothing cached

  uint64_t accesses = 0;      // guest accesses the model saw
  uint64_t untranslated = 0;  // of which needed no translation (#GP, or paging off natively)
  uint64_t l1_hits = 0;       // found in the L1 dTLB / iTLB
  uint64_t stlb_hits = 0;     // missed L1, found in the STLB
  uint64_t walks = 0;         // missed every TLB (or a write found a clean entry): a page walk
  uint64_t dirty_walks = 0;   // of which walked only to set a dirty bit
  uint64_t faulting_walks = 0;  // of which ended without a translation (fault, MMIO, read-only)
  uint64_t walk_refs = 0;     // memory references of every walk (both dimensions under TDP)
  uint64_t nested_walks = 0;  // TDP: walks of the nested tables for one gpa (part of walks' refs)
  uint64_t nested_refs = 0;   // TDP: references of those nested walks (part of walk_refs)
  uint64_t walk_ref_histogram[MAX_WALK_REFS + 1] = {};  // walks by their reference count
  uint64_t psc_hits[6] = {};         // walks that started below a cached entry, by its level
  uint64_t nested_psc_hits[6] = {};  // nested walks likewise (TDP)
  uint64_t cr3_flushes = 0, invlpgs = 0, full_flushes = 0, register_flushes = 0, engine_flushes = 0, fault_flushes = 0;

  uint64_t hits() const { return l1_hits + stlb_hits; }
  uint64_t translated() const { return accesses - untranslated; }

  nlohmann::ordered_json to_json() const;
};

}  // namespace vmmu::sim
