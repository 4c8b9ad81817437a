#pragma once
// What the TLB model needs to know about the walk of an access that missed every TLB, learnt
// after the access without side effects: a guest walk that writes nothing (natively and under
// TDP), and the engine's own tables (Mmu::hardware_mapping: the TDP tables for each gpa the
// walk reads, the shadow tables for the gva). Only misses come here; hits need nothing.
#include <cstdint>

#include "sim/tlb_model.hpp"
#include "vm/vm.hpp"

namespace vmmu::sim {

WalkFacts probe_walk(const Vm& vm, const Vcpu& vcpu, uint64_t gva, AccessKind kind, const AccessResult& result);

}  // namespace vmmu::sim
