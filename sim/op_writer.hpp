#pragma once
// Where generated or converted ops go: a .vmt file in some form (sim::WorkloadOutput).
#include "sim/op.hpp"

namespace vmmu::sim {

class OpWriter {
 public:
  virtual ~OpWriter() = default;
  // Ops come in line order; each goes on the line its `line` says.
  virtual void write(const Op& op) = 0;
  // Ends the workload; nothing may follow. Throws on a write error.
  virtual void finish() = 0;
};

}  // namespace vmmu::sim
