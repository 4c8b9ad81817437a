// libFuzzer target for the text .vmt parser (sim/vmt_reader.cpp), and for what `vmmu replay`
// does with what it parses on a `--mmu=none` Vm.
//
// The input is the bytes of a .vmt file. Three checks, in order:
//  1. The reader takes the whole input as `vmmu replay` takes a file (through a stream buffer that
//     holds all of it): every op is read, or a ParseError stops it. Nothing else may escape.
//  2. The same bytes handed out a few at a time (as a pipe does) give exactly the same ops and the
//     same error at the same line: the chunked line reader must not depend on where reads stop.
//  3. If the input parses far enough to declare at most MAX_GUEST_BYTES of memslots, the whole
//     input is replayed with sim::replay_stream (the function behind `vmmu replay`) on a fresh
//     `--mmu=none` Vm, its output thrown away. The contract's outcomes (results, a malformed line,
//     a host memory error) are normal; a crash, a sanitizer report or any exception escaping
//     replay_stream (UsageError is a std::logic_error, and only ever leaves as a ReplayError) is a
//     bug that libFuzzer reports.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <istream>
#include <optional>
#include <streambuf>
#include <string>
#include <vector>

#include "fuzz/chunked_input_buf.hpp"
#include "sim/replayer.hpp"
#include "sim/vmt_reader.hpp"
#include "vm/vm.hpp"

namespace {

using vmmu::sim::Op;
using vmmu::sim::ParseError;
using vmmu::sim::VmtReader;

// Replay only inputs whose memslots add up to at most this. Memslots are NORESERVE mmaps, so a
// 64 TiB slot costs nothing until touched, but `unmap`, `age` and `dirty-log get` walk their range
// page by page, and a few thousand such lines over terabytes would time out instead of finding
// bugs. 64 MiB is also the Replayer's "small guest" bound under which a debug build (this one)
// audits the Vm after every op, which turns a broken invariant into an abort the fuzzer sees.
constexpr uint64_t MAX_GUEST_BYTES = uint64_t{64} << 20;

using InputBuf = vmmu::fuzz::ChunkedInputBuf;

// What a read of the whole input gave: every op, and the error that stopped it if any.
struct Parsed {
  std::vector<Op> ops;
  std::optional<uint64_t> error_line;
  std::string error;
};

Parsed parse(const uint8_t* data, size_t size, size_t step) {
  InputBuf buf(data, size, step);
  std::istream in(&buf);
  VmtReader reader(in);
  Parsed p;
  try {
    Op op;
    while (reader.next(op)) p.ops.push_back(op);
  } catch (const ParseError& e) {
    p.error_line = e.line();
    p.error = e.what();
  }
  return p;
}

bool same(const Op& a, const Op& b) {
  return a.kind == b.kind && a.line == b.line && a.id == b.id && a.addr == b.addr && a.size == b.size && a.value == b.value &&
         a.width == b.width && a.dirty == b.dirty && a.maxphyaddr == b.maxphyaddr && a.gbpages == b.gbpages && a.la57 == b.la57 &&
         a.readonly == b.readonly && a.log == b.log && a.host_page == b.host_page && a.regs.cr0 == b.regs.cr0 &&
         a.regs.cr3 == b.regs.cr3 && a.regs.cr4 == b.regs.cr4 && a.regs.efer == b.regs.efer && a.regs.cpl == b.regs.cpl &&
         a.regs.ac == b.regs.ac && a.regs.pkru == b.regs.pkru;
}

[[noreturn]] void bug(const char* what, uint64_t detail) {
  std::fprintf(stderr, "vmt_text_fuzz: %s (%llu)\n", what, static_cast<unsigned long long>(detail));
  std::abort();
}

// A sink for the replay's JSON Lines and messages (opened once: the fuzzer runs millions of inputs).
std::FILE* null_file() {
  static std::FILE* const f = std::fopen("/dev/null", "w");
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Parsed whole = parse(data, size, 0);

  const Parsed pieces = parse(data, size, 97);
  if (pieces.ops.size() != whole.ops.size()) bug("piecewise read gave a different number of ops", pieces.ops.size());
  for (size_t i = 0; i < whole.ops.size(); ++i)
    if (!same(whole.ops[i], pieces.ops[i])) bug("piecewise read gave a different op at line", whole.ops[i].line);
  if (pieces.error_line != whole.error_line || pieces.error != whole.error)
    bug("piecewise read gave a different error at line", whole.error_line.value_or(0));
  if (whole.error_line && whole.error.empty()) bug("a parse error without a message at line", *whole.error_line);

  uint64_t guest_bytes = 0;
  for (const Op& op : whole.ops) {
    if (op.kind != vmmu::sim::OpKind::Memslot) continue;
    if (op.size > MAX_GUEST_BYTES - guest_bytes) return 0;  // too big to replay quickly: parse only
    guest_bytes += op.size;
  }

  InputBuf buf(data, size, 0);
  std::istream in(&buf);
  vmmu::Vm vm(vmmu::VmConfig{.mmu = vmmu::MmuKind::None});
  const int status = vmmu::sim::replay_stream(in, "fuzz.vmt", vm, null_file(), null_file());
  if (status != 0 && status != 2 && status != 3) bug("replay returned an exit status outside 0, 2, 3", static_cast<uint64_t>(status));
  if (whole.error_line && status != 2) bug("replay did not stop at the malformed line", *whole.error_line);
  return 0;
}
