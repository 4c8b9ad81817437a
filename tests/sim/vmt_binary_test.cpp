// Tests of the binary .vmt form (docs/VMT-FORMAT.md, "Binary form") and of reading and writing
// every form (sim::WorkloadInput, sim::WorkloadOutput): round trips of every shipped workload and
// of random workloads, identical replays, and each kind of bad input with its message.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <streambuf>
#include <string>
#include <vector>

#include "sim/random_workload.hpp"
#include "sim/replayer.hpp"
#include "sim/vmt_binary_reader.hpp"
#include "sim/vmt_binary_writer.hpp"
#include "sim/vmt_reader.hpp"
#include "sim/workload_input.hpp"
#include "sim/workload_output.hpp"
#include "vm/vm.hpp"

namespace vmmu::sim {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

template <class T>
std::string opt(const std::optional<T>& o) {
  return o ? std::to_string(static_cast<uint64_t>(*o)) : std::string("-");
}

// Every field of an op: two ops are equal exactly when their descriptions are.
std::string describe(const Op& op) {
  std::ostringstream s;
  s << op_name(op.kind) << " line=" << op.line << " id=" << op.id << " addr=0x" << std::hex << op.addr << " size=0x" << op.size
    << " value=0x" << op.value << std::dec << " width=" << unsigned{op.width} << " dirty=" << static_cast<int>(op.dirty)
    << " maxphyaddr=" << opt(op.maxphyaddr) << " gbpages=" << opt(op.gbpages) << " la57=" << opt(op.la57) << " ro=" << op.readonly
    << " log=" << op.log << " host=" << static_cast<int>(op.host_page) << " cr0=" << opt(op.regs.cr0) << " cr3=" << opt(op.regs.cr3)
    << " cr4=" << opt(op.regs.cr4) << " efer=" << opt(op.regs.efer) << " cpl=" << opt(op.regs.cpl) << " ac=" << opt(op.regs.ac)
    << " pkru=" << opt(op.regs.pkru);
  return s.str();
}

void expect_same_ops(const std::vector<Op>& a, const std::vector<Op>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(describe(a[i]), describe(b[i])) << "op " << i;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<Op> text_ops(const std::string& text) {
  std::istringstream in(text);
  VmtReader r(in);
  std::vector<Op> ops;
  for (Op op; r.next(op);) ops.push_back(op);
  return ops;
}

std::string to_binary(const std::vector<Op>& ops, std::string_view note = "test") {
  std::ostringstream out;
  VmtBinaryWriter w(out, note);
  for (const Op& op : ops) w.write(op);
  w.finish();
  return out.str();
}

// A stream buffer over bytes that hands out `step` bytes at a time (0: all at once), as a pipe
// does: records cut at every place must decode the same.
class PieceBuf : public std::streambuf {
 public:
  PieceBuf(const std::string& bytes, size_t step) : data_(bytes), step_(step) {
    char* b = data_.data();
    if (step_ == 0) setg(b, b, b + data_.size());
  }

 protected:
  int_type underflow() override {
    if (gptr() != nullptr && gptr() < egptr()) return traits_type::to_int_type(*gptr());
    char* const from = egptr() != nullptr ? egptr() : data_.data();
    char* const end = data_.data() + data_.size();
    if (from == end) return traits_type::eof();
    setg(from, from, from + std::min<size_t>(step_, static_cast<size_t>(end - from)));
    return traits_type::to_int_type(*from);
  }

 private:
  std::string data_;
  size_t step_;
};

std::vector<Op> binary_ops(const std::string& bytes, size_t step = 0) {
  PieceBuf buf(bytes, step);
  VmtBinaryReader r(buf);
  std::vector<Op> ops;
  for (Op op; r.next(op);) ops.push_back(op);
  return ops;
}

// Every op of `bytes` read through WorkloadInput, and the message that stopped it ("" if none).
struct Input {
  std::vector<Op> ops;
  std::string error;
};
Input input_ops(const std::string& bytes, const std::string& name = "w.vmtb", size_t step = 0) {
  PieceBuf buf(bytes, step);
  WorkloadInput in(buf, name);
  Input r;
  try {
    for (Op op; in.next(op);) r.ops.push_back(op);
  } catch (const OpSourceError& e) {
    r.error = e.what();
  }
  return r;
}

// One frame with a checksum, as WorkloadOutput writes.
std::string zstd_compress(const std::string& bytes) {
  std::string out(ZSTD_compressBound(bytes.size()), '\0');
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  const size_t n = ZSTD_compress2(c, out.data(), out.size(), bytes.data(), bytes.size());
  ZSTD_freeCCtx(c);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

std::vector<fs::path> shipped_workloads() {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(VMMU_SOURCE_DIR) / "workloads"))
    if (e.is_regular_file() && e.path().extension() == ".vmt") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

// The JSON Lines and status of a replay of `in` under `mmu`.
std::pair<int, std::string> replay(OpSource& in, MmuKind mmu) {
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* out = open_memstream(&buf, &len);
  int status;
  {
    Vm vm(VmConfig{mmu});
    status = replay_stream(in, vm, out, stderr);
  }
  std::fclose(out);
  std::string text(buf, len);
  std::free(buf);
  return {status, text};
}

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("vmmu-vmt-binary-" + std::to_string(::getpid()))) { fs::create_directories(path_); }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(VmtBinary, ShippedWorkloadsRoundTrip) {
  const auto files = shipped_workloads();
  ASSERT_GE(files.size(), 6u);
  for (const fs::path& f : files) {
    SCOPED_TRACE(f.string());
    const std::vector<Op> ops = text_ops(read_file(f));
    const std::string bin = to_binary(ops);
    expect_same_ops(ops, binary_ops(bin));
    expect_same_ops(ops, binary_ops(bin, 1));  // every record cut at every byte
    expect_same_ops(ops, binary_ops(bin, 7));
    const Input via_input = input_ops(zstd_compress(bin), "w.vmt.zst", 5);
    EXPECT_EQ(via_input.error, "");
    expect_same_ops(ops, via_input.ops);
    // Much smaller than the text.
    EXPECT_LT(bin.size() * 2, read_file(f).size());
  }
}

TEST(VmtBinary, EveryOpAndOptionRoundTrips) {
  const std::string text =
      "vmt 1\ncpu maxphyaddr=40 gbpages=0 la57=1\ncpu\nmemslot 3 0x100000 0x200000 ro host=2m\nmemslot 4 0x40000000 0x40000000 log host=1g\n"
      "memslot-move 3 0x800000\nmemslot-delete 3\nvcpu 7\nvcpu 300\n"
      "regs 7 cr0=0x80000011 cr3=0x1000 cr4=0x20 efer=0x500 cpl=3 ac=1 pkru=0xfffffffc\nregs 300 cpl=0\nregs 7\ncr3 7 0xfffffffffffff000\n"
      "\n\n# gap\npoke 0x1ff8 8 0xffffffffffffffff\npoke 0x0 1 0xff\nread 7 0xffffffff80000ff8\nread 300 0x10 1\nread 301 0x8\n"
      "write 7 0x0 2 0xffff\nwrite 7 0xfff 1 0\nfetch 300 0xfff\ninvlpg 7 0x7fff0000\nflush 300\npeek 0x1000 4\n"
      "dirty-log 4 enable\ndirty-log 4 get\ndirty-log 4 clear\ndirty-log 4 disable\nunmap 0x40000000 0x1000\n"
      "age 0x40000000 0x40000000\naudit\nstats\n";
  const std::vector<Op> ops = text_ops(text);
  ASSERT_EQ(ops.size(), 31u);
  std::vector<bool> kinds(19);
  for (const Op& op : ops) kinds.at(static_cast<size_t>(op.kind)) = true;
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), true), 19);
  const std::string bin = to_binary(ops);
  expect_same_ops(ops, binary_ops(bin));
  expect_same_ops(ops, binary_ops(bin, 1));
  // And back to text: the same ops on the same lines.
  std::ostringstream again;
  VmtTextWriter tw(again, "converted");
  for (const Op& op : binary_ops(bin)) tw.write(op);
  tw.finish();
  expect_same_ops(ops, text_ops(again.str()));
}

TEST(VmtBinary, NoteIsKept) {
  PieceBuf buf(to_binary(text_ops("vmt 1\naudit\n"), "vmmu import lackey t.txt\n(seed=1)"), 0);
  VmtBinaryReader r(buf);
  Op op;
  ASSERT_TRUE(r.next(op));
  EXPECT_EQ(r.note(), "vmmu import lackey t.txt (seed=1)");
}

RC_GTEST_PROP(VmtBinary, RandomWorkloadsRoundTripThroughEveryForm, ()) {
  RandomWorkloadParams p;
  p.seed = *rc::gen::inRange<uint64_t>(1, 1u << 30);
  p.ops = *rc::gen::inRange<uint32_t>(20, 200);
  p.vcpus = *rc::gen::inRange<uint32_t>(1, 4);
  p.modes = {*rc::gen::element(x86::PagingMode::Bits32, x86::PagingMode::Pae, x86::PagingMode::Level4, x86::PagingMode::Level5)};
  const RandomWorkload w(p);
  const std::vector<Op>& ops = w.ops();
  const std::string bin = to_binary(ops);
  const std::vector<Op> back = binary_ops(bin, *rc::gen::inRange<size_t>(0, 40));
  RC_ASSERT(back.size() == ops.size());
  for (size_t i = 0; i < ops.size(); ++i) RC_ASSERT(describe(back[i]) == describe(ops[i]));
  // Text written from the binary form reads as the same ops.
  std::ostringstream text;
  VmtTextWriter tw(text, "random");
  for (const Op& op : back) tw.write(op);
  tw.finish();
  const std::vector<Op> from_text = text_ops(text.str());
  RC_ASSERT(from_text.size() == ops.size());
  for (size_t i = 0; i < ops.size(); ++i) RC_ASSERT(describe(from_text[i]) == describe(ops[i]));
  // And the zstd form through WorkloadInput.
  const Input z = input_ops(zstd_compress(bin), "r.vmt.zst", *rc::gen::inRange<size_t>(0, 300));
  RC_ASSERT(z.error.empty());
  RC_ASSERT(z.ops.size() == ops.size());
}

// Replays of a workload as text, binary, binary + zstd and text + zstd, written by WorkloadOutput
// to files and read back by name: byte-identical JSON Lines.
TEST(VmtBinary, EveryFormReplaysIdentically) {
  TempDir dir;
  for (const fs::path& f : shipped_workloads()) {
    SCOPED_TRACE(f.string());
    const std::vector<Op> ops = text_ops(read_file(f));
    WorkloadInput text_in(f.string());
    const auto [status, expected] = replay(text_in, MmuKind::Tdp);
    ASSERT_EQ(status, 0);
    ASSERT_FALSE(expected.empty());
    for (const std::string name : {"w.vmtb", "w.vmt.zst", "w.vmtb.zst", "w.vmt"}) {
      SCOPED_TRACE(name);
      const fs::path out_path = dir.path() / name;
      const OutputFormat format = output_format_for(out_path.string());
      EXPECT_EQ(format.form == WorkloadForm::Binary, name != "w.vmt");
      EXPECT_EQ(format.zstd, name.ends_with(".zst"));
      WorkloadOutput out(out_path.string(), format, "test");
      for (const Op& op : ops) out.write(op);
      out.finish();
      WorkloadInput in(out_path.string());
      const auto [s, got] = replay(in, MmuKind::Tdp);
      EXPECT_EQ(s, 0);
      EXPECT_EQ(got, expected);
      EXPECT_EQ(in.form(), format.form);
      EXPECT_EQ(in.compressed(), format.zstd);
    }
    // Text under zstd is read too.
    std::ostringstream plain;
    plain << read_file(f);
    const Input tz = input_ops(zstd_compress(plain.str()), "t.vmt.zst", 3);
    EXPECT_EQ(tz.error, "");
    expect_same_ops(ops, tz.ops);
  }
}

TEST(VmtBinary, CliConvertThenReplayGivesTheSameJsonLines) {
  TempDir dir;
  const std::string src = std::string(VMMU_SOURCE_DIR) + "/workloads/default.vmt";
  const std::string zst = (dir.path() / "d.vmt.zst").string(), back = (dir.path() / "d.vmt").string();
  const std::string vmmu = VMMU_BINARY;
  ASSERT_EQ(std::system((vmmu + " convert " + src + " -o " + zst).c_str()), 0);
  ASSERT_EQ(std::system((vmmu + " convert " + zst + " -o " + back).c_str()), 0);
  for (const std::string& f : {src, zst, back}) {
    const std::string out = (dir.path() / (fs::path(f).filename().string() + ".jsonl")).string();
    ASSERT_EQ(std::system((vmmu + " replay --mmu=shadow " + f + " > " + out).c_str()), 0) << f;
  }
  const std::string expected = read_file(dir.path() / "default.vmt.jsonl");
  EXPECT_FALSE(expected.empty());
  EXPECT_EQ(read_file(dir.path() / "d.vmt.zst.jsonl"), expected);
  EXPECT_EQ(read_file(dir.path() / "d.vmt.jsonl"), expected);
  // Standard input, compressed.
  const std::string piped = (dir.path() / "piped.jsonl").string();
  ASSERT_EQ(std::system((vmmu + " replay --mmu=shadow - < " + zst + " > " + piped).c_str()), 0);
  EXPECT_EQ(read_file(piped), expected);
}

// Accesses built directly: every GVA delta and VALUE length (1..10 bytes), every width, IDs on
// both sides of one varint byte (128) and of the shared delta bases (256), runs longer than the
// decoder's batch, broken by line gaps and other ops. Decoded all at once (the fast path for
// accesses) and a byte at a time (the full decoder only): the same ops as written.
std::vector<Op> access_mix(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Op> ops;
  uint64_t line = 1;
  const uint32_t ids[] = {0, 1, 127, 128, 255, 256, 4000000000u};
  for (size_t i = 0; i < n; ++i) {
    Op op;
    op.line = line += rng() % 50 == 0 ? 2 + rng() % 300 : 1;
    const unsigned r = static_cast<unsigned>(rng() % 100);
    if (r < 2) {
      op.kind = OpKind::Poke;
      op.addr = (rng() % (1u << 20)) & ~uint64_t{7};
      op.value = rng();
      ops.push_back(op);
      continue;
    }
    if (r < 4) {
      op.kind = OpKind::Invlpg;
      op.id = ids[rng() % 3];
      op.addr = rng();
      ops.push_back(op);
      continue;
    }
    op.kind = r < 40 ? OpKind::Fetch : r < 75 ? OpKind::Read : OpKind::Write;
    op.id = rng() % 10 == 0 ? ids[rng() % std::size(ids)] : static_cast<uint32_t>(rng() % 2);
    op.width = op.kind == OpKind::Fetch ? 1 : static_cast<uint8_t>(1u << (rng() % 4));
    // Addresses of 7 * k significant bits give deltas of every varint length.
    const unsigned bits = 1 + static_cast<unsigned>(rng() % 64);
    const uint64_t addr = bits == 64 ? rng() : rng() & ((uint64_t{1} << bits) - 1);
    op.addr = (addr & ~uint64_t{0xfff}) | (addr & 0xfff & ~uint64_t{op.width - 1u});
    if (op.kind == OpKind::Write) {
      const unsigned vbits = static_cast<unsigned>(rng() % (8 * op.width + 1));
      op.value = vbits == 0 ? 0 : vbits == 64 ? rng() : rng() & ((uint64_t{1} << vbits) - 1);
    }
    ops.push_back(op);
  }
  return ops;
}

TEST(VmtBinaryFastPath, EveryLengthWidthAndIdDecodesAsTheFullDecoder) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    const std::vector<Op> ops = access_mix(3000, seed);
    const std::string bin = to_binary(ops);
    expect_same_ops(ops, binary_ops(bin));
    expect_same_ops(ops, binary_ops(bin, 1));
    expect_same_ops(ops, binary_ops(bin, 29));
  }
}

// Files larger than the reader's window and the stream chunks: records cut at every refill, from
// memory, through zstd, and from files.
TEST(VmtBinaryFastPath, LargeInputsInEveryForm) {
  TempDir dir;
  const std::vector<Op> ops = access_mix(200000, 99);
  const std::string bin = to_binary(ops);
  ASSERT_GT(bin.size(), size_t{1} << 20);
  expect_same_ops(ops, binary_ops(bin));
  expect_same_ops(ops, binary_ops(bin, 4093));
  const std::string z = zstd_compress(bin);
  for (size_t step : {0, 100003}) {
    const Input via = input_ops(z, "big.vmt.zst", step);
    EXPECT_EQ(via.error, "");
    expect_same_ops(ops, via.ops);
  }
  for (const auto& [name, bytes] : {std::pair{"big.vmtb", bin}, std::pair{"big.vmt.zst", z}}) {
    const fs::path f = dir.path() / name;
    std::ofstream(f, std::ios::binary) << bytes;
    WorkloadInput in(f.string());
    std::vector<Op> got;
    for (Op op; in.next(op);) got.push_back(op);
    expect_same_ops(ops, got);
  }
}

// The position of each op (its record and byte offset) while runs are decoded ahead.
TEST(VmtBinaryFastPath, RecordAndOffsetOfEachOp) {
  const std::string magic(vmt_binary::MAGIC.data(), vmt_binary::MAGIC.size());
  std::string bin = magic + "\x01\x04test"s;  // a 14-byte header
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 300; ++i) {
    offsets.push_back(bin.size());
    if (i % 97 == 50) {
      bin += "\x0b\x05\x00\x02"s;  // fetch 0, five lines on: the full decoder
    } else {
      bin += i % 3 == 0 ? "\x6a\x00\x10\xff\xff\x03"s : "\x2b\x00\x02"s;  // write 0 +8 2 0xffff / fetch 0 +1
    }
  }
  bin += "\x00"s;
  for (size_t step : {0, 1, 5}) {
    SCOPED_TRACE(step);
    PieceBuf buf(bin, step);
    VmtBinaryReader r(buf);
    Op op;
    for (size_t i = 0; i < offsets.size(); ++i) {
      ASSERT_TRUE(r.next(op));
      EXPECT_EQ(r.record(), i + 1);
      EXPECT_EQ(r.record_offset(), offsets[i]) << "op " << i;
    }
    EXPECT_FALSE(r.next(op));
  }
}

// Clearing what an earlier op set (the fast path skips the clear when nothing is set).
TEST(VmtBinaryFastPath, EveryFieldOfTheCallersOpIsCleared) {
  const std::vector<Op> ops = text_ops(
      "vmt 1\ncpu maxphyaddr=40 gbpages=1 la57=0\nread 0 0x10\nmemslot 3 0x100000 0x200000 ro log host=2m\nfetch 0 0x20\n"
      "regs 7 cr0=0x80000011 cr3=0x1000 cr4=0x20 efer=0x500 cpl=3 ac=1 pkru=1\nwrite 0 0x30 1 5\ndirty-log 3 enable\nread 0 0x38\n"
      "unmap 0x40000000 0x1000\nread 0 0x40 2\n");
  const std::string bin = to_binary(ops);
  expect_same_ops(ops, binary_ops(bin));
  // A caller that changes the op between calls still gets clean ops.
  PieceBuf buf(bin, 0);
  VmtBinaryReader r(buf);
  Op op;
  for (const Op& want : ops) {
    op.regs.cr4 = 1;
    op.size = 2;
    op.la57 = true;
    op.value = 3;
    ASSERT_TRUE(r.next(op));
    EXPECT_EQ(describe(op), describe(want));
  }
}

// ---- bad input: each kind with its message, every earlier op still yielded ----

// A valid start: header, then `memslot 0 0 1M`, `vcpu 0`, `read 0 0x10 8` (lines 2, 3, 4).
std::string good_prefix() { return to_binary(text_ops("vmt 1\nmemslot 0 0 1M\nvcpu 0\nread 0 0x10\n")); }
std::string without_end(const std::string& bin) { return bin.substr(0, bin.size() - 1); }

// The offset where a record appended to without_end(good_prefix()) starts.
size_t next_offset() { return without_end(good_prefix()).size(); }

std::string at_record_4(const std::string& what) { return "w.vmtb: record 4 (byte offset " + std::to_string(next_offset()) + "): " + what; }

TEST(VmtBinaryBadInput, EachKindHasItsMessage) {
  ASSERT_EQ(input_ops(good_prefix()).ops.size(), 3u);
  struct Case {
    std::string tail, message;
  };
  const std::vector<Case> cases{
      {""s, at_record_4("truncated: the input ends without the end record")},
      {"\x29\x00"s, at_record_4("truncated: the input ends inside a record")},  // read, ID, no GVA
      {"\x29\x00\x80\x80"s, at_record_4("truncated: the input ends inside a record")},
      {"\x1f"s, at_record_4("unknown tag 0x1f")},
      {"\x14"s, at_record_4("unknown tag 0x14")},
      {"\x40"s, at_record_4("unknown tag 0x40")},
      {"\x2b\x00\x00\x00\x07"s, "w.vmtb: record 6 (byte offset " + std::to_string(next_offset() + 4) + "): data after the end record"},
      {"\x6b\x00\x02\x00"s, at_record_4("fetch: tag 0x6b has width bits, but fetch takes no width")},
      {"\x29\x00\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00"s, at_record_4("read: GVA: varint longer than 10 bytes")},
      {"\x29\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"s, at_record_4("read: GVA: varint overflows 64 bits")},
      {"\x29\x80\x80\x80\x80\x10\x00"s, at_record_4("read: ID: 4294967296 does not fit in 32 bits")},
      {"\x2a\x00\x00\xa2\x04"s, at_record_4("write: value 0x222 does not fit in width 1")},
      {"\xa9\x00\xdc\x3f"s, at_record_4("read: 4-byte access at 0xffe crosses a 4 KiB page")},
      {"\x09\x00"s, at_record_4("read: line delta: 0: lines must increase")},
      {"\x22\x00\x00\x80\x20\x10"s, at_record_4("memslot: flags: 0x10 has unknown bits")},
      {"\x22\x00\x00\x80\x20\x0c"s, at_record_4("memslot: flags: 0x0c: host page code 3 is not 0 (4k), 1 (2m) or 2 (1g)")},
      {"\x22\x00\x10\x80\x20\x00"s, at_record_4("memslot: GPA: 0x10 is not 4 KiB aligned")},
      {"\x22\x00\x00\x00\x00"s, at_record_4("memslot: SIZE: 0 is not a non-zero multiple of 4 KiB")},
      {"\x2f\x00\x04"s, at_record_4("dirty-log: ACTION: 4 is not 0 (enable), 1 (disable), 2 (get) or 3 (clear)")},
      {"\x26\x00\x10\x01"s, at_record_4("regs: cpl: 1 is not 0 or 3")},
      {"\x26\x00\x80"s, at_record_4("regs: presence: 0x80 has unknown bits")},
      {"\x21\x01\x1f"s, at_record_4("cpu: maxphyaddr: 31 is outside 32..52")},
      {"\x21\x02\x02"s, at_record_4("cpu: gbpages: 2 is not 0 or 1")},
      {"\x30\x80\xe0\xff\xff\xff\xff\xff\xff\xff\x01\x80\x40"s,
       at_record_4("unmap: GPA 0xfffffffffffff000 + SIZE 0x2000 overflows 64 bits")},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    for (size_t step : {0, 1, 3}) {
      const Input r = input_ops(without_end(good_prefix()) + c.tail, "w.vmtb", step);
      EXPECT_EQ(r.error, c.message);
      // Every op before the bad record was yielded (the data-after-end case has one more).
      EXPECT_EQ(r.ops.size(), c.message.find("data after") != std::string::npos ? 4u : 3u);
    }
  }
}

// The same bad records followed by many good ones: the fast path stops at each, and the full
// decoder gives the same message, after the same ops.
TEST(VmtBinaryBadInput, EachKindHasItsMessageInsideARun) {
  std::string good;
  for (int i = 0; i < 100; ++i) good += "\x2b\x00\x02"s;  // fetch 0 +1
  const std::vector<std::pair<std::string, std::string>> cases{
      {"\x1f"s, "unknown tag 0x1f"},
      {"\x6b\x00\x02\x00"s, "fetch: tag 0x6b has width bits, but fetch takes no width"},
      {"\x29\x00\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00"s, "read: GVA: varint longer than 10 bytes"},
      {"\x29\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"s, "read: GVA: varint overflows 64 bits"},
      {"\x2a\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"s, "write: VALUE: varint overflows 64 bits"},
      {"\x2a\x00\x00\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00"s, "write: VALUE: varint longer than 10 bytes"},
      {"\x29\x80\x80\x80\x80\x10\x00"s, "read: ID: 4294967296 does not fit in 32 bits"},
      {"\x2a\x00\x00\xa2\x04"s, "write: value 0x222 does not fit in width 1"},
      {"\x6a\x00\x00\x80\x80\x04"s, "write: value 0x10000 does not fit in width 2"},
      {"\xaa\x00\x00\x80\x80\x80\x80\x10"s, "write: value 0x100000000 does not fit in width 4"},
      {"\xa9\x00\xdc\x3f"s, "read: 4-byte access at 0xffe crosses a 4 KiB page"},
      {"\xe9\x00\xd2\x3f"s, "read: 8-byte access at 0xff9 crosses a 4 KiB page"},
      {"\x09\x00"s, "read: line delta: 0: lines must increase"},
  };
  for (const auto& [tail, what] : cases) {
    SCOPED_TRACE(what);
    for (const std::string& before : {std::string(), good}) {
      const std::string prefix = without_end(good_prefix()) + before;
      const std::string message = "w.vmtb: record " + std::to_string(4 + before.size() / 3) + " (byte offset " + std::to_string(prefix.size()) + "): " + what;
      for (size_t step : {0, 1, 3}) {
        const Input r = input_ops(prefix + tail + good + "\x00"s, "w.vmtb", step);
        EXPECT_EQ(r.error, message);
        EXPECT_EQ(r.ops.size(), 3u + before.size() / 3);
      }
    }
  }
}

TEST(VmtBinaryBadInput, Header) {
  const std::string magic(vmt_binary::MAGIC.data(), vmt_binary::MAGIC.size());
  EXPECT_EQ(input_ops(magic + "\x02").error, "w.vmtb: header (byte offset 0): unsupported binary .vmt version 2 (this reader reads version 1)");
  EXPECT_EQ(input_ops(magic).error, "w.vmtb: header (byte offset 0): truncated: the input ends inside the header");
  EXPECT_EQ(input_ops(magic + "\x01\x05" "ab"s).error, "w.vmtb: header (byte offset 0): truncated: the input ends inside the header");
  EXPECT_EQ(input_ops(magic + "\x01\x81\x40").error, "w.vmtb: header (byte offset 0): note length: 8193 is more than 4096");
  EXPECT_EQ(input_ops(magic + "\x01\x00"s).error, "w.vmtb: record 1 (byte offset 10): truncated: the input ends without the end record");
  EXPECT_EQ(input_ops(magic + "\x01\x00\x00"s).ops.size(), 0u);
  EXPECT_EQ(input_ops(magic + "\x01\x00\x00"s).error, "");
  // Seven bytes of the magic are not the binary form: the text reader says what it sees.
  EXPECT_EQ(input_ops(magic.substr(0, 7), "w.vmt").error.rfind("w.vmt:1: expected 'vmt 1' header, got ", 0), 0u);
}

TEST(VmtBinaryBadInput, Zstd) {
  const std::string z = zstd_compress(good_prefix());
  // Truncated inside the frame: every op decoded before the cut is yielded, then the message.
  const Input cut = input_ops(z.substr(0, z.size() - 3), "w.vmt.zst");
  EXPECT_NE(cut.error.find("w.vmt.zst: zstd: the compressed data ends inside a frame"), std::string::npos) << cut.error;
  // A damaged checksum: the data decodes, then zstd refuses the frame.
  std::string corrupt = z;
  corrupt.back() ^= 0x55;
  const Input c = input_ops(corrupt, "w.vmt.zst");
  EXPECT_EQ(c.error.rfind("w.vmt.zst: zstd: Restored data doesn't match checksum", 0), 0u) << c.error;
  // Damaged data: zstd or the binary reader says so (the reader may see the bytes first).
  corrupt = z;
  corrupt[corrupt.size() / 2] ^= 0x55;
  EXPECT_EQ(input_ops(corrupt, "w.vmt.zst").error.rfind("w.vmt.zst: ", 0), 0u);
  // Garbage after a whole frame.
  EXPECT_EQ(input_ops(z + "junk!", "w.vmt.zst").error.rfind("w.vmt.zst: zstd: Unknown frame descriptor", 0), 0u);
  // Only the zstd magic.
  EXPECT_EQ(input_ops(std::string("\x28\xb5\x2f\xfd", 4), "w.vmt.zst").error.rfind("w.vmt.zst: zstd: ", 0), 0u);
}

// Replays a binary workload that the library refuses partway: the status must be 2; returns
// what was written on stderr.
std::string replay_error(const std::string& bin) {
  PieceBuf buf(bin, 0);
  WorkloadInput in(buf, "w.vmtb");
  char* err_buf = nullptr;
  size_t err_len = 0;
  std::FILE* err = open_memstream(&err_buf, &err_len);
  Vm vm(VmConfig{MmuKind::None});
  EXPECT_EQ(replay_stream(in, vm, nullptr, err), 2);
  std::fclose(err);
  const std::string message(err_buf, err_len);
  std::free(err_buf);
  return message;
}

TEST(VmtBinaryBadInput, ReplayStopsWithThePositionOfTheRefusedOp) {
  // `read 5 ...` with no vcpu 5: the library refuses it; the message names the record.
  const std::string bin = without_end(good_prefix()) + "\x29\x05\x00\x00"s;
  const std::string message = replay_error(bin);
  EXPECT_EQ(message.rfind(at_record_4("read: "), 0), 0u) << message;
}

TEST(VmtBinaryBadInput, RefusedOpInsideARunIsReportedAtItsRecord) {
  // `read 5 ...` with no vcpu 5, between runs of good reads: the message names its record.
  std::string good;
  for (int i = 0; i < 100; ++i) good += "\x29\x00\x00"s;  // read 0 +0
  const std::string prefix = without_end(good_prefix()) + good;
  const std::string bin = prefix + "\x29\x05\x00"s + good + "\x00"s;
  const std::string message = replay_error(bin);
  EXPECT_EQ(message.rfind("w.vmtb: record 104 (byte offset " + std::to_string(prefix.size()) + "): read: ", 0), 0u) << message;
}

// Random damage to a valid file: a BinaryFormatError (or the end), never a crash or anything else,
// and the same wherever the input's pieces end.
TEST(VmtBinaryBadInput, DamagedFilesOnlyGiveMessages) {
  RandomWorkloadParams p;
  p.seed = 7;
  p.ops = 150;
  const std::string bin = to_binary(RandomWorkload(p).ops());
  std::mt19937_64 rng(1);
  for (int i = 0; i < 500; ++i) {
    std::string b = bin;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = 8 + rng() % (b.size() - 8);
      switch (rng() % 3) {
        case 0: b[at] = static_cast<char>(rng()); break;
        case 1: b.erase(at, 1 + rng() % 8); break;
        default: b.resize(at); break;
      }
      if (b.size() <= 8) break;
    }
    // All at once (the decoder's fast path for accesses) and a byte at a time (never the fast
    // path): the same ops, then the same message.
    std::vector<std::string> results[2];
    for (size_t step : {0, 1}) {
      PieceBuf buf(b, step);
      VmtBinaryReader r(buf);
      try {
        for (Op op; r.next(op);) results[step].push_back(describe(op));
      } catch (const BinaryFormatError& e) {
        EXPECT_FALSE(std::string(e.what()).empty());
        results[step].push_back(binary_position(e.record(), e.offset()) + ": " + e.what());
      }
    }
    ASSERT_EQ(results[0], results[1]) << "damaged copy " << i;
  }
}

TEST(VmtBinaryWriter, RefusesWhatTheFormCannotHold) {
  std::ostringstream out;
  VmtBinaryWriter w(out, "");
  Op op;
  op.kind = OpKind::Audit;
  op.line = 1;
  EXPECT_THROW(w.write(op), std::invalid_argument);  // line 1 is the text form's header
  op.line = 2;
  w.write(op);
  EXPECT_THROW(w.write(op), std::invalid_argument);  // lines must increase
  op.kind = OpKind::Read;
  op.line = 3;
  op.width = 3;
  EXPECT_THROW(w.write(op), std::invalid_argument);
}

TEST(WorkloadOutput, NamingRule) {
  auto form = [](const char* name) {
    const OutputFormat f = output_format_for(name);
    return std::string(f.form == WorkloadForm::Binary ? "binary" : "text") + (f.zstd ? "+zstd" : "");
  };
  EXPECT_EQ(form("a.vmt"), "text");
  EXPECT_EQ(form("a.vmtb"), "binary");
  EXPECT_EQ(form("a.vmt.zst"), "binary+zstd");
  EXPECT_EQ(form("a.vmtb.zst"), "binary+zstd");
  EXPECT_EQ(form("a.zst"), "binary+zstd");
  EXPECT_EQ(form("-"), "text");
  EXPECT_EQ(form("a.txt"), "text");
}

TEST(WorkloadInput, MissingFile) {
  try {
    WorkloadInput in("/nonexistent/x.vmt");
    FAIL() << "no error";
  } catch (const OpSourceError& e) {
    EXPECT_EQ(std::string(e.what()), "/nonexistent/x.vmt: cannot open: No such file or directory");
  }
}

}  // namespace
}  // namespace vmmu::sim
