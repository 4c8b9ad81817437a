// A real program's trace, end to end: valgrind's lackey records /bin/true, `vmmu import` turns
// it into a workload of the guest OS model, and it replays the same under none, tdp and shadow.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "tests/sim/replay_support.hpp"

namespace vmmu::sim {
namespace {

namespace fs = std::filesystem;

TEST(LackeyReplay, ARecordedProgramImportsAndReplaysTheSameInEveryMode) {
  if (std::system("valgrind --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "valgrind is not installed";
  const fs::path dir = fs::temp_directory_path() / fmt::format("vmmu-lackey-{}", ::getpid());
  fs::create_directories(dir);
  const std::string trace = (dir / "true.lackey").string(), vmt = (dir / "true.vmt").string();
  ASSERT_EQ(std::system(fmt::format("valgrind --tool=lackey --trace-mem=yes --log-file='{}' /bin/true", trace).c_str()), 0);
  for (const char* mode : {"4level", "5level"}) {
    SCOPED_TRACE(mode);
    const std::string cmd = fmt::format("'{}' import lackey '{}' -o '{}' --mode {} --memory 256M --thp off --copy-words 64 2>/dev/null",
                                        VMMU_BINARY, trace, vmt, mode);
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::ifstream in(vmt);
    std::stringstream text;
    text << in.rdbuf();
    const auto lines = test::expect_same_in_every_mode(text.str());
    EXPECT_GT(lines.size(), 100000u);  // /bin/true runs the dynamic loader: many accesses
    // The workload ends with `stats`, so a replay printing only counters has them for the trace.
    ASSERT_FALSE(lines.empty());
    EXPECT_NE(lines.back().find("\"op\":\"stats\""), std::string::npos) << lines.back();
  }
  // A 32-bit guest cannot hold a 64-bit program's stack: exit status 2, no output.
  EXPECT_EQ(std::system(fmt::format("'{}' import lackey '{}' -o '{}.32' --mode 32bit 2>/dev/null", VMMU_BINARY, trace, vmt).c_str()) >> 8, 2);
  EXPECT_FALSE(fs::exists(vmt + ".32"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vmmu::sim
