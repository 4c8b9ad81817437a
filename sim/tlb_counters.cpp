#include "sim/tlb_counters.hpp"

namespace vmmu::sim {

nlohmann::ordered_json TlbCounters::to_json() const {
  constexpr const char* LEVELS[] = {"", "", "pde", "pdpte", "pml4e", "pml5e"};
  nlohmann::ordered_json j;
  j["accesses"] = accesses;
  j["untranslated"] = untranslated;
  j["hits"] = hits();
  j["misses"] = walks;
  j["l1_hits"] = l1_hits;
  j["stlb_hits"] = stlb_hits;
  j["walks"] = walks;
  j["dirty_walks"] = dirty_walks;
  j["faulting_walks"] = faulting_walks;
  j["walk_refs"] = walk_refs;
  j["nested_walks"] = nested_walks;
  j["nested_refs"] = nested_refs;
  j["walk_ref_histogram"] = walk_ref_histogram;
  auto by_level = [&](const uint64_t (&n)[6]) {
    nlohmann::ordered_json l = nlohmann::ordered_json::object();
    for (unsigned level = 5; level >= 2; --level) l[LEVELS[level]] = n[level];
    return l;
  };
  j["psc_hits"] = by_level(psc_hits);
  j["nested_psc_hits"] = by_level(nested_psc_hits);
  j["flushes"] = {{"cr3", cr3_flushes},         {"invlpg", invlpgs},          {"full", full_flushes},
                  {"registers", register_flushes}, {"engine", engine_flushes}, {"fault", fault_flushes}};
  return j;
}

}  // namespace vmmu::sim
