// The regression corpus (tests/regressions/*.vmt): small workloads that once made an engine
// differ from the reference, each with a comment saying what went wrong. Every engine
// configuration must print what `--mmu=none` prints, with every audit passing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "sim/replayer.hpp"
#include "vm/vm.hpp"

namespace vmmu {
namespace {

namespace fs = std::filesystem;

struct Config {
  const char* name;
  VmConfig config;
};

std::vector<Config> configs() {
  VmConfig none, tdp, tdp_dbit, shadow, shadow_emulate, shadow_small;
  tdp.mmu = tdp_dbit.mmu = MmuKind::Tdp;
  tdp_dbit.tdp.dirty_log = mmu::DirtyLogMode::DirtyBit;
  tdp_dbit.tdp.eager_split = false;
  shadow.mmu = shadow_emulate.mmu = shadow_small.mmu = MmuKind::Shadow;
  shadow_emulate.shadow.unsync = false;
  shadow_small.shadow.max_mmu_pages = mmu::MIN_MAX_MMU_PAGES;
  return {{"none", none},
          {"tdp", tdp},
          {"tdp --dirty-log=dbit --eager-split=off", tdp_dbit},
          {"shadow", shadow},
          {"shadow --unsync=off", shadow_emulate},
          {"shadow --max-mmu-pages=64", shadow_small}};
}

// The result lines of a replay, `stats` lines left out (their contents differ by design).
std::vector<std::string> replay(const fs::path& file, const VmConfig& config, int& status) {
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* out = open_memstream(&buf, &len);
  {
    std::ifstream in(file);
    Vm vm(config);
    status = sim::replay_stream(in, file.string(), vm, out, stderr);
  }
  std::fclose(out);
  std::vector<std::string> lines;
  std::istringstream text(std::string(buf, len));
  std::free(buf);
  for (std::string l; std::getline(text, l);)
    if (l.find("\"op\":\"stats\"") == std::string::npos) lines.push_back(l);
  return lines;
}

std::vector<fs::path> corpus() {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(VMMU_SOURCE_DIR) / "tests/regressions"))
    if (e.path().extension() == ".vmt") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

class Regression : public ::testing::TestWithParam<fs::path> {};

TEST_P(Regression, EveryEngineAgreesWithTheReference) {
  int status = 0;
  const std::vector<std::string> want = replay(GetParam(), VmConfig{}, status);
  ASSERT_EQ(status, 0);
  for (const Config& c : configs()) {
    const std::vector<std::string> got = replay(GetParam(), c.config, status);
    EXPECT_EQ(status, 0) << c.name;
    EXPECT_EQ(got, want) << "--mmu=" << c.name;
    for (const std::string& l : got) {
      if (l.find("\"op\":\"audit\"") != std::string::npos) {
        EXPECT_NE(l.find("\"ok\":true"), std::string::npos) << c.name << ": " << l;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, Regression, ::testing::ValuesIn(corpus()), [](const auto& info) {
  std::string name = info.param.stem().string();
  for (char& ch : name)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
});

}  // namespace
}  // namespace vmmu
