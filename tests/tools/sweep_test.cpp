// `vmmu run --sweep`: a grid of configurations, one row per run in grid order, as CSV or JSON
// Lines; the same rows on every run apart from the time columns; bad keys and values refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/tools/vmmu_cli.hpp"

namespace {

using Output = vmmu::test::CliResult;
using vmmu::test::temp_path;
std::string read_file(const std::string& path) { return vmmu::test::read_whole_file(path); }

Output vmmu(const std::string& args) { return vmmu::test::run_vmmu(args); }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> v;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

// One CSV record (RFC 4180 quoting: "a,b" and "" inside quotes).
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> f(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        f.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        f.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      f.emplace_back();
    } else {
      f.back() += c;
    }
  }
  return f;
}

size_t column(const std::vector<std::string>& header, const std::string& name) {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return i;
  ADD_FAILURE() << "no column " << name;
  return 0;
}

// A small grid: the guest OS model with 128 or 256 MiB and one worker, under tdp and shadow.
// (Guests of 64 MiB and less are audited after every op: slower.)
// A few thousand of the shipped trace's accesses: its path is covered, at a small cost.
const std::string GRID = "run --trace-accesses 3000 --sweep memory=128M,256M --sweep processes=1 --sweep mmu=tdp,shadow";

TEST(VmmuSweep, CsvHasOneRowPerPointInGridOrder) {
  const Output r = vmmu(GRID + " --jobs 2");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto rows = lines(r.out);
  ASSERT_EQ(rows.size(), 5u) << r.out;  // the header and 2 x 1 x 2 runs
  const auto header = csv_fields(rows[0]);
  for (const char* c : {"memory", "processes", "page_size", "mode", "mmu", "max_mmu_pages", "seed", "ops", "page_faults", "exits",
                        "emulated_pte_writes", "unsyncs", "shadow_pages", "mapping_total", "kvm_today", "seconds", "ops_per_second", "error"})
    column(header, c);
  const std::pair<const char*, const char*> expected[] = {{"134217728", "tdp"}, {"134217728", "shadow"}, {"268435456", "tdp"}, {"268435456", "shadow"}};
  for (size_t i = 0; i < 4; ++i) {
    const auto f = csv_fields(rows[i + 1]);
    ASSERT_EQ(f.size(), header.size()) << rows[i + 1];
    EXPECT_EQ(f[column(header, "memory")], expected[i].first);
    EXPECT_EQ(f[column(header, "mmu")], expected[i].second);
    EXPECT_EQ(f[column(header, "processes")], "1");
    EXPECT_EQ(f[column(header, "mode")], "4level");
    EXPECT_EQ(f[column(header, "error")], "");
    EXPECT_GT(std::stoull(f[column(header, "ops")]), 1000u);
    EXPECT_GT(std::stoull(f[column(header, "exits")]), 0u);
    EXPECT_GT(std::stoull(f[column(header, "mapping_total")]), 0u);
  }
  // Both engines replay the same ops and deliver the same guest faults.
  const auto a = csv_fields(rows[1]), b = csv_fields(rows[2]);
  EXPECT_EQ(a[column(header, "ops")], b[column(header, "ops")]);
  EXPECT_EQ(a[column(header, "page_faults")], b[column(header, "page_faults")]);
}

TEST(VmmuSweep, RepeatedRunsGiveTheSameRowsApartFromTime) {
  const Output first = vmmu(GRID + " --jobs 2"), second = vmmu(GRID + " --jobs 1");
  ASSERT_EQ(first.status, 0) << first.err;
  ASSERT_EQ(second.status, 0) << second.err;
  const auto x = lines(first.out), y = lines(second.out);
  ASSERT_EQ(x.size(), y.size());
  const auto header = csv_fields(x[0]);
  const size_t seconds = column(header, "seconds"), rate = column(header, "ops_per_second");
  for (size_t i = 0; i < x.size(); ++i) {
    auto f = csv_fields(x[i]), g = csv_fields(y[i]);
    ASSERT_EQ(f.size(), g.size());
    for (size_t c = 0; c < f.size(); ++c) {
      if (i == 0 || (c != seconds && c != rate)) {
        EXPECT_EQ(f[c], g[c]) << "row " << i << " column " << header[c];
      }
    }
  }
}

TEST(VmmuSweep, JsonLinesAndOutputFiles) {
  const std::string args = "run --trace-accesses 3000 --sweep seed=1,2 --sweep memory=128M --sweep processes=1 --modes=none";
  const Output r = vmmu(args + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto rows = lines(r.out);
  ASSERT_EQ(rows.size(), 2u);  // seed x the --modes list (mmu not swept)
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto j = nlohmann::json::parse(rows[i]);
    EXPECT_EQ(j["seed"].get<uint64_t>(), i + 1);
    EXPECT_EQ(j["mmu"].get<std::string>(), "none");
    EXPECT_EQ(j["memory"].get<uint64_t>(), 128u << 20);
    EXPECT_TRUE(j["error"].is_null());
    EXPECT_GT(j["accesses"].get<uint64_t>(), 0u);
  }
  EXPECT_NE(rows[0], rows[1]);

  const std::string csv = temp_path("rows.csv"), jsonl = temp_path("rows.jsonl");
  ASSERT_EQ(vmmu(args + " --output " + csv).status, 0);
  ASSERT_EQ(vmmu(args + " --output " + jsonl).status, 0);
  EXPECT_EQ(lines(read_file(csv)).size(), 3u);
  EXPECT_EQ(lines(read_file(jsonl)).size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines(read_file(jsonl))[1])["seed"].get<uint64_t>(), 2u);
  std::remove(csv.c_str());
  std::remove(jsonl.c_str());
  EXPECT_EQ(vmmu(args + " --output " + temp_path("rows.txt")).status, 2);
}

TEST(VmmuSweep, AWorkloadFileSweepsTheEngineKeysOnly) {
  const std::string workload = std::string(VMMU_SOURCE_DIR) + "/workloads/default.vmt";
  const Output r = vmmu("run --workload " + workload + " --sweep mmu=none,tdp,shadow --sweep max_mmu_pages=0,64");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto rows = lines(r.out);
  ASSERT_EQ(rows.size(), 7u);
  const auto header = csv_fields(rows[0]);
  EXPECT_EQ(csv_fields(rows[6])[column(header, "mmu")], "shadow");
  EXPECT_EQ(csv_fields(rows[6])[column(header, "max_mmu_pages")], "64");
  EXPECT_EQ(csv_fields(rows[6])[column(header, "memory")], "");  // the file fixes the guest
  const Output bad = vmmu("run --workload " + workload + " --sweep memory=64M");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("memory"), std::string::npos) << bad.err;
}

// Each point reads a regular file again as it replays; standard input can be read only once, so
// it is kept in memory. Either way every point sees every op: the same figures but the times.
TEST(VmmuSweep, AWorkloadFromStandardInputGivesTheFilesFigures) {
  const std::string workload = std::string(VMMU_SOURCE_DIR) + "/workloads/default.vmt";
  const std::string sweep = " --sweep mmu=none,tdp,shadow --sweep max_mmu_pages=0,64";
  const Output file = vmmu("run --workload " + workload + sweep);
  const Output piped = vmmu("run --workload -" + sweep + " < " + workload);
  ASSERT_EQ(file.status, 0) << file.err;
  ASSERT_EQ(piped.status, 0) << piped.err;
  const auto a = lines(file.out), b = lines(piped.out);
  ASSERT_EQ(a.size(), 7u);
  ASSERT_EQ(b.size(), a.size());
  const auto header = csv_fields(a[0]);
  for (size_t i = 1; i < a.size(); ++i) {
    auto x = csv_fields(a[i]), y = csv_fields(b[i]);
    EXPECT_NE(x[column(header, "ops")], "0");
    for (const char* timing : {"seconds", "ops_per_second"}) x[column(header, timing)] = y[column(header, timing)] = "";
    EXPECT_EQ(x, y) << "row " << i;
  }
}

TEST(VmmuSweep, BadKeysAndValuesAreRefusedByName) {
  const std::pair<const char*, const char*> cases[] = {
      {"--sweep bogus=1", "bogus"},
      {"--sweep memory=3X", "memory"},
      {"--sweep memory=101M", "memory"},  // not a multiple of 2 MiB
      {"--sweep memory=16M", "memory"},
      {"--sweep processes=0", "processes"},
      {"--sweep page_size=3m", "page_size"},
      {"--sweep mode=16bit", "mode"},
      {"--sweep mmu=ept", "mmu"},
      {"--sweep max_mmu_pages=10", "max_mmu_pages"},
      {"--sweep seed=-1", "seed"},
      {"--sweep seed=1,,2", "seed"},
      {"--sweep seed", "seed"},
      {"--sweep seed=1 --sweep seed=2", "seed"},
  };
  for (const auto& [args, key] : cases) {
    const Output r = vmmu(std::string("run ") + args);
    EXPECT_EQ(r.status, 2) << args;
    EXPECT_NE(r.err.find(key), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(r.out, "") << args;
  }
}

}  // namespace
