// vmmu: the command-line simulator. Thin: parses arguments, calls the library, prints.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "sim/replayer.hpp"
#include "tools/vmmu/import_command.hpp"
#include "tools/vmmu/kvm_check.hpp"
#include "vm/vm.hpp"

namespace {

using vmmu::sim::ReplaySummary;

// The built-in workload: installed beside the binary (../share/vmmu/workloads), else the
// install prefix, else the source tree this binary was built from.
std::string default_workload() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const fs::path candidates[] = {
      self.parent_path().parent_path() / "share/vmmu/workloads/default.vmt",
      fs::path(VMMU_INSTALLED_WORKLOADS) / "default.vmt",
      fs::path(VMMU_SOURCE_WORKLOADS) / "default.vmt",
  };
  for (const fs::path& p : candidates)
    if (!ec && fs::exists(p)) return p.string();
  return (fs::path(VMMU_SOURCE_WORKLOADS) / "default.vmt").string();
}

int replay_file(const std::string& path, const vmmu::VmConfig& config, std::FILE* out, ReplaySummary* summary) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "%s: cannot open: %s\n", path.c_str(), std::strerror(errno));
    return 2;
  }
  try {
    vmmu::Vm vm(config);
    return vmmu::sim::replay_stream(in, path, vm, out, stderr, summary);
  } catch (const vmmu::UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), e.what());
    return 2;
  }
}

void print_summary(const std::string& path, vmmu::MmuKind mmu, const ReplaySummary& s) {
  fmt::print("vmmu: replayed {} with --mmu={}\n\n", path, vmmu::name(mmu));
  fmt::print("  ops                 {:>8}\n", s.ops);
  fmt::print("  guest accesses      {:>8}\n", s.accesses);
  for (const auto& [mode, n] : s.accesses_by_mode) fmt::print("    {:<17} {:>8}\n", mode, n);
  fmt::print("  translated          {:>8}\n", s.translated);
  fmt::print("  page faults (#PF)   {:>8}\n", s.page_faults);
  for (const auto& [ec, n] : s.pf_by_error_code) {
    std::string bits;
    static const char* names[] = {"P", "W", "U", "RSVD", "I", "PK"};
    for (unsigned b = 0; b < 6; ++b)
      if (ec & (1u << b)) bits += (bits.empty() ? "" : "|") + std::string(names[b]);
    fmt::print("    error code 0x{:<2x}   {:>8}  {}\n", ec, n, bits.empty() ? "not present, read, supervisor" : bits);
  }
  fmt::print("  #GP (non-canonical) {:>8}\n", s.gp_faults);
  fmt::print("  #GP (PDPTE load)    {:>8}\n", s.pdpte_gp);
  fmt::print("  MMIO exits          {:>8}\n", s.mmio);
  fmt::print("  read-only writes    {:>8}\n", s.readonly_writes);
  fmt::print("  audits              {:>8}  ({} failed)\n", s.audits, s.audit_failures);
  if (s.host_errors) fmt::print("  host memory errors  {:>8}\n", s.host_errors);
  fmt::print("\nops by kind:");
  for (const auto& [k, n] : s.ops_by_kind) fmt::print(" {} {}", k, n);
  fmt::print("\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "kvm-check") return vmmu::tools::kvm_check_main(argc - 1, argv + 1);
  if (argc > 1 && std::string(argv[1]) == "import") return vmmu::tools::import_main(argc - 1, argv + 1);
  CLI::App app{"vmmu: a user-space x86 virtual MMU (shadow and TDP paging) and its simulator"};
  app.require_subcommand(1);

  std::string mmu_name = "none", dirty_log = "wp", eager_split = "on", unsync = "on";
  uint64_t max_mmu_pages = 0;
  const auto mmu_check = CLI::IsMember({"none", "tdp", "shadow"});
  auto engine_options = [&](CLI::App* cmd) {
    cmd->add_option("--mmu", mmu_name, "none (reference walker), tdp or shadow")->check(mmu_check);
    cmd->add_option("--dirty-log", dirty_log, "how engines log dirty pages: wp (write-protect) or dbit (D bits)")
        ->check(CLI::IsMember({"wp", "dbit"}));
    cmd->add_option("--eager-split", eager_split, "split huge mappings when logging starts (on) or on demand (off)")
        ->check(CLI::IsMember({"on", "off"}));
    cmd->add_option("--max-mmu-pages", max_mmu_pages, "shadow: at most this many shadow pages, oldest recycled first (0: no limit)")
        ->check(CLI::Validator(
            [](std::string& v) {
              const bool ok = v.find_first_not_of("0123456789") == std::string::npos && v.size() < 19 &&
                              (std::stoull(v) == 0 || std::stoull(v) >= vmmu::mmu::MIN_MAX_MMU_PAGES);
              return ok ? std::string() : std::string("must be 0 or at least 64");
            },
            "N"));
    cmd->add_option("--unsync", unsync, "shadow: let written leaf tables go out of sync (on) or emulate every write (off)")
        ->check(CLI::IsMember({"on", "off"}));
  };

  std::string replay_path;
  CLI::App* replay = app.add_subcommand("replay", "Replay a .vmt workload; print one JSON object per result");
  replay->add_option("file", replay_path, "the .vmt workload")->required();
  engine_options(replay);

  std::string run_path;
  bool run_json = false;
  CLI::App* run = app.add_subcommand("run", "Replay the built-in workload (or --workload) and summarize");
  run->add_option("--workload", run_path, "a .vmt workload instead of the built-in one");
  engine_options(run);
  run->add_flag("--json", run_json, "print the raw JSON Lines instead of the summary");

  CLI11_PARSE(app, argc, argv);
  const vmmu::MmuKind mmu = *vmmu::parse_mmu_kind(mmu_name);
  vmmu::VmConfig config;
  config.mmu = mmu;
  config.tdp.dirty_log = dirty_log == "dbit" ? vmmu::mmu::DirtyLogMode::DirtyBit : vmmu::mmu::DirtyLogMode::WriteProtect;
  config.tdp.eager_split = eager_split == "on";
  config.shadow.max_mmu_pages = max_mmu_pages;
  config.shadow.unsync = unsync == "on";

  if (replay->parsed()) return replay_file(replay_path, config, stdout, nullptr);
  if (run->parsed()) {
    const std::string path = run_path.empty() ? default_workload() : run_path;
    ReplaySummary summary;
    const int status = replay_file(path, config, run_json ? stdout : nullptr, &summary);
    if (!run_json && status != 2) print_summary(path, mmu, summary);
    return status;
  }
  return 0;
}
