#pragma once
// A virtual CPU (KVM's kvm_vcpu): paging registers set by the VMM or changed by the guest, and
// guest accesses through the VM's MMU.
#include <cassert>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "guest/guest_memory.hpp"
#include "mmu/access_result.hpp"
#include "mmu/asymmetric_fence.hpp"
#include "mmu/mmu.hpp"
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

  // A guest access of `width` bytes (1, 2, 4 or 8) that must lie within one page. A hit in the
  // software TLB is done here, inline; anything else goes to the engine.
  [[gnu::always_inline]] AccessResult access(uint64_t gva, AccessKind kind, unsigned width = 8, uint64_t value = 0) {
    if (!well_formed(gva, kind, width, value)) [[unlikely]]
      refuse_access(gva, kind, width, value);
    return access_well_formed(gva, kind, width, value);
  }
  // The same for a caller whose accesses are well formed by construction (the binary .vmt
  // decoder checks each record so): `width` 1, 2, 4 or 8 (1 for a fetch), `value` within it,
  // and the access within one page. Only what depends on the vCPU's state is checked.
  [[gnu::always_inline]] AccessResult access_well_formed(uint64_t gva, AccessKind kind, unsigned width, uint64_t value) {
    assert(well_formed(gva, kind, width, value));
    if ((gva >> 32) && !ctx_.state.long_mode()) [[unlikely]]
      refuse_access(gva, kind, width, value);
    AccessResult r;
    if (ctx_.translations && hit_translation(gva, kind, width, value, r)) [[likely]] {
      count_kind(kind);
      return r;
    }
    return engine_access(gva, kind, width, value);
  }

 private:
  friend class Vm;
  void check_state(const x86::CpuState& s) const;
  std::optional<x86::Fault> load_pdptes(const x86::CpuState& s, x86::PaePdptes& out) const;
  // Width 1, 2, 4 or 8 (1 for a fetch), the value within it, the access within one page. Flags
  // or'ed, not short-circuited: one branch on the hot path, not five.
  static bool well_formed(uint64_t gva, AccessKind kind, unsigned width, uint64_t value) {
    const bool bad_width = width > 8 || ((0x116u >> width) & 1) == 0;  // bits 1, 2, 4, 8
    const bool bad_value = width < 8 && (value >> (8 * width));
    const bool crosses = (gva & x86::PAGE_OFFSET_MASK) + width > x86::PAGE_SIZE;
    return !(bad_width | bad_value | crosses | (kind == AccessKind::Fetch && width != 1));
  }
  // Throws the UsageError that says what is wrong with an access well_formed() or the mode refused.
  [[noreturn]] void refuse_access(uint64_t gva, AccessKind kind, unsigned width, uint64_t value) const;
  AccessResult engine_access(uint64_t gva, AccessKind kind, unsigned width, uint64_t value);
  void count(const AccessResult& r, AccessKind kind);
  void count_kind(AccessKind kind) {
    switch (kind) {
      case AccessKind::Read: ++stats_.reads; break;
      case AccessKind::Write: ++stats_.writes; break;
      case AccessKind::Fetch: ++stats_.fetches; break;
    }
  }
  // The software TLB: performs the access and returns true on a hit.
  bool hit_translation(uint64_t gva, AccessKind kind, unsigned width, uint64_t value, AccessResult& r) {
    // Inside the epoch before the generation is read: whoever moves it next waits for this
    // access to end before host frames move (Mmu::drop_translation_caches). Only this thread
    // writes the epoch, and the fence's other half is the waiter's (mmu/asymmetric_fence.hpp):
    // no locked instruction on a hit.
    std::atomic<uint64_t>& epoch = ctx_.access_epoch;
    const uint64_t e = epoch.load(std::memory_order_relaxed);
    epoch.store(e + 1, std::memory_order_relaxed);
    mmu::light_fence();
    mmu::TranslationCache& tc = *ctx_.translations;
    tc.sync(mmu_.translation_generation());
    const mmu::TranslationCache::Hit* h = tc.find(gva, kind, ctx_.state.cpl == 3);
    if (h) [[likely]] {
      const uint64_t offset = gva & x86::PAGE_OFFSET_MASK;
      r.gpa = h->gpa | offset;
      if (kind == AccessKind::Read) r.value = guest::GuestMemory::load(h->host + offset, width);
      if (kind == AccessKind::Write) guest::GuestMemory::store(h->host + offset, width, value);
    }
    epoch.store(e + 2, std::memory_order_release);
    return h != nullptr;
  }
  void drop_translations();

  Vm& vm_;
  const mmu::Mmu& mmu_;  // the Vm's, which outlives its vCPUs' accesses
  mmu::VcpuContext ctx_;
  VcpuStats stats_;
};

}  // namespace vmmu
