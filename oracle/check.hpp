#pragma once
// Compares vmmu with an outside oracle on one workload (docs/ORACLES.md): replays the ops in vmmu
// (each requested --mmu mode) and in the oracle, and finds the first difference. Known departures
// of the oracle from the SDM/contract are masked by name and counted, never silently.
#include <cstdint>
#include <istream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "oracle/harness.hpp"
#include "sim/op.hpp"
#include "vm/vm.hpp"

namespace vmmu::oracle {

struct Difference {
  uint64_t line = 0;
  std::string op, field, vmmu, oracle, mmu;
};

struct CheckReport {
  std::string oracle;                    // "qemu" or "kvm"
  uint64_t ops = 0, compared = 0;
  std::vector<std::pair<uint64_t, std::string>> skipped;  // (line, why)
  std::optional<uint64_t> stop_line;
  std::map<std::string, uint64_t> masked;                 // departure name -> count
  std::vector<std::string> mmus_checked, mmus_skipped;
  std::optional<Difference> difference;
  std::string error;                     // the oracle could not run the workload
  double oracle_seconds = 0;
  bool ok() const { return error.empty() && !difference; }
};

// Parses a whole .vmt stream; throws std::runtime_error "FILE:LINE: what" for a malformed line.
std::vector<sim::Op> parse_vmt(std::istream& in, const std::string& name);

// Runs `ops` in QEMU and in vmmu with each of `mmus`. `qemu` is the binary.
CheckReport check_with_qemu(const std::vector<sim::Op>& ops, const std::vector<MmuKind>& mmus, const std::string& qemu);

// The same against real KVM through /dev/kvm (long-mode workloads only).
CheckReport check_with_kvm(const std::vector<sim::Op>& ops, const std::vector<MmuKind>& mmus);

// One line describing the report (the summary or the first difference).
std::string describe(const CheckReport& r);

}  // namespace vmmu::oracle
