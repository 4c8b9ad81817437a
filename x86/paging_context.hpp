#pragma once
// Everything a walk needs that depends only on CR0/CR3/CR4/EFER and the CPU model, derived once
// per change of those (KVM's struct kvm_mmu: root level, rsvd_bits_mask, permissions[]).
// CPL, RFLAGS.AC and PKRU are per access: they index the precomputed tables instead.
#include <array>
#include <cstdint>

#include "x86/access.hpp"
#include "x86/cpu_state.hpp"
#include "x86/page_table_entry.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::x86 {

class PagingContext {
 public:
  PagingContext() = default;
  PagingContext(const CpuModel& model, const CpuState& state);

  PagingMode mode() const { return mode_; }
  unsigned maxphyaddr() const { return maxphyaddr_; }
  bool wp() const { return wp_; }
  bool nxe() const { return nxe_; }
  bool smep() const { return smep_; }
  bool smap() const { return smap_; }
  bool pke() const { return pke_; }  // CR4.PKE in long mode (keys apply nowhere else)
  bool pse() const { return pse_; }  // CR4.PSE (4 MiB pages under 32-bit paging)
  bool gbpages() const { return gbpages_; }

  // Guest-physical address of the root table read from memory (the PDPT itself for PAE).
  uint64_t root() const { return root_; }
  // Linear-address width for the canonical check (long mode only): 48 or 57.
  unsigned linear_width() const { return mode_ == PagingMode::Level5 ? 57 : 48; }

  // Reserved bits of a present entry at `level` (1 = PTE), for a leaf (PS=1) or a table pointer.
  uint64_t reserved_bits(unsigned level, bool ps) const { return rsvd_[level][ps ? 1 : 0]; }
  // Whether PS=1 at `level` makes the entry a leaf in this mode.
  bool ps_allowed(unsigned level) const { return (ps_levels_ >> level) & 1; }
  // Physical-address bits of a table pointer or 4 KiB leaf: (M-1):12, or 31:12 for 4-byte entries.
  uint64_t frame_mask() const { return frame_mask_; }

  // Does an access of this kind, at this CPL/AC, to a translation with effective rights `acc`
  // (acc::U|W|X) fault before protection keys are considered? (SDM 4.6.1)
  bool permission_fault(AccessKind kind, bool user, bool ac, uint8_t acc) const {
    return (permissions_[perm_index(kind, user, ac)] >> acc) & 1;
  }
  // Does the protection key deny it? Only user-mode addresses with keys on (SDM 4.6.2).
  bool pkey_fault(AccessKind kind, bool user, uint8_t acc, uint32_t pkru, unsigned pkey) const {
    if (!pke_ || !(acc & acc::U) || kind == AccessKind::Fetch) return false;
    const uint32_t ad = (pkru >> (2 * pkey)) & 1;
    const uint32_t wd = (pkru >> (2 * pkey + 1)) & 1;
    return ad || (wd && kind == AccessKind::Write && (user || wp_));
  }
  // The I/D error-code bit for fetches exists only with SMEP, or PAE-format paging with NXE.
  bool fetch_sets_id() const { return fetch_sets_id_; }

 private:
  static constexpr unsigned perm_index(AccessKind kind, bool user, bool ac) {
    return static_cast<unsigned>(kind) * 4 + (user ? 2 : 0) + (ac ? 1 : 0);
  }

  PagingMode mode_ = PagingMode::Off;
  unsigned maxphyaddr_ = 48;
  bool wp_ = false, nxe_ = false, smep_ = false, smap_ = false, pke_ = false, pse_ = false;
  bool gbpages_ = true, fetch_sets_id_ = false;
  uint64_t root_ = 0;
  uint64_t frame_mask_ = 0;
  uint8_t ps_levels_ = 0;                       // bit L set: PS=1 at level L is a leaf
  std::array<std::array<uint64_t, 2>, 6> rsvd_{};  // [level][ps]
  std::array<uint8_t, 12> permissions_{};          // [kind][user][ac] -> bitmap over acc values
};

// Reserved bits of a present PAE PDPTE, checked when the PDPTEs are loaded (SDM 4.4.1):
// bits 63:M, 8:5 and 2:1.
constexpr uint64_t pae_pdpte_reserved_bits(unsigned maxphyaddr) {
  return pte::bits(63, maxphyaddr) | pte::bits(8, 5) | pte::bits(2, 1);
}
static_assert(pae_pdpte_reserved_bits(52) == 0xfff0'0000'0000'01e6ull);

}  // namespace vmmu::x86
