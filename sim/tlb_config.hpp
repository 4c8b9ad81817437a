#pragma once
// The geometry of the TLB model (sim/tlb_model.hpp): how many entries and ways each translation
// cache has. Defaults are Intel Skylake's (client and server cores have the same TLBs), from the
// Intel 64 and IA-32 Architectures Optimization Reference Manual, 248966-045 (Feb. 2022),
// Table 2-15 "TLB Parameters of the Skylake Microarchitecture". Intel documents no sizes for the
// paging-structure caches; those defaults are the figures commonly cited from reverse
// engineering (PML4E 2, PDPTE 4, PDE 32 entries: Barr, Cox and Rixner, "Translation caching:
// skip, don't walk (the page table)", ISCA 2010, and later measurements), and the nested
// (EPT) caches are assumed to be the same size. docs/TLB-MODEL.md explains every choice.
#include <cstdint>

namespace vmmu::sim {

// One set-associative structure: `entries` a multiple of `ways`, entries / ways a power of two.
// 0 entries: the structure does not exist (lookups miss, nothing is filled).
struct TlbGeometry {
  uint32_t entries = 0;
  uint32_t ways = 0;
};

struct TlbConfig {
  // L1 data TLB, by page size (4 KiB, 2/4 MiB, 1 GiB).
  TlbGeometry dtlb_4k{64, 4}, dtlb_2m{32, 4}, dtlb_1g{4, 4};
  // L1 instruction TLB (Skylake: 8 large-page entries per thread, fully associative; no 1 GiB).
  TlbGeometry itlb_4k{128, 8}, itlb_2m{8, 8}, itlb_1g{0, 0};
  // The shared second-level TLB: 4 KiB and 2 MiB entries in one structure, 1 GiB apart.
  TlbGeometry stlb{1536, 12}, stlb_1g{16, 4};
  // Paging-structure caches, indexed by the level of the entry they hold (2 PDE, 3 PDPTE,
  // 4 PML4E, 5 PML5E; 0 and 1 unused): the 1-D tables (guest, or shadow), and under TDP the
  // combined guest-dimension ones plus the nested (EPT) ones keyed by gpa.
  TlbGeometry psc[6] = {{}, {}, {32, 32}, {4, 4}, {2, 2}, {2, 2}};
  TlbGeometry nested_psc[6] = {{}, {}, {32, 32}, {4, 4}, {2, 2}, {2, 2}};

  // No paging-structure caches at all: every walk reads every level (the textbook counts).
  TlbConfig& without_paging_structure_caches() {
    for (TlbGeometry& g : psc) g = {};
    for (TlbGeometry& g : nested_psc) g = {};
    return *this;
  }
};

}  // namespace vmmu::sim
