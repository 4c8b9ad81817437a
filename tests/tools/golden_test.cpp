// Golden tests of `vmmu replay`: every workload under workloads/ (default.vmt and examples/*.vmt)
// is replayed with --mmu=none and with each engine configuration, and its JSON Lines are
// compared, line by line, with the hand-checked results frozen beside it in NAME.expected.jsonl.
// The contents of "stats" and "memory" are counters, not results, so only their presence is
// compared. An engine's `age` may list more than the reference, but only gfns that share a host
// huge mapping (2 MiB or 1 GiB region) with one the reference lists (VMT-FORMAT.md).
//
// To change a workload: edit the .vmt, replay it, check every changed line by hand against the
// SDM and VMT-FORMAT.md (each op's comment says what it must give), then overwrite the golden:
//   vmmu replay workloads/X.vmt --mmu=none > workloads/X.expected.jsonl
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/tools/vmmu_cli.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kWorkloads = fs::path(VMMU_SOURCE_DIR) / "workloads";

// Every .vmt of the workload tree, in a stable order.
std::vector<fs::path> workload_files() {
  std::vector<fs::path> files;
  for (const fs::path& dir : {kWorkloads, kWorkloads / "examples"}) {
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.is_regular_file() && e.path().extension() == ".vmt") files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

fs::path golden_of(const fs::path& vmt) {
  fs::path g = vmt;
  g.replace_extension(".expected.jsonl");
  return g;
}

// A test name from the path below workloads/: examples/pae.vmt -> examples_pae.
std::string test_name(const fs::path& vmt) {
  std::string name = fs::relative(vmt, kWorkloads).replace_extension().generic_string();
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Replay {
  std::string out;
  int status = -1;
};

// Runs `vmmu replay FILE --mmu=MODE [options]`; stderr goes to the test log.
Replay replay(const fs::path& vmt, const std::string& mode) {
  const vmmu::test::CliResult c = vmmu::test::run_vmmu("replay " + shell_quote(vmt.string()) + " --mmu=" + mode);
  std::fprintf(stderr, "%s", c.err.c_str());
  return Replay{c.out, c.status};
}

// The object with the contents of counter-valued keys blanked, so that only results compare.
json results_only(json j) {
  if (j.is_object()) {
    for (const char* key : {"stats", "memory"}) {
      if (j.contains(key)) j[key] = "(ignored)";
    }
  }
  return j;
}

uint64_t hex(const json& j) { return std::stoull(j.get<std::string>(), nullptr, 16); }

// The contract's allowance for engines' `age`: a superset of the reference's, every extra gfn
// in a 2 MiB or 1 GiB region with a gfn the reference lists.
bool age_within_allowance(const json& want, const json& got) {
  std::vector<uint64_t> w, g;
  for (const json& x : want["accessed"]) w.push_back(hex(x));
  for (const json& x : got["accessed"]) g.push_back(hex(x));
  for (uint64_t gfn : w)
    if (!std::binary_search(g.begin(), g.end(), gfn)) return false;
  for (uint64_t gfn : g) {
    if (std::binary_search(w.begin(), w.end(), gfn)) continue;
    const bool shares = std::any_of(w.begin(), w.end(), [&](uint64_t r) { return (r >> 9) == (gfn >> 9) || (r >> 18) == (gfn >> 18); });
    if (!shares) return false;
  }
  json a = want, b = got;
  a.erase("accessed");
  b.erase("accessed");
  return a == b;
}

struct Case {
  fs::path vmt;
  std::string mode;  // the --mmu value and engine options
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const fs::path& vmt : workload_files()) {
    for (const char* mode : {"none", "tdp", "tdp --dirty-log=dbit", "tdp --eager-split=off", "shadow", "shadow --unsync=off",
                             "shadow --max-mmu-pages=64"})
      out.push_back({vmt, mode});
  }
  return out;
}

class GoldenTest : public ::testing::TestWithParam<Case> {};

TEST_P(GoldenTest, ReplayMatchesGolden) {
  const fs::path vmt = GetParam().vmt;
  const std::string mode = GetParam().mode;
  const bool engine = mode != "none";
  const fs::path golden = golden_of(vmt);
  ASSERT_TRUE(fs::exists(golden)) << "no golden file " << golden << " for " << vmt;
  std::ifstream in(golden);
  std::stringstream want_text;
  want_text << in.rdbuf();
  const std::vector<std::string> want = split_lines(want_text.str());

  const Replay r = replay(vmt, mode);
  ASSERT_EQ(r.status, 0) << "vmmu replay " << vmt << " --mmu=" << mode << " failed; its output:\n" << r.out;
  const std::vector<std::string> got = split_lines(r.out);

  const size_t n = std::min(want.size(), got.size());
  int mismatches = 0;
  for (size_t i = 0; i < n && mismatches < 20; ++i) {
    const json w = json::parse(want[i], nullptr, false);
    const json g = json::parse(got[i], nullptr, false);
    ASSERT_FALSE(w.is_discarded()) << golden << ":" << i + 1 << ": not JSON: " << want[i];
    ASSERT_FALSE(g.is_discarded()) << "output line " << i + 1 << " is not JSON: " << got[i];
    const bool same = engine && w.value("op", "") == "age" && g.value("op", "") == "age" ? age_within_allowance(w, g)
                                                                                          : results_only(w) == results_only(g);
    if (!same) {
      ++mismatches;
      ADD_FAILURE() << vmt.filename().string() << " --mmu=" << mode << " line " << w.value("line", 0) << " (result " << i + 1 << ")\n"
                    << "  expected: " << want[i] << "\n  got:      " << got[i];
    }
  }
  EXPECT_EQ(got.size(), want.size()) << "number of results differs from " << golden;
}

INSTANTIATE_TEST_SUITE_P(Workloads, GoldenTest, ::testing::ValuesIn(cases()), [](const ::testing::TestParamInfo<Case>& info) {
  std::string mode = info.param.mode;
  for (char& c : mode)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return test_name(info.param.vmt) + "__" + mode;
});

// Every golden file belongs to a workload, and the tree holds the workloads it should.
TEST(GoldenFiles, EachHasItsWorkload) {
  for (const fs::path& dir : {kWorkloads, kWorkloads / "examples"}) {
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      const std::string suffix = ".expected.jsonl";
      if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
      const fs::path vmt = dir / (name.substr(0, name.size() - suffix.size()) + ".vmt");
      EXPECT_TRUE(fs::exists(vmt)) << e.path() << " has no workload " << vmt;
    }
  }
  EXPECT_TRUE(fs::exists(kWorkloads / "default.vmt"));
  EXPECT_GE(workload_files().size(), 2u);
}

}  // namespace
