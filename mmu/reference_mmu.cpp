#include "mmu/reference_mmu.hpp"

#include "guest/guest_memory.hpp"
#include "guest/walker.hpp"
#include "mmu/guest_table_port.hpp"

namespace vmmu::mmu {

AccessResult ReferenceMmu::access(VcpuContext& vcpu, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) {
  GuestTablePort port(slots_, &vcpu);
  const guest::AccessMode mode{kind, vcpu.state.cpl == 3, vcpu.state.ac, vcpu.state.pkru};
  const guest::WalkResult w = guest::walk_guest(vcpu.paging, vcpu.pdptes, port, gva, mode);
  if (vcpu.paging.mode() != x86::PagingMode::Off) ++walks_;
  walk_refs_ += w.walk.refs;
  ad_updates_ += port.updates;

  AccessResult r;
  if (!w.ok) {
    r.status = AccessResult::Status::Fault;
    r.fault = w.fault;
    return r;
  }
  r.gpa = w.walk.gpa;
  const uint64_t gfn = r.gpa >> x86::PAGE_SHIFT;
  guest::Memslot* slot = slots_.find(gfn);
  if (!slot) {
    r.status = AccessResult::Status::Mmio;
    return r;
  }
  if (kind == x86::AccessKind::Write && slot->readonly()) {
    r.status = AccessResult::Status::ReadOnly;
    return r;
  }
  slot->prepare_bitmaps(gfn);  // the host may refuse here, before the access changes anything
  uint8_t* host = slot->host_page(gfn) + (r.gpa & x86::PAGE_OFFSET_MASK);
  switch (kind) {
    case x86::AccessKind::Read: r.value = guest::GuestMemory::load(host, width); break;
    case x86::AccessKind::Write:
      guest::GuestMemory::store(host, width, value);
      vcpu.mark_dirty(*slot, gfn);
      break;
    case x86::AccessKind::Fetch: break;
  }
  slot->mark_accessed(gfn);
  return r;
}

void ReferenceMmu::report(nlohmann::ordered_json& stats, nlohmann::ordered_json& memory) const {
  stats["walks"] = walks_;
  stats["walk_refs"] = walk_refs_;
  stats["ad_updates"] = ad_updates_;
  memory["mapping_total"] = 0;
}

}  // namespace vmmu::mmu
