#pragma once
// Whether an engine's JSON result line for an op says what the reference's (`--mmu=none`) says,
// by the equivalence oracle's rule (tests/sim/equivalence_rule.hpp), line by line.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/sim/equivalence_rule.hpp"

namespace vmmu::fuzz {

using test::SlotLayout;

// Why `engine` (the output of one op, one or more lines) differs from `reference`; nullopt when
// it does not.
inline std::optional<std::string> result_difference(const std::string& reference, const std::string& engine, const SlotLayout& slots) {
  using nlohmann::json;
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
    test::normalize_result(a);
    test::normalize_result(b);
    if (a.value("op", "") == "age" && b.value("op", "") == "age" && a["line"] == b["line"]) {
      if (auto why = test::age_difference(a, b, slots)) return "age: " + *why;
      continue;
    }
    if (a != b) return std::string("results differ");
  }
  return std::nullopt;
}

}  // namespace vmmu::fuzz
