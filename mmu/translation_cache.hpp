#pragma once
// A vCPU's software TLB in front of an engine: the pages its last accesses went through, each
// with its host frame and the kinds of access that completed through it. A hit performs the
// access without the engine, as a hardware TLB hit does without a page walk; so it holds only
// what a hardware TLB may hold, and goes when one must:
// - an entry is filled only by an access that completed through the engine's tables, with the
//   guest's A (and, for a write, D) bits already set and nothing left to log, and allows only the
//   kinds that completed (a write allows reads too: no x86 rule lets a write through and stops a
//   read of the same page under the same registers);
// - the vCPU drops every entry on MOV CR3, a flush and any register change (AC and PKRU
//   included: permissions depend on them) but CPL (entries are kept per privilege), and the
//   page's entries on INVLPG;
// - every vCPU drops every entry when the engine zaps or write-protects (Mmu::note_tlb_flush),
//   and on memslot changes, dirty-log clears, host invalidation, aging, VMM writes to guest memory
//   and write-tracking changes (Mmu::drop_translation_caches, called by the Vm).
// A workload that keeps the contract's cached-translation rule gets the same results with it.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "x86/access.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::mmu {

class TranslationCache {
 public:
  // Two-way set-associative, indexed by the page number's low bits (a program's regions are
  // contiguous: its pages spread over the sets without hashing); `entries` is a power of two of
  // at least 2, 32 bytes each, a set per cache line.
  explicit TranslationCache(uint32_t entries) : sets_(entries / 2), mask_(entries / 2 - 1) {}

  // The accesses an entry allows: one bit per x86::AccessKind and privilege (CPL 3 or not), so
  // the guest kernel's entries and its process's survive the CPL switches between them.
  static constexpr uint8_t allow_bit(x86::AccessKind k, bool user) {
    return static_cast<uint8_t>(1u << (static_cast<unsigned>(k) + (user ? 3 : 0)));
  }

  struct Hit {
    uint8_t* host;  // the page's first byte in host memory
    uint64_t gpa;   // the page's gpa
  };

  // The entry for `gva`'s page if it allows `kind` at this privilege (`user`: CPL 3).
  const Hit* find(uint64_t gva, x86::AccessKind kind, bool user) const {
    const uint64_t vpn = gva >> x86::PAGE_SHIFT;
    const Set& set = sets_[vpn & mask_];
    const uint64_t tag = vpn | stamp_tag_;
    const uint64_t bit = allow_bit(kind, user);
    for (const Entry& e : set.way) {
      if (e.tag == tag && (e.allow & bit)) return &e.hit;
    }
    return nullptr;
  }

  // After an access of `kind` completed through the engine's tables at `gpa`, `host` being the
  // host address of its first byte, at this privilege (`user`: CPL 3); the guest mapped it with
  // a page of 2^`guest_page_shift` bytes (at most: an engine that cannot tell says more). The new
  // entry goes first in its set; the other way keeps the most recently filled of the rest.
  void fill(uint64_t gva, uint64_t gpa, uint8_t* host, x86::AccessKind kind, bool user, unsigned guest_page_shift) {
    if (guest_page_shift > x86::PAGE_SHIFT) note_large_page(gva, guest_page_shift);
    const uint64_t vpn = gva >> x86::PAGE_SHIFT;
    Set& set = sets_[vpn & mask_];
    const uint64_t tag = vpn | stamp_tag_;
    uint8_t* page = host - (gpa & x86::PAGE_OFFSET_MASK);
    const uint64_t gpa_page = gpa & ~x86::PAGE_OFFSET_MASK;
    uint64_t allow = allow_bit(kind, user);
    if (kind == x86::AccessKind::Write) allow |= allow_bit(x86::AccessKind::Read, user);
    Entry keep = set.way[0];
    for (const Entry& e : set.way) {
      if (e.tag != tag) continue;
      if (e.hit.host == page && e.hit.gpa == gpa_page) allow |= e.allow;
      if (&e == &set.way[0]) keep = set.way[1];  // the page's old entry goes
    }
    set.way[1] = keep;
    set.way[0] = Entry{tag, allow, {page, gpa_page}};
  }

  void flush() {  // every entry at once: only the current stamp's entries are valid
    if (++stamp_ == STAMPS) {  // the stamp would wrap into old entries' tags: empty them all
      std::fill(sets_.begin(), sets_.end(), Set{});
      stamp_ = 1;
    }
    stamp_tag_ = stamp_ << VPN_BITS;
    large_pages_.clear();
  }

  // The guest's INVLPG: the address's entry, and every entry of a large guest page holding it
  // (INVLPG drops the whole page's translation, and entries are per 4 KiB).
  void invlpg(uint64_t gva) {
    const uint64_t vpn = gva >> x86::PAGE_SHIFT;
    for (size_t i = 0; i < large_pages_.size();) {
      const LargePage l = large_pages_[i];
      if (vpn - l.first_vpn >= l.pages) {
        ++i;
        continue;
      }
      if (l.pages > MAX_LARGE_SCAN) return flush();  // a 1 GiB page: cheaper to start again
      for (uint64_t p = 0; p < l.pages; ++p) drop(l.first_vpn + p);
      large_pages_[i] = large_pages_.back();
      large_pages_.pop_back();
    }
    drop(vpn);
  }

  uint64_t bytes() const { return sets_.size() * sizeof(Set); }

  // Drops every entry if the engine's generation moved since the last look.
  void sync(uint64_t generation) {
    if (generation != generation_) {
      generation_ = generation;
      flush();
    }
  }

 private:
  // A tag is the page number with the stamp it was filled under above it: one compare tells
  // both. Page numbers of 64-bit addresses have 52 bits, so the stamp has 12; an empty entry's
  // tag, 0, matches no stamp (stamps start at 1).
  static constexpr unsigned VPN_BITS = 64 - x86::PAGE_SHIFT;
  static constexpr uint64_t STAMPS = uint64_t{1} << (64 - VPN_BITS);
  static constexpr uint64_t VPN_MASK = (uint64_t{1} << VPN_BITS) - 1;
  struct Entry {
    uint64_t tag = 0;
    uint64_t allow = 0;  // allow_bit()s
    Hit hit{};
  };
  struct alignas(64) Set {
    Entry way[2];
  };

  std::vector<Set> sets_;
  uint64_t mask_;
  uint64_t stamp_ = 1;
  uint64_t stamp_tag_ = stamp_ << VPN_BITS;
  uint64_t generation_ = 0;
  // The large guest pages entries came from since the last flush (a few: the kernel's direct
  // map, a process's huge pages), so that INVLPG elsewhere drops one entry, not all.
  struct LargePage {
    uint64_t first_vpn, pages;
  };
  static constexpr size_t MAX_LARGE_PAGES = 64;
  static constexpr uint64_t MAX_LARGE_SCAN = 1024;  // pages of a large page INVLPG drops one by one
  std::vector<LargePage> large_pages_;

  void note_large_page(uint64_t gva, unsigned shift) {
    const uint64_t pages = uint64_t{1} << (shift - x86::PAGE_SHIFT);
    const LargePage l{(gva >> x86::PAGE_SHIFT) & ~(pages - 1), pages};
    for (const LargePage& k : large_pages_)
      if (k.first_vpn == l.first_vpn && k.pages == l.pages) return;
    if (large_pages_.size() == MAX_LARGE_PAGES) flush();
    large_pages_.push_back(l);
  }
  void drop(uint64_t vpn) {
    for (Entry& e : sets_[vpn & mask_].way)
      if ((e.tag & VPN_MASK) == vpn) e.tag = 0;
  }
};

}  // namespace vmmu::mmu
