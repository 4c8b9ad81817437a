#include "oracle/qemu_runner.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace vmmu::oracle {

namespace fs = std::filesystem;

std::optional<std::string> find_qemu() {
  if (const char* e = std::getenv("VMMU_QEMU"); e && *e) {
    if (access(e, X_OK) == 0) return std::string(e);
    return std::nullopt;
  }
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    const fs::path p = fs::path(d.empty() ? "." : d) / "qemu-system-x86_64";
    if (access(p.c_str(), X_OK) == 0) return p.string();
  }
  return std::nullopt;
}

OracleRun run_qemu(const Image& image, const std::string& qemu, double timeout_seconds) {
  OracleRun run;
  char dir_template[] = "/tmp/vmmu-oracle-XXXXXX";
  if (!mkdtemp(dir_template)) {
    run.error = "cannot create a temporary directory";
    return run;
  }
  const fs::path dir = dir_template;
  const fs::path kernel = dir / "harness.bin", con = dir / "debugcon.bin", log = dir / "qemu.log";
  {
    std::ofstream out(kernel, std::ios::binary);
    out.write(reinterpret_cast<const char*>(image.bytes.data()), std::streamsize(image.bytes.size()));
  }
  std::string cpu = fmt::format("max,phys-bits={}", image.model.maxphyaddr);
  if (!image.model.gbpages) cpu += ",pdpe1gb=off";
  if (!image.model.la57) cpu += ",la57=off";
  const std::vector<std::string> args = {
      qemu, "-machine", "pc", "-accel", "tcg", "-cpu", cpu, "-m", fmt::format("{}M", image.ram_bytes >> 20),
      "-display", "none", "-nodefaults", "-no-reboot", "-serial", "none", "-monitor", "none",
      "-debugcon", "file:" + con.string(), "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
      "-kernel", kernel.string()};
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  bool timed_out = false;
  for (;;) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (t > timeout_seconds) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      timed_out = true;
      break;
    }
    usleep(2000);
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ifstream in(con, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ifstream lin(log);
  const std::string qemu_log((std::istreambuf_iterator<char>(lin)), std::istreambuf_iterator<char>());
  std::vector<Record> recs = parse_records(bytes);
  fs::remove_all(dir);
  const bool done = !recs.empty() && recs.back().kind == 4;
  if (done) recs.pop_back();
  run.records = std::move(recs);
  if (timed_out) {
    run.error = fmt::format("QEMU did not finish within {} s", timeout_seconds);
  } else if (!done) {
    if (!run.records.empty() && run.records.back().kind == 3)
      run.error = fmt::format("the harness took an unexpected exception (vector {}, {:#x}) at result {}",
                              run.records.back().vector, run.records.back().value, run.records.back().index);
    else
      run.error = fmt::format("QEMU ended before the harness finished (status {:#x}): {}", status, qemu_log);
  } else {
    run.ok = true;
  }
  return run;
}

}  // namespace vmmu::oracle
