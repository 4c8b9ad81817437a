#pragma once
// A virtual CPU (KVM's kvm_vcpu): paging registers set by the VMM or changed by the guest, and
// guest accesses through the VM's MMU.
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "mmu/access_result.hpp"
#include "mmu/vcpu_context.hpp"
#include "x86/access.hpp"
#include "x86/page_fault.hpp"

namespace vmmu {

class Vm;
using mmu::AccessResult;
using x86::AccessKind;

// Registers the VMM sets (KVM_SET_SREGS and friends); fields left empty keep their values.
struct RegisterUpdate {
  std::optional<uint64_t> cr0, cr3, cr4, efer;
  std::optional<uint8_t> cpl;
  std::optional<bool> ac;
  std::optional<uint32_t> pkru;
  bool touches_paging() const { return cr0 || cr3 || cr4 || efer; }
};

// Per-vCPU counters (summed over vCPUs in the VM's stats).
struct VcpuStats {
  uint64_t reads = 0, writes = 0, fetches = 0;
  uint64_t page_faults = 0, gp_faults = 0, mmio = 0, readonly_writes = 0;
  std::map<uint32_t, uint64_t> pf_by_error_code;
};

class Vcpu {
 public:
  Vcpu(Vm& vm, uint32_t id);

  uint32_t id() const { return ctx_.id; }
  const x86::CpuState& state() const { return ctx_.state; }
  const x86::PaePdptes& pdptes() const { return ctx_.pdptes; }
  const mmu::VcpuContext& context() const { return ctx_; }
  // For engine-level benchmarks and tools that drive an engine directly (no lock taken).
  mmu::VcpuContext& mmu_context() { return ctx_; }
  const VcpuStats& stats() const { return stats_; }

  // The VMM sets registers. A change of CR0/CR3/CR4/EFER drops the vCPU's cached translations
  // and, under PAE paging, loads the PDPTEs; reserved bits there give #GP and change nothing.
  // Throws UsageError for a state the CPU cannot be in (PG without PE, LA57 the model lacks,
  // PCIDE, reserved CR3 bits, long mode without PAE).
  std::optional<x86::Fault> set_registers(const RegisterUpdate& update);
  // The guest executes MOV to CR3 (non-global translations go; PAE loads the PDPTEs).
  std::optional<x86::Fault> mov_cr3(uint64_t cr3);
  // The guest executes INVLPG.
  void invlpg(uint64_t gva);
  // The guest flushes every translation, global ones included (PAE reloads the PDPTEs).
  std::optional<x86::Fault> flush();

  // The pages this vCPU dirtied since the last harvest (Vm::enable_dirty_ring), and whether its
  // ring is full (the VMM should harvest and reset before running it again).
  std::vector<mmu::DirtyRingEntry> harvest_dirty_ring();
  bool dirty_ring_full() const { return ctx_.dirty_ring && ctx_.dirty_ring->full(); }

  // A guest access of `width` bytes (1, 2, 4 or 8) that must lie within one page.
  AccessResult access(uint64_t gva, AccessKind kind, unsigned width = 8, uint64_t value = 0);

 private:
  friend class Vm;
  void check_state(const x86::CpuState& s) const;
  std::optional<x86::Fault> load_pdptes(const x86::CpuState& s, x86::PaePdptes& out) const;
  void count(const AccessResult& r, AccessKind kind);
  // The software TLB: performs the access and returns true on a hit.
  bool hit_translation(uint64_t gva, AccessKind kind, unsigned width, uint64_t value, AccessResult& r);
  void drop_translations();

  Vm& vm_;
  mmu::VcpuContext ctx_;
  VcpuStats stats_;
};

}  // namespace vmmu
