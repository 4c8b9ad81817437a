// `vmmu run --sweep`: a grid of configurations, each replayed by its own Vm on a pool of threads
// (the engines and the guest OS model keep no global mutable state), the rows written in grid
// order as soon as every earlier one is done.
#include "tools/vmmu/sweep_command.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sim/default_workload.hpp"
#include "sim/replayer.hpp"
#include "sim/workload_input.hpp"
#include "tools/vmmu/progress_bar.hpp"
#include "tools/vmmu/sweep_grid.hpp"

namespace vmmu::tools {

namespace {

using Ops = std::shared_ptr<const std::vector<sim::Op>>;

// The figures of one run, in column order after the keys (docs/RUN.md defines each).
constexpr const char* FIGURES[] = {"ops",
                                   "accesses",
                                   "page_faults",
                                   "exits",
                                   "emulated_pte_writes",
                                   "unsyncs",
                                   "syncs",
                                   "shadow_pages",
                                   "shadow_pages_created",
                                   "shadow_pages_zapped",
                                   "mapping_total",
                                   "kvm_pre2010",
                                   "kvm_2010",
                                   "kvm_today",
                                   "guest_walks",
                                   "guest_table_reads",
                                   "tlb_misses",
                                   "tlb_walk_refs",
                                   "audit_failures"};
constexpr size_t N_FIGURES = sizeof FIGURES / sizeof FIGURES[0];

struct Row {
  uint64_t figures[N_FIGURES] = {};
  double seconds = 0;
  std::string error;  // empty when the run was done
  int status = 0;     // 0, 1 (audit failed), 2 (could not run), 3 (host out of memory)
};

// The built-in scenario's ops (with the traced program, if any), generated once for all the points
// that replay them (they differ only in mmu or max_mmu_pages) and dropped when the last of them is
// done.
class ScenarioCache {
 public:
  ScenarioCache(const std::vector<SweepPoint>& grid, std::string trace, uint64_t trace_accesses)
      : trace_(std::move(trace)), trace_accesses_(trace_accesses) {
    for (const SweepPoint& p : grid) ++users_[p.scenario_key()];
  }

  Ops get(const SweepPoint& p) {
    const std::string key = p.scenario_key();
    std::unique_lock lock(mutex_);
    if (const auto it = entries_.find(key); it != entries_.end()) {
      const std::shared_future<Ops> ready = it->second;
      lock.unlock();
      return ready.get();  // waits for the thread generating it; rethrows its error
    }
    std::promise<Ops> promise;
    entries_.emplace(key, promise.get_future().share());
    lock.unlock();
    try {
      auto ops = std::make_shared<std::vector<sim::Op>>();
      sim::DefaultWorkloadParams w;
      w.scenario = p.scenario();
      w.trace = trace_;
      w.trace_accesses = trace_accesses_;
      sim::run_default_workload(w, [&](const sim::Op& op) { ops->push_back(op); });
      promise.set_value(ops);
      return ops;
    } catch (...) {
      promise.set_exception(std::current_exception());
      throw;
    }
  }

  void release(const SweepPoint& p) {
    const std::string key = p.scenario_key();
    std::lock_guard lock(mutex_);
    if (--users_[key] == 0) entries_.erase(key);
  }

 private:
  const std::string trace_;
  const uint64_t trace_accesses_;
  std::mutex mutex_;
  std::map<std::string, unsigned> users_;
  std::map<std::string, std::shared_future<Ops>> entries_;
};

uint64_t number(const nlohmann::ordered_json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

// A --workload point from a regular file: the file is read again for each point (in any form,
// binary accesses by the replay's fast path), so that no point holds its ops, however long.
sim::ReplaySummary replay_file(const std::string& path, Vm& vm, const sim::ReplayOptions& options) {
  sim::WorkloadInput in(path);
  char* text = nullptr;
  size_t len = 0;
  std::FILE* err = open_memstream(&text, &len);
  if (!err) throw std::bad_alloc();
  sim::ReplaySummary summary;
  const int status = sim::replay_stream(in, vm, nullptr, err, &summary, options);
  std::fclose(err);
  std::string message(text, len);
  std::free(text);
  if (status == 2) throw std::runtime_error(message.substr(0, message.find_last_not_of('\n') + 1));
  return summary;
}

// The point's ops come from `file_ops` (a workload read once into memory: standard input or a
// pipe), else from the regular file `workload`, else from the built-in scenario's cache.
void run_point(const SweepPoint& p, const VmConfig& base, const Ops& file_ops, const std::string& workload, ScenarioCache& cache,
               Row& row) {
  try {
    const VmConfig config = p.config(base);
    sim::ReplayOptions options;
    options.tlb = true;  // the TLB model, as `vmmu run` has it: counts only, changes no result
    Vm vm(config);
    sim::ReplaySummary s;
    if (file_ops || workload.empty()) {
      const Ops ops = file_ops ? file_ops : cache.get(p);  // generating it is not the replay's time
      const auto start = std::chrono::steady_clock::now();
      sim::Replayer replayer(vm, nullptr, options);
      for (const sim::Op& op : *ops) replayer.apply(op);
      row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      s = replayer.summary();
    } else {
      const auto start = std::chrono::steady_clock::now();
      s = replay_file(workload, vm, options);  // decoding included, as in `vmmu replay`
      row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    const nlohmann::ordered_json all = vm.stats();
    const nlohmann::ordered_json &stats = all["stats"], &memory = all["memory"];
    const uint64_t exits = config.mmu == MmuKind::Tdp ? number(stats, "tdp_exits") : number(stats, "pf_taken");
    const uint64_t values[N_FIGURES] = {s.ops,
                                        s.accesses,
                                        s.page_faults,
                                        exits,
                                        number(stats, "pf_emulate"),
                                        number(stats, "mmu_unsync"),
                                        number(stats, "mmu_sync"),
                                        number(stats, "shadow_pages"),
                                        number(stats, "mmu_cache_miss"),
                                        number(stats, "mmu_shadow_zapped"),
                                        number(memory, "mapping_total"),
                                        number(memory, "kvm_pre2010"),
                                        number(memory, "kvm_2010"),
                                        number(memory, "kvm_today"),
                                        number(stats, "walks"),
                                        number(stats, "walk_refs"),
                                        s.tlb.walks,
                                        s.tlb.walk_refs,
                                        s.audit_failures};
    std::copy(std::begin(values), std::end(values), row.figures);
    if (s.audit_failures) row.status = 1;
    if (s.host_errors) {
      row.status = 3;
      row.error = fmt::format("the host ran out of memory {} times", s.host_errors);
    }
  } catch (const sim::ReplayError& e) {
    row.status = 2;
    row.error = fmt::format("op at line {}: {}", e.line(), e.what());
  } catch (const HostMemoryError& e) {
    row.status = 3;
    row.error = e.what();
  } catch (const std::exception& e) {  // the guest OS model refused the configuration, or a usage error
    row.status = 2;
    row.error = e.what();
  }
  if (!file_ops && workload.empty()) cache.release(p);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

class RowWriter {
 public:
  RowWriter(std::FILE* out, bool json, bool builtin) : out_(out), json_(json), builtin_(builtin) {}

  void header() {
    if (json_) return;
    std::string line;
    for (const char* k : SWEEP_KEYS) line += std::string(k) + ",";
    for (const char* f : FIGURES) line += std::string(f) + ",";
    line += "seconds,ops_per_second,error\n";
    std::fputs(line.c_str(), out_);
  }

  void row(const SweepPoint& p, const Row& r) {
    const bool ok = r.status == 0 || r.status == 1;
    const double ops_per_second = ok && r.seconds > 0 ? double(r.figures[0]) / r.seconds : 0;
    if (json_) {
      nlohmann::ordered_json j;
      for (const std::string k : SWEEP_KEYS) {
        const bool shown = builtin_ || k == "mmu" || k == "max_mmu_pages";
        const bool numeric = k != "page_size" && k != "mode" && k != "mmu";
        if (!shown) j[k] = nullptr;
        else if (numeric) j[k] = std::stoull(p.value(k));
        else j[k] = p.value(k);
      }
      for (size_t i = 0; i < N_FIGURES; ++i) {
        if (ok) j[FIGURES[i]] = r.figures[i];
        else j[FIGURES[i]] = nullptr;
      }
      j["seconds"] = ok ? nlohmann::ordered_json(r.seconds) : nlohmann::ordered_json(nullptr);
      j["ops_per_second"] = ok ? nlohmann::ordered_json(ops_per_second) : nlohmann::ordered_json(nullptr);
      j["error"] = r.error.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(r.error);
      std::fputs((j.dump() + "\n").c_str(), out_);
    } else {
      std::string line;
      for (const std::string k : SWEEP_KEYS) line += (builtin_ || k == "mmu" || k == "max_mmu_pages" ? p.value(k) : "") + ",";
      for (size_t i = 0; i < N_FIGURES; ++i) line += (ok ? std::to_string(r.figures[i]) : "") + ",";
      line += ok ? fmt::format("{:.6f},{:.0f},", r.seconds, ops_per_second) : std::string(",,");
      line += csv_field(r.error) + "\n";
      std::fputs(line.c_str(), out_);
    }
    std::fflush(out_);
  }

 private:
  std::FILE* out_;
  bool json_, builtin_;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int sweep_main(const RunOptions& o, const VmConfig& base, const std::vector<std::string>& default_mmus) {
  const bool builtin = o.workload.empty();
  SweepPoint defaults;
  defaults.seed = o.seed;
  defaults.max_mmu_pages = base.shadow.max_mmu_pages;
  std::vector<SweepPoint> grid;
  try {
    grid = sweep_grid(o.sweep, defaults, default_mmus, builtin);
  } catch (const SweepError& e) {
    std::fprintf(stderr, "vmmu run %s\n", e.what());
    return 2;
  }
  if (!o.report.empty()) {
    std::fprintf(stderr, "vmmu run: --report and --sweep do not go together (a report is of one run of each mode)\n");
    return 2;
  }

  bool json = o.json;
  std::FILE* out = stdout;
  if (!o.output.empty()) {
    const bool csv = ends_with(o.output, ".csv"), jsonl = ends_with(o.output, ".jsonl");
    if (!csv && !jsonl) {
      std::fprintf(stderr, "vmmu run --output %s: the name must end in .csv or .jsonl (it picks the format)\n", o.output.c_str());
      return 2;
    }
    if (o.json && csv) {
      std::fprintf(stderr, "vmmu run --output %s: --json asks for JSON Lines, the name for CSV\n", o.output.c_str());
      return 2;
    }
    json = jsonl;
    out = std::fopen(o.output.c_str(), "w");
    if (!out) {
      std::fprintf(stderr, "vmmu run --output %s: cannot open: %s\n", o.output.c_str(), std::strerror(errno));
      return 2;
    }
  }

  // Bad input is refused before any point runs. A regular file is only checked here (the points
  // read it again as they replay); standard input or a pipe can be read once, so it is kept.
  Ops file_ops;
  if (!builtin) {
    std::error_code ec;
    const bool reread = o.workload != "-" && std::filesystem::is_regular_file(o.workload, ec);
    auto ops = std::make_shared<std::vector<sim::Op>>();
    try {
      sim::WorkloadInput in(o.workload);
      for (sim::Op op; in.next(op);)
        if (!reread) ops->push_back(op);
    } catch (const sim::OpSourceError& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 2;
    }
    if (!reread) file_ops = std::move(ops);
  }

  ScenarioCache cache(grid, o.trace, o.trace_accesses);
  std::vector<Row> rows(grid.size());
  std::vector<bool> done(grid.size(), false);
  std::mutex mutex;
  std::condition_variable finished;
  std::atomic<size_t> next{0};
  const unsigned cores = o.jobs ? o.jobs : std::max(1u, std::thread::hardware_concurrency());
  const size_t workers = std::min<size_t>(cores, grid.size());
  std::vector<std::thread> pool;
  for (size_t w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < grid.size();) {
        Row row;
        run_point(grid[i], base, file_ops, o.workload, cache, row);
        std::lock_guard lock(mutex);
        rows[i] = std::move(row);
        done[i] = true;
        finished.notify_one();
      }
    });
  }

  // This thread writes the rows in grid order as they become ready, and draws the progress bar.
  RowWriter writer(out, json, builtin);
  writer.header();
  ProgressBar bar(stderr, o.progress);
  int status = 0;
  size_t written = 0;
  while (written < grid.size()) {
    std::unique_lock lock(mutex);
    finished.wait_for(lock, std::chrono::milliseconds(100), [&] { return done[written]; });
    size_t ready = 0;
    for (bool d : done) ready += d;
    if (!done[written]) {
      lock.unlock();
      bar.update("vmmu run --sweep: runs", ready, grid.size());
      continue;
    }
    const Row row = rows[written];
    lock.unlock();
    bar.clear();
    writer.row(grid[written], row);
    status = std::max(status, row.status);
    ++written;
    bar.update("vmmu run --sweep: runs", ready, grid.size());
  }
  bar.clear();
  for (std::thread& t : pool) t.join();
  if (out != stdout && std::fclose(out) != 0) {
    std::fprintf(stderr, "vmmu run --output %s: cannot write: %s\n", o.output.c_str(), std::strerror(errno));
    return 2;
  }
  for (size_t i = 0; i < grid.size(); ++i) {
    if (rows[i].error.empty()) continue;
    std::string point;
    for (const std::string k : SWEEP_KEYS)
      if (builtin || k == "mmu" || k == "max_mmu_pages") point += fmt::format(" {}={}", k, grid[i].value(k));
    std::fprintf(stderr, "vmmu run --sweep: run %zu (%s): %s\n", i + 1, point.c_str() + 1, rows[i].error.c_str());
  }
  return status;
}

}  // namespace vmmu::tools
