#pragma once
// Where a replay takes its ops from (sim::WorkloadInput reads every form of a .vmt file).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "sim/op.hpp"

namespace vmmu::sim {

// The two forms of a .vmt workload (docs/VMT-FORMAT.md); either may be compressed with zstd.
enum class WorkloadForm : uint8_t { Text, Binary };

// The input cannot give its next op: `what()` is the whole message, file and position included
// (`FILE:LINE: ...`, `FILE: record N (byte offset X): ...`, `FILE: zstd: ...`).
class OpSourceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class OpSource {
 public:
  virtual ~OpSource() = default;
  // The next op, or false at the end. Throws OpSourceError.
  virtual bool next(Op& op) = 0;
  // Where the last op came from, to prefix a message about it (`op` is that op): `FILE:LINE`
  // for text, `FILE: record N (byte offset X)` for the binary form.
  virtual std::string where(const Op& op) const = 0;

  // Accesses the source has decoded ahead of next() (empty when it has none ready: the binary
  // form's are the only ones). The caller executes some of them in order and says how many with
  // take_accesses(n) before anything else: where() then names the n-th, next() the op after it.
  virtual AccessRun pending_accesses() { return {}; }
  virtual void take_accesses(uint32_t /*n*/) {}
};

}  // namespace vmmu::sim
