#pragma once
// valgrind --tool=lackey --trace-mem=yes: `I  ADDR,SIZE` (an instruction), ` L ADDR,SIZE` (a
// load), ` S ADDR,SIZE` (a store), ` M ADDR,SIZE` (a modify: a load then a store); ADDR in hex
// without 0x, SIZE in decimal. valgrind's own `==PID==` and `--PID--` lines are skipped.
#include <string>
#include <vector>

#include "sim/trace_import/trace_reader.hpp"

namespace vmmu::sim::trace_import {

class LackeyReader : public QueuedTraceReader {
 public:
  using QueuedTraceReader::QueuedTraceReader;

 protected:
  bool refill(std::vector<TraceAccess>& queue) override;

 private:
  std::string text_;
  uint64_t line_ = 0;
};

}  // namespace vmmu::sim::trace_import
