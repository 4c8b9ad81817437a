#pragma once
// The per-vCPU state an MMU reads: registers, the paging context derived from them, and the
// PAE PDPTEs latched at the last load.
#include <cstdint>

#include "x86/cpu_state.hpp"
#include "x86/paging_context.hpp"

namespace vmmu::mmu {

struct VcpuContext {
  uint32_t id = 0;
  x86::CpuState state{};
  x86::PagingContext paging{};
  x86::PaePdptes pdptes{};
};

}  // namespace vmmu::mmu
