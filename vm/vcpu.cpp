#include "vm/vcpu.hpp"

#include <mutex>
#include <shared_mutex>
#include <thread>

#include <fmt/format.h>

#include "vm/vm.hpp"
#include "x86/page_table_entry.hpp"

namespace vmmu {

Vcpu::Vcpu(Vm& vm, uint32_t id) : vm_(vm), mmu_(*vm.mmu_) {
  ctx_.id = id;
  ctx_.paging = x86::PagingContext(vm.model_, ctx_.state);
  if (vm.dirty_ring_entries_) ctx_.dirty_ring = std::make_unique<mmu::DirtyRing>(vm.dirty_ring_entries_);
  // The reference walker stays uncached: it is the oracle the engines are checked against.
  const uint32_t entries = vm.config_.translation_cache_entries;
  if (entries && vm.config_.mmu != MmuKind::None) ctx_.translations = std::make_unique<mmu::TranslationCache>(entries);
}

void Vcpu::drop_translations() {
  if (ctx_.translations) ctx_.translations->flush();
}

std::vector<mmu::DirtyRingEntry> Vcpu::harvest_dirty_ring() {
  if (!ctx_.dirty_ring) throw UsageError("the VM has no dirty rings");
  return ctx_.dirty_ring->harvest();
}

void Vcpu::check_state(const x86::CpuState& s) const {
  using namespace x86;
  if ((s.cr0 & cr0::PG) && !(s.cr0 & cr0::PE)) throw UsageError("cr0: PG set without PE");
  if ((s.cr4 & cr4::LA57) && !vm_.model_.la57) throw UsageError("cr4: LA57 set but the cpu has la57=0");
  if (s.cr4 & cr4::PCIDE) throw UsageError("cr4: PCIDE is not modelled");
  if (s.long_mode() && !(s.cr4 & cr4::PAE)) throw UsageError("cr4: long mode (cr0.PG with efer.LME) needs PAE");
  const unsigned width = s.long_mode() ? vm_.model_.maxphyaddr : 32;
  if (width < 64 && (s.cr3 >> width)) {
    throw UsageError(fmt::format("cr3: 0x{:x} sets reserved bits {}..63", s.cr3, width));
  }
}

std::optional<x86::Fault> Vcpu::load_pdptes(const x86::CpuState& s, x86::PaePdptes& out) const {
  const uint64_t base = s.cr3 & x86::cr3::PAE_PDPT_MASK;
  const uint64_t rsvd = x86::pae_pdpte_reserved_bits(vm_.model_.maxphyaddr);
  for (unsigned i = 0; i < 4; ++i) {
    uint64_t e = 0;
    // A PDPT outside every memslot cannot be loaded: #GP, as when KVM fails to read it.
    if (!vm_.memory_.read(base + 8 * i, 8, e)) return x86::Fault::general_protection();
    if ((e & x86::pte::P) && (e & rsvd)) return x86::Fault::general_protection();
    out.entry[i] = e;
  }
  return std::nullopt;
}

std::optional<x86::Fault> Vcpu::set_registers(const RegisterUpdate& u) {
  x86::CpuState s = ctx_.state;
  if (u.cr0) s.cr0 = *u.cr0;
  if (u.cr3) s.cr3 = *u.cr3;
  if (u.cr4) s.cr4 = *u.cr4;
  if (u.efer) s.efer = *u.efer & ~x86::efer::LMA;  // LMA follows LME and CR0.PG
  if (u.cpl) {
    if (*u.cpl != 0 && *u.cpl != 3) throw UsageError(fmt::format("cpl: {} is not 0 or 3", *u.cpl));
    s.cpl = *u.cpl;
  }
  if (u.ac) s.ac = *u.ac;
  if (u.pkru) s.pkru = *u.pkru;
  check_state(s);

  // AC and PKRU decide permissions too (the software TLB keeps entries per CPL).
  if (u.touches_paging() || s.ac != ctx_.state.ac || s.pkru != ctx_.state.pkru) drop_translations();
  std::lock_guard g(vm_.mmu_->lock());
  if (!u.touches_paging()) {
    ctx_.state = s;
    return std::nullopt;
  }
  x86::PaePdptes pdptes = ctx_.pdptes;
  if (s.mode() == x86::PagingMode::Pae) {
    if (auto f = load_pdptes(s, pdptes)) return f;
  }
  ctx_.state = s;
  ctx_.pdptes = pdptes;
  ctx_.paging = x86::PagingContext(vm_.model_, s);
  vm_.mmu_->reset_context(ctx_);
  return std::nullopt;
}

std::optional<x86::Fault> Vcpu::mov_cr3(uint64_t cr3) {
  x86::CpuState s = ctx_.state;
  s.cr3 = cr3;
  check_state(s);
  drop_translations();
  std::lock_guard g(vm_.mmu_->lock());
  x86::PaePdptes pdptes = ctx_.pdptes;
  if (s.mode() == x86::PagingMode::Pae) {
    if (auto f = load_pdptes(s, pdptes)) return f;
  }
  ctx_.state = s;
  ctx_.pdptes = pdptes;
  ctx_.paging = x86::PagingContext(vm_.model_, s);
  vm_.mmu_->new_cr3(ctx_);
  return std::nullopt;
}

void Vcpu::invlpg(uint64_t gva) {
  if (!ctx_.state.long_mode() && (gva >> 32)) throw UsageError(fmt::format("gva 0x{:x} is 2^32 or more outside long mode", gva));
  if (ctx_.translations) ctx_.translations->invlpg(gva);
  std::lock_guard g(vm_.mmu_->lock());
  vm_.mmu_->invlpg(ctx_, gva);
}

std::optional<x86::Fault> Vcpu::flush() {
  drop_translations();
  std::lock_guard g(vm_.mmu_->lock());
  if (ctx_.state.mode() == x86::PagingMode::Pae) {
    x86::PaePdptes pdptes;
    if (auto f = load_pdptes(ctx_.state, pdptes)) return f;
    ctx_.pdptes = pdptes;
  }
  vm_.mmu_->flush(ctx_);
  return std::nullopt;
}

void Vcpu::refuse_access(uint64_t gva, AccessKind kind, unsigned width, uint64_t value) const {
  if (width != 1 && width != 2 && width != 4 && width != 8) throw UsageError(fmt::format("width {} is not 1, 2, 4 or 8", width));
  if (kind == AccessKind::Fetch && width != 1) throw UsageError("a fetch is one byte wide");
  if (width < 8 && (value >> (8 * width))) throw UsageError(fmt::format("value 0x{:x} is wider than {} bytes", value, width));
  if ((gva & x86::PAGE_OFFSET_MASK) + width > x86::PAGE_SIZE) throw UsageError(fmt::format("access of {} bytes at 0x{:x} crosses a page", width, gva));
  throw UsageError(fmt::format("gva 0x{:x} is 2^32 or more outside long mode", gva));
}

AccessResult Vcpu::engine_access(uint64_t gva, AccessKind kind, unsigned width, uint64_t value) {
  AccessResult r;
  for (;;) {
    {
      std::shared_lock g(vm_.mmu_->lock());
      mmu::AccessEpoch epoch(ctx_.access_epoch);
      if (ctx_.translations) ctx_.translations->sync(vm_.mmu_->translation_generation());
      r = vm_.mmu_->access(ctx_, gva, kind, width, value);
    }
    if (r.status != AccessResult::Status::Retry) break;
    std::this_thread::yield();  // as KVM's RET_PF_RETRY: back to the guest, which faults again
  }
  count(r, kind);
  return r;
}

void Vcpu::count(const AccessResult& r, AccessKind kind) {
  count_kind(kind);
  switch (r.status) {
    case AccessResult::Status::Ok: break;
    case AccessResult::Status::Fault:
      if (r.fault.vector == x86::VECTOR_PF) {
        ++stats_.page_faults;
        ++stats_.pf_by_error_code[r.fault.error_code];
      } else {
        ++stats_.gp_faults;
      }
      break;
    case AccessResult::Status::Mmio: ++stats_.mmio; break;
    case AccessResult::Status::ReadOnly: ++stats_.readonly_writes; break;
    case AccessResult::Status::Retry: break;
  }
}

}  // namespace vmmu
