#pragma once
// A small, fast writer of the replay's JSON Lines: the output keys are a contract (VMT-FORMAT.md),
// and a replay of billions of ops must not spend its time in a general JSON library.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace vmmu::sim {

class JsonLines {
 public:
  explicit JsonLines(std::FILE* out) : out_(out) {}
  ~JsonLines() { flush(); }
  JsonLines(const JsonLines&) = delete;
  JsonLines& operator=(const JsonLines&) = delete;

  // Starts an object with "line" and "op"; add fields, then end(). Each piece is appended as
  // it is: a replay that prints every result spends most of its time here.
  void begin(uint64_t line, std::string_view op) {
    put("{\"line\":");
    put_decimal(line);
    put(",\"op\":\"");
    put(op);
    put("\"");
  }
  void hex(std::string_view key, uint64_t v) {
    put_key(key);
    put("\"0x");
    put_hex(v);
    put("\"");
  }
  void number(std::string_view key, uint64_t v) {
    put_key(key);
    put_decimal(v);
  }
  void boolean(std::string_view key, bool v) {
    put_key(key);
    put(v ? std::string_view("true") : std::string_view("false"));
  }
  // `json` must already be valid JSON text (an object, array or string).
  void raw(std::string_view key, std::string_view json) {
    put_key(key);
    put(json);
  }
  void end() {
    put("}\n");
    if (size_ > FLUSH_AT) flush();
  }
  void flush() {
    if (size_ && out_) std::fwrite(buf_.data(), 1, size_, out_);
    size_ = 0;
    if (out_) std::fflush(out_);
  }

 private:
  static constexpr size_t FLUSH_AT = size_t{1} << 16;

  // Appends with a plain copy (a literal's is a few moves once inlined); the buffer grows only
  // for a line longer than its slack, such as a big `stats` result.
  [[gnu::always_inline]] void put(std::string_view s) { put(s.data(), s.size()); }
  [[gnu::always_inline]] void put(const char* p, size_t n) {
    if (buf_.size() - size_ < n) [[unlikely]]
      grow(n);
    std::memcpy(buf_.data() + size_, p, n);
    size_ += n;
  }
  [[gnu::noinline]] void grow(size_t n) { buf_.resize(std::max(2 * buf_.size(), size_ + n)); }
  [[gnu::always_inline]] void put_key(std::string_view key) {
    put(",\"");
    put(key);
    put("\":");
  }
  void put_decimal(uint64_t v) {
    const fmt::format_int digits(v);
    put(digits.data(), digits.size());
  }
  void put_hex(uint64_t v) {
    char digits[16];
    const unsigned n = v ? (static_cast<unsigned>(std::bit_width(v)) + 3) / 4 : 1;
    for (unsigned i = n; i-- > 0; v >>= 4) digits[i] = "0123456789abcdef"[v & 15];
    put(digits, n);
  }

  std::FILE* out_;
  std::vector<char> buf_ = std::vector<char>(2 * FLUSH_AT);
  size_t size_ = 0;  // bytes of buf_ in use
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
