// The progress bar of `vmmu run`: its text, and silence when stderr is not a terminal.
#include "tools/vmmu/progress_bar.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/tools/vmmu_cli.hpp"

namespace {

using vmmu::tools::ProgressBar;

TEST(ProgressBar, ShowsLabelCountsPercentAndElapsedTime) {
  const std::string s = ProgressBar::render("--mmu=shadow", 50, 200, 2.24, 78);
  EXPECT_LE(s.size(), 78u);
  EXPECT_EQ(s.rfind("--mmu=shadow [", 0), 0u) << s;
  EXPECT_NE(s.find(" 50/200  25% 2.2 s"), std::string::npos) << s;
  const size_t open = s.find('['), close = s.find(']');
  const std::string bar = s.substr(open + 1, close - open - 1);
  const size_t filled = bar.find_first_not_of('#');
  EXPECT_EQ(filled, bar.size() / 4) << s;  // a quarter done
  EXPECT_EQ(bar.find_first_not_of('.', filled), std::string::npos) << s;
}

TEST(ProgressBar, DoneNeverPassesTheTotalAndUnknownTotalsShowACount) {
  EXPECT_NE(ProgressBar::render("runs", 12, 10, 1, 78).find("10/10 100%"), std::string::npos);
  EXPECT_EQ(ProgressBar::render("generating", 4096, 0, 1.5, 78), "generating: 4096 1.5 s");
  EXPECT_LE(ProgressBar::render(std::string(200, 'x'), 1, 2, 1, 78).size(), 78u);
}

TEST(ProgressBar, DisabledItWritesNothing) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressBar bar(f, false);
    for (uint64_t i = 0; i < 100000; i += 4096) bar.update("x", i, 100000);
    bar.clear();
  }
  EXPECT_EQ(std::ftell(f), 0);
  std::fclose(f);
}

TEST(ProgressBar, VmmuRunIsQuietWhenStderrIsNotATerminal) {
  const vmmu::test::CliResult r = vmmu::test::run_vmmu(std::string("run --workload ") + VMMU_SOURCE_DIR + "/workloads/default.vmt");
  ASSERT_EQ(r.status, 0);
  EXPECT_EQ(r.err, "");
}

}  // namespace
