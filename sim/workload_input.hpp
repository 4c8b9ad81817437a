#pragma once
// A .vmt workload file in any of its forms, read one op at a time: text or binary
// (docs/VMT-FORMAT.md), either of them compressed with zstd. The form is told by the first bytes
// (zstd's magic, then the binary form's), never by the file's name.
#include <cstdint>
#include <istream>
#include <memory>
#include <streambuf>
#include <string>

#include "sim/op_source.hpp"
#include "sim/vmt_binary_reader.hpp"
#include "sim/vmt_reader.hpp"
#include "sim/workload_streams.hpp"

namespace vmmu::sim {

class WorkloadInput : public OpSource {
 public:
  // Opens `path` ("-": standard input). Throws OpSourceError (`PATH: cannot open: ...`).
  explicit WorkloadInput(const std::string& path);
  // Reads `raw` (which must outlive this), named `name` in messages.
  WorkloadInput(std::streambuf& raw, std::string name);
  ~WorkloadInput() override;
  WorkloadInput(const WorkloadInput&) = delete;
  WorkloadInput& operator=(const WorkloadInput&) = delete;

  // The next op, or false at the end. Throws OpSourceError with the whole message:
  // `FILE:LINE: what` (text), `FILE: record N (byte offset X): what` (binary; the offset counts
  // uncompressed bytes), `FILE: zstd: what` or `FILE: read error: what`.
  bool next(Op& op) override;
  std::string where(const Op& op) const override;
  AccessRun pending_accesses() override {
    if (!binary_) return {};
    try {
      return binary_->pending_accesses();
    } catch (const BinaryFormatError& e) {
      throw source_error(e);
    } catch (const InputError& e) {
      throw source_error(e);
    }
  }
  void take_accesses(uint32_t n) override {
    if (binary_) binary_->take_accesses(n);
  }

  const std::string& name() const { return name_; }
  // What the first bytes said (known after the first next()).
  WorkloadForm form() const { return form_; }
  bool compressed() const { return zstd_ != nullptr; }
  // The binary header's note ("" for text).
  std::string note() const { return binary_ ? binary_->note() : std::string(); }

 private:
  void detect();
  // The messages of a bad record, and of zstd or read errors.
  OpSourceError source_error(const BinaryFormatError& e) const;
  OpSourceError source_error(const InputError& e) const;

  std::string name_;
  std::unique_ptr<ChunkInBuf> raw_;   // the file's bytes
  std::unique_ptr<ZstdInBuf> zstd_;   // their decompression, if they are zstd
  std::unique_ptr<std::istream> text_stream_;
  std::unique_ptr<VmtTextSource> text_;
  std::unique_ptr<VmtBinaryReader> binary_;
  WorkloadForm form_ = WorkloadForm::Text;
  bool detected_ = false;
};

}  // namespace vmmu::sim
