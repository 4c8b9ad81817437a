#pragma once
// Runs a harness image in a real KVM VM through /dev/kvm (long-mode images only): the image is
// copied to its multiboot load address, the vCPU starts at its entry in flat 32-bit protected mode
// (as a multiboot loader leaves it), results come back as KVM_EXIT_IO on port 0xe9 and the end as
// an `out` to port 0xf4. Untested where /dev/kvm is absent (the tests skip).
#include <optional>
#include <string>

#include "oracle/harness.hpp"
#include "oracle/qemu_runner.hpp"

namespace vmmu::oracle {

// Why KVM cannot be used here, or nullopt when /dev/kvm opens and has the needed API.
std::optional<std::string> kvm_unavailable();

OracleRun run_kvm(const Image& image, double timeout_seconds = 120);

}  // namespace vmmu::oracle
