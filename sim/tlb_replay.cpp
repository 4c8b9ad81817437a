#include "sim/tlb_replay.hpp"

#include <algorithm>

#include "sim/tlb_probe.hpp"

namespace vmmu::sim {

TlbReplay::TlbReplay(const Vm& vm, const TlbConfig& config, TlbCounters& counters)
    : vm_(vm), mmu_(vm.mmu()), config_(config), counters_(counters), native_(vm.mmu_kind() == MmuKind::None),
      engine_flushes_seen_(vm.mmu().tlb_flush_count()) {
  TlbModel check(config_, counters_);  // a bad geometry fails here, not at the first access
}

TlbModel& TlbReplay::find_model(uint32_t vcpu) {
  auto it = std::find_if(models_.begin(), models_.end(), [&](const auto& m) { return m.first == vcpu; });
  if (it == models_.end()) it = models_.emplace(models_.end(), vcpu, std::make_unique<TlbModel>(config_, counters_));
  last_id_ = vcpu;
  last_model_ = it->second.get();
  return *last_model_;
}

void TlbReplay::access_other(const Vcpu& vcpu, uint64_t gva, AccessKind kind, const AccessResult& result) {
  const bool gp = result.status == AccessResult::Status::Fault && result.fault.vector != x86::VECTOR_PF;
  if (gp || (native_ && vcpu.state().mode() == x86::PagingMode::Off)) {
    ++counters_.untranslated;
    return;
  }
  TlbModel& m = translate(vcpu, gva, kind, result);
  if (result.status == AccessResult::Status::Fault) {
    ++counters_.fault_flushes;
    m.drop_address(gva);
  }
}

WalkFacts TlbReplay::probe(const Vcpu& vcpu, uint64_t gva, AccessKind kind, const AccessResult& result) const {
  return probe_walk(vm_, vcpu, gva, kind, result);
}

void TlbReplay::registers_changed(uint32_t vcpu) {
  ++counters_.register_flushes;
  model(vcpu).flush_guest();
}

void TlbReplay::cr3_loaded(uint32_t vcpu) { model(vcpu).new_cr3(); }

void TlbReplay::invlpg(uint32_t vcpu, uint64_t gva) { model(vcpu).invlpg(gva); }

void TlbReplay::flushed(uint32_t vcpu) {
  ++counters_.full_flushes;
  model(vcpu).flush_guest();
}

void TlbReplay::engine_flushed(uint64_t count) {
  engine_flushes_seen_ = count;
  ++counters_.engine_flushes;
  for (auto& m : models_) m.second->flush_all();
}

}  // namespace vmmu::sim
