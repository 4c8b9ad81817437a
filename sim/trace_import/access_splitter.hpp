#pragma once
// Splits a traced access into what a guest performs: data accesses become in-page pieces of 1,
// 2, 4 or 8 bytes (an access wider than 8 bytes or crossing a page is several), and an
// instruction becomes one fetch per page its bytes touch.
#include <algorithm>
#include <cstdint>

#include "sim/trace_import/trace_reader.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::sim::trace_import {

// Calls `piece(kind, va, width)` for each piece, in address order.
template <class Piece>
void split_access(const TraceAccess& a, Piece&& piece) {
  const uint64_t size = std::max<uint64_t>(a.size, 1);
  if (a.kind == x86::AccessKind::Fetch) {
    const uint64_t first = a.addr >> x86::PAGE_SHIFT, last = (a.addr + size - 1) >> x86::PAGE_SHIFT;
    for (uint64_t page = first; page <= last; ++page) piece(a.kind, page == first ? a.addr : page << x86::PAGE_SHIFT, 1u);
    return;
  }
  uint64_t va = a.addr, left = size;
  while (left > 0) {
    const uint64_t to_page_end = x86::PAGE_SIZE - (va & x86::PAGE_OFFSET_MASK);
    uint64_t n = std::min<uint64_t>({left, 8, to_page_end});
    n = n >= 8 ? 8 : n >= 4 ? 4 : n >= 2 ? 2 : 1;
    piece(a.kind, va, static_cast<unsigned>(n));
    va += n;
    left -= n;
  }
}

}  // namespace vmmu::sim::trace_import
