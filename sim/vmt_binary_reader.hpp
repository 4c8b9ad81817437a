#pragma once
// Reads the binary .vmt form (docs/VMT-FORMAT.md, "Binary form") one op at a time, as VmtReader
// reads the text form: a replay executes each op before the next is decoded, so a bad record
// stops it with every earlier op done.
//
// It accepts exactly the ops the text form can express: the same ranges, widths, alignments and
// page-crossing rules, with the text reader's messages where the same thing is wrong. Garbage
// never makes it crash or allocate more than its fixed input window.
#include <cstdint>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <string_view>
#include <vector>

#include "sim/op.hpp"
#include "sim/vmt_binary_format.hpp"

namespace vmmu::sim {

// A bad record (or header: record 0). `what()` says what is wrong; the caller prefixes
// `FILE: record N (byte offset X)` (binary_position).
class BinaryFormatError : public std::runtime_error {
 public:
  BinaryFormatError(uint64_t record, uint64_t offset, const std::string& what)
      : std::runtime_error(what), record_(record), offset_(offset) {}
  uint64_t record() const { return record_; }
  uint64_t offset() const { return offset_; }

 private:
  uint64_t record_, offset_;
};

// "record N (byte offset X)", or "header (byte offset X)" for record 0.
std::string binary_position(uint64_t record, uint64_t offset);

class VmtBinaryReader {
 public:
  // Reads from `in` (positioned at the magic), which must outlive the reader; read nothing else
  // from it while the reader is in use.
  explicit VmtBinaryReader(std::streambuf& in);

  // The next op, or false after the end record. Throws BinaryFormatError.
  bool next(Op& op);

  // The 1-based record number and byte offset of the last op returned.
  uint64_t record() const { return record_; }
  uint64_t record_offset() const { return record_offset_; }
  // The header's note (read with the first next()).
  const std::string& note() const { return note_; }

  // Whether these first bytes of an input are the binary form's magic.
  static bool has_magic(std::string_view first_bytes) { return first_bytes.substr(0, vmt_binary::MAGIC.size()) == vmt_binary::MAGIC_VIEW; }

 private:
  struct NeedMore {};  // a record runs past the bytes in the window (thrown only at its edge)
  friend class RecordDecoder;

  bool next_record(Op& op);  // any record, with every check and message
  bool refill();             // more bytes into the window; false at the end of the input
  void read_header();
  [[noreturn]] void fail(uint64_t record, uint64_t offset, const std::string& what) const;

  std::streambuf& in_;
  std::vector<uint8_t> buf_;  // the window: bytes [pos_, end_) are not decoded yet
  size_t pos_ = 0, end_ = 0;
  uint64_t window_offset_ = 0;  // input offset of buf_[0]
  bool eof_ = false;
  bool header_done_ = false, ended_ = false;
  std::string note_;
  uint64_t record_ = 0, record_offset_ = 0;
  // Delta bases (committed only when a record decodes completely).
  uint64_t line_ = 1;
  uint64_t gva_[vmt_binary::GVA_BASES] = {};
  uint64_t gpa_ = 0;
};

}  // namespace vmmu::sim
