#include "sim/guest_os/paging_layout.hpp"

#include <algorithm>
#include <stdexcept>

namespace vmmu::sim::guest_os {

namespace {
constexpr uint64_t LOWMEM_32 = 896ull << 20;  // what a 32-bit kernel maps directly
}

PagingLayout PagingLayout::for_mode(x86::PagingMode mode, uint64_t memory) {
  using x86::PagingMode;
  PagingLayout l;
  l.mode = mode;
  switch (mode) {
    case PagingMode::Bits32:
    case PagingMode::Pae: {
      const bool pae = mode == PagingMode::Pae;
      l.root_level = pae ? 3 : 2;
      l.entry_bytes = pae ? 8 : 4;
      l.index_bits = pae ? 9 : 10;
      l.nx = pae;
      l.user_top = l.direct_map = 0xc000'0000ull;  // the 3G/1G split
      l.direct_map_size = std::min(memory, LOWMEM_32);
      l.kernel_first_index = pae ? 3 : 768;
      break;
    }
    case PagingMode::Level4:
    case PagingMode::Level5: {
      const bool five = mode == PagingMode::Level5;
      l.root_level = five ? 5 : 4;
      l.user_top = (1ull << (five ? 56 : 47)) - x86::PAGE_SIZE;
      l.direct_map = five ? 0xff11'0000'0000'0000ull : 0xffff'8880'0000'0000ull;
      l.direct_map_size = memory;
      l.kernel_first_index = 256;
      break;
    }
    case PagingMode::Off: throw std::invalid_argument("guest OS model: the guest must page (32-bit, PAE, 4-level or 5-level)");
  }
  return l;
}

}  // namespace vmmu::sim::guest_os
