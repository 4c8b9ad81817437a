#pragma once
// Writes a .vmt workload in the form its file name asks for (docs/VMT-FORMAT.md, "Binary
// form"): NAME.vmt is text; NAME.vmtb is binary; a name ending in .zst is compressed with zstd,
// and binary unless told otherwise (NAME.vmt.zst and NAME.vmtb.zst are both binary + zstd).
#include <cstdint>
#include <fstream>
#include <memory>
#include <ostream>
#include <streambuf>
#include <string>
#include <string_view>

#include "sim/op_source.hpp"
#include "sim/op_writer.hpp"
#include "sim/workload_streams.hpp"

namespace vmmu::sim {

struct OutputFormat {
  WorkloadForm form = WorkloadForm::Text;
  bool zstd = false;
};

// The naming rule above ("-", standard output, is text).
OutputFormat output_format_for(std::string_view path);

// Text as write_vmt writes it, one op at a time: `vmt 1`, the note as a comment on line 2 (when
// the first op leaves room for it), each op on its line, blank lines in the gaps.
class VmtTextWriter : public OpWriter {
 public:
  VmtTextWriter(std::ostream& out, std::string_view note);
  // Throws std::invalid_argument when an op's line is not after the previous one.
  void write(const Op& op) override;
  void finish() override;

 private:
  std::ostream& out_;
  std::string note_;
  uint64_t line_ = 1;
};

class WorkloadOutput : public OpWriter {
 public:
  // Creates `path` ("-": standard output). Throws std::runtime_error (`PATH: cannot create: ...`).
  WorkloadOutput(const std::string& path, OutputFormat format, std::string_view note, int zstd_level = 3);
  ~WorkloadOutput() override;

  // Throws std::invalid_argument for an op the form cannot hold (lines out of order...).
  void write(const Op& op) override;
  // Ends the workload (and the zstd frame) and flushes. Throws std::runtime_error (`PATH: write error`).
  void finish() override;
  uint64_t ops() const { return ops_; }

 private:
  std::string path_;
  std::unique_ptr<std::filebuf> file_;   // the file (null for standard output)
  std::unique_ptr<ZstdOutBuf> zstd_;
  std::unique_ptr<std::ostream> stream_;  // what the form's writer writes to
  std::unique_ptr<OpWriter> writer_;
  uint64_t ops_ = 0;
};

}  // namespace vmmu::sim
