#include "tools/vmmu/lockstep_replay.hpp"

#include <algorithm>
#include <chrono>
#include <new>
#include <string_view>

#include <sys/types.h>

#include <fmt/format.h>

namespace vmmu::tools {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// A FILE that appends to a string: the Replayer writes its JSON Lines there for the comparison.
FilePtr string_file(std::string& s) {
  cookie_io_functions_t io{};
  io.write = [](void* cookie, const char* data, size_t n) -> ssize_t {
    static_cast<std::string*>(cookie)->append(data, n);
    return static_cast<ssize_t>(n);
  };
  FilePtr f(fopencookie(&s, "w", io));
  if (!f) throw std::bad_alloc();
  return f;
}

// The result lines of `text`, without those of `stats` ops (each engine has its own counters).
std::vector<std::string_view> result_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos < text.size();) {
    const size_t nl = std::min(text.find('\n', pos), text.size());
    const std::string_view l = text.substr(pos, nl - pos);
    if (l.find("\"op\":\"stats\"") == std::string_view::npos) lines.push_back(l);
    pos = nl + 1;
  }
  return lines;
}

// Audit violations are engine-specific text; whether the audit passed is compared.
bool same_result(std::string_view x, std::string_view y) {
  if (x == y) return true;
  constexpr std::string_view audit = "\"op\":\"audit\"", ok = "\"ok\":true";
  return x.find(audit) != x.npos && y.find(audit) != y.npos && (x.find(ok) != x.npos) == (y.find(ok) != y.npos);
}

}  // namespace

// One mode: its Vm, its replayer, and the JSON Lines of the batch being compared. (Members go
// in reverse order: the replayer's last flush goes through `out` into `results`.)
struct LockstepReplay::Mode {
  ModeRun run;
  std::string results;
  FilePtr out;  // appends to `results`
  std::unique_ptr<Vm> vm;
  std::unique_ptr<sim::Replayer> replayer;
  std::unique_ptr<sim::report::TimelineRecorder> recorder;

  Mode(const std::string& name, const VmConfig& config, bool record_timeline) {
    run.name = name;
    const auto start = Clock::now();
    out = string_file(results);
    vm = std::make_unique<Vm>(config);
    sim::ReplayOptions options;
    options.tlb = true;  // the TLB and page-walk cost model: counts only, changes no result
    replayer = std::make_unique<sim::Replayer>(*vm, out.get(), options);
    if (record_timeline) recorder = std::make_unique<sim::report::TimelineRecorder>(name);
    run.seconds += seconds_since(start);
  }

  // The batch's ops, the first of them the workload's op number `first` (1-based).
  void replay(const std::vector<sim::Op>& batch, uint64_t first) {
    const auto start = Clock::now();
    const double sampled = recorder ? recorder->timeline().sampling_seconds : 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      replayer->apply(batch[i]);
      if (recorder && recorder->due(first + i)) recorder->sample(first + i, *vm, replayer->summary());
    }
    replayer->flush();
    // The wall time leaves out the sampling for --report: the figures stay comparable.
    run.seconds += seconds_since(start) - (recorder ? recorder->timeline().sampling_seconds - sampled : 0);
  }

  ModeRun finish(uint64_t ops) {
    const auto start = Clock::now();
    if (recorder) {
      if (recorder->timeline().ops.empty() || recorder->timeline().ops.back() != double(ops)) recorder->sample(ops, *vm, replayer->summary());
      run.timeline = recorder->take();
    }
    run.summary = replayer->summary();
    run.stats = vm->stats();
    replayer.reset();
    vm.reset();
    run.seconds += seconds_since(start);
    return std::move(run);
  }
};

LockstepReplay::LockstepReplay(const std::vector<std::pair<std::string, VmConfig>>& modes, ProgressBar& bar, bool record_timeline)
    : bar_(bar) {
  batch_.reserve(BATCH);
  for (const auto& [name, config] : modes) {
    modes_.push_back(std::make_unique<Mode>(name, config, record_timeline));
    progress_label_ += (progress_label_.empty() ? "replaying under " : ", ") + name;
  }
  progress_label_ += " (ops)";
}

LockstepReplay::~LockstepReplay() = default;

void LockstepReplay::run_batch() {
  if (batch_.empty()) return;
  for (auto& m : modes_) m->replay(batch_, done_ + 1);
  done_ += batch_.size();
  batch_.clear();
  compare_batch();
  bar_.update(progress_label_, done_, 0);
}

void LockstepReplay::compare_batch() {
  if (modes_.empty()) return;
  const std::vector<std::string_view> a = result_lines(modes_[0]->results);
  for (size_t m = 1; m < modes_.size() && difference_.empty(); ++m) {
    const std::vector<std::string_view> b = result_lines(modes_[m]->results);
    for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
      const std::string_view x = i < a.size() ? a[i] : "(nothing)", y = i < b.size() ? b[i] : "(nothing)";
      if (same_result(x, y)) continue;
      const std::string& first = modes_[0]->run.name;
      const std::string& other = modes_[m]->run.name;
      difference_ = fmt::format("results: --mmu={} DIFFERS from --mmu={} at result {}:\n  {}: {}\n  {}: {}", other, first,
                                compared_ + i + 1, first, x, other, y);
      break;
    }
  }
  compared_ += a.size();
  for (auto& m : modes_) m->results.clear();
}

std::vector<ModeRun> LockstepReplay::finish() {
  run_batch();
  std::vector<ModeRun> runs;
  for (auto& m : modes_) runs.push_back(m->finish(done_));
  return runs;
}

}  // namespace vmmu::tools
