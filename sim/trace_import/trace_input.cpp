#include "sim/trace_import/trace_input.hpp"

#include <sys/stat.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "sim/trace_import/trace_error.hpp"

namespace vmmu::sim::trace_import {

namespace {

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// The path as one single-quoted shell word.
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

}  // namespace

TraceInput::TraceInput(const std::string& path) : path_(path) {
  using Unit = TraceError::Unit;
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw TraceError(path, Unit::None, 0, "", std::string("cannot open: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw TraceError(path, Unit::None, 0, "", "is a directory");
  const char* tool = ends_with(path, ".xz") ? "xz -dc " : ends_with(path, ".gz") ? "gzip -dc " : nullptr;
  if (tool) {
    file_ = ::popen((tool + shell_quote(path)).c_str(), "r");
    pipe_ = true;
  } else {
    file_ = std::fopen(path.c_str(), "rb");
  }
  if (!file_) throw TraceError(path, Unit::None, 0, "", std::string("cannot open: ") + std::strerror(errno));
}

TraceInput::~TraceInput() {
  if (file_) pipe_ ? ::pclose(file_) : std::fclose(file_);
  std::free(buf_);
}

bool TraceInput::read_line(std::string& line) {
  const ssize_t n = ::getline(&buf_, &cap_, file_);
  if (n < 0) return false;
  size_t len = static_cast<size_t>(n);
  while (len > 0 && (buf_[len - 1] == '\n' || buf_[len - 1] == '\r')) --len;
  line.assign(buf_, len);
  return true;
}

size_t TraceInput::read(void* buf, size_t n) { return std::fread(buf, 1, n, file_); }

void TraceInput::finish(bool stopped_early) {
  if (!file_) return;
  const bool failed_read = std::ferror(file_) != 0;
  int status = 0;
  if (pipe_) status = ::pclose(file_);
  else std::fclose(file_);
  file_ = nullptr;
  if (failed_read) throw TraceError(path_, TraceError::Unit::None, 0, "", "read error");
  if (pipe_ && !stopped_early && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
    throw TraceError(path_, TraceError::Unit::None, 0, "", "the decompressor failed (a corrupt or truncated file?)");
}

}  // namespace vmmu::sim::trace_import
