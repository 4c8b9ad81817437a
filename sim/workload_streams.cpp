#include "sim/workload_streams.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace vmmu::sim {

namespace {

// Big chunks: fewer reads, zstd calls and window refills per byte.
constexpr size_t CHUNK = size_t{256} << 10;
constexpr size_t DIRECT_READ = size_t{16} << 10;  // reads this large skip the buffer when it is empty
constexpr std::string_view ZSTD_MAGIC{"\x28\xb5\x2f\xfd", 4};

}  // namespace

ChunkInBuf::ChunkInBuf() : buf_(CHUNK) {}

bool ChunkInBuf::more() {
  const std::ptrdiff_t left = gptr() != nullptr ? egptr() - gptr() : 0;
  const size_t have = left > 0 ? static_cast<size_t>(left) : 0;
  if (have != 0 && have <= buf_.size() && gptr() != buf_.data()) std::memmove(buf_.data(), gptr(), have);
  setg(buf_.data(), buf_.data(), buf_.data() + have);
  if (eof_) return false;
  if (have == buf_.size()) buf_.resize(2 * buf_.size());  // only a peek longer than the buffer needs this
  const size_t n = fill(buf_.data() + have, buf_.size() - have);
  if (n == 0) {
    eof_ = true;
    return false;
  }
  setg(buf_.data(), buf_.data(), buf_.data() + have + n);
  return true;
}

std::string_view ChunkInBuf::peek(size_t n) {
  while ((gptr() == nullptr || static_cast<size_t>(egptr() - gptr()) < n) && more()) {
  }
  if (gptr() == nullptr) return {};
  return {gptr(), std::min(n, static_cast<size_t>(egptr() - gptr()))};
}

ChunkInBuf::int_type ChunkInBuf::underflow() {
  if (gptr() != nullptr && gptr() < egptr()) return traits_type::to_int_type(*gptr());
  if (!more()) return traits_type::eof();
  return traits_type::to_int_type(*gptr());
}

// At most one fill: what is buffered, or else what one fill brings (a pipe is read as it comes).
// A large read with nothing buffered is filled in place: decompressed or read bytes are not
// copied twice.
std::streamsize ChunkInBuf::xsgetn(char* s, std::streamsize n) {
  if (n <= 0) return 0;
  if (gptr() == nullptr || gptr() == egptr()) {
    if (static_cast<size_t>(n) >= DIRECT_READ) {
      if (eof_) return 0;
      const size_t got = fill(s, static_cast<size_t>(n));
      eof_ = got == 0;
      return static_cast<std::streamsize>(got);
    }
    if (traits_type::eq_int_type(underflow(), traits_type::eof())) return 0;
  }
  const auto k = std::min(n, static_cast<std::streamsize>(egptr() - gptr()));
  std::memcpy(s, gptr(), static_cast<size_t>(k));
  gbump(static_cast<int>(k));
  return k;
}

FdInBuf::~FdInBuf() {
  if (owned_) ::close(fd_);
}

size_t FdInBuf::fill(char* dst, size_t cap) {
  for (;;) {
    const ssize_t n = ::read(fd_, dst, cap);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) throw InputError(fmt::format("read error: {}", std::strerror(errno)));
  }
}

size_t StreamInBuf::fill(char* dst, size_t cap) {
  const std::streamsize n = in_.sgetn(dst, static_cast<std::streamsize>(cap));
  return n > 0 ? static_cast<size_t>(n) : 0;
}

bool has_zstd_magic(std::string_view first_bytes) { return first_bytes.substr(0, ZSTD_MAGIC.size()) == ZSTD_MAGIC; }

ZstdInBuf::ZstdInBuf(std::streambuf& compressed) : in_(compressed), ds_(ZSTD_createDStream()), in_buf_(ZSTD_DStreamInSize()) {
  if (ds_ == nullptr) throw std::bad_alloc();
  ZSTD_initDStream(ds_);
}

ZstdInBuf::~ZstdInBuf() { ZSTD_freeDStream(ds_); }

size_t ZstdInBuf::fill(char* dst, size_t cap) {
  for (;;) {
    // Input left, or a frame not finished (zstd may hold output that needs no more input).
    if (in_view_.pos < in_view_.size || inside_frame_) {
      ZSTD_outBuffer out{dst, cap, 0};
      const size_t r = ZSTD_decompressStream(ds_, &out, &in_view_);
      if (ZSTD_isError(r))
        throw InputError(fmt::format("zstd: {} (at or before compressed byte offset {})", ZSTD_getErrorName(r), consumed_ + in_view_.pos));
      inside_frame_ = r != 0;
      if (out.pos != 0) return out.pos;
      if (in_view_.pos < in_view_.size) continue;
    }
    consumed_ += in_view_.size;
    const std::streamsize got = in_.sgetn(in_buf_.data(), static_cast<std::streamsize>(in_buf_.size()));
    if (got <= 0) {
      if (inside_frame_) throw InputError(fmt::format("zstd: the compressed data ends inside a frame after {} bytes (truncated?)", consumed_));
      return 0;
    }
    in_view_ = ZSTD_inBuffer{in_buf_.data(), static_cast<size_t>(got), 0};
  }
}

ZstdOutBuf::ZstdOutBuf(std::streambuf& out, int level)
    : out_(out), cs_(ZSTD_createCStream()), in_buf_(ZSTD_CStreamInSize()), out_buf_(ZSTD_CStreamOutSize()) {
  if (cs_ == nullptr) throw std::bad_alloc();
  ZSTD_CCtx_setParameter(cs_, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cs_, ZSTD_c_checksumFlag, 1);
  setp(in_buf_.data(), in_buf_.data() + in_buf_.size());
}

ZstdOutBuf::~ZstdOutBuf() { ZSTD_freeCStream(cs_); }

void ZstdOutBuf::compress(ZSTD_EndDirective mode) {
  ZSTD_inBuffer in{pbase(), static_cast<size_t>(pptr() - pbase()), 0};
  for (;;) {
    ZSTD_outBuffer out{out_buf_.data(), out_buf_.size(), 0};
    const size_t r = ZSTD_compressStream2(cs_, &out, &in, mode);
    if (ZSTD_isError(r)) throw std::runtime_error(fmt::format("zstd: {}", ZSTD_getErrorName(r)));
    if (out.pos != 0 && out_.sputn(out_buf_.data(), static_cast<std::streamsize>(out.pos)) != static_cast<std::streamsize>(out.pos))
      throw std::runtime_error("write error");
    if (mode == ZSTD_e_continue ? in.pos == in.size : r == 0) break;
  }
  setp(in_buf_.data(), in_buf_.data() + in_buf_.size());
}

ZstdOutBuf::int_type ZstdOutBuf::overflow(int_type c) {
  if (finished_) return traits_type::eof();
  compress(ZSTD_e_continue);
  if (!traits_type::eq_int_type(c, traits_type::eof())) {
    *pptr() = traits_type::to_char_type(c);
    pbump(1);
  }
  return traits_type::not_eof(c);
}

std::streamsize ZstdOutBuf::xsputn(const char* s, std::streamsize n) {
  if (finished_) return 0;
  std::streamsize done = 0;
  while (done < n) {
    if (pptr() == epptr()) compress(ZSTD_e_continue);
    const auto k = std::min(n - done, static_cast<std::streamsize>(epptr() - pptr()));
    std::memcpy(pptr(), s + done, static_cast<size_t>(k));
    pbump(static_cast<int>(k));
    done += k;
  }
  return n;
}

void ZstdOutBuf::finish() {
  if (finished_) return;
  compress(ZSTD_e_end);
  finished_ = true;
  if (out_.pubsync() != 0) throw std::runtime_error("write error");
}

}  // namespace vmmu::sim
