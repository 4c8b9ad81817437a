#pragma once
// Runs a harness image in QEMU (TCG): `qemu-system-x86_64 -cpu max,...` boots it through its
// multiboot loader, the results come back through `-debugcon file:` and the image ends itself
// through `isa-debug-exit`.
#include <optional>
#include <string>
#include <vector>

#include "oracle/harness.hpp"

namespace vmmu::oracle {

// The QEMU binary to use: $VMMU_QEMU, else qemu-system-x86_64 on PATH; nullopt if none.
std::optional<std::string> find_qemu();

struct OracleRun {
  bool ok = false;             // the image ran to its end
  std::string error;           // why not
  std::vector<Record> records; // every record but the final "done"
  double seconds = 0;
};

OracleRun run_qemu(const Image& image, const std::string& qemu, double timeout_seconds = 120);

}  // namespace vmmu::oracle
