#pragma once
// Reads the text form of a .vmt workload (VMT-FORMAT.md, version 1) one op at a time, so a
// replay prints each result before it reads further (a malformed line stops it with every
// earlier result already out).
#include <cstdint>
#include <istream>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "sim/op.hpp"
#include "sim/op_source.hpp"

namespace vmmu::sim {

// A malformed line: `what()` says what is wrong; the caller prefixes FILE:LINE.
class ParseError : public std::runtime_error {
 public:
  ParseError(uint64_t line, const std::string& what) : std::runtime_error(what), line_(line) {}
  uint64_t line() const { return line_; }

 private:
  uint64_t line_;
};

class VmtReader {
 public:
  // Reads from `in`, which must outlive the reader. The reader takes the input through `in`'s
  // stream buffer in chunks (whatever is available, so a pipe works line by line too): read
  // nothing else from `in` while the reader is in use.
  explicit VmtReader(std::istream& in);

  // The next op, or false at the end of the input. Throws ParseError for a malformed line
  // (including a missing or unsupported `vmt 1` header).
  bool next(Op& op);

  // Parses one line already known to be an op line (after the header); exposed for tests.
  static Op parse_line(std::string_view text, uint64_t line);

 private:
  std::istream& in_;
  std::string buf_;               // a window of the input: bytes [pos_, end_) are not parsed yet
  std::size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
  uint64_t line_ = 0;
  bool header_seen_ = false;
};

// The text form as an OpSource, named `name` in messages: a malformed line is an OpSourceError
// `NAME:LINE: what is wrong`, and ops are placed as `NAME:LINE`.
class VmtTextSource : public OpSource {
 public:
  VmtTextSource(std::istream& in, std::string name) : reader_(in), name_(std::move(name)) {}
  bool next(Op& op) override;
  std::string where(const Op& op) const override { return name_ + ":" + std::to_string(op.line); }

 private:
  VmtReader reader_;
  std::string name_;
};

}  // namespace vmmu::sim
