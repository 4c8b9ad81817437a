#pragma once
// A read-only stream buffer over a fuzz input, for the readers that take a stream: `step` 0
// gives all of it at once (as a file would); otherwise it hands out pieces of 1, 2, ... `step`
// bytes in turn, so every record or line boundary meets every kind of cut (as a pipe would).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <streambuf>

namespace vmmu::fuzz {

class ChunkedInputBuf : public std::streambuf {
 public:
  ChunkedInputBuf(const uint8_t* data, size_t size, size_t step)
      : begin_(reinterpret_cast<char*>(const_cast<uint8_t*>(data))), end_(begin_ + size), step_(step) {
    if (step_ == 0) setg(begin_, begin_, end_);
  }

 protected:
  int_type underflow() override {
    if (gptr() != nullptr && gptr() < egptr()) return traits_type::to_int_type(*gptr());
    char* const from = egptr() != nullptr ? egptr() : begin_;
    if (from == end_) return traits_type::eof();
    next_ = next_ % step_ + 1;
    const size_t n = std::min(next_, static_cast<size_t>(end_ - from));
    setg(from, from, from + n);
    return traits_type::to_int_type(*from);
  }

 private:
  char* const begin_;
  char* const end_;
  const size_t step_;
  size_t next_ = 0;
};

}  // namespace vmmu::fuzz
