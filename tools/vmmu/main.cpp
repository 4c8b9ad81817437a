// vmmu: the command-line simulator. Thin: parses arguments, calls the library, prints.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "sim/replayer.hpp"
#include "tools/vmmu/import_command.hpp"
#include "tools/vmmu/kvm_check.hpp"
#include "tools/vmmu/run_command.hpp"
#include "vm/vm.hpp"

namespace {

int replay_file(const std::string& path, const vmmu::VmConfig& config, std::FILE* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "%s: cannot open: %s\n", path.c_str(), std::strerror(errno));
    return 2;
  }
  try {
    vmmu::Vm vm(config);
    return vmmu::sim::replay_stream(in, path, vm, out, stderr);
  } catch (const vmmu::UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), e.what());
    return 2;
  }
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

  vmmu::tools::RunOptions run_options;
  std::string run_modes = "none,tdp,shadow";
  CLI::App* run = app.add_subcommand("run", "Replay the built-in scenario (or --workload) under each MMU and compare them side by side");
  run->add_option("--workload", run_options.workload, "a .vmt workload instead of the built-in guest OS scenario");
  run->add_option("--seed", run_options.seed, "the built-in scenario's seed");
  run->add_option("--modes", run_modes, "the MMUs to compare, in order (none,tdp,shadow)");
  engine_options(run);
  run->add_flag("--json", run_options.json, "print one JSON object (stats and memory per mode) instead of the table");

  CLI11_PARSE(app, argc, argv);
  const vmmu::MmuKind mmu = *vmmu::parse_mmu_kind(mmu_name);
  vmmu::VmConfig config;
  config.mmu = mmu;
  config.tdp.dirty_log = dirty_log == "dbit" ? vmmu::mmu::DirtyLogMode::DirtyBit : vmmu::mmu::DirtyLogMode::WriteProtect;
  config.tdp.eager_split = eager_split == "on";
  config.shadow.max_mmu_pages = max_mmu_pages;
  config.shadow.unsync = unsync == "on";

  if (replay->parsed()) return replay_file(replay_path, config, stdout);
  if (run->parsed()) {
    // Each mode with the engine options given (--dirty-log, --max-mmu-pages, ...).
    std::vector<std::pair<std::string, vmmu::VmConfig>> modes;
    std::stringstream list(run_modes);
    for (std::string m; std::getline(list, m, ',');) {
      const auto kind = vmmu::parse_mmu_kind(m);
      if (!kind) {
        std::fprintf(stderr, "vmmu run: --modes: '%s' is not none, tdp or shadow\n", m.c_str());
        return 2;
      }
      vmmu::VmConfig c = config;
      c.mmu = *kind;
      modes.emplace_back(m, c);
    }
    run_options.progress = isatty(STDERR_FILENO);
    return vmmu::tools::run_main(run_options, modes);
  }
  return 0;
}
