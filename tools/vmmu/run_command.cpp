// `vmmu run`: one workload (the guest OS model's built-in scenario, or a .vmt file) replayed under
// each MMU, and what each did and cost, side by side (docs/RUN.md explains every row).
#include "tools/vmmu/run_command.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sim/default_workload.hpp"
#include "sim/trace_import/trace_error.hpp"
#include "sim/report/html_report.hpp"
#include "sim/report/timeline.hpp"
#include "sim/replayer.hpp"
#include "sim/vmt_reader.hpp"
#include "sim/workload_input.hpp"
#include "tools/vmmu/lockstep_replay.hpp"
#include "tools/vmmu/progress_bar.hpp"

namespace vmmu::tools {

namespace {

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

// The table's rows, one cell per mode: printed, and written into the --report page.
sim::report::ReportTable table_rows(const std::vector<ModeRun>& runs) {
  sim::report::ReportTable table;
  for (const ModeRun& r : runs) table.columns.push_back(r.name);
  auto row = [&](const char* label, auto value) {
    std::vector<std::string> cells;
    for (const ModeRun& r : runs) cells.push_back(value(r));
    table.rows.emplace_back(label, std::move(cells));
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
  // The TLB model (docs/TLB-MODEL.md): walks the hardware makes, and their memory references.
  row("TLB misses (hardware walks)", [](const ModeRun& r) { return fmt::format("{}", r.summary.tlb.walks); });
  row("  TLB miss rate", [](const ModeRun& r) {
    const uint64_t n = r.summary.tlb.translated();
    return n ? fmt::format("{:.3f} %", 100.0 * double(r.summary.tlb.walks) / double(n)) : std::string("-");
  });
  row("  walk references", [](const ModeRun& r) { return fmt::format("{}", r.summary.tlb.walk_refs); });
  row("  references per walk", [](const ModeRun& r) {
    return r.summary.tlb.walks ? fmt::format("{:.2f}", double(r.summary.tlb.walk_refs) / double(r.summary.tlb.walks)) : std::string("-");
  });
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
  return table;
}

void print_table(const std::string& what, const sim::report::ReportTable& table, const std::string& verdict) {
  fmt::print("vmmu run: {}\n\n{:<34}", what, "");
  for (const std::string& c : table.columns) fmt::print("{:>16}", c);
  fmt::print("\n");
  for (const auto& [label, cells] : table.rows) {
    fmt::print("{:<34}", label);
    for (const std::string& c : cells) fmt::print("{:>16}", c);
    fmt::print("\n");
  }
  fmt::print("\n{}\n", verdict);
}

// The --report page: the table, each mode's timeline and the walk-reference histogram.
bool write_report(const std::string& path, const std::string& what, const std::string& verdict, const std::vector<ModeRun>& runs) {
  sim::report::RunReport report;
  report.workload = what;
  report.verdict = verdict;
  report.table = table_rows(runs);
  for (const ModeRun& r : runs) report.timelines.push_back(r.timeline);
  // The TLB model's walks by their memory references, up to the largest count any mode saw.
  size_t buckets = 0;
  for (const ModeRun& r : runs)
    for (size_t i = 0; i <= sim::TlbCounters::MAX_WALK_REFS; ++i)
      if (r.summary.tlb_model && r.summary.tlb.walk_ref_histogram[i]) buckets = std::max(buckets, i + 1);
  for (size_t i = 0; i < buckets; ++i) report.histogram_buckets.push_back(std::to_string(i));
  for (const ModeRun& r : runs) {
    if (!r.summary.tlb_model) continue;
    const uint64_t* h = r.summary.tlb.walk_ref_histogram;
    report.histograms.push_back({r.name, std::vector<double>(h, h + buckets)});
  }
  report.histogram_x_label = "memory references of one walk (both dimensions under TDP)";
  report.histogram_note =
      "Hardware page walks (TLB misses, from the TLB model: docs/TLB-MODEL.md) by how many memory references each made; "
      "paging-structure caches shorten walks, and a TDP walk reads the nested tables for every guest table it reads.";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << sim::report::html_report(report);
  out.close();
  if (!out) {
    std::fprintf(stderr, "vmmu run --report %s: cannot write: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace

int run_main(const RunOptions& o, const std::vector<std::pair<std::string, VmConfig>>& modes) {
  ProgressBar bar(stderr, o.progress);
  const std::string where = o.workload.empty() ? "built-in scenario" : o.workload;
  std::string what;
  std::vector<ModeRun> runs;
  std::string difference;
  uint64_t compared = 0;
  try {
    // The ops go to every mode as they come, a batch at a time: nothing is held for the whole run.
    LockstepReplay replay(modes, bar, !o.report.empty());
    uint64_t ops = 0;
    if (o.workload.empty()) {
      sim::DefaultWorkloadParams p;
      p.scenario.seed = o.seed;
      p.trace = o.trace;
      p.trace_accesses = o.trace_accesses;
      const sim::DefaultWorkloadCounts generated = sim::run_default_workload(p, [&](const sim::Op& op) {
        replay.push(op);
        ++ops;
      });
      const sim::guest_os::GuestOsCounts& counts = generated.os;
      const std::string traced =
          p.trace.empty() ? std::string()
                          : fmt::format(", one of them the real program traced in {} ({} traced accesses)",
                                        std::filesystem::path(p.trace).filename().string(), generated.traced_accesses);
      what = fmt::format(
          "the built-in scenario (guest OS model, seed {}): a {} GiB 4-level guest boots, runs {} processes{} "
          "({} forks, {} execs, {} exits, {} copy-on-write faults, {} page-table writes, {} context switches); {} ops",
          o.seed, p.scenario.os.memory >> 30, counts.processes, traced, counts.forks, counts.execs, counts.exits,
          counts.cow_copies + counts.cow_reuses, counts.table_writes, counts.context_switches, ops);
    } else {
      sim::WorkloadInput in(o.workload);  // any form: text, binary, zstd
      for (sim::Op op; in.next(op); ++ops) replay.push(op);
      what = fmt::format("{} ({} ops)", o.workload, ops);
    }
    runs = replay.finish();
    difference = replay.difference();
    compared = replay.results_compared();
  } catch (const sim::trace_import::TraceError& e) {
    bar.clear();
    std::fprintf(stderr, "vmmu run: %s\n", e.what());
    return 2;
  } catch (const sim::OpSourceError& e) {
    bar.clear();
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const sim::ReplayError& e) {
    bar.clear();
    std::fprintf(stderr, "%s:%llu: %s\n", where.c_str(), static_cast<unsigned long long>(e.line()), e.what());
    return 2;
  } catch (const UsageError& e) {
    bar.clear();
    std::fprintf(stderr, "%s: %s\n", where.c_str(), e.what());
    return 2;
  }
  bar.clear();
  const std::string verdict =
      difference.empty() ? fmt::format("results: identical in every mode ({} results compared)", compared) : difference;
  if (o.json) {    nlohmann::ordered_json j;
    j["workload"] = what;
    j["identical_results"] = difference.empty();
    for (const ModeRun& r : runs) {
      j["modes"][r.name] = {{"seconds", r.seconds}, {"ops", r.summary.ops}, {"stats", r.stats["stats"]}, {"memory", r.stats["memory"]}};
      j["modes"][r.name]["tlb"] = r.summary.tlb.to_json();
    }
    fmt::print("{}\n", j.dump(2));
  } else {
    print_table(what, table_rows(runs), verdict);
  }
  int status = difference.empty() ? 0 : 1;
  for (const ModeRun& r : runs) {
    if (r.summary.audit_failures) status = 1;
    if (r.summary.host_errors) status = 3;
  }
  // After the table: a report that cannot be written loses nothing else.
  if (!o.report.empty() && !write_report(o.report, what, verdict, runs)) return 2;
  return status;
}

}  // namespace vmmu::tools
