#pragma once
// --mmu=none: every access walks the guest tables and touches memory through the memslots.
// Nothing is cached, so it is the reference every engine must agree with.
#include <map>

#include "mmu/mmu.hpp"

namespace vmmu::mmu {

class ReferenceMmu final : public Mmu {
 public:
  using Mmu::Mmu;
  const char* name() const override { return "none"; }
  AccessResult access(VcpuContext& vcpu, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) override;
  void report(nlohmann::ordered_json& stats, nlohmann::ordered_json& memory) const override;

 private:
  uint64_t walks_ = 0;
  uint64_t walk_refs_ = 0;
  uint64_t ad_updates_ = 0;
};

}  // namespace vmmu::mmu
