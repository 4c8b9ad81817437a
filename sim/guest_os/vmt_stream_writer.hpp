#pragma once
// Writes ops as .vmt text as they are emitted (an OpSink), so a workload of billions of ops
// never sits in memory: `vmt 1`, a comment line, then op i on line 2 + i. Or hands them, with
// the same check of their lines, to any OpWriter (sim::WorkloadOutput: binary, zstd).
#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "sim/op.hpp"
#include "sim/op_writer.hpp"
#include "sim/random_workload.hpp"

namespace vmmu::sim::guest_os {

class VmtStreamWriter {
 public:
  VmtStreamWriter(std::ostream& out, std::string_view comment) : out_(&out) {
    std::string note(comment);
    for (char& c : note)
      if (c == '\n') c = ' ';
    *out_ << "vmt 1\n# " << note << '\n';
  }
  // The ops go to `sink` (which wrote its own header and note), which must outlive this.
  explicit VmtStreamWriter(OpWriter& sink) : sink_(&sink) {}

  void operator()(const Op& op) {
    if (op.line != next_line_) throw std::logic_error("VmtStreamWriter: ops must come on consecutive lines from line 3");
    if (sink_) {
      sink_->write(op);
    } else {
      *out_ << format_op(op) << '\n';
    }
    ++next_line_;
  }

  uint64_t ops() const { return next_line_ - 3; }

 private:
  std::ostream* out_ = nullptr;
  OpWriter* sink_ = nullptr;
  uint64_t next_line_ = 3;
};

}  // namespace vmmu::sim::guest_os
