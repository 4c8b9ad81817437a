#pragma once
// Reads the binary .vmt form (docs/VMT-FORMAT.md, "Binary form") one op at a time, as VmtReader
// reads the text form: a replay executes each op before the next is decoded, so a bad record
// stops it with every earlier op done.
//
// It accepts exactly the ops the text form can express: the same ranges, widths, alignments and
// page-crossing rules, with the text reader's messages where the same thing is wrong. Garbage
// never makes it crash or allocate more than its fixed input window.
#include <cstdint>
#include <cstring>
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
  bool next(Op& op) {
    if (run_pos_ < run_end_) [[likely]] {
      take(op);
      return true;
    }
    return next_slow(op);
  }

  // Accesses decoded ahead (OpSource::pending_accesses): a new run if none is left.
  AccessRun pending_accesses() {
    if (run_pos_ == run_end_ && !next_run()) return {};
    return AccessRun{run_ + run_pos_, run_end_ - run_pos_, run_line_ + run_pos_};
  }
  void take_accesses(uint32_t n) { run_pos_ += n; }

  // The 1-based record number and byte offset of the last op returned.
  uint64_t record() const { return record_ - (run_end_ - run_pos_); }
  uint64_t record_offset() const { return run_pos_ != 0 ? run_[run_pos_ - 1].offset : record_offset_; }
  // The header's note (read with the first next()).
  const std::string& note() const { return note_; }

  // Whether these first bytes of an input are the binary form's magic.
  static bool has_magic(std::string_view first_bytes) { return first_bytes.substr(0, vmt_binary::MAGIC.size()) == vmt_binary::MAGIC_VIEW; }

 private:
  struct NeedMore {};  // a record runs past the bytes in the window (thrown only at its edge)
  friend class RecordDecoder;

  // Reads, writes and fetches on consecutive lines are decoded ahead in runs of AccessOps:
  // decoding runs keeps the record position in a register, as each record's start depends on
  // the previous one's varint lengths.
  static constexpr uint32_t RUN = 64;

  void take(Op& op) {
    const uint32_t i = run_pos_++;
    const AccessOp& a = run_[i];
    // Loads are cheaper than the stores of a clear: clear only if an earlier op left something
    // set (or'ed as integers: one branch, not fifteen).
    const unsigned set = unsigned{op.maxphyaddr.has_value()} | unsigned{op.gbpages.has_value()} | unsigned{op.la57.has_value()} |
                         unsigned{op.readonly} | unsigned{op.log} | unsigned{op.host_page != guest::HostPageSize::Size4K} |
                         unsigned{op.dirty != DirtyLogAction::Get} | unsigned{op.size != 0} | unsigned{op.regs.cr0.has_value()} |
                         unsigned{op.regs.cr3.has_value()} | unsigned{op.regs.cr4.has_value()} | unsigned{op.regs.efer.has_value()} |
                         unsigned{op.regs.cpl.has_value()} | unsigned{op.regs.ac.has_value()} | unsigned{op.regs.pkru.has_value()};
    if (set) [[unlikely]]
      clear_op(op);
    op.kind = a.kind;
    op.line = run_line_ + i;
    op.id = a.id;
    op.addr = a.addr;
    op.value = a.value;
    op.width = a.width;
  }
  // `op = Op{}` in ten vector moves. Compilers turn a copy of a constant Op (or `Op{}`) into a
  // `rep stos` that costs more than decoding a record; a member's value is not known to them.
  void clear_op(Op& op) const { std::memcpy(static_cast<void*>(&op), &clean_, sizeof(Op)); }

  bool next_slow(Op& op);    // a new run, or else one record by next_record
  bool next_run();           // a new run; false if the next record is no access (or is bad)
  uint32_t decode_run();     // the accesses from pos_ on, into run_; how many
  bool next_record(Op& op);  // any record, with every check and message
  bool refill();             // more bytes into the window; false at the end of the input
  void top_up();             // more bytes into the window if the stream has them now
  void compact();            // moves the undecoded bytes to the window's start
  void read_header();
  [[noreturn]] void fail(uint64_t record, uint64_t offset, const std::string& what) const;

  std::streambuf& in_;
  std::vector<uint8_t> buf_;  // the window: bytes [pos_, end_) are not decoded yet
  size_t pos_ = 0, end_ = 0;
  uint64_t window_offset_ = 0;  // input offset of buf_[0]
  bool eof_ = false;
  bool header_done_ = false, ended_ = false;
  bool fast_ = false;  // the header is read and the end record is not
  std::string note_;
  uint64_t record_ = 0, record_offset_ = 0;
  // Delta bases (committed only when a record decodes completely).
  uint64_t line_ = 1;
  uint64_t gva_[vmt_binary::GVA_BASES] = {};
  uint64_t gpa_ = 0;
  // Accesses decoded ahead: run_[run_pos_, run_end_) are not returned yet (their records are
  // committed: pos_, record_, line_ and the bases are past them); run_line_ is run_[0]'s line.
  uint32_t run_pos_ = 0, run_end_ = 0;
  uint64_t run_line_ = 0;
  const Op clean_{};
  AccessOp run_[RUN];
};

}  // namespace vmmu::sim
