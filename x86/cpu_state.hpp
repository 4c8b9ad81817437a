#pragma once
// What the guest's CPU looks like (the model, fixed per VM) and what state it is in (per vCPU).
#include <cstdint>

#include "x86/control_registers.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::x86 {

// The CPU model shared by every vCPU (.vmt `cpu`).
struct CpuModel {
  unsigned maxphyaddr = 48;  // M: entry bits M..51 (M..62 under PAE) are reserved
  bool gbpages = true;       // 1 GiB pages exist (else PS in a PDPTE is reserved)
  bool la57 = true;          // 5-level paging exists
  friend bool operator==(const CpuModel&, const CpuModel&) = default;
};

inline constexpr unsigned MIN_MAXPHYADDR = 32;
inline constexpr unsigned MAX_MAXPHYADDR = 52;

// Registers that translation depends on. cpl, ac and pkru are checked at every access; a change
// of the others changes the paging context.
struct CpuState {
  uint64_t cr0 = 0;
  uint64_t cr3 = 0;
  uint64_t cr4 = 0;
  uint64_t efer = 0;  // LMA is derived, never taken from the VMM
  uint8_t cpl = 0;    // 0 or 3
  bool ac = false;    // RFLAGS.AC
  uint32_t pkru = 0;

  constexpr bool paging() const { return (cr0 & cr0::PG) != 0; }
  constexpr bool long_mode() const { return paging() && (efer & efer::LME) != 0; }
  constexpr PagingMode mode() const {
    if (!paging()) return PagingMode::Off;
    if (long_mode()) return (cr4 & cr4::LA57) ? PagingMode::Level5 : PagingMode::Level4;
    return (cr4 & cr4::PAE) ? PagingMode::Pae : PagingMode::Bits32;
  }
  // EFER as the guest would read it: LMA follows LME and CR0.PG.
  constexpr uint64_t effective_efer() const {
    return long_mode() ? (efer | efer::LMA) : (efer & ~efer::LMA);
  }
  friend bool operator==(const CpuState&, const CpuState&) = default;
};

// The four PDPTEs that PAE paging latches from CR3 (SDM 4.4.1).
struct PaePdptes {
  uint64_t entry[4] = {0, 0, 0, 0};
  friend bool operator==(const PaePdptes&, const PaePdptes&) = default;
};

}  // namespace vmmu::x86
