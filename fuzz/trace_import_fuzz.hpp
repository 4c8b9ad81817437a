#pragma once
// The body shared by the three trace importer targets (lackey, pin, champsim): the input's
// bytes are one or two traces of one kind, taken by the importer as `vmmu import` takes files.
//
// Layout of an input: the trace bytes, then one trailing byte that picks the guest (so a seed
// is a real trace with one byte appended). The trailing byte:
//   bits 0-1  paging mode: 32-bit, PAE, 4-level, 5-level
//   bit  2    two traces (the bytes split in half, at a 64-byte boundary), run as two processes
//   bit  3    transparent huge pages
//   bit  4    the shared zero page
//   bit  5    two vCPUs (else one)
//   bits 6-7  quantum: 1, 3, 16 or 10000 accesses
// The traces reach the reader as files (memfds: memory, named /proc/self/fd/N), so the path
// taken is exactly `vmmu import`'s.
//
// Checks, in order:
//  1. The reader alone, over each trace: every access is read, or a TraceError stops it; each
//     access lies below the guest's user space and is at most a page wide.
//  2. The importer over the traces, into the guest OS model (a 64 MiB guest, with its audits),
//     its ops written as .vmt text to nowhere; at most MAX_ACCESSES traced accesses per trace (the
//     op budget). A TraceError or OutOfGuestMemory is a normal outcome; any other exception
//     escapes to libFuzzer, a bug.
//  3. When neither stopped it, the importer took exactly the accesses the reader alone gave (up
//     to the budget), and made as many guest accesses as the splitter makes of them.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

#include "sim/guest_os/guest_os.hpp"
#include "sim/guest_os/paging_layout.hpp"
#include "sim/guest_os/vmt_stream_writer.hpp"
#include "sim/trace_import/access_splitter.hpp"
#include "sim/trace_import/trace_error.hpp"
#include "sim/trace_import/trace_fields.hpp"
#include "sim/trace_import/trace_importer.hpp"
#include "sim/trace_import/trace_reader.hpp"

namespace vmmu::fuzz {

namespace trace_fuzz {

using sim::trace_import::TraceAccess;
using sim::trace_import::TraceError;
using sim::trace_import::TraceKind;

// FUZZ_VERBOSE=1 in the environment: each input's outcome on stderr (to check what seeds reach).
inline bool verbose() {
  static const bool v = std::getenv("FUZZ_VERBOSE") != nullptr;
  return v;
}

// Traced accesses taken from each trace: keeps an input's run well under a second.
inline constexpr uint64_t MAX_ACCESSES = 4096;
inline constexpr uint64_t GUEST_MEMORY = 64ull << 20;  // the model's minimum

[[noreturn]] inline void bug(const char* what, unsigned long long detail) {
  std::fprintf(stderr, "trace_import_fuzz: %s (%llu)\n", what, detail);
  std::abort();
}

// A memory file reused for every input (the fuzzer runs millions of them).
class MemoryFile {
 public:
  explicit MemoryFile(const char* name) : fd_(::memfd_create(name, 0)) {
    if (fd_ < 0) bug("memfd_create failed", 0);
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemoryFile() { ::close(fd_); }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  void assign(const uint8_t* data, size_t size) {
    if (::ftruncate(fd_, 0) != 0) bug("ftruncate failed", 0);
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) bug("pwrite failed", done);
      done += static_cast<size_t>(n);
    }
  }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

// Discards what is written to it (the .vmt text of the import).
class NullBuf : public std::streambuf {
 protected:
  int_type overflow(int_type c) override { return traits_type::not_eof(c); }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

// What the reader alone gave for one trace.
struct ReadAlone {
  uint64_t accesses = 0;      // up to MAX_ACCESSES
  uint64_t pieces = 0;        // guest accesses the splitter makes of those
  bool error = false;         // a TraceError before MAX_ACCESSES accesses
};

inline ReadAlone read_alone(TraceKind kind, const std::string& path, uint64_t user_top, const std::string& guest) {
  ReadAlone r;
  try {
    const auto reader = sim::trace_import::open_trace(kind, path, user_top, guest);
    TraceAccess a;
    while (r.accesses < MAX_ACCESSES && reader->next(a)) {
      ++r.accesses;
      if (a.size > sim::trace_import::MAX_TRACED_ACCESS) bug("the reader let through an access wider than a page", a.size);
      const uint64_t size = std::max<uint64_t>(a.size, 1);
      if (a.addr >= user_top || size > user_top - a.addr) bug("the reader let through an access outside user space", a.addr);
      sim::trace_import::split_access(a, [&](x86::AccessKind, uint64_t, unsigned) { ++r.pieces; });
    }
  } catch (const TraceError& e) {
    if (std::string(e.what()).find(path) == std::string::npos) bug("a TraceError that does not name the file", 0);
    r.error = true;
  }
  return r;
}

inline int run(TraceKind kind, const uint8_t* data, size_t size) {
  static MemoryFile files[2] = {MemoryFile("trace0"), MemoryFile("trace1")};
  if (size == 0) return 0;
  const uint8_t config = data[size - 1];
  const size_t trace_bytes = size - 1;

  sim::trace_import::TraceImportParams params;
  static const x86::PagingMode modes[] = {x86::PagingMode::Bits32, x86::PagingMode::Pae, x86::PagingMode::Level4, x86::PagingMode::Level5};
  static const uint64_t quanta[] = {1, 3, 16, 10000};
  params.os.mode = modes[config & 3];
  params.os.memory = GUEST_MEMORY;
  params.os.thp = (config & 8) != 0;
  params.os.zero_page = (config & 16) != 0;
  params.os.vcpus = (config & 32) ? 2 : 1;
  params.os.page_copy_words = 4;
  params.quantum = quanta[config >> 6];
  params.max_accesses = MAX_ACCESSES;

  std::vector<std::string> paths;
  if (config & 4) {
    const size_t half = trace_bytes / 2 / 64 * 64;
    files[0].assign(data, half);
    files[1].assign(data + half, trace_bytes - half);
    paths = {files[0].path(), files[1].path()};
  } else {
    files[0].assign(data, trace_bytes);
    paths = {files[0].path()};
  }

  const auto layout = sim::guest_os::PagingLayout::for_mode(params.os.mode, params.os.memory);
  const std::string guest = x86::name(params.os.mode);
  bool read_error = false;
  uint64_t expected_traced = 0, expected_pieces = 0;
  for (const std::string& p : paths) {
    const ReadAlone r = read_alone(kind, p, layout.user_top, guest);
    read_error |= r.error;
    expected_traced += r.accesses;
    expected_pieces += r.pieces;
  }

  NullBuf null_buf;
  std::ostream null_out(&null_buf);
  sim::guest_os::VmtStreamWriter writer(null_out, "trace import fuzz");
  sim::trace_import::TraceImportResult result;
  try {
    result = sim::trace_import::import_traces(kind, paths, params, [&](const sim::Op& op) { writer(op); });
  } catch (const TraceError& e) {
    if (!read_error) bug("the importer threw a TraceError the reader alone did not", 0);
    if (verbose()) std::fprintf(stderr, "trace error: %s\n", e.what());
    return 0;
  } catch (const sim::guest_os::OutOfGuestMemory& e) {
    if (verbose()) std::fprintf(stderr, "out of guest memory: %s\n", e.what());
    return 0;
  }
  if (read_error) bug("the importer took a trace the reader alone refused", 0);
  if (result.traced_accesses != expected_traced) bug("the importer took a different number of accesses", result.traced_accesses);
  if (result.guest_accesses != expected_pieces) bug("the importer made a different number of guest accesses", result.guest_accesses);
  if (verbose())
    std::fprintf(stderr, "imported (%s): %llu traced accesses, %llu guest accesses, %llu ops, %llu page faults\n",
                 params.os.describe().c_str(), static_cast<unsigned long long>(result.traced_accesses),
                 static_cast<unsigned long long>(result.guest_accesses), static_cast<unsigned long long>(writer.ops()),
                 static_cast<unsigned long long>(result.counts.page_faults));
  if (result.counts.ops != writer.ops()) bug("the model counted a different number of ops than it emitted", result.counts.ops);
  return 0;
}

}  // namespace trace_fuzz

}  // namespace vmmu::fuzz
