#pragma once
// Pin's pinatrace tool: `IP: R ADDR` and `IP: W ADDR` lines (hex, as printf's %p writes them:
// 0x..., or (nil)), optionally followed by a decimal size and more fields (ignored); `#` lines
// are comments and `#eof` ends the trace. The access is 8 bytes when no size is given, and a
// record whose IP differs from the previous one's also fetches that instruction.
#include <string>
#include <vector>

#include "sim/trace_import/trace_reader.hpp"

namespace vmmu::sim::trace_import {

class PinReader : public QueuedTraceReader {
 public:
  using QueuedTraceReader::QueuedTraceReader;

 protected:
  bool refill(std::vector<TraceAccess>& queue) override;

 private:
  std::string text_;
  uint64_t line_ = 0;
  bool done_ = false;
  bool have_ip_ = false;
  uint64_t last_ip_ = 0;
};

}  // namespace vmmu::sim::trace_import
