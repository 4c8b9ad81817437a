// The replay's JSON Lines writer: the bytes it writes are the output contract (VMT-FORMAT.md,
// "Output"), so each field kind is pinned here, edge values included.
#include "sim/json_lines.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <rapidcheck/gtest.h>

namespace vmmu::sim {
namespace {

// Everything `write` puts through a JsonLines, as the FILE saw it.
template <class Write>
std::string written(Write write) {
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* f = open_memstream(&buf, &len);
  {
    JsonLines j(f);
    write(j);
  }
  std::fclose(f);
  std::string s(buf, len);
  std::free(buf);
  return s;
}

TEST(JsonLines, EachFieldKind) {
  const std::string s = written([](JsonLines& j) {
    j.begin(7, "read");
    j.boolean("ok", true);
    j.hex("gpa", 0x1000);
    j.hex("value", 0);
    j.number("count", 0);
    j.boolean("mmio", false);
    j.raw("fault", R"({"vector":14})");
    j.end();
  });
  EXPECT_EQ(s, R"({"line":7,"op":"read","ok":true,"gpa":"0x1000","value":"0x0","count":0,"mmio":false,"fault":{"vector":14}})"
               "\n");
}

TEST(JsonLines, ExtremeNumbers) {
  const std::string s = written([](JsonLines& j) {
    j.begin(UINT64_MAX, "write");
    j.hex("a", UINT64_MAX);
    j.hex("b", 0xf);
    j.hex("c", 0x10);
    j.number("d", UINT64_MAX);
    j.end();
  });
  EXPECT_EQ(s, R"({"line":18446744073709551615,"op":"write","a":"0xffffffffffffffff","b":"0xf","c":"0x10","d":18446744073709551615})"
               "\n");
}

// Every number, written as hex or decimal, reads back as itself (and hex as fmt spells it).
RC_GTEST_PROP(JsonLinesProperty, NumbersReadBack, (uint64_t line, uint64_t h, uint64_t d)) {
  const std::string s = written([&](JsonLines& j) {
    j.begin(line, "peek");
    j.hex("h", h);
    j.number("d", d);
    j.end();
  });
  RC_ASSERT(s.back() == '\n');
  const auto j = nlohmann::json::parse(s);
  RC_ASSERT(j["line"].get<uint64_t>() == line);
  RC_ASSERT(j["h"].get<std::string>() == fmt::format("0x{:x}", h));
  RC_ASSERT(j["d"].get<uint64_t>() == d);
}

// Lines longer than the buffer's slack, and more lines than one flush holds, come out whole
// and in order.
TEST(JsonLines, LongAndManyLines) {
  const std::string big(300000, 'x');
  const std::string s = written([&](JsonLines& j) {
    for (uint64_t i = 0; i < 20000; ++i) {
      j.begin(i, "stats");
      if (i == 5000) j.raw("big", '"' + big + '"');
      j.end();
    }
  });
  size_t lines = 0, pos = 0;
  for (size_t nl; (nl = s.find('\n', pos)) != std::string::npos; pos = nl + 1, ++lines) {
    const auto j = nlohmann::json::parse(s.substr(pos, nl - pos));
    ASSERT_EQ(j["line"], lines);
    if (lines == 5000) {
      EXPECT_EQ(j["big"].get<std::string>().size(), big.size());
    }
  }
  EXPECT_EQ(lines, 20000u);
  EXPECT_EQ(pos, s.size());
}

}  // namespace
}  // namespace vmmu::sim
