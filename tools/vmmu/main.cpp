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
#include "sim/workload_input.hpp"
#include "tools/vmmu/convert_command.hpp"
#include "tools/vmmu/import_command.hpp"
#include "tools/vmmu/kvm_check.hpp"
#include "tools/vmmu/run_command.hpp"
#include "tools/vmmu/shipped_trace.hpp"
#include "tools/vmmu/sweep_command.hpp"
#include "vm/vm.hpp"

namespace {

// Any form of .vmt (text, binary, either under zstd; "-" is standard input).
int replay_file(const std::string& path, const vmmu::VmConfig& config, std::FILE* out, const vmmu::sim::ReplayOptions& options) {
  try {
    vmmu::sim::WorkloadInput in(path);
    vmmu::Vm vm(config);
    return vmmu::sim::replay_stream(in, vm, out, stderr, nullptr, options);
  } catch (const vmmu::sim::OpSourceError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const vmmu::UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), e.what());
    return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "kvm-check") return vmmu::tools::kvm_check_main(argc - 1, argv + 1);
  if (argc > 1 && std::string(argv[1]) == "import") return vmmu::tools::import_main(argc - 1, argv + 1);
  if (argc > 1 && std::string(argv[1]) == "convert") return vmmu::tools::convert_main(argc - 1, argv + 1);
  CLI::App app{"vmmu: a user-space x86 virtual MMU (shadow and TDP paging) and its simulator"};
  app.require_subcommand(1);

  std::string mmu_name = "none", dirty_log = "wp", eager_split = "on", unsync = "on";
  uint64_t max_mmu_pages = 0;
  std::string max_mmu_memory = "0";
  // --max-mmu-memory: bytes, or a number with K, M or G (KiB, MiB, GiB); 0 or at least 128K.
  auto parse_bytes = [](const std::string& v, uint64_t& out) {
    const size_t digits = v.find_first_not_of("0123456789");
    if (digits == 0 || v.size() > 16 || (digits != std::string::npos && digits + 1 != v.size())) return false;
    const unsigned shift = digits == std::string::npos ? 0 : v[digits] == 'K' ? 10 : v[digits] == 'M' ? 20 : v[digits] == 'G' ? 30 : 64;
    if (shift == 64) return false;
    const uint64_t n = std::stoull(v.substr(0, digits));
    if (n > (~0ull >> shift)) return false;
    out = n << shift;
    return out == 0 || out >= vmmu::mmu::MIN_MAX_MMU_MEMORY;
  };
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
    cmd->add_option("--max-mmu-memory", max_mmu_memory,
                    "tdp, shadow: at most this many bytes of engine metadata (tables, maps, rmap); over it, shadow "
                    "recycles the least recently used pages, tdp 1 GiB subtrees round robin; N, NK, NM or NG (0: no limit)")
        ->check(CLI::Validator(
            [parse_bytes](std::string& v) {
              uint64_t n = 0;
              return parse_bytes(v, n) ? std::string() : std::string("must be 0 or at least 128K (bytes, or N with K, M or G)");
            },
            "BYTES"));
    cmd->add_option("--unsync", unsync, "shadow: let written leaf tables go out of sync (on) or emulate every write (off)")
        ->check(CLI::IsMember({"on", "off"}));
  };

  std::string replay_path;
  CLI::App* replay = app.add_subcommand("replay", "Replay a .vmt workload; print one JSON object per result");
  replay->add_option("file", replay_path, "the .vmt workload: text or binary, either may be zstd-compressed; - for stdin")->required();
  engine_options(replay);
  std::string replay_tlb = "off";
  replay->add_option("--tlb", replay_tlb, "run the TLB and page-walk cost model; its counters join `stats` as \"tlb\" (on, off)")
      ->check(CLI::IsMember({"on", "off"}));
  std::string replay_results = "all";
  replay->add_option("--results", replay_results,
                     "which results to print: all (one per op), or stats (only those of stats and audit ops, for replaying "
                     "long traces for their counters)")
      ->check(CLI::IsMember({"all", "stats"}));

  vmmu::tools::RunOptions run_options;
  std::string run_modes = "none,tdp,shadow";
  CLI::App* run = app.add_subcommand("run", "Replay the built-in scenario (or --workload) under each MMU and compare them side by side");
  run->add_option("--workload", run_options.workload, "a .vmt workload instead of the built-in guest OS scenario");
  run->add_option("--seed", run_options.seed, "the built-in scenario's seed");
  run->add_option("--modes", run_modes, "the MMUs to compare, in order (none,tdp,shadow)");
  engine_options(run);
  run->add_flag("--json", run_options.json, "print one JSON object (stats and memory per mode) instead of the table");
  run->add_option("--report", run_options.report, "also write a self-contained HTML report (table and charts) to this file");
  run->add_option("--sweep", run_options.sweep,
                  "run a grid: key=v1,v2,... (repeatable; keys memory, processes, page_size, mode, mmu, max_mmu_pages, seed); "
                  "one CSV row per run (JSON Lines with --json)");
  run->add_option("--output", run_options.output, "--sweep: write the rows to this .csv or .jsonl file instead of stdout");
  run->add_option("--jobs", run_options.jobs, "--sweep: runs at once (default: one per core)")->check(CLI::Range(1u, 1024u));
  run->add_option("--trace", run_options.trace,
                  "the lackey trace the built-in scenario runs as one of its processes (default: the shipped "
                  "workloads/traces/sort.lackey.xz)");
  run->add_option("--trace-accesses", run_options.trace_accesses, "traced accesses to take from it (0: all)");
  bool no_trace = false;
  run->add_flag("--no-trace", no_trace, "run the built-in scenario without a traced process");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints and succeeds; any bad argument is bad input: status 2, as for a bad .vmt line.
    return app.exit(e) == 0 ? 0 : 2;
  }
  const vmmu::MmuKind mmu = *vmmu::parse_mmu_kind(mmu_name);
  vmmu::VmConfig config;
  config.mmu = mmu;
  config.tdp.dirty_log = dirty_log == "dbit" ? vmmu::mmu::DirtyLogMode::DirtyBit : vmmu::mmu::DirtyLogMode::WriteProtect;
  config.tdp.eager_split = eager_split == "on";
  config.shadow.max_mmu_pages = max_mmu_pages;
  parse_bytes(max_mmu_memory, config.shadow.max_mmu_memory);
  config.tdp.max_mmu_memory = config.shadow.max_mmu_memory;
  config.shadow.unsync = unsync == "on";

  if (replay->parsed()) {
    vmmu::sim::ReplayOptions options;
    options.tlb = replay_tlb == "on";
    options.results = replay_results == "stats" ? vmmu::sim::ReplayResults::Stats : vmmu::sim::ReplayResults::All;
    return replay_file(replay_path, config, stdout, options);
  }
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
    if (modes.empty()) {
      std::fprintf(stderr, "vmmu run: --modes: give at least one of none, tdp, shadow\n");
      return 2;
    }
    if (no_trace) {
      run_options.trace.clear();
    } else if (run_options.trace.empty() && run_options.workload.empty()) {
      run_options.trace = vmmu::tools::shipped_trace_path();
      if (run_options.trace.empty()) {
        std::fprintf(stderr,
                     "vmmu run: the built-in scenario's trace (traces/sort.lackey.xz) is not installed: set VMMU_DATA_DIR "
                     "to a directory holding it, or pass --no-trace\n");
        return 2;
      }
    }
    run_options.progress = isatty(STDERR_FILENO);
    if (!run_options.sweep.empty()) {
      std::vector<std::string> mmus;
      for (const auto& [m, c] : modes) mmus.push_back(m);
      return vmmu::tools::sweep_main(run_options, config, mmus);
    }
    return vmmu::tools::run_main(run_options, modes);
  }
  return 0;
}
