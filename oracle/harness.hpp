#pragma once
// The oracle's guest harness: a bootable multiboot (v1) image whose code replays a .vmt workload's
// guest-visible ops on a real (or emulated) x86 CPU and reports every result through the debug
// port 0xe9 (docs/ORACLES.md).
//
// The harness owns a region that workloads checked by an oracle must leave alone:
//   * guest-physical [HARNESS_GPA, HARNESS_GPA + 2 MiB): its code, data, stacks and page tables;
//   * the last entry of every root table the workload loads into CR3 (PML5E/PML4E 511, PAE PDPTE 3,
//     32-bit PDE 1023): the harness writes its own entry there before loading that CR3, so the
//     top of the linear address space (HARNESS_LINEAR_*) maps the harness in every address space;
//   * linear addresses under that entry.
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "sim/op.hpp"
#include "x86/cpu_state.hpp"

namespace vmmu::oracle {

inline constexpr uint64_t HARNESS_GPA = 0x7e00000;   // 126 MiB .. 128 MiB
inline constexpr uint64_t HARNESS_SIZE = 2ull << 20;
inline constexpr uint64_t HARNESS_LINEAR_32 = 0xffe00000ull;           // 32-bit and PAE paging
inline constexpr uint64_t HARNESS_LINEAR_64 = 0xffffffffffe00000ull;   // 4- and 5-level paging

enum class HarnessMode { Bits32, Pae, Level4, Level5 };
const char* name(HarnessMode m);
std::optional<HarnessMode> parse_harness_mode(const std::string& s);

// The workload cannot be run in the oracle at all (the reason says why).
class NotCheckable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What the vmmu replay told us about an op that the harness needs to know.
struct OpInfo {
  std::optional<uint64_t> gpa;        // for a translated access: its gpa (ok or MMIO)
  bool mmio = false;                  // the access exited as MMIO (or a read-only write)
  std::optional<uint8_t> fetch_byte;  // for an ok fetch: the byte at its gpa
  bool paging_op_faulted = false;     // regs/cr3/flush that gave #GP (PDPTE load)
  std::optional<uint32_t> pf_error_code;  // for an access that took #PF in vmmu
};

// One result the image reports, in order.
struct Probe {
  std::size_t op = 0;           // index into the ops
  bool peek = false;
  bool value_checkable = true;  // false when the data lives outside the oracle's RAM
};

struct Image {
  std::vector<uint8_t> bytes;   // the multiboot file
  std::vector<Probe> probes;
  std::vector<std::pair<uint64_t, std::string>> skipped;  // (line, why) of ops not checked
  std::optional<uint64_t> stop_line;  // checking stopped at this line (reason in skipped)
  HarnessMode mode = HarnessMode::Level4;
  x86::CpuModel model;
  uint64_t ram_bytes = 0;       // how much RAM the oracle VM needs
  std::vector<uint64_t> pae_pdpte_gpas;  // the PDPTEs of every CR3 loaded under PAE paging
};

// Which guest-physical ranges the oracle's RAM backs: [0, 0xa0000) and [1 MiB, ram_limit).
inline constexpr uint64_t ORACLE_RAM_LIMIT = 0xb0000000ull;

// Builds the image. `info` has one entry per op. Throws NotCheckable.
Image build_image(const std::vector<sim::Op>& ops, const std::vector<OpInfo>& info);

// A result as the harness reports it.
struct Record {
  uint32_t index = 0;
  uint8_t kind = 0;    // 0 ok, 1 fault, 3 unexpected exception, 4 done
  uint8_t vector = 0;
  uint64_t value = 0;  // value read (ok), error code (fault)
  uint64_t cr2 = 0;
};
std::vector<Record> parse_records(const std::string& debugcon);

}  // namespace vmmu::oracle
