// libFuzzer target for the binary .vmt reader (sim/vmt_binary_reader.cpp) and for the zstd and
// form detection of sim::WorkloadInput in front of it.
//
// The input's first byte selects the path (the seeds in fuzz/corpus/vmt_binary/ carry it):
//   even: the rest is handed straight to VmtBinaryReader (magic included);
//   odd:  the rest is read by WorkloadInput, which detects zstd, then binary or text.
// Checks, for every input:
//  1. Reading stops at the end or with the documented error (BinaryFormatError, or for
//     WorkloadInput an OpSourceError with a message); nothing else may escape.
//  2. The same bytes handed out a few at a time (as a pipe does) give the same ops and the same
//     error at the same record and offset: refilling the window mid-record must not matter.
//  3. Every op read is one the text form can express: format_op's line parses back to the same
//     op (so the engine never sees from a binary file what the text parser would refuse).
//  4. The ops written again with VmtBinaryWriter read back as the same ops.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <streambuf>
#include <string>
#include <vector>

#include "fuzz/chunked_input_buf.hpp"
#include "sim/random_workload.hpp"
#include "sim/vmt_binary_reader.hpp"
#include "sim/vmt_binary_writer.hpp"
#include "sim/vmt_reader.hpp"
#include "sim/workload_input.hpp"

namespace {

using vmmu::sim::Op;

using InputBuf = vmmu::fuzz::ChunkedInputBuf;

struct Parsed {
  std::vector<Op> ops;
  bool failed = false;
  std::string error;
};

[[noreturn]] void bug(const char* what, uint64_t detail) {
  std::fprintf(stderr, "vmt_binary_fuzz: %s (%llu)\n", what, static_cast<unsigned long long>(detail));
  std::abort();
}

Parsed parse(bool through_input, const uint8_t* data, size_t size, size_t step) {
  InputBuf buf(data, size, step);
  Parsed p;
  Op op;
  if (through_input) {
    vmmu::sim::WorkloadInput in(buf, "fuzz");
    try {
      while (in.next(op)) p.ops.push_back(op);
    } catch (const vmmu::sim::OpSourceError& e) {
      p.failed = true;
      p.error = e.what();
    }
  } else {
    vmmu::sim::VmtBinaryReader r(buf);
    try {
      while (r.next(op)) p.ops.push_back(op);
    } catch (const vmmu::sim::BinaryFormatError& e) {
      p.failed = true;
      p.error = vmmu::sim::binary_position(e.record(), e.offset()) + ": " + e.what();
    }
  }
  if (p.failed && p.error.empty()) bug("an error without a message after ops", p.ops.size());
  return p;
}

std::string describe(const Op& op) { return vmmu::sim::format_op(op) + " @" + std::to_string(op.line) + " w" + std::to_string(op.width); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool through_input = data[0] & 1;
  ++data;
  --size;
  const Parsed whole = parse(through_input, data, size, 0);
  const Parsed pieces = parse(through_input, data, size, 13);
  if (pieces.ops.size() != whole.ops.size()) bug("piecewise read gave a different number of ops", pieces.ops.size());
  for (size_t i = 0; i < whole.ops.size(); ++i)
    if (describe(whole.ops[i]) != describe(pieces.ops[i])) bug("piecewise read gave a different op", i);
  if (pieces.failed != whole.failed || pieces.error != whole.error) bug("piecewise read gave a different error", whole.ops.size());

  // Only text-expressible ops (from the binary form: WorkloadInput may have read text).
  for (const Op& op : whole.ops) {
    Op again;
    try {
      again = vmmu::sim::VmtReader::parse_line(vmmu::sim::format_op(op), op.line);
    } catch (const vmmu::sim::ParseError& e) {
      std::fprintf(stderr, "vmt_binary_fuzz: op at line %llu: '%s': %s\n", static_cast<unsigned long long>(op.line),
                   vmmu::sim::format_op(op).c_str(), e.what());
      std::abort();
    }
    if (describe(again) != describe(op)) bug("an op the text form reads differently, at line", op.line);
  }

  // Written again, read back the same.
  std::ostringstream out;
  vmmu::sim::VmtBinaryWriter w(out, "fuzz");
  for (const Op& op : whole.ops) w.write(op);
  w.finish();
  const std::string bytes = out.str();
  const Parsed back = parse(false, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), 0);
  if (back.failed) bug("the writer's output does not read back", back.ops.size());
  if (back.ops.size() != whole.ops.size()) bug("the writer's output reads back to a different number of ops", back.ops.size());
  for (size_t i = 0; i < whole.ops.size(); ++i)
    if (describe(back.ops[i]) != describe(whole.ops[i])) bug("the writer's output reads back to a different op", i);
  return 0;
}
