#pragma once
// Writes ops in the binary .vmt form (docs/VMT-FORMAT.md, "Binary form"): the header at
// construction, one record per op, the end record at finish(). Ops go out as they come, so a
// workload of billions of ops never sits in memory.
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

#include "sim/op.hpp"
#include "sim/vmt_binary_format.hpp"

namespace vmmu::sim {

class VmtBinaryWriter {
 public:
  // Writes the header with `note` (provenance, at most 4096 bytes: longer is cut; newlines become
  // spaces) to `out`, which must outlive the writer.
  VmtBinaryWriter(std::ostream& out, std::string_view note);

  // One op. Throws std::invalid_argument for an op the form cannot hold: a line not after the
  // previous op's (the first op's line must be 2 or more: line 1 is the text form's header), or a
  // width other than 1, 2, 4, 8 (1 for fetch).
  void write(const Op& op);
  void operator()(const Op& op) { write(op); }

  // The end record, then everything is handed to `out`. No op may follow.
  void finish();

  uint64_t ops() const { return ops_; }

 private:
  void put(uint8_t b) { buf_.push_back(static_cast<char>(b)); }
  void varint(uint64_t v);
  void drain();

  std::ostream& out_;
  std::string buf_;  // encoded records not yet handed to out_
  uint64_t line_ = 1;
  uint64_t gva_[vmt_binary::GVA_BASES] = {};
  uint64_t gpa_ = 0;
  uint64_t ops_ = 0;
  bool finished_ = false;
};

}  // namespace vmmu::sim
