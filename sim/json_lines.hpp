#pragma once
// A small, fast writer of the replay's JSON Lines: the output keys are a contract (VMT-FORMAT.md),
// and a replay of billions of ops must not spend its time in a general JSON library.
#include <cstdint>
#include <cstdio>
#include <string_view>

#include <fmt/format.h>

namespace vmmu::sim {

class JsonLines {
 public:
  explicit JsonLines(std::FILE* out) : out_(out) {}
  ~JsonLines() { flush(); }
  JsonLines(const JsonLines&) = delete;
  JsonLines& operator=(const JsonLines&) = delete;

  // Starts an object with "line" and "op"; add fields, then end().
  void begin(uint64_t line, std::string_view op) {
    fmt::format_to(std::back_inserter(buf_), "{{\"line\":{},\"op\":\"{}\"", line, op);
  }
  void hex(std::string_view key, uint64_t v) { fmt::format_to(std::back_inserter(buf_), ",\"{}\":\"0x{:x}\"", key, v); }
  void number(std::string_view key, uint64_t v) { fmt::format_to(std::back_inserter(buf_), ",\"{}\":{}", key, v); }
  void boolean(std::string_view key, bool v) { fmt::format_to(std::back_inserter(buf_), ",\"{}\":{}", key, v ? "true" : "false"); }
  // `json` must already be valid JSON text (an object, array or string).
  void raw(std::string_view key, std::string_view json) { fmt::format_to(std::back_inserter(buf_), ",\"{}\":{}", key, json); }
  void end() {
    buf_.append(std::string_view("}\n"));
    if (buf_.size() > (1u << 16)) flush();
  }
  void flush() {
    if (buf_.size() && out_) std::fwrite(buf_.data(), 1, buf_.size(), out_);
    buf_.clear();
    if (out_) std::fflush(out_);
  }

 private:
  std::FILE* out_;
  fmt::memory_buffer buf_;
};

// A JSON array of hex strings: ["0x1","0x2"].
template <class Range>
std::string hex_array(const Range& values) {
  std::string s = "[";
  bool first = true;
  for (uint64_t v : values) {
    fmt::format_to(std::back_inserter(s), "{}\"0x{:x}\"", first ? "" : ",", v);
    first = false;
  }
  s += "]";
  return s;
}

}  // namespace vmmu::sim
