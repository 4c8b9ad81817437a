#pragma once
// Random .vmt workloads for the equivalence test, the project's main correctness oracle: every
// engine must print what the reference (`--mmu=none`) prints for them (VMT-FORMAT.md).
//
// A workload is a pure function of its parameters (seed included). It obeys the contract's rule
// on cached translations by construction: the generator replays every op on a reference Vm as it
// goes, knows where every guest write lands (it walks the guest tables first, without side
// effects), and after any change to a paging-structure entry other than not-present -> present it
// emits, for every vCPU that may have cached the old entry, an `invlpg` of each gva the entry maps
// (leaf entries) or a `flush` (any entry). "May have cached" is over-approximated as "reachable
// from an address space the vCPU has loaded since its last full flush", which also covers an
// engine that prefetches neighbouring entries or caches paging-structure entries.
//
// To make that tractable, tables stay well formed: an upper-level entry (present or not) points
// at a table of the next level of the same format, or at a hole in the guest-physical map that
// no memslot ever covers; writes that land on upper-level tables are reshaped into whole, well
// formed entries; pages set aside for tables stay zero until they become one. Global pages live
// only under a "kernel" subtree that every address space of a format links at the same place
// with the same, already accessed entry, so a global translation that survives a `cr3` switch is
// exactly what a walk of the new tables would give.
//
// The one exception to "the next level" is a self-map (as Windows' recursive PML4 entry): a table
// may have one entry that points at the table itself, so a walk through it reads the same table
// one level lower, and gvas under it reach page tables as data. That entry always holds the same
// value (A/D bits aside; writes that land on it are reshaped to it), and the bookkeeping of which
// gvas an entry maps follows every level at which a walk may read its table. Every root of a
// format has its self-map at the same index with the same, already accessed flags (under PAE, where
// the PDPTEs are registers, the shared kernel page directory has it), so that a global translation
// reached through it is the same in every address space; no entry outside the kernel subtree has
// bit 8 set, which is G wherever a walk through a self-map takes an entry for a leaf.
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "sim/op.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::sim {

// What a workload may use. Everything is on by default.
struct RandomWorkloadFeatures {
  bool huge_pages = true;       // 2 MiB / 4 MiB / 1 GiB guest leaves, memslots with host=2m/1g
  bool global_pages = true;     // G leaves under a shared kernel subtree, CR4.PGE
  bool reserved_bits = true;    // occasional reserved bits in entries and PDPTEs
  bool table_writes = true;     // guest writes to page-table entries through its own mappings
  bool aliases = true;          // several gvas (and address spaces) mapping one gfn
  bool address_spaces = true;   // 2-3 address spaces per paging format, `cr3` switches
  bool control_bits = true;     // random CR0.WP, EFER.NXE, CR4.SMEP/SMAP/PKE/PSE/PGE
  bool cpl_ac_pkru = true;      // random CPL, RFLAGS.AC, PKRU
  bool mmio = true;             // gpas outside every memslot
  bool readonly_slot = true;    // a read-only memslot (holding data and page tables)
  bool memslot_changes = true;  // memslot add/delete/move, page-table memslots included
  bool dirty_log = true;        // dirty-log enable/get/clear/disable
  bool unmap = true;            // host invalidations
  bool age = true;              // host aging
  bool peek = true;             // peeks during the run (the final peeks are always there)
  bool stats = true;            // occasional `stats` (contents are not compared)
  bool self_map = true;         // self-referencing table entries, and accesses and writes through them
};

struct RandomWorkloadParams {
  uint64_t seed = 1;
  uint32_t ops = 300;                   // ops of the main phase (set-up, audits and final peeks apart)
  uint64_t guest_memory = 16ull << 20;  // the main memslot: 4..32 MiB, a multiple of 4 MiB
  uint32_t vcpus = 3;                   // 1..8
  // Paging modes the vCPUs may be put in (at least one).
  std::vector<x86::PagingMode> modes{x86::PagingMode::Level4};
  RandomWorkloadFeatures features{};
  bool big_slot_1g = false;      // a 1 GiB host=1g memslot (else a 4 MiB host=2m one)
  bool audit_every_op = false;   // an `audit` after every op of the main phase
  bool random_cpu_model = true;  // random maxphyaddr/gbpages/la57 (else the defaults)
  // Bytes that make the generator's choices before the seed's PRNG takes over (a fuzzer's input
  // steers the workload through them); each choice takes the fewest bytes that cover its range.
  // Empty (the default): the workload is exactly the seed's.
  std::vector<uint8_t> entropy;

  // One line naming every parameter, for failure messages and reproducer files.
  std::string describe() const;
};

// What a generated workload contains, beyond the op kinds (for coverage checks and reports).
struct RandomWorkloadCoverage {
  uint64_t tables = 0, address_spaces = 0;
  uint64_t accesses = 0, guest_table_writes = 0, table_pokes = 0;
  uint64_t entry_changes = 0, invlpgs = 0, flushes = 0;  // changes needing invalidation, and those emitted
  uint64_t huge_leaves = 0, global_leaves = 0, reserved_entries = 0, windows = 0, alias_leaves = 0;
  uint64_t mode_switches = 0, control_bit_changes = 0, cr3_switches = 0, memslot_changes = 0;
  uint64_t table_slot_changes = 0;  // memslot changes that moved or dropped page tables
  uint64_t self_maps = 0;           // tables given an entry that points at themselves
  uint64_t self_map_accesses = 0;   // accesses to gvas whose walk goes through a self-map entry
  uint64_t self_map_writes = 0;     // of those, writes that landed on a page-table entry
};

class RandomWorkload {
 public:
  // Generates the workload (replaying it on a reference Vm as it goes). Throws std::logic_error
  // if the generator itself breaks the contract (a bug here, not in an engine).
  explicit RandomWorkload(const RandomWorkloadParams& params);

  const RandomWorkloadParams& params() const { return params_; }
  // The ops; op.line is the op's line number in write_vmt's text (line 1 is `vmt 1`, line 2 a
  // comment).
  const std::vector<Op>& ops() const { return ops_; }
  const RandomWorkloadCoverage& coverage() const { return coverage_; }

 private:
  RandomWorkloadParams params_;
  std::vector<Op> ops_;
  RandomWorkloadCoverage coverage_;
};

// One op as a .vmt line (no newline).
std::string format_op(const Op& op);

// The ops as a .vmt file: `vmt 1`, then each op on the line its `line` says (gaps become blank
// lines, or `# comment` for the first one). Throws std::invalid_argument if lines go backwards.
void write_vmt(std::ostream& out, const std::vector<Op>& ops, std::string_view comment = {});

}  // namespace vmmu::sim
