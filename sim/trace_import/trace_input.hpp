#pragma once
// A trace file opened for reading; `.xz` and `.gz` files are read through the system's
// `xz -dc` / `gzip -dc`, as ChampSim does.
#include <cstdint>
#include <cstdio>
#include <string>

namespace vmmu::sim::trace_import {

class TraceInput {
 public:
  // Throws TraceError when the file cannot be opened.
  explicit TraceInput(const std::string& path);
  ~TraceInput();
  TraceInput(const TraceInput&) = delete;
  TraceInput& operator=(const TraceInput&) = delete;

  // The next line without its newline; false at the end.
  bool read_line(std::string& line);
  // Up to `n` bytes; fewer only at the end.
  size_t read(void* buf, size_t n);
  // At the end: throws TraceError when the decompressor failed (a corrupt or truncated file).
  // `stopped_early`: the reader stopped before the end of the data (a decompressor killed by
  // SIGPIPE then is no failure).
  void finish(bool stopped_early = false);

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  bool pipe_ = false;
  char* buf_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace vmmu::sim::trace_import
