#include "tools/vmmu/sweep_grid.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include <fmt/format.h>

#include "mmu/shadow_mmu.hpp"

namespace vmmu::tools {

namespace {

constexpr uint64_t MIB = 1ull << 20;
constexpr uint64_t MAX_MEMORY = 1ull << 40;  // 1 TiB: far beyond what a sweep can replay quickly
constexpr uint32_t MAX_PROCESSES = 256;
constexpr size_t MAX_POINTS = 100000;

bool scenario_key_name(const std::string& key) { return key != "mmu" && key != "max_mmu_pages"; }

[[noreturn]] void bad_value(const std::string& key, const std::string& text, const std::string& why) {
  throw SweepError(fmt::format("--sweep {}: '{}' {}", key, text, why));
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

uint64_t parse_number(const std::string& key, const std::string& text, const std::string& digits) {
  if (digits.empty() || digits.size() > 19 || digits.find_first_not_of("0123456789") != std::string::npos)
    bad_value(key, text, "is not a whole number");
  return std::stoull(digits);
}

// A size with an optional K, M or G suffix (powers of 1024).
uint64_t parse_size(const std::string& key, const std::string& text) {
  std::string digits = text;
  unsigned shift = 0;
  if (!digits.empty()) {
    switch (std::toupper(static_cast<unsigned char>(digits.back()))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      default: break;
    }
  }
  if (shift) digits.pop_back();
  if (digits.empty() || digits.size() > 13 || digits.find_first_not_of("0123456789") != std::string::npos)
    bad_value(key, text, "is not a size (a whole number with an optional K, M or G suffix)");
  return std::stoull(digits) << shift;
}

// Parses, checks and stores one value of `key` into `p`.
void set(SweepPoint& p, const std::string& key, const std::string& text) {
  if (key == "memory") {
    const uint64_t bytes = parse_size(key, text);
    if (bytes < 64 * MIB || bytes % (2 * MIB) != 0 || bytes > MAX_MEMORY)
      bad_value(key, text, "must be a multiple of 2M, at least 64M and at most 1024G");
    p.memory = bytes;
  } else if (key == "processes") {
    const uint64_t n = parse_number(key, text, text);
    if (n < 1 || n > MAX_PROCESSES) bad_value(key, text, fmt::format("must be 1 to {}", MAX_PROCESSES));
    p.processes = static_cast<uint32_t>(n);
  } else if (key == "page_size") {
    const std::string v = lower(text);
    if (v != "largest" && v != "4k" && v != "2m" && v != "1g") bad_value(key, text, "is not 4k, 2m, 1g or largest");
    p.page_size = v;
  } else if (key == "mode") {
    const std::string v = lower(text);
    if (v != "32bit" && v != "pae" && v != "4level" && v != "5level") bad_value(key, text, "is not 32bit, pae, 4level or 5level");
    p.mode = v;
  } else if (key == "mmu") {
    const std::string v = lower(text);
    if (!parse_mmu_kind(v)) bad_value(key, text, "is not none, tdp or shadow");
    p.mmu = v;
  } else if (key == "max_mmu_pages") {
    const uint64_t n = parse_number(key, text, text);
    if (n != 0 && (n < mmu::MIN_MAX_MMU_PAGES || n > UINT32_MAX))
      bad_value(key, text, fmt::format("must be 0 (no limit) or {} to {}", mmu::MIN_MAX_MMU_PAGES, UINT32_MAX));
    p.max_mmu_pages = n;
  } else if (key == "seed") {
    p.seed = parse_number(key, text, text);
  } else {
    throw SweepError(fmt::format("--sweep: '{}' is not a sweep key (memory, processes, page_size, mode, mmu, max_mmu_pages, seed)", key));
  }
}

}  // namespace

sim::guest_os::ScenarioParams SweepPoint::scenario() const {
  using sim::guest_os::DirectMapPages;
  sim::guest_os::ScenarioParams s;
  s.seed = seed;
  s.processes = processes;
  s.os.memory = memory;
  s.os.mode = mode == "32bit" ? x86::PagingMode::Bits32
              : mode == "pae" ? x86::PagingMode::Pae
              : mode == "5level" ? x86::PagingMode::Level5
                                 : x86::PagingMode::Level4;
  // 4k: the kernel maps itself with 4 KiB pages and has no transparent huge pages; otherwise
  // THP is on and the direct map uses the leaf asked for (the model picks the largest the
  // paging mode has when it lacks 1 GiB pages; level-2 leaves are 4 MiB under 32-bit paging).
  s.os.thp = page_size != "4k";
  s.os.direct_map = page_size == "4k"   ? DirectMapPages::Size4K
                    : page_size == "2m" ? DirectMapPages::Size2M
                    : page_size == "1g" ? DirectMapPages::Size1G
                                        : DirectMapPages::Largest;
  return s;
}

VmConfig SweepPoint::config(const VmConfig& base) const {
  VmConfig c = base;
  c.mmu = *parse_mmu_kind(mmu);
  c.shadow.max_mmu_pages = max_mmu_pages;
  return c;
}

std::string SweepPoint::scenario_key() const { return fmt::format("{}/{}/{}/{}/{}", memory, processes, page_size, mode, seed); }

std::string SweepPoint::value(const std::string& key) const {
  if (key == "memory") return std::to_string(memory);
  if (key == "processes") return std::to_string(processes);
  if (key == "page_size") return page_size;
  if (key == "mode") return mode;
  if (key == "mmu") return mmu;
  if (key == "max_mmu_pages") return std::to_string(max_mmu_pages);
  if (key == "seed") return std::to_string(seed);
  return "";
}

std::vector<SweepPoint> sweep_grid(const std::vector<std::string>& specs, const SweepPoint& defaults,
                                   const std::vector<std::string>& default_mmus, bool builtin_scenario) {
  struct Dimension {
    std::string key;
    std::vector<std::string> values;
  };
  std::vector<Dimension> dims;
  std::set<std::string> seen;
  for (const std::string& spec : specs) {
    const size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0)
      throw SweepError(fmt::format("--sweep '{}': expected key=v1,v2,... (keys: memory, processes, page_size, mode, mmu, max_mmu_pages, seed)", spec));
    Dimension d{lower(spec.substr(0, eq)), {}};
    if (std::find(std::begin(SWEEP_KEYS), std::end(SWEEP_KEYS), d.key) == std::end(SWEEP_KEYS)) {
      SweepPoint scratch;
      set(scratch, d.key, "");  // throws: not a key
    }
    if (!seen.insert(d.key).second) throw SweepError(fmt::format("--sweep {}: the key is given twice", d.key));
    if (!builtin_scenario && scenario_key_name(d.key))
      throw SweepError(fmt::format("--sweep {}: only the built-in scenario has this parameter; with --workload, sweep mmu and max_mmu_pages", d.key));
    const std::string values = spec.substr(eq + 1);
    size_t start = 0;
    while (true) {
      const size_t comma = values.find(',', start);
      const std::string v = values.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (v.empty()) throw SweepError(fmt::format("--sweep {}: an empty value in '{}'", d.key, values));
      SweepPoint scratch;
      set(scratch, d.key, v);  // checks it
      d.values.push_back(v);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    dims.push_back(std::move(d));
  }
  if (!seen.count("mmu")) {
    if (default_mmus.empty()) throw SweepError("--sweep: no MMU to run (--modes is empty)");
    for (const std::string& m : default_mmus) {
      SweepPoint scratch;
      set(scratch, "mmu", m);
    }
    dims.push_back(Dimension{"mmu", default_mmus});
  }

  size_t total = 1;
  for (const Dimension& d : dims) {
    total *= d.values.size();
    if (total > MAX_POINTS) throw SweepError(fmt::format("--sweep: the grid has more than {} points", MAX_POINTS));
  }
  // An odometer over the dimensions, the last one turning fastest.
  std::vector<SweepPoint> grid;
  std::vector<size_t> digit(dims.size(), 0);
  for (size_t n = 0; n < total; ++n) {
    SweepPoint p = defaults;
    for (size_t k = 0; k < dims.size(); ++k) set(p, dims[k].key, dims[k].values[digit[k]]);
    grid.push_back(std::move(p));
    for (size_t k = dims.size(); k-- > 0;) {
      if (++digit[k] < dims[k].values.size()) break;
      digit[k] = 0;
    }
  }
  return grid;
}

}  // namespace vmmu::tools
