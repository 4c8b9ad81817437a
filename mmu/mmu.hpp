#pragma once
// One interface for translating and performing guest accesses, implemented by the reference
// (a guest walk every time) and by the engines (TDP, shadow). The Vm calls the hooks as KVM's
// common code calls into its MMU: after paging-register changes, on memslot changes, around host
// invalidations, and for the VMM's own writes to guest memory.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "guest/memslots.hpp"
#include "mmu/access_result.hpp"
#include "mmu/vcpu_context.hpp"
#include "x86/access.hpp"

namespace vmmu::mmu {

class Mmu {
 public:
  explicit Mmu(guest::Memslots& slots) : slots_(slots) {}
  virtual ~Mmu() = default;
  Mmu(const Mmu&) = delete;
  Mmu& operator=(const Mmu&) = delete;

  virtual const char* name() const = 0;

  // Translates and performs one access of `width` bytes within one page.
  virtual AccessResult access(VcpuContext& vcpu, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) = 0;

  // Cached translations of a vCPU: CR0/CR3/CR4/EFER changed (all go), MOV CR3 (non-global go),
  // INVLPG (that address, any page size), full flush (all, global included).
  virtual void reset_context(VcpuContext&) {}
  virtual void new_cr3(VcpuContext&) {}
  virtual void invlpg(VcpuContext&, uint64_t /*gva*/) {}
  virtual void flush(VcpuContext&) {}

  // Memslot changes, called after Memslots changed; `old_base_gfn` is where a moved slot was.
  virtual void memslot_added(const guest::Memslot&) {}
  virtual void memslot_removing(const guest::Memslot&) {}
  virtual void memslot_moved(const guest::Memslot&, uint64_t /*old_base_gfn*/) {}
  virtual void dirty_logging_changed(const guest::Memslot&) {}
  // Before the dirty bitmap is read (engines that log by D bits harvest them here) and after
  // the VMM cleared `gfns` in it (engines re-protect those).
  virtual void dirty_log_sync(guest::Memslot&) {}
  virtual void dirty_log_cleared(guest::Memslot&, const std::vector<uint64_t>& /*gfns*/) {}

  // Host invalidation of [gfn, gfn + npages) (KVM's MMU notifier): no mapping of the old frames
  // may survive `invalidate_start`; the host moves the pages between start and end.
  virtual void invalidate_start(uint64_t /*gfn*/, uint64_t /*npages*/) {}
  virtual void invalidate_end(uint64_t /*gfn*/, uint64_t /*npages*/) {}
  // Fold the accessed state the engine holds for [gfn, gfn + npages) into the memslot's
  // accessed bitmap and clear it (the host's `age`).
  virtual void harvest_accessed(guest::Memslot&, uint64_t /*gfn*/, uint64_t /*npages*/) {}

  // The VMM wrote guest memory at [gpa, gpa + width): stay coherent with it.
  virtual void vmm_write(uint64_t /*gpa*/, unsigned /*width*/) {}

  // Invariant violations, each a line of text; empty when everything holds.
  virtual void audit(std::vector<std::string>& /*violations*/) const {}
  // Counters into `stats`, bytes by category into `memory` (with "mapping_total").
  virtual void report(nlohmann::ordered_json& stats, nlohmann::ordered_json& memory) const = 0;

 protected:
  guest::Memslots& slots_;
};

}  // namespace vmmu::mmu
