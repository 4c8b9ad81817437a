#pragma once
// ChampSim's binary traces: 64-byte little-endian `input_instr` records, one an instruction:
//   0  ip                          8 bytes
//   8  is_branch, branch_taken     1 byte each
//  10  destination_registers[2]    1 byte each
//  12  source_registers[4]         1 byte each
//  16  destination_memory[2]       8 bytes each (0: none)
//  32  source_memory[4]            8 bytes each (0: none)
// A record fetches its ip, reads each source address, then writes each destination address;
// records carry no access size, so every data access is 8 bytes.
#include <string>
#include <vector>

#include "sim/trace_import/trace_reader.hpp"

namespace vmmu::sim::trace_import {

inline constexpr size_t CHAMPSIM_RECORD_BYTES = 64;

class ChampSimReader : public QueuedTraceReader {
 public:
  using QueuedTraceReader::QueuedTraceReader;

 protected:
  bool refill(std::vector<TraceAccess>& queue) override;

 private:
  uint64_t record_ = 0;
};

}  // namespace vmmu::sim::trace_import
