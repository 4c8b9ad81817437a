#pragma once
// Test support: replays .vmt text in a mode and compares modes, as `vmmu replay` would.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "sim/replayer.hpp"
#include "tests/sim/cached_translation_checker.hpp"
#include "vm/vm.hpp"

namespace vmmu::sim::test {

struct ReplayOutcome {
  int status = 0;
  std::vector<std::string> lines;  // JSON Lines
  std::string errors;
};

inline ReplayOutcome replay_text(const std::string& vmt, MmuKind mmu) {
  ReplayOutcome r;
  char* out_buf = nullptr;
  size_t out_len = 0;
  char* err_buf = nullptr;
  size_t err_len = 0;
  std::FILE* out = open_memstream(&out_buf, &out_len);
  std::FILE* err = open_memstream(&err_buf, &err_len);
  {
    std::istringstream in(vmt);
    Vm vm(VmConfig{mmu});
    r.status = replay_stream(in, "test.vmt", vm, out, err);
  }
  std::fclose(out);
  std::fclose(err);
  std::istringstream lines(std::string(out_buf, out_len));
  for (std::string l; std::getline(lines, l);) r.lines.push_back(l);
  r.errors.assign(err_buf, err_len);
  std::free(out_buf);
  std::free(err_buf);
  return r;
}

// Replays `vmt` under none, tdp and shadow: each succeeds, every audit passes, and every result
// but the contents of `stats` is the same; and the workload keeps the rule on cached
// translations. Returns the reference's lines.
inline std::vector<std::string> expect_same_in_every_mode(const std::string& vmt) {
  const std::vector<std::string> broken = CachedTranslationChecker::check_text(vmt);
  EXPECT_TRUE(broken.empty()) << broken.front();
  const ReplayOutcome none = replay_text(vmt, MmuKind::None);
  EXPECT_EQ(none.status, 0) << none.errors;
  size_t audits = 0;
  for (MmuKind engine : {MmuKind::Tdp, MmuKind::Shadow}) {
    const ReplayOutcome e = replay_text(vmt, engine);
    EXPECT_EQ(e.status, 0) << name(engine) << ": " << e.errors;
    EXPECT_EQ(none.lines.size(), e.lines.size()) << name(engine);
    size_t differences = 0;
    for (size_t i = 0; i < none.lines.size() && i < e.lines.size(); ++i) {
      const std::string& a = none.lines[i];
      if (a.find("\"op\":\"audit\"") != std::string::npos) {
        ++audits;
        EXPECT_NE(a.find("\"ok\":true"), std::string::npos) << a;
        EXPECT_NE(e.lines[i].find("\"ok\":true"), std::string::npos) << name(engine) << ": " << e.lines[i];
        continue;
      }
      if (a.find("\"op\":\"stats\"") != std::string::npos) continue;
      if (a != e.lines[i] && ++differences <= 3) ADD_FAILURE() << "none:   " << a << "\n" << name(engine) << ": " << e.lines[i];
    }
    EXPECT_EQ(differences, 0u) << name(engine);
  }
  EXPECT_GT(audits, 0u);
  return none.lines;
}

}  // namespace vmmu::sim::test
