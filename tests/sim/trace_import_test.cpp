// The trace importers: each format's rules (splitting, lackey's M and I, ChampSim records,
// pinatrace's #eof), the refusal of addresses a 32-bit guest cannot hold, malformed input named
// by file, line and field, and imported traces replaying the same under none, tdp and shadow.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "sim/guest_os/vmt_stream_writer.hpp"
#include "sim/trace_import/access_splitter.hpp"
#include "sim/trace_import/champsim_reader.hpp"
#include "sim/trace_import/trace_error.hpp"
#include "sim/trace_import/trace_importer.hpp"
#include "tests/sim/replay_support.hpp"

namespace vmmu::sim::trace_import {
namespace {

using x86::AccessKind;
namespace fs = std::filesystem;

constexpr uint64_t USER_64 = (1ull << 47) - 4096;

struct Piece {
  AccessKind kind;
  uint64_t va;
  unsigned width;
  bool operator==(const Piece&) const = default;
};

std::vector<Piece> split(AccessKind kind, uint64_t addr, uint64_t size) {
  std::vector<Piece> out;
  split_access(TraceAccess{kind, addr, size}, [&](AccessKind k, uint64_t va, unsigned w) { out.push_back({k, va, w}); });
  return out;
}

class TraceFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("vmmu-trace-import-{}-{}", ::getpid(),
                                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& content) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  static std::vector<TraceAccess> read_all(TraceKind kind, const std::string& path, uint64_t user_top = USER_64) {
    auto r = open_trace(kind, path, user_top, "test");
    std::vector<TraceAccess> out;
    for (TraceAccess a; r->next(a);) out.push_back(a);
    return out;
  }

  // The message of the TraceError reading `path` throws (empty if none).
  static std::string error_of(TraceKind kind, const std::string& path, uint64_t user_top = USER_64) {
    try {
      read_all(kind, path, user_top);
    } catch (const TraceError& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

// ---- splitting ------------------------------------------------------------------------------------
TEST(AccessSplitter, WideAndPageCrossingAccessesBecomeInPagePiecesOfAtMostEightBytes) {
  EXPECT_EQ(split(AccessKind::Read, 0x1000, 8), (std::vector<Piece>{{AccessKind::Read, 0x1000, 8}}));
  EXPECT_EQ(split(AccessKind::Write, 0x1000, 16), (std::vector<Piece>{{AccessKind::Write, 0x1000, 8}, {AccessKind::Write, 0x1008, 8}}));
  EXPECT_EQ(split(AccessKind::Read, 0x1000, 7),
            (std::vector<Piece>{{AccessKind::Read, 0x1000, 4}, {AccessKind::Read, 0x1004, 2}, {AccessKind::Read, 0x1006, 1}}));
  EXPECT_EQ(split(AccessKind::Read, 0x1ffc, 8), (std::vector<Piece>{{AccessKind::Read, 0x1ffc, 4}, {AccessKind::Read, 0x2000, 4}}));
  EXPECT_EQ(split(AccessKind::Read, 0x1ffe, 3), (std::vector<Piece>{{AccessKind::Read, 0x1ffe, 2}, {AccessKind::Read, 0x2000, 1}}));
  const auto avx = split(AccessKind::Write, 0x2fe4, 64);
  uint64_t bytes = 0;
  for (const Piece& p : avx) {
    EXPECT_LE(p.width, 8u);
    EXPECT_EQ(p.va >> 12, (p.va + p.width - 1) >> 12) << std::hex << p.va;
    bytes += p.width;
  }
  EXPECT_EQ(bytes, 64u);
}

TEST(AccessSplitter, AnInstructionIsOneFetchPerPageItTouches) {
  EXPECT_EQ(split(AccessKind::Fetch, 0x401000, 15), (std::vector<Piece>{{AccessKind::Fetch, 0x401000, 1}}));
  EXPECT_EQ(split(AccessKind::Fetch, 0x401ffd, 7), (std::vector<Piece>{{AccessKind::Fetch, 0x401ffd, 1}, {AccessKind::Fetch, 0x402000, 1}}));
}

// ---- lackey ------------------------------------------------------------------------------------------
TEST_F(TraceFiles, LackeyLinesAndModify) {
  const std::string path = write("t.lackey",
                                 "==123== Lackey, an example Valgrind tool\n"
                                 "I  0401ab70,3\n"
                                 " L 1fff000628,8\n"
                                 " S 04222cac,4\n"
                                 " M 1fff000620,16\n"
                                 "--123-- a valgrind note\n"
                                 "\n");
  const auto a = read_all(TraceKind::Lackey, path);
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(a[0].kind, AccessKind::Fetch);
  EXPECT_EQ(a[0].addr, 0x401ab70u);
  EXPECT_EQ(a[0].size, 3u);
  EXPECT_EQ(a[1].kind, AccessKind::Read);
  EXPECT_EQ(a[1].addr, 0x1fff000628u);
  EXPECT_EQ(a[2].kind, AccessKind::Write);
  EXPECT_EQ(a[2].size, 4u);
  // M: a read, then a write of the same 16 bytes.
  EXPECT_EQ(a[3].kind, AccessKind::Read);
  EXPECT_EQ(a[4].kind, AccessKind::Write);
  EXPECT_EQ(a[3].addr, a[4].addr);
  EXPECT_EQ(a[4].size, 16u);
}

TEST_F(TraceFiles, LackeyMalformedLinesNameFileLineAndField) {
  EXPECT_EQ(error_of(TraceKind::Lackey, write("k", "I  1000,4\n X 1000,4\n")), dir_.string() + "/k:2: kind: expected `I  ADDR,SIZE`, "
                                                                                "` L ADDR,SIZE`, ` S ADDR,SIZE` or ` M ADDR,SIZE`");
  EXPECT_EQ(error_of(TraceKind::Lackey, write("a", " L zz00,4\n")), dir_.string() + "/a:1: address: not a hex number");
  EXPECT_EQ(error_of(TraceKind::Lackey, write("c", " L 1000\n")), dir_.string() + "/c:1: address: expected ADDR,SIZE");
  EXPECT_EQ(error_of(TraceKind::Lackey, write("s", " S 1000,x\n")), dir_.string() + "/s:1: size: not a decimal number");
  EXPECT_EQ(error_of(TraceKind::Lackey, write("b", " S 1000,5000\n")), dir_.string() + "/b:1: size: 5000 bytes is more than a page");
}

TEST_F(TraceFiles, AddressesA32BitGuestCannotHoldAreRefused) {
  const std::string path = write("t.lackey", "I  08048000,2\n L 1fff000628,8\n");
  const std::string e = error_of(TraceKind::Lackey, path, 0xc0000000);
  EXPECT_EQ(e, path + ":2: address: 0x1fff000628 (+8 bytes) does not fit the user space of the test guest (below 0xc0000000)");
  // The import names the guest's mode, and writes nothing usable.
  TraceImportParams p;
  p.os.mode = x86::PagingMode::Bits32;
  p.os.memory = 64ull << 20;
  EXPECT_THROW(import_traces(TraceKind::Lackey, {path}, p, [](const Op&) {}), TraceError);
  try {
    import_traces(TraceKind::Lackey, {path}, p, [](const Op&) {});
  } catch (const TraceError& err) {
    EXPECT_NE(std::string(err.what()).find("32-bit guest"), std::string::npos) << err.what();
  }
}

TEST_F(TraceFiles, MissingFileIsATraceError) {
  EXPECT_NE(error_of(TraceKind::Lackey, (dir_ / "nothing").string()).find("nothing: cannot open"), std::string::npos);
}

// ---- pin -----------------------------------------------------------------------------------------------
TEST_F(TraceFiles, PinatraceRecordsFetchTheirInstructionOnce) {
  const std::string path = write("t.pin",
                                 "0x7f0000001000: R 0x7ffd00000010\n"
                                 "0x7f0000001000: W 0x7ffd00000018 4\n"
                                 "0x7f0000001004: R (nil)\n"
                                 "# a comment\n"
                                 "#eof\n"
                                 "this is not read\n");
  const auto a = read_all(TraceKind::Pin, path);
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(a[0].kind, AccessKind::Fetch);
  EXPECT_EQ(a[0].addr, 0x7f0000001000u);
  EXPECT_EQ(a[1].kind, AccessKind::Read);
  EXPECT_EQ(a[1].size, 8u);
  EXPECT_EQ(a[2].kind, AccessKind::Write);
  EXPECT_EQ(a[2].size, 4u);
  EXPECT_EQ(a[3].kind, AccessKind::Fetch);
  EXPECT_EQ(a[3].addr, 0x7f0000001004u);
  EXPECT_EQ(a[4].addr, 0u);
}

TEST_F(TraceFiles, PinMalformedLines) {
  EXPECT_EQ(error_of(TraceKind::Pin, write("i", "0x1000 R 0x2000\n")), dir_.string() + "/i:1: ip: expected `IP: R|W ADDR`");
  EXPECT_EQ(error_of(TraceKind::Pin, write("k", "0x1000: X 0x2000\n")), dir_.string() + "/k:1: kind: expected R or W");
  EXPECT_EQ(error_of(TraceKind::Pin, write("a", "#c\n0x1000: R\n")), dir_.string() + "/a:2: address: missing, or not a hex number");
  EXPECT_EQ(error_of(TraceKind::Pin, write("s", "0x1000: W 0x2000 big\n")), dir_.string() + "/s:1: size: not a decimal number");
}

// ---- champsim ---------------------------------------------------------------------------------------
std::string champsim_record(uint64_t ip, std::vector<uint64_t> dst, std::vector<uint64_t> src) {
  unsigned char r[CHAMPSIM_RECORD_BYTES] = {};
  auto put = [&](size_t off, uint64_t v) {
    for (int i = 0; i < 8; ++i) r[off + i] = static_cast<unsigned char>(v >> (8 * i));
  };
  put(0, ip);
  r[8] = 1;  // is_branch: ignored
  r[12] = 6;
  for (size_t i = 0; i < dst.size(); ++i) put(16 + 8 * i, dst[i]);
  for (size_t i = 0; i < src.size(); ++i) put(32 + 8 * i, src[i]);
  return std::string(reinterpret_cast<const char*>(r), sizeof r);
}

TEST_F(TraceFiles, ChampSimRecordsFetchReadThenWriteEightBytes) {
  const std::string bin = champsim_record(0x401000, {0x7ffd0010}, {0x601000, 0, 0x601ffc}) + champsim_record(0x401004, {}, {});
  for (const std::string& path : {write("t.champsim", bin), write("t.champsim.gz", "")}) {
    if (path.ends_with(".gz")) {
      write("raw", bin);
      ASSERT_EQ(std::system(fmt::format("gzip -c '{}' > '{}'", (dir_ / "raw").string(), path).c_str()), 0);
    }
    const auto a = read_all(TraceKind::ChampSim, path);
    ASSERT_EQ(a.size(), 5u) << path;
    EXPECT_EQ(a[0].kind, AccessKind::Fetch);
    EXPECT_EQ(a[0].addr, 0x401000u);
    EXPECT_EQ(a[1].kind, AccessKind::Read);
    EXPECT_EQ(a[1].addr, 0x601000u);
    EXPECT_EQ(a[2].addr, 0x601ffcu);  // crosses a page: split on import
    EXPECT_EQ(a[2].size, 8u);
    EXPECT_EQ(a[3].kind, AccessKind::Write);
    EXPECT_EQ(a[3].addr, 0x7ffd0010u);
    EXPECT_EQ(a[4].kind, AccessKind::Fetch);
    EXPECT_EQ(a[4].addr, 0x401004u);
  }
}

TEST_F(TraceFiles, ChampSimBadRecords) {
  const std::string good = champsim_record(0x401000, {}, {0x601000});
  EXPECT_EQ(error_of(TraceKind::ChampSim, write("t", good + good.substr(0, 10))), dir_.string() + "/t: record 2: truncated: 10 of 64 bytes");
  EXPECT_EQ(error_of(TraceKind::ChampSim, write("h", champsim_record(0x401000, {0x1'0000'0000}, {})), 0xc0000000),
            dir_.string() + "/h: record 1: destination_memory[0]: 0x100000000 (+8 bytes) does not fit the user space of the test guest "
                            "(below 0xc0000000)");
  EXPECT_NE(error_of(TraceKind::ChampSim, write("x.xz", "not xz")).find("the decompressor failed"), std::string::npos);
}

TEST_F(TraceFiles, TheImportCommandReportsAMalformedLineWithStatusTwo) {
  const std::string trace = write("bad.pin", "0x401000: R 0x601000\n0x401004: Q 0x601008\n");
  const std::string out = (dir_ / "bad.vmt").string(), err = (dir_ / "err").string();
  const int status = std::system(fmt::format("'{}' import pin '{}' -o '{}' 2>'{}'", VMMU_BINARY, trace, out, err).c_str());
  EXPECT_EQ(status >> 8, 2);
  std::ifstream in(err);
  std::string message;
  std::getline(in, message);
  EXPECT_EQ(message, trace + ":2: kind: expected R or W");
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(TraceFiles, GarbledInputIsATraceErrorNeverACrash) {
  // Lines stitched from pieces of valid ones, and random bytes: each file reads through or stops
  // with a TraceError.
  static const char* pieces[] = {"I", " L", " S", " M", "  ", " ", ",", "0x", "ffffffffffffffff", "1fff000628", "08048000",
                                 "8", "4096", "5000", ":", " R ", " W ", "(nil)", "#eof", "#", "==1==", "\t", "-1", "zz"};
  uint64_t x = 12345;
  auto next = [&] { return x = x * 6364136223846793005ull + 1442695040888963407ull, x >> 33; };
  for (int file = 0; file < 60; ++file) {
    std::string text;
    for (int line = 0; line < 20; ++line) {
      for (uint64_t n = next() % 6; n > 0; --n) text += pieces[next() % std::size(pieces)];
      text += '\n';
    }
    std::string bytes;
    for (int i = 0; i < 64 * 3 + static_cast<int>(file); ++i) bytes += static_cast<char>(next());
    for (TraceKind kind : {TraceKind::Lackey, TraceKind::Pin, TraceKind::ChampSim}) {
      for (const std::string& content : {text, bytes}) {
        const std::string path = write("g", content);
        try {
          read_all(kind, path, 0xc0000000);
        } catch (const TraceError&) {
        }
      }
    }
  }
}

// ---- imports replay the same in every mode -----------------------------------------------------------
std::string import_text(TraceKind kind, const std::vector<std::string>& files, const TraceImportParams& p, TraceImportResult* out = nullptr) {
  std::ostringstream text;
  guest_os::VmtStreamWriter writer(text, "import");
  const TraceImportResult r = import_traces(kind, files, p, [&](const Op& op) { writer(op); });
  if (out) *out = r;
  return text.str();
}

TEST_F(TraceFiles, InterleavedTracesReplayTheSameInEveryMode) {
  // Two small programs, as 32-bit, PAE, 4-level and 5-level guests.
  std::string a, b;
  for (uint64_t i = 0; i < 300; ++i) {
    a += fmt::format("I  {:08x},{}\n", 0x08048000 + i * 5 % 8000, 1 + i % 15);
    a += fmt::format(" {} {:08x},{}\n", "LSM"[i % 3], 0x0804c000 + (i * 40) % 20000, 1u << (i % 6));
    b += fmt::format("0x{:x}: {} 0x{:x} {}\n", 0x08050000 + i * 3, i % 2 ? "W" : "R", 0xbf000000 + (i * 4096) % 0x200000, 8);
  }
  b += "#eof\n";
  const std::string fa = write("a.lackey", a), fb = write("b.pin", b);
  for (x86::PagingMode mode : {x86::PagingMode::Bits32, x86::PagingMode::Pae, x86::PagingMode::Level4, x86::PagingMode::Level5}) {
    SCOPED_TRACE(x86::name(mode));
    TraceImportParams p;
    p.os.mode = mode;
    p.os.memory = 128ull << 20;
    p.os.page_copy_words = 8;
    p.quantum = 97;
    TraceImportResult r;
    const std::string vmt = import_text(TraceKind::Lackey, {fa, fa}, p, &r);
    EXPECT_EQ(r.traced_accesses, 2 * 700u);
    EXPECT_GT(r.guest_accesses, r.traced_accesses);  // wide accesses were split
    EXPECT_GT(r.counts.page_faults, 0u);
    test::expect_same_in_every_mode(vmt);
    p.os.thp = false;
    test::expect_same_in_every_mode(import_text(TraceKind::Pin, {fb}, p));
  }
}

}  // namespace
}  // namespace vmmu::sim::trace_import
