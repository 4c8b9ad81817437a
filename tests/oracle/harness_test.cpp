// The harness image builder and the random cases, without running any oracle.
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "oracle/check.hpp"
#include "oracle/harness.hpp"
#include "oracle/random_cases.hpp"

namespace vmmu::oracle {
namespace {

std::vector<sim::Op> ops_of(const std::string& text) {
  std::istringstream in(text);
  return parse_vmt(in, "test");
}

uint32_t u32(const std::vector<uint8_t>& b, std::size_t at) {
  uint32_t v;
  std::memcpy(&v, &b[at], 4);
  return v;
}

const char* kSmall =
    "vmt 1\n"
    "memslot 0 0 16M\n"
    "vcpu 0\n"
    "poke 0x10000 8 0x11007\n"
    "regs 0 cr0=0x80010001 cr3=0x10000 cr4=0x20 efer=0x900\n"
    "read 0 0x1000\n"                 // line 6: checked
    "fetch 0 0x2000\n"                // line 7: checked (vmmu says it faults)
    "read 0 0xffffff8000001000\n"     // line 8: in the harness's linear region
    "peek 0x10000 8\n"                // line 9: checked
    "audit\n";                        // line 10: no oracle

TEST(Harness, MultibootImageWithOneProbePerCheckedResult) {
  const auto ops = ops_of(kSmall);
  const Image img = build_image(ops, std::vector<OpInfo>(ops.size()));
  ASSERT_GT(img.bytes.size(), 0x820u);
  EXPECT_EQ(u32(img.bytes, 0x800), 0x1badb002u);
  EXPECT_EQ(u32(img.bytes, 0x800) + u32(img.bytes, 0x804) + u32(img.bytes, 0x808), 0u);
  EXPECT_EQ(u32(img.bytes, 0x810), HARNESS_GPA);            // load address
  EXPECT_EQ(u32(img.bytes, 0x814), HARNESS_GPA + img.bytes.size());
  EXPECT_EQ(img.mode, HarnessMode::Level4);
  ASSERT_EQ(img.probes.size(), 3u);
  EXPECT_EQ(ops[img.probes[0].op].line, 6u);
  EXPECT_EQ(ops[img.probes[1].op].line, 7u);
  EXPECT_TRUE(img.probes[2].peek);
  ASSERT_EQ(img.skipped.size(), 2u);
  EXPECT_EQ(img.skipped[0].first, 8u);
  EXPECT_EQ(img.skipped[1].first, 10u);
  EXPECT_GE(img.ram_bytes, HARNESS_GPA + HARNESS_SIZE);
}

TEST(Harness, FetchWithoutRetIsNotChecked) {
  const auto ops = ops_of(kSmall);
  std::vector<OpInfo> info(ops.size());
  info[5].gpa = 0x102000;  // the fetch (6th op) translated ...
  info[5].fetch_byte = 0x90;  // ... to a byte that is not a ret
  const Image img = build_image(ops, info);
  EXPECT_EQ(img.probes.size(), 2u);
  EXPECT_EQ(img.skipped[0].first, 7u);
}

TEST(Harness, MemslotOverHarnessIsNotCheckable) {
  const auto ops = ops_of("vmt 1\nmemslot 0 0 256M\nvcpu 0\n");
  EXPECT_THROW(build_image(ops, std::vector<OpInfo>(ops.size())), NotCheckable);
}

TEST(Harness, PokeOfTheInjectedRootEntryStopsChecking) {
  const auto ops = ops_of(
      "vmt 1\nmemslot 0 0 16M\nvcpu 0\nregs 0 cr0=0x80000001 cr3=0x10000 cr4=0x20 efer=0x100\n"
      "read 0 0x1000\npoke 0x10ff8 8 0x11007\nread 0 0x1000\n");
  const Image img = build_image(ops, std::vector<OpInfo>(ops.size()));
  ASSERT_TRUE(img.stop_line.has_value());
  EXPECT_EQ(*img.stop_line, 6u);
  EXPECT_EQ(img.probes.size(), 1u);
}

TEST(Harness, RecordsParse) {
  std::string d = "junk";
  const uint8_t rec[23] = {0xa5, 2, 0, 0, 0, 1, 14, 0x7, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x20, 0, 0, 0, 0, 0, 0};
  d.append(reinterpret_cast<const char*>(rec), sizeof rec);
  const auto r = parse_records(d);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].index, 2u);
  EXPECT_EQ(r[0].kind, 1);
  EXPECT_EQ(r[0].vector, 14);
  EXPECT_EQ(r[0].value, 7u);
  EXPECT_EQ(r[0].cr2, 0x2000u);
}

TEST(RandomCases, DeterministicValidAndInsideTheHarnessRules) {
  for (HarnessMode m : {HarnessMode::Bits32, HarnessMode::Pae, HarnessMode::Level4, HarnessMode::Level5}) {
    const RandomBatch a = random_batch(42, 3, m, false, 200), b = random_batch(42, 3, m, false, 200);
    EXPECT_EQ(a.vmt, b.vmt);
    const auto ops = ops_of(a.vmt);
    const Image img = build_image(ops, std::vector<OpInfo>(ops.size()));
    EXPECT_EQ(img.mode, m);
    EXPECT_TRUE(img.skipped.empty()) << name(m) << ": line " << img.skipped.front().first << ": " << img.skipped.front().second;
    EXPECT_FALSE(img.stop_line);
    const std::string repro = reproducer(a, a.case_first_line[5] + 1);
    EXPECT_EQ(repro, a.header + a.case_text[5]);
  }
}

}  // namespace
}  // namespace vmmu::oracle
