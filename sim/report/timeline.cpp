#include "sim/report/timeline.hpp"

#include <algorithm>

namespace vmmu::sim::report {

namespace {

// Counters shown as events over time, with the names the table uses; those an engine does
// not have are left out.
struct EventCounter {
  const char* stat;
  const char* name;
};
constexpr EventCounter ENGINE_EVENTS[] = {
    {"pf_emulate", "emulated PTE writes"},
    {"mmu_unsync", "pages gone out of sync"},
    {"mmu_sync", "syncs of out-of-sync tables"},
    {"mmu_shadow_zapped", "shadow pages zapped"},
};

uint64_t number(const nlohmann::ordered_json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

}  // namespace

TimelineRecorder::TimelineRecorder(std::string mode, unsigned target_samples, double max_sampling_share)
    : target_(std::max(1u, target_samples)), max_sampling_share_(max_sampling_share), start_(std::chrono::steady_clock::now()) {
  timeline_.mode = std::move(mode);
}

void TimelineRecorder::put(std::vector<NamedSeries>& series, size_t index, const std::string& name, double value) {
  auto it = std::find_if(series.begin(), series.end(), [&](const NamedSeries& s) { return s.name == name; });
  if (it == series.end()) it = series.insert(series.end(), NamedSeries{name, {}});
  it->values.resize(index, 0);  // a category that appears late was 0 before
  it->values.push_back(value);
}

// Keeps the odd-numbered samples, the last one among them (there is an even number of them).
void TimelineRecorder::drop_every_other_sample() {
  auto halve = [](std::vector<double>& v) {
    size_t out = 0;
    for (size_t i = 1; i < v.size(); i += 2) v[out++] = v[i];
    v.resize(out);
  };
  halve(timeline_.ops);
  for (auto* group : {&timeline_.memory, &timeline_.events})
    for (NamedSeries& s : *group) halve(s.values);
}

void TimelineRecorder::sample(uint64_t ops_done, const Vm& vm, const ReplaySummary& summary) {
  const auto before = std::chrono::steady_clock::now();
  const nlohmann::ordered_json all = vm.stats();
  const nlohmann::ordered_json& stats = all["stats"];
  const size_t index = timeline_.ops.size();
  timeline_.ops.push_back(double(ops_done));
  for (const auto& [key, value] : all["memory"].items()) {
    // The kvm_* figures model what Linux would hold; they are compared in the table, not held.
    if (key.rfind("kvm_", 0) == 0 || !value.is_number()) continue;
    put(timeline_.memory, index, key, value.get<double>());
  }
  put(timeline_.events, index, "guest page faults (#PF)", double(summary.page_faults));
  if (vm.mmu_kind() == MmuKind::Tdp) put(timeline_.events, index, "exits (TDP violations)", double(number(stats, "tdp_exits")));
  if (vm.mmu_kind() == MmuKind::Shadow) put(timeline_.events, index, "exits (shadow page faults)", double(number(stats, "pf_taken")));
  if (vm.mmu_kind() == MmuKind::Shadow)
    for (const EventCounter& e : ENGINE_EVENTS) put(timeline_.events, index, e.name, double(number(stats, e.stat)));
  for (auto* group : {&timeline_.memory, &timeline_.events})
    for (NamedSeries& s : *group) s.values.resize(index + 1, 0);  // gone from this sample: 0

  if (timeline_.ops.size() >= 2 * size_t{target_}) {
    drop_every_other_sample();
    interval_ *= 2;
  }
  const auto after = std::chrono::steady_clock::now();
  timeline_.sampling_seconds += std::chrono::duration<double>(after - before).count();
  // (A short replay is sampled in full: a few milliseconds of sampling cost nobody anything.)
  if (timeline_.sampling_seconds > 0.05 && timeline_.sampling_seconds > max_sampling_share_ * std::chrono::duration<double>(after - start_).count())
    interval_ *= 2;
  next_ = ops_done + interval_;
}

}  // namespace vmmu::sim::report
