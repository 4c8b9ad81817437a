#pragma once
// The TLB model attached to a replay: one TlbModel per vCPU, fed with every access and with the
// events that flush hardware TLBs (the guest's cr3/invlpg/flush, the VMM's register changes, and
// the engine's own flushes, seen through Mmu::tlb_flush_count). It reads the Vm, never changes it.
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "sim/tlb_config.hpp"
#include "sim/tlb_counters.hpp"
#include "sim/tlb_model.hpp"
#include "vm/vm.hpp"

namespace vmmu::sim {

class TlbReplay {
 public:
  // Counts into `counters`, which must outlive it. Throws std::invalid_argument for a bad config.
  TlbReplay(const Vm& vm, const TlbConfig& config, TlbCounters& counters);

  // After the access was performed, with its result.
  [[gnu::always_inline]] void access(const Vcpu& vcpu, uint64_t gva, AccessKind kind, const AccessResult& result) {
    engine_check();
    ++counters_.accesses;
    if (result.status != AccessResult::Status::Ok || native_) [[unlikely]]
      return access_other(vcpu, gva, kind, result);
    translate(vcpu, gva, kind, result);
  }
  void registers_changed(uint32_t vcpu);  // the VMM changed CR0/CR3/CR4/EFER
  void cr3_loaded(uint32_t vcpu);         // the guest's MOV CR3
  void invlpg(uint32_t vcpu, uint64_t gva);
  void flushed(uint32_t vcpu);            // the guest flushed everything, globals included
  // Flushes every vCPU's model if the engine flushed remote TLBs since the last look.
  void engine_check() {
    const uint64_t n = mmu_.tlb_flush_count();
    if (n != engine_flushes_seen_) engine_flushed(n);
  }

  const TlbCounters& counters() const { return counters_; }

 private:
  TlbModel& model(uint32_t vcpu) {
    if (vcpu == last_id_) [[likely]]
      return *last_model_;
    return find_model(vcpu);
  }
  TlbModel& find_model(uint32_t vcpu);
  // The vCPU's model, after it looked the access up and, on a miss, counted its walk.
  TlbModel& translate(const Vcpu& vcpu, uint64_t gva, AccessKind kind, const AccessResult& result) {
    TlbModel& m = model(vcpu.id());
    if (!m.lookup(gva, kind)) m.walk(gva, kind, probe(vcpu, gva, kind, result));
    return m;
  }
  // A fault, MMIO or read-only result, or any access of the native walker (whose paging may be off).
  void access_other(const Vcpu& vcpu, uint64_t gva, AccessKind kind, const AccessResult& result);
  void engine_flushed(uint64_t count);
  WalkFacts probe(const Vcpu& vcpu, uint64_t gva, AccessKind kind, const AccessResult& result) const;

  const Vm& vm_;
  const mmu::Mmu& mmu_;  // the Vm's
  TlbConfig config_;
  TlbCounters& counters_;
  bool native_;
  uint64_t engine_flushes_seen_;
  std::vector<std::pair<uint32_t, std::unique_ptr<TlbModel>>> models_;
  uint64_t last_id_ = UINT64_MAX;  // the vCPU asked for last (none yet: no 32-bit ID matches) and its model
  TlbModel* last_model_ = nullptr;
};

}  // namespace vmmu::sim
