// `vmmu run`: one workload (the guest OS model's built-in scenario, or a .vmt file) replayed under
// each MMU, and what each did and cost, side by side (docs/RUN.md explains every row).
#include "tools/vmmu/run_command.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sim/guest_os/scenario.hpp"
#include "sim/replayer.hpp"
#include "sim/vmt_reader.hpp"

namespace vmmu::tools {

namespace {

struct ModeRun {
  std::string name;
  sim::ReplaySummary summary;
  nlohmann::ordered_json stats;  // {"stats": ..., "memory": ...} at the end
  double seconds = 0;
  std::vector<std::string> results;  // JSON Lines, `stats` lines left out
};

std::vector<std::string> result_lines(const char* text, size_t len) {
  std::vector<std::string> lines;
  std::istringstream in(std::string(text, len));
  for (std::string l; std::getline(in, l);)
    if (l.find("\"op\":\"stats\"") == std::string::npos) lines.push_back(l);
  return lines;
}

ModeRun replay_ops(const std::vector<sim::Op>& ops, const std::string& name, const VmConfig& config) {
  ModeRun run;
  run.name = name;
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* out = open_memstream(&buf, &len);
  const auto start = std::chrono::steady_clock::now();
  {
    Vm vm(config);
    sim::Replayer r(vm, out);
    for (const sim::Op& op : ops) r.apply(op);
    r.flush();
    run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    run.summary = r.summary();
    run.stats = vm.stats();
  }
  std::fclose(out);
  run.results = result_lines(buf, len);
  std::free(buf);
  return run;
}

uint64_t stat(const ModeRun& r, const char* key) {
  const auto& s = r.stats["stats"];
  return s.contains(key) ? s[key].get<uint64_t>() : 0;
}
uint64_t memory(const ModeRun& r, const char* key) {
  const auto& m = r.stats["memory"];
  return m.contains(key) ? m[key].get<uint64_t>() : 0;
}

std::string bytes(uint64_t b) {
  if (b >= (1ull << 20)) return fmt::format("{:.2f} MiB", double(b) / (1 << 20));
  if (b >= (1ull << 10)) return fmt::format("{:.1f} KiB", double(b) / (1 << 10));
  return fmt::format("{} B", b);
}

// Exits to the hypervisor: TDP violations for tdp; every shadow page fault for shadow (emulated
// PTE writes and unsyncs are among them); none models bare metal (no hypervisor).
uint64_t exits(const ModeRun& r) {
  if (r.name == "tdp") return stat(r, "tdp_exits");
  if (r.name == "shadow") return stat(r, "pf_taken");
  return 0;
}

void print_table(const std::string& what, const std::vector<ModeRun>& runs, const std::string& verdict) {
  fmt::print("vmmu run: {}\n\n", what);
  fmt::print("{:<34}", "");
  for (const ModeRun& r : runs) fmt::print("{:>16}", r.name);
  fmt::print("\n");
  auto row = [&](const char* label, auto value) {
    fmt::print("{:<34}", label);
    for (const ModeRun& r : runs) fmt::print("{:>16}", value(r));
    fmt::print("\n");
  };
  auto dash_unless = [](bool has, uint64_t v) { return has ? fmt::format("{}", v) : std::string("-"); };
  row("guest accesses", [](const ModeRun& r) { return fmt::format("{}", r.summary.accesses); });
  row("page faults delivered (#PF)", [](const ModeRun& r) { return fmt::format("{}", r.summary.page_faults); });
  row("exits to the hypervisor", [&](const ModeRun& r) { return dash_unless(r.name != "none", exits(r)); });
  row("  TDP violations", [&](const ModeRun& r) { return dash_unless(r.name == "tdp", stat(r, "tdp_exits")); });
  row("  shadow page faults", [&](const ModeRun& r) { return dash_unless(r.name == "shadow", stat(r, "pf_taken")); });
  row("    emulated PTE writes", [&](const ModeRun& r) { return dash_unless(r.name == "shadow", stat(r, "pf_emulate")); });
  row("    pages gone out of sync", [&](const ModeRun& r) { return dash_unless(r.name == "shadow", stat(r, "mmu_unsync")); });
  row("    syncs of out-of-sync tables", [&](const ModeRun& r) { return dash_unless(r.name == "shadow", stat(r, "mmu_sync")); });
  row("MMIO exits", [](const ModeRun& r) { return fmt::format("{}", r.summary.mmio); });
  row("guest page walks", [](const ModeRun& r) { return fmt::format("{}", stat(r, "walks")); });
  row("  guest table reads", [](const ModeRun& r) { return fmt::format("{}", stat(r, "walk_refs")); });
  row("shadow pages at the end", [&](const ModeRun& r) { return dash_unless(r.name != "none", stat(r, "shadow_pages")); });
  row("  created / zapped", [&](const ModeRun& r) {
    return r.name == "none" ? std::string("-") : fmt::format("{} / {}", stat(r, "mmu_cache_miss"), stat(r, "mmu_shadow_zapped"));
  });
  row("metadata (mapping_total)", [](const ModeRun& r) { return bytes(memory(r, "mapping_total")); });
  row("  KVM's layout before 2010", [&](const ModeRun& r) { return r.name == "none" ? std::string("-") : bytes(memory(r, "kvm_pre2010")); });
  row("  KVM's layout after 2010", [&](const ModeRun& r) { return r.name == "none" ? std::string("-") : bytes(memory(r, "kvm_2010")); });
  row("  KVM's layout today", [&](const ModeRun& r) { return r.name == "none" ? std::string("-") : bytes(memory(r, "kvm_today")); });
  row("audits (failed)", [](const ModeRun& r) { return fmt::format("{} ({})", r.summary.audits, r.summary.audit_failures); });
  row("wall time", [](const ModeRun& r) { return fmt::format("{:.3f} s", r.seconds); });
  row("ops per second", [](const ModeRun& r) { return fmt::format("{:.2f} M", double(r.summary.ops) / r.seconds / 1e6); });
  fmt::print("\n{}\n", verdict);
}

// The first result where a mode differs from the first mode run, or "" when none does.
std::string compare(const std::vector<ModeRun>& runs) {
  for (size_t m = 1; m < runs.size(); ++m) {
    const auto& a = runs[0].results;
    const auto& b = runs[m].results;
    for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
      const std::string x = i < a.size() ? a[i] : "(nothing)", y = i < b.size() ? b[i] : "(nothing)";
      // Audit violations are engine-specific text; whether the audit passed is compared.
      if (x == y || (x.find("\"op\":\"audit\"") != std::string::npos && y.find("\"op\":\"audit\"") != std::string::npos &&
                     (x.find("\"ok\":true") != std::string::npos) == (y.find("\"ok\":true") != std::string::npos)))
        continue;
      return fmt::format("results: --mmu={} DIFFERS from --mmu={} at result {}:\n  {}: {}\n  {}: {}", runs[m].name, runs[0].name, i + 1,
                         runs[0].name, x, runs[m].name, y);
    }
  }
  return "";
}

}  // namespace

int run_main(const RunOptions& o, const std::vector<std::pair<std::string, VmConfig>>& modes) {
  std::vector<sim::Op> ops;
  std::string what;
  if (o.workload.empty()) {
    sim::guest_os::ScenarioParams p;
    p.seed = o.seed;
    const auto counts = sim::guest_os::run_default_scenario(p, [&](const sim::Op& op) { ops.push_back(op); });
    what = fmt::format(
        "the built-in scenario (guest OS model, seed {}): a {} GiB 4-level guest boots, runs {} processes "
        "({} forks, {} execs, {} exits, {} copy-on-write faults, {} page-table writes, {} context switches); {} ops",
        o.seed, p.os.memory >> 30, counts.processes, counts.forks, counts.execs, counts.exits, counts.cow_copies + counts.cow_reuses,
        counts.table_writes, counts.context_switches, ops.size());
  } else {
    std::ifstream in(o.workload, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot open\n", o.workload.c_str());
      return 2;
    }
    try {
      sim::VmtReader reader(in);
      for (sim::Op op; reader.next(op);) ops.push_back(op);
    } catch (const sim::ParseError& e) {
      std::fprintf(stderr, "%s:%llu: %s\n", o.workload.c_str(), static_cast<unsigned long long>(e.line()), e.what());
      return 2;
    }
    what = fmt::format("{} ({} ops)", o.workload, ops.size());
  }

  std::vector<ModeRun> runs;
  for (const auto& [name, config] : modes) {
    if (o.progress) std::fprintf(stderr, "vmmu run: replaying under --mmu=%s ...\n", name.c_str());
    try {
      runs.push_back(replay_ops(ops, name, config));
    } catch (const sim::ReplayError& e) {
      std::fprintf(stderr, "%s:%llu: %s\n", o.workload.empty() ? "built-in scenario" : o.workload.c_str(),
                   static_cast<unsigned long long>(e.line()), e.what());
      return 2;
    } catch (const UsageError& e) {
      std::fprintf(stderr, "%s: %s\n", o.workload.empty() ? "built-in scenario" : o.workload.c_str(), e.what());
      return 2;
    }
  }
  const std::string difference = compare(runs);
  if (o.json) {
    nlohmann::ordered_json j;
    j["workload"] = what;
    j["identical_results"] = difference.empty();
    for (const ModeRun& r : runs) {
      j["modes"][r.name] = {{"seconds", r.seconds}, {"ops", r.summary.ops}, {"stats", r.stats["stats"]}, {"memory", r.stats["memory"]}};
    }
    fmt::print("{}\n", j.dump(2));
  } else {
    print_table(what, runs, difference.empty() ? fmt::format("results: identical in every mode ({} results compared)", runs[0].results.size())
                                                : difference);
  }
  int status = difference.empty() ? 0 : 1;
  for (const ModeRun& r : runs) {
    if (r.summary.audit_failures) status = 1;
    if (r.summary.host_errors) status = 3;
  }
  return status;
}

}  // namespace vmmu::tools
