// The bad-input corpus: `vmmu replay` on every malformed file of tests/bad_input/ (one file per
// kind of malformed input), with --mmu=none and with --mmu=tdp; and `vmmu import` on every
// malformed trace of tests/bad_input/traces/. For each, as VMT-FORMAT.md says:
//  - the exit status is exactly 2 (a crash, a sanitizer report or an uncaught exception is not),
//  - stderr is exactly the one line frozen in NAME.expected: `NAME.vmt:LINE: what is wrong`,
//  - stdout is exactly what the lines before LINE print on their own (the file cut just before the
//    bad line and replayed): every earlier result and nothing else.
//
// To add a kind: write tests/bad_input/NAME.vmt (a few valid printing ops before the bad line, so
// the stdout check means something), run `vmmu replay NAME.vmt` from that folder, check that the
// message names the op and the field, and freeze it in NAME.expected.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

namespace fs = std::filesystem;

const fs::path kCorpus = fs::path(VMMU_SOURCE_DIR) / "tests" / "bad_input";

std::vector<fs::path> corpus_files(const char* extension) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(kCorpus))
    if (e.is_regular_file() && e.path().extension() == extension) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

struct Outcome {
  int status = -1;  // the exit status; -1 when killed by a signal
  std::string out, err;
};

// `vmmu ARGS...` run from `dir`, so that messages name files as the arguments do. Spawned
// directly, without a shell: process creation is most of this test's time.
Outcome run_vmmu_in(const fs::path& dir, std::vector<std::string> args, const fs::path& scratch) {
  const std::string out = (scratch / "stdout").string(), err = (scratch / "stderr").string();
  args.insert(args.begin(), VMMU_BINARY);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addchdir_np(&actions, dir.c_str());
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  Outcome r;
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, VMMU_BINARY, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    r.err = "posix_spawn failed";
    return r;
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

// `vmmu replay NAME --mmu=MODE` run from `dir`.
Outcome replay(const fs::path& dir, const std::string& name, const std::string& mode, const fs::path& scratch) {
  return run_vmmu_in(dir, {"replay", name, "--mmu=" + mode}, scratch);
}

// The LINE of `FILE:LINE: message`, or 0.
uint64_t line_of(const std::string& message) {
  const size_t a = message.find(':');
  if (a == std::string::npos) return 0;
  const size_t b = message.find(':', a + 1);
  if (b == std::string::npos || b == a + 1) return 0;
  uint64_t line = 0;
  for (size_t i = a + 1; i < b; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(message[i]))) return 0;
    line = line * 10 + static_cast<uint64_t>(message[i] - '0');
  }
  return line;
}

// The first `lines` lines of `text`, each with its '\n'.
std::string first_lines(const std::string& text, uint64_t lines) {
  size_t end = 0;
  for (uint64_t i = 0; i < lines; ++i) {
    const size_t nl = text.find('\n', end);
    if (nl == std::string::npos) return text;
    end = nl + 1;
  }
  return text.substr(0, end);
}

class BadInputTest : public ::testing::TestWithParam<fs::path> {
 protected:
  void SetUp() override {
    scratch_ = fs::temp_directory_path() / ("vmmu-bad-input-" + std::to_string(::getpid()) + "-" + GetParam().stem().string());
    fs::create_directories(scratch_ / "prefix");
  }
  void TearDown() override { fs::remove_all(scratch_); }
  fs::path scratch_;
};

TEST_P(BadInputTest, StopsWithItsMessageAfterTheEarlierResults) {
  const fs::path vmt = GetParam();
  fs::path expected_file = vmt;
  expected_file.replace_extension(".expected");
  ASSERT_TRUE(fs::exists(expected_file)) << vmt << " has no " << expected_file.filename();
  const std::string expected = read_file(expected_file);
  ASSERT_TRUE(!expected.empty() && expected.back() == '\n' && expected.find('\n') == expected.size() - 1)
      << expected_file << " must hold exactly one line";
  const uint64_t line = line_of(expected);
  ASSERT_GT(line, 0u) << expected_file << " is not FILE:LINE: message";
  ASSERT_EQ(expected.rfind(vmt.filename().string() + ":", 0), 0u) << expected_file << " must start with " << vmt.filename();
  // The lines before the bad one, as a file of the same name elsewhere.
  const fs::path prefix_dir = scratch_ / "prefix";
  write_file(prefix_dir / vmt.filename(), first_lines(read_file(vmt), line - 1));

  // Every mode prints the same results (VMT-FORMAT.md), except the counters of `stats`, which the
  // corpus's prefixes do not use: one replay of the prefix serves both modes.
  const Outcome prefix = replay(prefix_dir, vmt.filename().string(), "none", scratch_);
  const bool prefix_ok = prefix.status == 0 || prefix.status == 3 || (prefix.status == 2 && prefix.out.empty());
  EXPECT_TRUE(prefix_ok) << "the lines before line " << line << " fail on their own (status " << prefix.status << "):\n" << prefix.err;
  EXPECT_EQ(prefix.out.find("\"op\":\"stats\""), std::string::npos) << "keep `stats` out of the lines before the bad one";

  for (const char* mode : {"none", "tdp"}) {
    SCOPED_TRACE(std::string("--mmu=") + mode);
    const Outcome bad = replay(kCorpus, vmt.filename().string(), mode, scratch_);
    EXPECT_EQ(bad.status, 2) << "stderr:\n" << bad.err;
    EXPECT_EQ(bad.err, expected);
    EXPECT_EQ(bad.out, prefix.out) << "stdout must hold exactly the results of lines 1.." << line - 1;
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, BadInputTest, ::testing::ValuesIn(corpus_files(".vmt")), [](const ::testing::TestParamInfo<fs::path>& info) {
  std::string name = info.param.stem().string();
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
});

// The binary form (NAME.vmtb): the message is `NAME.vmtb: record N (byte offset X): what is
// wrong` (`header (byte offset 0)` for the header), and stdout must be what the bytes before X
// print on their own, closed with an end record.
class BinaryBadInputTest : public BadInputTest {};

TEST_P(BinaryBadInputTest, StopsWithItsMessageAfterTheEarlierResults) {
  const fs::path vmtb = GetParam();
  fs::path expected_file = vmtb;
  expected_file.replace_extension(".expected");
  ASSERT_TRUE(fs::exists(expected_file)) << vmtb << " has no " << expected_file.filename();
  const std::string expected = read_file(expected_file);
  ASSERT_TRUE(!expected.empty() && expected.back() == '\n' && expected.find('\n') == expected.size() - 1)
      << expected_file << " must hold exactly one line";
  ASSERT_EQ(expected.rfind(vmtb.filename().string() + ": ", 0), 0u) << expected_file << " must start with " << vmtb.filename();
  const size_t at = expected.find("(byte offset ");
  ASSERT_NE(at, std::string::npos) << expected_file << " names no byte offset";
  const uint64_t offset = std::stoull(expected.substr(at + 13));
  const std::string bytes = read_file(vmtb);
  ASSERT_LE(offset, bytes.size());
  const fs::path prefix_dir = scratch_ / "prefix";
  write_file(prefix_dir / vmtb.filename(), bytes.substr(0, offset) + std::string(1, '\0'));

  const Outcome prefix = replay(prefix_dir, vmtb.filename().string(), "none", scratch_);
  const bool prefix_ok = prefix.status == 0 || (prefix.status == 2 && prefix.out.empty());
  EXPECT_TRUE(prefix_ok) << "the records before byte " << offset << " fail on their own (status " << prefix.status << "):\n" << prefix.err;
  for (const char* mode : {"none", "tdp"}) {
    SCOPED_TRACE(std::string("--mmu=") + mode);
    const Outcome bad = replay(kCorpus, vmtb.filename().string(), mode, scratch_);
    EXPECT_EQ(bad.status, 2) << "stderr:\n" << bad.err;
    EXPECT_EQ(bad.err, expected);
    EXPECT_EQ(bad.out, prefix.out) << "stdout must hold exactly the results of the records before byte " << offset;
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, BinaryBadInputTest, ::testing::ValuesIn(corpus_files(".vmtb")),
                         [](const ::testing::TestParamInfo<fs::path>& info) {
                           std::string name = info.param.stem().string();
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// Malformed traces (tests/bad_input/traces/KIND-WHAT.EXT, the message in FILE.expected): `vmmu
// import KIND FILE` exits with status 2 and its last line on stderr is the frozen message, naming
// the file, the line or record, and the field (a decompressor's own complaint may come before it).
const fs::path kTraceCorpus = kCorpus / "traces";

std::vector<fs::path> trace_corpus_files() {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(kTraceCorpus))
    if (e.is_regular_file() && e.path().extension() != ".expected") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

class TraceBadInputTest : public BadInputTest {};

TEST_P(TraceBadInputTest, ImportStopsWithItsMessage) {
  const fs::path trace = GetParam();
  const std::string name = trace.filename().string();
  const std::string expected = read_file(kTraceCorpus / (name + ".expected"));
  ASSERT_TRUE(!expected.empty() && expected.back() == '\n' && expected.find('\n') == expected.size() - 1)
      << name << ".expected must hold exactly one line";
  ASSERT_EQ(expected.rfind(name, 0), 0u) << "the message must name the file";
  const std::string kind = name.substr(0, name.find('-'));
  const Outcome r = run_vmmu_in(kTraceCorpus, {"import", kind, name, "-o", (scratch_ / "out.vmt").string()}, scratch_);
  EXPECT_EQ(r.status, 2) << "stderr:\n" << r.err;
  ASSERT_GE(r.err.size(), expected.size()) << r.err;
  EXPECT_EQ(r.err.substr(r.err.size() - expected.size()), expected) << r.err;
}

INSTANTIATE_TEST_SUITE_P(Corpus, TraceBadInputTest, ::testing::ValuesIn(trace_corpus_files()),
                         [](const ::testing::TestParamInfo<fs::path>& info) {
                           std::string name = info.param.filename().string();
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// Every message file has its input, and the corpus holds what it should.
TEST(BadInputCorpus, EachExpectedHasItsInput) {
  for (const fs::path& expected : corpus_files(".expected")) {
    fs::path vmt = expected, vmtb = expected;
    vmt.replace_extension(".vmt");
    vmtb.replace_extension(".vmtb");
    EXPECT_TRUE(fs::exists(vmt) || fs::exists(vmtb)) << expected << " has no input " << vmt.filename() << " or " << vmtb.filename();
  }
  EXPECT_GE(corpus_files(".vmt").size(), 40u);
  EXPECT_GE(corpus_files(".vmtb").size(), 5u);
  for (const auto& e : fs::directory_iterator(kTraceCorpus)) {
    const fs::path p = e.path();
    if (p.extension() == ".expected") EXPECT_TRUE(fs::exists(kTraceCorpus / p.stem())) << p << " has no input";
    else EXPECT_TRUE(fs::exists(kTraceCorpus / (p.filename().string() + ".expected"))) << p << " has no .expected";
  }
  EXPECT_GE(trace_corpus_files().size(), 10u);
}

}  // namespace
