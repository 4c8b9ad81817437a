#pragma once
// The shadow engine's reverse map, kept to two bytes per guest page: for each gfn, which shadow
// pages may hold a 4 KiB leaf SPTE mapping it. A hint is a superset, never an exact list:
//   0          no SPTE maps the gfn
//   1..0xfffe  every SPTE mapping it lies in a page whose pool index i has tag(i) == hint
//   0xffff     any page may (the gfn is mapped from pages of different tags: an alias)
// A lookup scans the candidate pages' 512 entries for the gfn's host frame. A frame mapped once
// costs the two bytes and nothing else; an alias costs no bytes but a scan of every leaf page,
// which only point lookups of aliased gfns pay (bulk operations scan once for all their gfns).
// KVM keeps an 8-byte head per gfn plus a 128-byte pte_list_desc per aliased gfn; the arrays
// here are made per 2 MiB of guest memory on first use, under a per-GiB directory, from the
// engine's metadata memory: `prepare` makes them before a change, so `add` allocates nothing.
#include <cstdint>
#include <memory_resource>
#include <new>
#include <vector>

namespace vmmu::mmu {

class RmapHints {
 public:
  static constexpr uint16_t NONE = 0;
  static constexpr uint16_t ANY = 0xffff;
  static constexpr uint16_t tag(uint32_t page_index) { return static_cast<uint16_t>(1 + page_index % 0xfffe); }
  // Pool indexes that carry `hint`'s tag, below `limit` (the pool's high-water mark).
  template <class F>
  static void for_each_index_of_tag(uint16_t hint, uint64_t limit, F&& f) {
    for (uint64_t i = hint - 1u; i < limit; i += 0xfffe) f(static_cast<uint32_t>(i));
  }

  RmapHints(uint64_t npages, std::pmr::memory_resource& memory) : memory_(memory), groups_((npages + GROUP_PAGES - 1) / GROUP_PAGES, nullptr, &memory) {}
  ~RmapHints() {
    for (Group* g : groups_) {
      if (!g) continue;
      for (Region* r : g->regions)
        if (r) destroy(r);
      destroy(g);
    }
  }
  RmapHints(const RmapHints&) = delete;
  RmapHints& operator=(const RmapHints&) = delete;

  // Makes the storage of `page`'s hint now (may throw HostMemoryError; nothing changes then).
  void prepare(uint64_t page) { slot(page); }

  uint16_t get(uint64_t page) const {
    const Region* r = region(page);
    return r ? r->hint[page % REGION_PAGES] : NONE;
  }
  // Records that a page with `page_tag` now maps `page` as well (prepared: allocates nothing).
  void add(uint64_t page, uint16_t page_tag) {
    uint16_t& h = slot(page);
    if (h == NONE) {
      h = page_tag;
    } else if (h != page_tag) {
      h = ANY;
    }
  }
  // A lookup found exactly these mappings: tighten the hint (only ever to a true superset).
  void reset(uint64_t page, uint16_t hint) {
    if (Region* r = region(page)) r->hint[page % REGION_PAGES] = hint;
  }

  uint64_t bytes() const { return groups_.capacity() * sizeof(groups_[0]) + groups_made_ * GROUP_BYTES + regions_made_ * sizeof(Region); }
  uint64_t regions() const { return regions_made_; }

 private:
  static constexpr uint64_t REGION_PAGES = 512;  // 2 MiB of guest memory
  static constexpr uint64_t GROUP_REGIONS = 512;  // 1 GiB
  static constexpr uint64_t GROUP_PAGES = REGION_PAGES * GROUP_REGIONS;
  struct Region {
    uint16_t hint[REGION_PAGES] = {};
  };
  struct Group {
    Region* regions[GROUP_REGIONS] = {};
  };
  static constexpr uint64_t GROUP_BYTES = sizeof(Group);

  const Region* region(uint64_t page) const {
    const auto& g = groups_[page / GROUP_PAGES];
    return g ? g->regions[(page / REGION_PAGES) % GROUP_REGIONS] : nullptr;
  }
  Region* region(uint64_t page) { return const_cast<Region*>(static_cast<const RmapHints*>(this)->region(page)); }
  uint16_t& slot(uint64_t page) {
    auto& g = groups_[page / GROUP_PAGES];
    if (!g) {
      g = make<Group>();
      ++groups_made_;
    }
    auto& r = g->regions[(page / REGION_PAGES) % GROUP_REGIONS];
    if (!r) {
      r = make<Region>();
      ++regions_made_;
    }
    return r->hint[page % REGION_PAGES];
  }
  template <class T>
  T* make() {
    return new (memory_.allocate(sizeof(T), alignof(T))) T{};
  }
  template <class T>
  void destroy(T* p) {
    memory_.deallocate(p, sizeof(T), alignof(T));
  }

  std::pmr::memory_resource& memory_;
  std::pmr::vector<Group*> groups_;
  uint64_t groups_made_ = 0, regions_made_ = 0;
};

}  // namespace vmmu::mmu
