#pragma once
// Random cases for `vmmu kvm-check --random` in the spirit of kvm-unit-tests x86/access.c, wider:
// each case builds a fresh page-table chain for one linear address (random entry bits at every
// level: P, R/W, U/S, A, D, PS, PAT, G, PWT/PCD, XD, protection keys, reserved bits within and
// above MAXPHYADDR), sets random CR0.WP, EFER.NXE, CR4.PSE/PGE/SMEP/SMAP/PKE, PKRU, RFLAGS.AC and
// CPL, performs one access of a random kind and width, and peeks every entry of the chain to
// observe the A/D bits. Cases are independent (fresh tables, a new CR3 each), so their results
// never depend on TLB state, and many fit in one oracle image.
#include <cstdint>
#include <string>
#include <vector>

#include "oracle/harness.hpp"

namespace vmmu::oracle {

struct RandomBatch {
  std::string vmt;                         // the whole batch as a .vmt text
  std::string header;                      // its setup lines (cpu, memslots, vcpu)
  std::vector<uint64_t> case_first_line;   // 1-based first line of each case
  std::vector<std::string> case_text;      // each case's lines
};

// Batch `batch` of the run with `seed` (deterministic). `pse` sets CR4.PSE in 32-bit mode.
// `pke`: whether cases may turn on CR4.PKE (the KVM oracle's CPUID may lack PKU).
RandomBatch random_batch(uint64_t seed, uint64_t batch, HarnessMode mode, bool pse, unsigned cases, bool pke = true);

// A self-contained .vmt holding only the case that contains `line`.
std::string reproducer(const RandomBatch& b, uint64_t line);

}  // namespace vmmu::oracle
