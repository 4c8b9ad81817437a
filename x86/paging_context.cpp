#include "x86/paging_context.hpp"

#include "x86/page_table_entry.hpp"

namespace vmmu::x86 {

namespace {

// SDM 4.6.1, for one access and one combination of effective rights.
bool faults(AccessKind kind, bool user, bool ac, uint8_t acc, bool wp, bool smep, bool smap) {
  const bool user_page = acc & acc::U;
  const bool writable = acc & acc::W;
  const bool executable = acc & acc::X;
  if (user) {
    if (!user_page) return true;
    if (kind == AccessKind::Write && !writable) return true;
    if (kind == AccessKind::Fetch && !executable) return true;
    return false;
  }
  switch (kind) {
    case AccessKind::Fetch:
      return !executable || (smep && user_page);
    case AccessKind::Write:
      if (user_page && smap && !ac) return true;
      return wp && !writable;
    case AccessKind::Read:
      return user_page && smap && !ac;
  }
  return true;
}

}  // namespace

PagingContext::PagingContext(const CpuModel& model, const CpuState& state)
    : mode_(state.mode()), maxphyaddr_(model.maxphyaddr), gbpages_(model.gbpages) {
  using pte::bits;
  const unsigned m = model.maxphyaddr;
  wp_ = state.cr0 & cr0::WP;
  smep_ = state.cr4 & cr4::SMEP;
  smap_ = state.cr4 & cr4::SMAP;
  pse_ = state.cr4 & cr4::PSE;
  pke_ = is_long_mode(mode_) && (state.cr4 & cr4::PKE);
  // NX exists only with 8-byte entries.
  nxe_ = (state.efer & efer::NXE) && mode_ != PagingMode::Bits32 && mode_ != PagingMode::Off;
  fetch_sets_id_ = smep_ || (nxe_ && (state.cr4 & cr4::PAE));

  switch (mode_) {
    case PagingMode::Off:
      break;
    case PagingMode::Bits32: {
      root_ = state.cr3 & cr3::BITS32_ROOT_MASK;
      frame_mask_ = bits(31, 12);
      if (pse_) {
        ps_levels_ = 1u << 2;
        const unsigned m36 = m < 40 ? m : 40;  // PSE-36 uses M' = min(M, 40)
        rsvd_[2][1] = bits(21, m36 - 19);
      }
      break;
    }
    case PagingMode::Pae:
    case PagingMode::Level4:
    case PagingMode::Level5: {
      const bool pae = mode_ == PagingMode::Pae;
      root_ = pae ? (state.cr3 & cr3::PAE_PDPT_MASK) : (state.cr3 & bits(m - 1, 12));
      frame_mask_ = bits(m - 1, 12);
      uint64_t high = pae ? (m <= 62 ? bits(62, m) : 0) : (m <= 51 ? bits(51, m) : 0);
      if (!nxe_) high |= pte::XD;
      for (unsigned level = 1; level <= 5; ++level) rsvd_[level][0] = rsvd_[level][1] = high;
      ps_levels_ = 1u << 2;
      rsvd_[2][1] |= bits(20, 13);
      if (!pae) {
        rsvd_[5][0] |= pte::PS;  // PS is reserved in PML5Es and PML4Es
        rsvd_[5][1] |= pte::PS;
        rsvd_[4][0] |= pte::PS;
        rsvd_[4][1] |= pte::PS;
        if (model.gbpages) {
          ps_levels_ |= 1u << 3;
          rsvd_[3][1] |= bits(29, 13);
        } else {
          rsvd_[3][0] |= pte::PS;  // no 1 GiB pages: PS itself is the reserved bit
        }
      }
      break;
    }
  }

  for (unsigned k = 0; k < 3; ++k) {
    for (unsigned u = 0; u < 2; ++u) {
      for (unsigned a = 0; a < 2; ++a) {
        uint8_t map = 0;
        for (unsigned acc = 0; acc <= acc::ALL; ++acc) {
          if (faults(static_cast<AccessKind>(k), u, a, static_cast<uint8_t>(acc), wp_, smep_, smap_))
            map |= static_cast<uint8_t>(1u << acc);
        }
        permissions_[perm_index(static_cast<AccessKind>(k), u, a)] = map;
      }
    }
  }
}

}  // namespace vmmu::x86
