#pragma once
// The byte streams under a workload file, whatever its form: a file descriptor (a file or stdin)
// or any stream buffer, and zstd decompression and compression on top of one. The format
// readers (VmtReader, VmtBinaryReader) read them through std::streambuf; WorkloadInput peeks at
// their first bytes to tell the forms apart.
#include <zstd.h>

#include <cstdint>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <string_view>
#include <vector>

namespace vmmu::sim {

// The bytes cannot be read: an I/O error, or zstd data that is corrupt or truncated. `what()`
// says what is wrong; the caller prefixes the file name.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An input stream buffer filled in chunks by fill(), which can show its next bytes (peek) before
// anyone reads them.
class ChunkInBuf : public std::streambuf {
 public:
  ChunkInBuf();
  // Up to `n` next bytes, without consuming them (fewer only at the end of the input).
  std::string_view peek(size_t n);

 protected:
  // Up to `cap` bytes into `dst`, at least one unless the input is over (then 0).
  virtual size_t fill(char* dst, size_t cap) = 0;

  int_type underflow() override;
  std::streamsize xsgetn(char* s, std::streamsize n) override;

 private:
  bool more();  // fill after what is buffered; false at the end
  std::vector<char> buf_;
  bool eof_ = false;
};

// A file descriptor (closed by the destructor if `owned`).
class FdInBuf : public ChunkInBuf {
 public:
  FdInBuf(int fd, bool owned) : fd_(fd), owned_(owned) {}
  ~FdInBuf() override;
  FdInBuf(const FdInBuf&) = delete;
  FdInBuf& operator=(const FdInBuf&) = delete;

 protected:
  size_t fill(char* dst, size_t cap) override;

 private:
  int fd_;
  bool owned_;
};

// Any stream buffer (a memory buffer in tests and benchmarks, a std::filebuf...).
class StreamInBuf : public ChunkInBuf {
 public:
  explicit StreamInBuf(std::streambuf& in) : in_(in) {}

 protected:
  size_t fill(char* dst, size_t cap) override;

 private:
  std::streambuf& in_;
};

// Whether these first bytes start a zstd frame.
bool has_zstd_magic(std::string_view first_bytes);

// The decompressed bytes of one or more zstd frames read from `compressed`. Throws InputError
// for corrupt data, or when the input ends inside a frame.
class ZstdInBuf : public ChunkInBuf {
 public:
  explicit ZstdInBuf(std::streambuf& compressed);
  ~ZstdInBuf() override;
  ZstdInBuf(const ZstdInBuf&) = delete;
  ZstdInBuf& operator=(const ZstdInBuf&) = delete;

 protected:
  size_t fill(char* dst, size_t cap) override;

 private:
  std::streambuf& in_;
  ZSTD_DStream* ds_;
  std::vector<char> in_buf_;
  ZSTD_inBuffer in_view_{nullptr, 0, 0};
  uint64_t consumed_ = 0;    // compressed bytes handed to zstd before in_buf_
  bool inside_frame_ = false;
};

// Compresses what is written into one zstd frame (with a checksum) on `out`. finish() ends the
// frame; a write error of `out` throws std::runtime_error.
class ZstdOutBuf : public std::streambuf {
 public:
  explicit ZstdOutBuf(std::streambuf& out, int level = 3);
  ~ZstdOutBuf() override;
  ZstdOutBuf(const ZstdOutBuf&) = delete;
  ZstdOutBuf& operator=(const ZstdOutBuf&) = delete;
  void finish();

 protected:
  int_type overflow(int_type c) override;
  std::streamsize xsputn(const char* s, std::streamsize n) override;

 private:
  void compress(ZSTD_EndDirective mode);
  std::streambuf& out_;
  ZSTD_CStream* cs_;
  std::vector<char> in_buf_, out_buf_;
  bool finished_ = false;
};

}  // namespace vmmu::sim
