#pragma once
// Whether an engine's JSON result line for an op says what the reference's (`--mmu=none`) says,
// by the equivalence oracle's rule (tests/sim/equivalence_test.cpp, VMT-FORMAT.md): equal,
// except the contents of "stats"/"memory" and the text of audit violations; and for `age`, an
// engine may add gfns that share a host huge mapping (a host=2m/1g memslot) with a gfn the
// reference reports.
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "guest/memslot.hpp"
#include "sim/op.hpp"
#include "x86/paging_format.hpp"

namespace vmmu::fuzz {

// The memslots as the ops so far left them (the host page size of each, for `age`).
class SlotLayout {
 public:
  struct Slot {
    uint64_t base_gfn, npages;
    guest::HostPageSize host;
  };

  // Call before the op runs (a rejected op changes nothing in any mode, which the comparison
  // checks anyway).
  void apply(const sim::Op& op) {
    switch (op.kind) {
      case sim::OpKind::Memslot: slots_[op.id] = Slot{op.addr >> x86::PAGE_SHIFT, op.size >> x86::PAGE_SHIFT, op.host_page}; break;
      case sim::OpKind::MemslotDelete: slots_.erase(op.id); break;
      case sim::OpKind::MemslotMove:
        if (auto it = slots_.find(op.id); it != slots_.end()) it->second.base_gfn = op.addr >> x86::PAGE_SHIFT;
        break;
      default: break;
    }
  }
  const Slot* find(uint64_t gfn) const {
    for (const auto& [id, s] : slots_)
      if (gfn >= s.base_gfn && gfn < s.base_gfn + s.npages) return &s;
    return nullptr;
  }

 private:
  std::map<uint32_t, Slot> slots_;
};

namespace result_comparison {

using nlohmann::json;

inline void normalize(json& j) {
  if (j.contains("stats")) j["stats"] = nullptr;
  if (j.contains("memory")) j["memory"] = nullptr;
  if (j.value("op", "") == "audit") j.erase("violations");
}

inline std::vector<uint64_t> gfns(const json& list) {
  std::vector<uint64_t> v;
  for (const json& g : list) v.push_back(std::stoull(g.get<std::string>(), nullptr, 16));
  return v;
}

inline std::optional<std::string> age_difference(json ref, json eng, const SlotLayout& slots) {
  if (!ref.contains("accessed") || !eng.contains("accessed")) return std::string("no \"accessed\" list");
  const std::vector<uint64_t> r = gfns(ref["accessed"]), e = gfns(eng["accessed"]);
  ref.erase("accessed");
  eng.erase("accessed");
  if (ref != eng) return std::string("results differ");
  if (!std::is_sorted(e.begin(), e.end()) || std::adjacent_find(e.begin(), e.end()) != e.end())
    return std::string("the engine's gfns are not sorted ascending");
  const std::set<uint64_t> rs(r.begin(), r.end()), es(e.begin(), e.end());
  for (uint64_t g : rs)
    if (!es.count(g)) return fmt::format("the engine misses gfn 0x{:x}", g);
  for (uint64_t g : es) {
    if (rs.count(g)) continue;
    const SlotLayout::Slot* s = slots.find(g);
    if (!s || s->host == guest::HostPageSize::Size4K) return fmt::format("extra gfn 0x{:x} is in no memslot with host=2m/1g", g);
    const unsigned shift = s->host == guest::HostPageSize::Size1G ? 18 : 9;
    const bool shares = std::any_of(rs.begin(), rs.end(), [&](uint64_t x) {
      return x >= s->base_gfn && x < s->base_gfn + s->npages && (x >> shift) == (g >> shift);
    });
    if (!shares) return fmt::format("extra gfn 0x{:x} shares no host huge mapping with a gfn none reports", g);
  }
  return std::nullopt;
}

}  // namespace result_comparison

// Why `engine` (the output of one op, one or more lines) differs from `reference`; nullopt when
// it does not.
inline std::optional<std::string> result_difference(const std::string& reference, const std::string& engine, const SlotLayout& slots) {
  using result_comparison::json;
  if (reference == engine) return std::nullopt;
  auto split = [](const std::string& text) {
    std::vector<std::string> lines;
    size_t from = 0;
    while (from < text.size()) {
      const size_t nl = text.find('\n', from);
      lines.push_back(text.substr(from, nl == std::string::npos ? std::string::npos : nl - from));
      if (nl == std::string::npos) break;
      from = nl + 1;
    }
    return lines;
  };
  const std::vector<std::string> ref = split(reference), eng = split(engine);
  if (ref.size() != eng.size()) return fmt::format("{} result lines instead of {}", eng.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    if (ref[i] == eng[i]) continue;
    json a, b;
    try {
      a = json::parse(ref[i]);
      b = json::parse(eng[i]);
    } catch (const std::exception& e) {
      return std::string("not JSON: ") + e.what();
    }
    result_comparison::normalize(a);
    result_comparison::normalize(b);
    if (a.value("op", "") == "age" && b.value("op", "") == "age" && a["line"] == b["line"]) {
      if (auto why = result_comparison::age_difference(a, b, slots)) return "age: " + *why;
      continue;
    }
    if (a != b) return std::string("results differ");
  }
  return std::nullopt;
}

}  // namespace vmmu::fuzz
