#include "sim/workload_output.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include "sim/random_workload.hpp"
#include "sim/vmt_binary_writer.hpp"

namespace vmmu::sim {

namespace {

bool ends_with(std::string_view s, std::string_view suffix) { return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix; }

class BinaryOpWriter : public OpWriter {
 public:
  BinaryOpWriter(std::ostream& out, std::string_view note) : w_(out, note) {}
  void write(const Op& op) override { w_.write(op); }
  void finish() override { w_.finish(); }

 private:
  VmtBinaryWriter w_;
};

}  // namespace

OutputFormat output_format_for(std::string_view path) {
  OutputFormat f;
  f.zstd = ends_with(path, ".zst");
  if (f.zstd) path.remove_suffix(4);
  f.form = f.zstd || ends_with(path, ".vmtb") ? WorkloadForm::Binary : WorkloadForm::Text;
  return f;
}

VmtTextWriter::VmtTextWriter(std::ostream& out, std::string_view note) : out_(out), note_(note) {
  for (char& c : note_)
    if (c == '\n') c = ' ';
  out_ << "vmt 1\n";
}

void VmtTextWriter::write(const Op& op) {
  if (op.line <= line_) throw std::invalid_argument(fmt::format("text .vmt: op line {} does not come after line {}", op.line, line_));
  for (++line_; line_ < op.line; ++line_) {
    if (!note_.empty()) {
      out_ << "# " << note_;
      note_.clear();
    }
    out_ << '\n';
  }
  out_ << format_op(op) << '\n';
}

void VmtTextWriter::finish() {
  if (!note_.empty()) out_ << "# " << note_ << '\n';
  note_.clear();
  out_.flush();
}

WorkloadOutput::WorkloadOutput(const std::string& path, OutputFormat format, std::string_view note, int zstd_level) : path_(path) {
  std::streambuf* sink = std::cout.rdbuf();
  if (path != "-") {
    auto file = std::make_unique<std::filebuf>();
    if (!file->open(path, std::ios::out | std::ios::binary | std::ios::trunc))
      throw std::runtime_error(fmt::format("{}: cannot create: {}", path, std::strerror(errno)));
    sink = file.get();
    file_ = std::move(file);
  }
  if (format.zstd) {
    zstd_ = std::make_unique<ZstdOutBuf>(*sink, zstd_level);
    sink = zstd_.get();
  }
  stream_ = std::make_unique<std::ostream>(sink);
  if (format.form == WorkloadForm::Binary) {
    writer_ = std::make_unique<BinaryOpWriter>(*stream_, note);
  } else {
    writer_ = std::make_unique<VmtTextWriter>(*stream_, note);
  }
}

WorkloadOutput::~WorkloadOutput() = default;

void WorkloadOutput::write(const Op& op) {
  writer_->write(op);
  ++ops_;
}

void WorkloadOutput::finish() {
  bool ok = true;
  try {
    writer_->finish();
    ok = stream_->good();
    if (zstd_) zstd_->finish();
    if (file_ && file_->close() == nullptr) ok = false;
    if (!file_ && std::cout.rdbuf()->pubsync() != 0) ok = false;
  } catch (const std::runtime_error&) {
    ok = false;
  }
  if (!ok) throw std::runtime_error(fmt::format("{}: write error", path_));
}

}  // namespace vmmu::sim
