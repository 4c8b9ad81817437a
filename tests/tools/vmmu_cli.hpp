#pragma once
// Running the `vmmu` binary under test (VMMU_BINARY) as a user would, for the tests of tools/:
// its exit status, and what it printed on stdout and on stderr, kept apart.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace vmmu::test {

struct CliResult {
  int status = -1;  // the exit status; -1 if the command did not exit normally
  std::string out, err;
};

inline std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A path in the test's temporary directory, unique to this process.
inline std::string temp_path(const std::string& name) {
  return testing::TempDir() + "vmmu-test-" + std::to_string(::getpid()) + "-" + name;
}

// Runs a shell command; its exit status, or -1.
inline int shell_status(const std::string& command) {
  const int st = std::system(command.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Runs `vmmu ARGS` through the shell (ARGS may hold redirections of stdin).
inline CliResult run_vmmu(const std::string& args) {
  CliResult r;
  const std::string err = temp_path("stderr");
  std::FILE* p = ::popen((std::string(VMMU_BINARY) + " " + args + " 2>" + err).c_str(), "r");
  if (!p) return r;
  char buf[1 << 16];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.err = read_whole_file(err);
  std::remove(err.c_str());
  return r;
}

}  // namespace vmmu::test
