#pragma once
// The equivalence oracle's rule for one op's JSON result from an engine against the reference's
// (`--mmu=none`; VMT-FORMAT.md): equal once the contents of "stats"/"memory" and the text of
// audit violations are set aside; for `age`, an engine may add gfns that share a host huge mapping
// (a host=2m/1g memslot) with a gfn the reference reports. Shared by the equivalence test and the
// engine fuzz target, so both judge by the same rule.
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

namespace vmmu::test {

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

// Sets aside what the rule does not compare.
inline void normalize_result(nlohmann::json& j) {
  if (j.contains("stats")) j["stats"] = nullptr;
  if (j.contains("memory")) j["memory"] = nullptr;
  if (j.value("op", "") == "audit") j.erase("violations");
}

inline std::vector<uint64_t> gfn_list(const nlohmann::json& list) {
  std::vector<uint64_t> v;
  for (const nlohmann::json& g : list) v.push_back(std::stoull(g.get<std::string>(), nullptr, 16));
  return v;
}

// Age: the engine reports every gfn none reports, and only adds gfns in the same 2 MiB / 1 GiB
// region of a host=2m/1g memslot as one of those. Why not, or nullopt.
inline std::optional<std::string> age_difference(nlohmann::json ref, nlohmann::json eng, const SlotLayout& slots) {
  if (!ref.contains("accessed") || !eng.contains("accessed")) return std::string("no \"accessed\" list");
  const std::vector<uint64_t> r = gfn_list(ref["accessed"]), e = gfn_list(eng["accessed"]);
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

}  // namespace vmmu::test
