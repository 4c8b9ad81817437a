#include "sim/tlb_model.hpp"

#include <algorithm>

namespace vmmu::sim {

namespace {

// The prefix of `address` that a paging-structure entry of `level` maps (its cache key).
constexpr uint64_t prefix(uint64_t address, unsigned level, unsigned index_bits) { return address >> (12 + index_bits * (level - 1)); }

}  // namespace

TlbModel::TlbModel(const TlbConfig& c, TlbCounters& counters) : counters_(counters) {
  dtlb_.by_size[0] = TlbCache(c.dtlb_4k);
  dtlb_.by_size[1] = TlbCache(c.dtlb_2m);
  dtlb_.by_size[2] = TlbCache(c.dtlb_1g);
  itlb_.by_size[0] = TlbCache(c.itlb_4k);
  itlb_.by_size[1] = TlbCache(c.itlb_2m);
  itlb_.by_size[2] = TlbCache(c.itlb_1g);
  stlb_ = TlbCache(c.stlb);
  stlb_1g_ = TlbCache(c.stlb_1g);
  for (unsigned l = 2; l <= 5; ++l) {
    psc_[l] = TlbCache(c.psc[l]);
    nested_psc_[l] = TlbCache(c.nested_psc[l]);
  }
}

unsigned TlbModel::nested_walk(uint64_t gpa, unsigned end_level, unsigned root_level) {
  if (!root_level) return 0;
  end_level = std::clamp(end_level, 1u, root_level);
  unsigned start = root_level;
  for (unsigned l = end_level + 1; l <= root_level; ++l) {
    const uint64_t key = prefix(gpa, l, 9);
    if (nested_psc_[l].find(key, key) >= 0) {
      ++counters_.nested_psc_hits[l];
      start = l - 1;
      break;
    }
  }
  // The walk caches the non-leaf entries it read (those above `start` were not read).
  for (unsigned l = end_level + 1; l <= start; ++l) {
    const uint64_t key = prefix(gpa, l, 9);
    nested_psc_[l].insert(key, key, 0);
  }
  const unsigned refs = start - end_level + 1;
  ++counters_.nested_walks;
  counters_.nested_refs += refs;
  return refs;
}

unsigned TlbModel::walk(uint64_t gva, x86::AccessKind kind, const WalkFacts& f) {
  unsigned refs = 0;
  if (f.top_level) {
    const unsigned top = f.top_level, end = std::clamp<unsigned>(f.end_level, 1, top);
    // The deepest cached entry on the way lets the walk start right below it.
    unsigned start = top;
    for (unsigned l = end + 1; l <= top; ++l) {
      const uint64_t key = prefix(gva, l, f.index_bits);
      if (psc_[l].find(key, key) >= 0) {
        ++counters_.psc_hits[l];
        start = l - 1;
        break;
      }
    }
    for (unsigned l = start; l >= end; --l) {
      if (f.nested) refs += nested_walk(f.table_gpa[l], f.table_nested_level[l], f.nested_root_level);
      ++refs;
    }
    if (f.translated) {
      for (unsigned l = end + 1; l <= start; ++l) {
        const uint64_t key = prefix(gva, l, f.index_bits);
        psc_[l].insert(key, key, 0);
      }
    }
  }
  if (f.nested && f.data_nested) refs += nested_walk(f.data_gpa, f.data_nested_level, f.nested_root_level);

  ++counters_.walks;
  counters_.walk_refs += refs;
  ++counters_.walk_ref_histogram[std::min(refs, TlbCounters::MAX_WALK_REFS)];
  if (!f.translated) {
    ++counters_.faulting_walks;
    return refs;
  }
  const unsigned c = std::clamp<unsigned>(f.page_level, 1, 3) - 1;
  const uint64_t vpn = gva >> SIZE_SHIFT[c];
  const unsigned flags = (f.global ? GLOBAL : 0) | (kind == x86::AccessKind::Write ? DIRTY : 0);
  Level1& l1 = kind == x86::AccessKind::Fetch ? itlb_ : dtlb_;
  last_hit_[kind == x86::AccessKind::Fetch] = LastHit{};
  // A page size the L1 structure lacks (a 1 GiB code page) lives in the STLB only.
  l1.by_size[c].insert(vpn, vpn, flags);
  (c < 2 ? stlb_ : stlb_1g_).insert(vpn << 2 | c, vpn, flags);
  sizes_used_ |= static_cast<uint8_t>(1u << c);
  return refs;
}

void TlbModel::clear_pscs() {
  for (TlbCache& p : psc_) p.clear();
}

void TlbModel::new_cr3() {
  ++counters_.cr3_flushes;
  forget_last_hits();
  for (Level1* l1 : {&dtlb_, &itlb_})
    for (TlbCache& t : l1->by_size) t.keep_only(GLOBAL);
  stlb_.keep_only(GLOBAL);
  stlb_1g_.keep_only(GLOBAL);
  clear_pscs();
}

void TlbModel::drop_address(uint64_t gva) {
  forget_last_hits();
  for (unsigned c = 0; c < 3; ++c) {
    const uint64_t vpn = gva >> SIZE_SHIFT[c];
    dtlb_.by_size[c].erase(vpn, vpn);
    itlb_.by_size[c].erase(vpn, vpn);
    (c < 2 ? stlb_ : stlb_1g_).erase(vpn << 2 | c, vpn);
  }
  for (unsigned l = 2; l <= 5; ++l) {
    for (unsigned bits : {9u, 10u}) {
      const uint64_t key = prefix(gva, l, bits);
      psc_[l].erase(key, key);
    }
  }
}

void TlbModel::invlpg(uint64_t gva) {
  ++counters_.invlpgs;
  drop_address(gva);
  clear_pscs();
}

void TlbModel::flush_guest() {
  forget_last_hits();
  for (Level1* l1 : {&dtlb_, &itlb_})
    for (TlbCache& t : l1->by_size) t.clear();
  stlb_.clear();
  stlb_1g_.clear();
  sizes_used_ = 0;
  clear_pscs();
}

void TlbModel::flush_all() {
  flush_guest();
  for (TlbCache& p : nested_psc_) p.clear();
}

unsigned TlbModel::tlb_entries() const {
  unsigned n = stlb_.size() + stlb_1g_.size();
  for (const Level1* l1 : {&dtlb_, &itlb_})
    for (const TlbCache& t : l1->by_size) n += t.size();
  return n;
}

}  // namespace vmmu::sim
