// A tiny VMM embedding vmmu: one vCPU in 4-level long mode under the shadow MMU, a guest "kernel"
// that maps its heap on demand from its #PF handler, and an emulated MMIO device. Exits 0 when
// every guest access saw what the guest expects. Usage: tiny_vmm [none|tdp|shadow]
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>

#include "vm/vm.hpp"

namespace {

using vmmu::AccessKind;
using Status = vmmu::AccessResult::Status;

constexpr uint64_t P = 1, W = 2, PS = 0x80;  // entry bits: present, writable, huge page
constexpr uint64_t PML4 = 0x1000, PDPT = 0x2000, PD = 0x3000, PT = 0x4000;
constexpr uint64_t HEAP = 0x200000;          // gva 2 MiB..4 MiB: PT's range, mapped on demand
constexpr uint64_t HEAP_PAGES = 8;
constexpr uint64_t MMIO_GVA = 0x3ff000;      // PT's last entry: the device's register page
constexpr uint64_t MMIO_GPA = 0xfee00000;    // in no memslot, so every access exits to the VMM
constexpr uint64_t DEVICE_ID = 0x7e57;

struct Guest {
  vmmu::Vm& vm;
  vmmu::Vcpu& cpu;
  uint64_t next_frame = 0x100000;  // the guest kernel's frame allocator, from 1 MiB up
  uint64_t device_reg = 0;         // the emulated device: offset 0 is its id, offset 8 a register
  int faults = 0, mmio_exits = 0;

  // One guest access, run until it completes: the VMM's run loop in miniature.
  uint64_t run(uint64_t gva, AccessKind kind, uint64_t value = 0) {
    for (int attempt = 0; attempt < 4; ++attempt) {
      const vmmu::AccessResult r = cpu.access(gva, kind, 8, value);
      switch (r.status) {
        case Status::Ok: return r.value;
        case Status::Fault: guest_fault_handler(r.fault); continue;  // then the guest retries
        case Status::Mmio: ++mmio_exits; return emulate_mmio(r.gpa, kind, value);
        case Status::Retry: continue;  // the host was invalidating the range
        case Status::ReadOnly: throw std::runtime_error("write to a read-only memslot");
      }
    }
    throw std::runtime_error("an access that never completes");
  }

  // The guest kernel's #PF handler: back a heap page with a fresh frame. It writes the PTE
  // through its identity map of low memory, so the MMU sees a guest write to a guest page table
  // (which the shadow MMU write-protects), not a VMM write.
  void guest_fault_handler(const vmmu::x86::Fault& f) {
    const bool not_present = (f.error_code & vmmu::x86::pfec::P) == 0;
    if (f.vector != vmmu::x86::VECTOR_PF || !not_present || f.address < HEAP || f.address >= MMIO_GVA)
      throw std::runtime_error("a fault the guest kernel cannot handle");
    ++faults;
    const uint64_t pte_gva = PT + ((f.address - HEAP) >> vmmu::x86::PAGE_SHIFT) * 8;
    run(pte_gva, AccessKind::Write, next_frame | P | W);
    next_frame += vmmu::x86::PAGE_SIZE;
  }

  uint64_t emulate_mmio(uint64_t gpa, AccessKind kind, uint64_t value) {
    const uint64_t offset = gpa - MMIO_GPA;
    if (kind == AccessKind::Write) {
      if (offset == 8) device_reg = value;
      return 0;
    }
    return offset == 0 ? DEVICE_ID : offset == 8 ? device_reg : ~0ull;
  }
};

}  // namespace

int main(int argc, char** argv) try {
  const auto kind = vmmu::parse_mmu_kind(argc > 1 ? argv[1] : "shadow");
  if (!kind) {
    std::fprintf(stderr, "usage: tiny_vmm [none|tdp|shadow]\n");
    return 2;
  }
  vmmu::Vm vm(vmmu::VmConfig{.mmu = *kind});
  vm.add_memslot({.id = 0, .gpa = 0, .size = 16 << 20});

  // The boot loader's page tables: PD[0] maps gva 0..2 MiB onto itself with a 2 MiB page (the
  // kernel and its tables), PD[1] points at the heap's page table, empty but for the device.
  vm.write_guest(PML4, 8, PDPT | P | W);
  vm.write_guest(PDPT, 8, PD | P | W);
  vm.write_guest(PD, 8, 0 | P | W | PS);
  vm.write_guest(PD + 8, 8, PT | P | W);
  vm.write_guest(PT + 511 * 8, 8, MMIO_GPA | P | W);

  vmmu::Vcpu& cpu = vm.create_vcpu(0);
  vmmu::RegisterUpdate regs;  // 64-bit long mode with 4-level paging, CPL 0
  regs.cr0 = 0x80010001;      // PG | WP | PE
  regs.cr4 = 0x20;            // PAE
  regs.efer = 0x500;          // LMA | LME
  regs.cr3 = PML4;
  if (cpu.set_registers(regs)) throw std::runtime_error("set_registers: #GP");

  // The guest's work: fill its heap (a #PF per page), drive the device, read it all back.
  Guest guest{vm, cpu};
  bool ok = true;
  for (uint64_t i = 0; i < HEAP_PAGES; ++i) guest.run(HEAP + i * vmmu::x86::PAGE_SIZE, AccessKind::Write, i * 0x1111);
  guest.run(MMIO_GVA + 8, AccessKind::Write, 42);
  ok &= guest.run(MMIO_GVA, AccessKind::Read) == DEVICE_ID;
  ok &= guest.run(MMIO_GVA + 8, AccessKind::Read) == 42;
  for (uint64_t i = 0; i < HEAP_PAGES; ++i) ok &= guest.run(HEAP + i * vmmu::x86::PAGE_SIZE, AccessKind::Read) == i * 0x1111;
  ok &= guest.faults == static_cast<int>(HEAP_PAGES) && guest.mmio_exits == 3;

  const auto problems = vm.audit();  // the MMU's own consistency check
  for (const auto& p : problems) std::fprintf(stderr, "audit: %s\n", p.c_str());
  std::printf("%s\n", vm.stats().dump(2).c_str());
  std::printf("mmu=%s page faults handled=%d mmio exits=%d: %s\n", vmmu::name(*kind), guest.faults,
              guest.mmio_exits, ok && problems.empty() ? "ok" : "FAILED");
  return ok && problems.empty() ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "tiny_vmm: %s\n", e.what());
  return 1;
}
