#include "sim/tlb_probe.hpp"

#include <algorithm>

#include "guest/guest_memory.hpp"
#include "guest/read_only_port.hpp"
#include "guest/walker.hpp"

namespace vmmu::sim {

namespace {

// Reads guest tables through the memslots and writes nothing: the access already set A/D.
using SideEffectFreePort = guest::ReadOnlyPort;

// The guest walk's shape: levels read, leaf, global.
void guest_dimension(const Vcpu& vcpu, const guest::WalkResult& w, bool translated, WalkFacts& f) {
  const x86::PagingMode mode = vcpu.state().mode();
  if (mode == x86::PagingMode::Off || !w.walk.refs) {
    f.top_level = 0;
    return;
  }
  f.top_level = w.walk.root_level;
  f.end_level = static_cast<uint8_t>(w.walk.root_level - w.walk.refs + 1);
  f.index_bits = mode == x86::PagingMode::Bits32 ? 10 : 9;
  if (translated) {
    f.page_level = w.walk.level;
    f.global = (w.walk.pte[w.walk.level] & x86::pte::G) && (vcpu.state().cr4 & x86::cr4::PGE);
  }
}

}  // namespace

WalkFacts probe_walk(const Vm& vm, const Vcpu& vcpu, uint64_t gva, AccessKind kind, const AccessResult& result) {
  WalkFacts f;
  const mmu::VcpuContext& ctx = vcpu.context();
  const mmu::Mmu& engine = vm.mmu();

  if (vm.mmu_kind() == MmuKind::Shadow) {
    // 1-D over the shadow tables; under a PAE-style root the PDPTEs are registers, not reads.
    const mmu::Mmu::HardwareMapping m = engine.hardware_mapping(ctx, gva);
    if (!m.root_level) return f;
    f.top_level = m.root_level == 3 ? 2 : m.root_level;
    f.end_level = std::min<uint8_t>(m.level, f.top_level);
    if (m.level > f.top_level) f.top_level = 0;  // stopped at a PDPTE register: no reads
    f.translated = result.ok() && m.present;
    f.page_level = m.level;
    f.global = false;  // KVM's SPTEs never set G: a guest MOV CR3 drops every entry
    return f;
  }

  SideEffectFreePort port(vm.memslots());
  const guest::AccessMode mode{kind, ctx.state.cpl == 3, ctx.state.ac, ctx.state.pkru};
  const guest::WalkResult w = guest::walk_guest(ctx.paging, ctx.pdptes, port, gva, mode);
  const bool translated = result.ok() && w.ok;
  guest_dimension(vcpu, w, translated, f);
  f.translated = translated;
  if (vm.mmu_kind() != MmuKind::Tdp) return f;

  // TDP: a nested walk for every guest entry read, and one for the data's gpa.
  f.nested = true;
  for (unsigned l = f.top_level; f.top_level && l >= f.end_level; --l) {
    const mmu::Mmu::HardwareMapping m = engine.hardware_mapping(ctx, w.walk.pte_gpa[l]);
    f.table_gpa[l] = w.walk.pte_gpa[l];
    f.table_nested_level[l] = m.level;
    f.nested_root_level = std::max(f.nested_root_level, m.root_level);
  }
  if (w.ok) {
    const mmu::Mmu::HardwareMapping m = engine.hardware_mapping(ctx, w.walk.gpa);
    f.data_nested = m.root_level != 0;
    f.data_gpa = w.walk.gpa;
    f.data_nested_level = m.level;
    f.nested_root_level = std::max(f.nested_root_level, m.root_level);
    // The combined entry: the smaller of the guest page and the host mapping.
    const unsigned guest_level = vcpu.state().mode() == x86::PagingMode::Off ? 3 : w.walk.level;
    f.page_level = static_cast<uint8_t>(std::min<unsigned>(guest_level, std::max<unsigned>(m.level, 1)));
    f.translated = translated && m.present;
  }
  return f;
}

}  // namespace vmmu::sim
