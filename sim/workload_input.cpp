#include "sim/workload_input.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vmmu::sim {

WorkloadInput::WorkloadInput(const std::string& path) : name_(path) {
  if (path == "-") {
    raw_ = std::make_unique<FdInBuf>(STDIN_FILENO, false);
    return;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw OpSourceError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  raw_ = std::make_unique<FdInBuf>(fd, true);
}

WorkloadInput::WorkloadInput(std::streambuf& raw, std::string name) : name_(std::move(name)), raw_(std::make_unique<StreamInBuf>(raw)) {}

WorkloadInput::~WorkloadInput() = default;

void WorkloadInput::detect() {
  detected_ = true;
  ChunkInBuf* data = raw_.get();
  if (has_zstd_magic(raw_->peek(4))) {
    zstd_ = std::make_unique<ZstdInBuf>(*raw_);
    data = zstd_.get();
  }
  if (VmtBinaryReader::has_magic(data->peek(vmt_binary::MAGIC.size()))) {
    form_ = WorkloadForm::Binary;
    binary_ = std::make_unique<VmtBinaryReader>(*data);
  } else {
    text_stream_ = std::make_unique<std::istream>(data);
    text_ = std::make_unique<VmtTextSource>(*text_stream_, name_);
  }
}

bool WorkloadInput::next(Op& op) {
  try {
    if (binary_) [[likely]]
      return binary_->next(op);
    if (text_) return text_->next(op);
    detect();
    return binary_ ? binary_->next(op) : text_->next(op);
  } catch (const BinaryFormatError& e) {
    throw source_error(e);
  } catch (const InputError& e) {
    throw source_error(e);
  }
}

OpSourceError WorkloadInput::source_error(const BinaryFormatError& e) const {
  return OpSourceError(fmt::format("{}: {}: {}", name_, binary_position(e.record(), e.offset()), e.what()));
}

OpSourceError WorkloadInput::source_error(const InputError& e) const { return OpSourceError(fmt::format("{}: {}", name_, e.what())); }

std::string WorkloadInput::where(const Op& op) const {
  if (binary_) return fmt::format("{}: {}", name_, binary_position(binary_->record(), binary_->record_offset()));
  return text_ ? text_->where(op) : name_;
}

}  // namespace vmmu::sim
