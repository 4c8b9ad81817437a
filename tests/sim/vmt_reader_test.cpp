// Tests of the text .vmt parser (VMT-FORMAT.md, version 1): every op with every option, every
// malformed form with its own message and line, the lexical rules, and a round-trip property.
#include "sim/vmt_reader.hpp"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vmmu::sim {
namespace {

using guest::HostPageSize;

template <class T>
std::string opt(const std::optional<T>& o) {
  return o ? std::to_string(static_cast<uint64_t>(*o)) : std::string("-");
}

// Every field of an op, so that two ops compare equal exactly when their descriptions do, and a
// failure shows the difference.
std::string describe(const Op& op) {
  std::ostringstream s;
  s << op_name(op.kind) << " line=" << op.line << " id=" << op.id << " addr=0x" << std::hex << op.addr
    << " size=0x" << op.size << " value=0x" << op.value << std::dec << " width=" << unsigned{op.width}
    << " dirty=" << static_cast<int>(op.dirty) << " maxphyaddr=" << opt(op.maxphyaddr) << " gbpages=" << opt(op.gbpages)
    << " la57=" << opt(op.la57) << " ro=" << op.readonly << " log=" << op.log << " host=" << static_cast<int>(op.host_page)
    << " cr0=" << opt(op.regs.cr0) << " cr3=" << opt(op.regs.cr3) << " cr4=" << opt(op.regs.cr4) << " efer=" << opt(op.regs.efer)
    << " cpl=" << opt(op.regs.cpl) << " ac=" << opt(op.regs.ac) << " pkru=" << opt(op.regs.pkru);
  return s.str();
}

std::vector<Op> read_all(const std::string& text) {
  std::istringstream in(text);
  VmtReader r(in);
  std::vector<Op> ops;
  Op op;
  while (r.next(op)) ops.push_back(op);
  return ops;
}

// Parses one op line as the 5th line of a file (after a header, a comment, a blank line and a
// vcpu), checking that parse_line agrees with the streaming reader.
Op parse(const std::string& line) {
  const std::vector<Op> ops = read_all("vmt 1\n# a workload\n\nvcpu 0\n" + line + "\n");
  EXPECT_EQ(ops.size(), 2u);
  const Op direct = VmtReader::parse_line(line, 5);
  EXPECT_EQ(describe(ops.at(1)), describe(direct));
  EXPECT_EQ(ops.at(1).line, 5u);
  return ops.at(1);
}

// The error the whole file `text` gives.
testing::AssertionResult file_fails(const std::string& text, uint64_t line, const std::string& message) {
  try {
    read_all(text);
  } catch (const ParseError& e) {
    if (e.line() == line && e.what() == message) return testing::AssertionSuccess();
    return testing::AssertionFailure() << "got line " << e.line() << ": " << e.what() << "\nwant line " << line << ": " << message;
  }
  return testing::AssertionFailure() << "parsed without error; want line " << line << ": " << message;
}

// The error one op line gives, as the 5th line of a file and through parse_line.
testing::AssertionResult fails(const std::string& op_line, const std::string& message) {
  try {
    VmtReader::parse_line(op_line, 42);
    return testing::AssertionFailure() << "parse_line accepted '" << op_line << "'; want: " << message;
  } catch (const ParseError& e) {
    if (e.line() != 42 || e.what() != message)
      return testing::AssertionFailure() << "parse_line: got line " << e.line() << ": " << e.what() << "\nwant: " << message;
  }
  return file_fails("vmt 1\n# a workload\n\nvcpu 0\n" + op_line + "\naudit\n", 5, message);
}

// ---------------------------------------------------------------------------------------------
// Header

TEST(VmtHeader, MinimalFileHasNoOps) { EXPECT_TRUE(read_all("vmt 1\n").empty()); }

TEST(VmtHeader, CommentsAndBlankLinesMayPrecedeIt) {
  const auto ops = read_all("# generated\n\n   \t\n# more\nvmt 1   # version\n\naudit\n");
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].kind, OpKind::Audit);
  EXPECT_EQ(ops[0].line, 7u);
}

TEST(VmtHeader, WithoutFinalNewlineTabsAndCrlf) {
  const auto ops = read_all("\tvmt\t1\r\nstats");
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].kind, OpKind::Stats);
  EXPECT_EQ(ops[0].line, 2u);
}

TEST(VmtHeader, VersionTwoIsUnsupported) {
  EXPECT_TRUE(file_fails("# x\nvmt 2\naudit\n", 2, "unsupported .vmt version 2"));
  EXPECT_TRUE(file_fails("vmt 0\n", 1, "unsupported .vmt version 0"));
}

TEST(VmtHeader, OpBeforeHeader) {
  EXPECT_TRUE(file_fails("\n# c\nvcpu 0\nvmt 1\n", 3, "expected 'vmt 1' header before the first op"));
  EXPECT_TRUE(file_fails("audit\n", 1, "expected 'vmt 1' header before the first op"));
}

TEST(VmtHeader, SomethingElseFirst) {
  EXPECT_TRUE(file_fails("hello world\nvmt 1\n", 1, "expected 'vmt 1' header, got 'hello'"));
  EXPECT_TRUE(file_fails("VMT 1\n", 1, "expected 'vmt 1' header, got 'VMT'"));
  EXPECT_TRUE(file_fails("vmt1\n", 1, "expected 'vmt 1' header, got 'vmt1'"));
}

TEST(VmtHeader, MalformedHeaderLine) {
  EXPECT_TRUE(file_fails("vmt\n", 1, "vmt: missing version (expected 'vmt 1')"));
  EXPECT_TRUE(file_fails("vmt one\n", 1, "vmt: version 'one' is not a number (expected 'vmt 1')"));
  EXPECT_TRUE(file_fails("vmt 1 2\n", 1, "vmt: extra token '2'"));
}

TEST(VmtHeader, EmptyInputHasNoHeader) {
  EXPECT_TRUE(file_fails("", 1, "missing 'vmt 1' header: the input has no op"));
  EXPECT_TRUE(file_fails("# only\n\n# comments\n", 3, "missing 'vmt 1' header: the input has no op"));
}

TEST(VmtHeader, RepeatedHeaderIsMalformed) {
  EXPECT_TRUE(file_fails("vmt 1\naudit\nvmt 1\n", 3, "repeated 'vmt' header: it may only be the first line"));
}

// ---------------------------------------------------------------------------------------------
// Lexical rules

TEST(VmtLexical, CommentsBlankLinesAndLineNumbers) {
  const auto ops = read_all(
      "vmt 1\n"
      "# comment\n"
      "\n"
      "vcpu 1 # trailing comment\n"
      "   \t  \n"
      "read 1 0x1000#no space before the comment\n"
      "#\n"
      "  \t flush\t1  \n");
  ASSERT_EQ(ops.size(), 3u);
  EXPECT_EQ(ops[0].kind, OpKind::Vcpu);
  EXPECT_EQ(ops[0].line, 4u);
  EXPECT_EQ(ops[1].kind, OpKind::Read);
  EXPECT_EQ(ops[1].addr, 0x1000u);
  EXPECT_EQ(ops[1].line, 6u);
  EXPECT_EQ(ops[2].kind, OpKind::Flush);
  EXPECT_EQ(ops[2].id, 1u);
  EXPECT_EQ(ops[2].line, 8u);
}

TEST(VmtLexical, CrlfLineEndings) {
  const auto ops = read_all("vmt 1\r\n\r\n# c\r\nwrite 0 0x10 4 0xdeadbeef\r\nmemslot 0 0 1M ro\r\n");
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[0].value, 0xdeadbeefu);
  EXPECT_EQ(ops[0].line, 4u);
  EXPECT_TRUE(ops[1].readonly);
  EXPECT_EQ(ops[1].line, 5u);
}

TEST(VmtLexical, CarriageReturnInsideALineIsJunk) {
  EXPECT_TRUE(fails("vcpu 0\r1", "vcpu: ID: '0\\x0d1' is not a number: junk after '0'"));
}

TEST(VmtLexical, Numbers) {
  EXPECT_EQ(parse("poke 0x1000 8 0").value, 0u);
  EXPECT_EQ(parse("poke 0x1000 8 12345").value, 12345u);
  EXPECT_EQ(parse("poke 0x1000 8 007").value, 7u);
  EXPECT_EQ(parse("poke 0x1000 8 0x0").value, 0u);
  EXPECT_EQ(parse("poke 0x1000 8 0xAbCdEf").value, 0xabcdefu);
  EXPECT_EQ(parse("poke 0x1000 8 0x00000000000000000001").value, 1u);
  EXPECT_EQ(parse("poke 0x1000 8 18446744073709551615").value, UINT64_MAX);
  EXPECT_EQ(parse("poke 0x1000 8 0xffffffffffffffff").value, UINT64_MAX);
  EXPECT_EQ(parse("poke 0x1000 8 0xFFFFFFFFFFFFFFFF").value, UINT64_MAX);
  EXPECT_EQ(parse("poke 0x1000 8 9999999999999999999").value, 9999999999999999999u);     // 19 digits
  EXPECT_EQ(parse("poke 0x1000 8 00000000000000000000000000001").value, 1u);
  EXPECT_EQ(parse("poke 0x1000 8 0x1234567812345678").value, 0x1234567812345678u);  // 16 digits
  EXPECT_EQ(parse("poke 0x1000 8 0x00001234567812345678").value, 0x1234567812345678u);
  EXPECT_EQ(parse("poke 0x1000 8 1#comment").value, 1u);
}

TEST(VmtLexical, SizeSuffixesArePowersOf1024) {
  EXPECT_EQ(parse("unmap 0 4K").size, 4096u);
  EXPECT_EQ(parse("unmap 0 3M").size, 3u << 20);
  EXPECT_EQ(parse("unmap 0 5G").size, 5ull << 30);
  EXPECT_EQ(parse("memslot 0 1G 16777215G").size, 16777215ull << 30);
  EXPECT_EQ(parse("poke 0 8 17179869183G").value, 17179869183ull << 30);
  EXPECT_EQ(parse("poke 0 8 0K").value, 0u);
  EXPECT_EQ(parse("read 0 1K").addr, 1024u);
}

TEST(VmtLexical, MalformedNumbers) {
  EXPECT_TRUE(fails("read 0 zz", "read: GVA: 'zz' is not a number"));
  EXPECT_TRUE(fails("read 0 -5", "read: GVA: '-5' is negative"));
  EXPECT_TRUE(fails("read 0 -", "read: GVA: '-' is not a number"));
  EXPECT_TRUE(fails("read 0 +5", "read: GVA: '+5' is not a number"));
  EXPECT_TRUE(fails("read 0 12zz", "read: GVA: '12zz' is not a number: junk after '12'"));
  EXPECT_TRUE(fails("read 0 0x", "read: GVA: '0x' has no hex digits"));
  EXPECT_TRUE(fails("read 0 0x#c", "read: GVA: '0x' has no hex digits"));
  EXPECT_TRUE(fails("read 0 0x 8", "read: GVA: '0x' has no hex digits"));
  EXPECT_TRUE(fails("read 0 0x00000000000000000g", "read: GVA: '0x00000000000000000g' is not a number: junk after '0x00000000000000000'"));
  EXPECT_TRUE(fails("read 0 0x12345678123456781", "read: GVA: '0x12345678123456781' does not fit in 64 bits"));
  EXPECT_TRUE(fails("read 0 0xg", "read: GVA: '0xg' is not a number"));
  EXPECT_TRUE(fails("read 0 0x12g", "read: GVA: '0x12g' is not a number: junk after '0x12'"));
  EXPECT_TRUE(fails("read 0 0X12", "read: GVA: '0X12' is not a number: junk after '0'"));
  EXPECT_TRUE(fails("read 0 0x10K", "read: GVA: '0x10K' is not a number: junk after '0x10'"));
  EXPECT_TRUE(fails("read 0 4k", "read: GVA: '4k' is not a number: junk after '4'"));
  EXPECT_TRUE(fails("read 0 4KB", "read: GVA: '4KB' is not a number: junk after '4K'"));
  EXPECT_TRUE(fails("read 0 4KK", "read: GVA: '4KK' is not a number: junk after '4K'"));
  EXPECT_TRUE(fails("read 0 K", "read: GVA: 'K' is not a number"));
  EXPECT_TRUE(fails("read 0 1.5", "read: GVA: '1.5' is not a number: junk after '1'"));
  EXPECT_TRUE(fails("read 0 18446744073709551616", "read: GVA: '18446744073709551616' does not fit in 64 bits"));
  EXPECT_TRUE(fails("read 0 99999999999999999999999", "read: GVA: '99999999999999999999999' does not fit in 64 bits"));
  EXPECT_TRUE(fails("read 0 0x10000000000000000", "read: GVA: '0x10000000000000000' does not fit in 64 bits"));
  EXPECT_TRUE(fails("read 0 17179869184G", "read: GVA: '17179869184G' does not fit in 64 bits"));
  EXPECT_TRUE(fails("read 0 17592186044416M", "read: GVA: '17592186044416M' does not fit in 64 bits"));
  EXPECT_TRUE(fails("regs 0 cr0=", "regs: cr0: empty number"));
}

TEST(VmtLexical, UnprintableBytesAreEscapedInMessages) {
  EXPECT_TRUE(fails(std::string("fr\x01ob\xff"), "unknown op 'fr\\x01ob\\xff'"));
  EXPECT_TRUE(fails("it's", "unknown op 'it\\'s'"));
}

TEST(VmtLexical, LongTokensAreCutInMessages) {
  const std::string tok(200, 'z');
  EXPECT_TRUE(fails(tok, "unknown op '" + std::string(64, 'z') + "'..."));
}

// ---------------------------------------------------------------------------------------------
// Every op with every option

TEST(VmtOps, Cpu) {
  Op op = parse("cpu");
  EXPECT_EQ(op.kind, OpKind::Cpu);
  EXPECT_FALSE(op.maxphyaddr || op.gbpages || op.la57);

  op = parse("cpu maxphyaddr=36 gbpages=0 la57=1");
  EXPECT_EQ(op.maxphyaddr, 36u);
  EXPECT_EQ(op.gbpages, false);
  EXPECT_EQ(op.la57, true);

  op = parse("cpu la57=0 maxphyaddr=52");
  EXPECT_EQ(op.maxphyaddr, 52u);
  EXPECT_FALSE(op.gbpages);
  EXPECT_EQ(op.la57, false);

  op = parse("cpu gbpages=1 maxphyaddr=32");
  EXPECT_EQ(op.maxphyaddr, 32u);
  EXPECT_EQ(op.gbpages, true);
  EXPECT_FALSE(op.la57);
}

TEST(VmtOps, Memslot) {
  Op op = parse("memslot 3 0x100000 2M");
  EXPECT_EQ(op.kind, OpKind::Memslot);
  EXPECT_EQ(op.id, 3u);
  EXPECT_EQ(op.addr, 0x100000u);
  EXPECT_EQ(op.size, 2u << 20);
  EXPECT_FALSE(op.readonly);
  EXPECT_FALSE(op.log);
  EXPECT_EQ(op.host_page, HostPageSize::Size4K);

  op = parse("memslot 0 0 1G ro host=1g");
  EXPECT_TRUE(op.readonly);
  EXPECT_FALSE(op.log);
  EXPECT_EQ(op.host_page, HostPageSize::Size1G);

  op = parse("memslot 7 4G 4096 host=2m log ro");
  EXPECT_EQ(op.id, 7u);
  EXPECT_EQ(op.addr, 4ull << 30);
  EXPECT_EQ(op.size, 4096u);
  EXPECT_TRUE(op.readonly);
  EXPECT_TRUE(op.log);
  EXPECT_EQ(op.host_page, HostPageSize::Size2M);

  op = parse("memslot 1 0x1000 0x1000 log host=4k");
  EXPECT_FALSE(op.readonly);
  EXPECT_TRUE(op.log);
  EXPECT_EQ(op.host_page, HostPageSize::Size4K);
}

TEST(VmtOps, MemslotDeleteAndMove) {
  Op op = parse("memslot-delete 32767");
  EXPECT_EQ(op.kind, OpKind::MemslotDelete);
  EXPECT_EQ(op.id, 32767u);
  op = parse("memslot-move 2 0x7000");
  EXPECT_EQ(op.kind, OpKind::MemslotMove);
  EXPECT_EQ(op.id, 2u);
  EXPECT_EQ(op.addr, 0x7000u);
}

TEST(VmtOps, Vcpu) {
  const Op op = parse("vcpu 4294967295");
  EXPECT_EQ(op.kind, OpKind::Vcpu);
  EXPECT_EQ(op.id, UINT32_MAX);
}

TEST(VmtOps, Regs) {
  Op op = parse("regs 2");
  EXPECT_EQ(op.kind, OpKind::Regs);
  EXPECT_EQ(op.id, 2u);
  EXPECT_FALSE(op.regs.cr0 || op.regs.cr3 || op.regs.cr4 || op.regs.efer || op.regs.cpl || op.regs.ac || op.regs.pkru);

  op = parse("regs 1 pkru=0xffffffff ac=1 cpl=3 efer=0x500 cr4=0x20 cr3=0x1000 cr0=0x80000001");
  EXPECT_EQ(op.id, 1u);
  EXPECT_EQ(op.regs.cr0, 0x80000001u);
  EXPECT_EQ(op.regs.cr3, 0x1000u);
  EXPECT_EQ(op.regs.cr4, 0x20u);
  EXPECT_EQ(op.regs.efer, 0x500u);
  EXPECT_EQ(op.regs.cpl, 3u);
  EXPECT_EQ(op.regs.ac, true);
  EXPECT_EQ(op.regs.pkru, 0xffffffffu);
  EXPECT_TRUE(op.regs.touches_paging());

  op = parse("regs 0 cpl=0 ac=0 pkru=0");
  EXPECT_EQ(op.regs.cpl, 0u);
  EXPECT_EQ(op.regs.ac, false);
  EXPECT_EQ(op.regs.pkru, 0u);
  EXPECT_FALSE(op.regs.touches_paging());

  op = parse("regs 0 cr0=0xffffffffffffffff");
  EXPECT_EQ(op.regs.cr0, UINT64_MAX);
}

TEST(VmtOps, Cr3) {
  const Op op = parse("cr3 5 0xfffffffffffff000");
  EXPECT_EQ(op.kind, OpKind::Cr3);
  EXPECT_EQ(op.id, 5u);
  EXPECT_EQ(op.addr, 0xfffffffffffff000u);
}

TEST(VmtOps, Poke) {
  const Op op = parse("poke 0x2ffc 4 0xffffffff");
  EXPECT_EQ(op.kind, OpKind::Poke);
  EXPECT_EQ(op.addr, 0x2ffcu);
  EXPECT_EQ(op.width, 4u);
  EXPECT_EQ(op.value, 0xffffffffu);
  EXPECT_EQ(parse("poke 0 1 255").value, 255u);
  EXPECT_EQ(parse("poke 0 2 0xffff").value, 0xffffu);
}

TEST(VmtOps, Read) {
  Op op = parse("read 1 0xffff800000000000");
  EXPECT_EQ(op.kind, OpKind::Read);
  EXPECT_EQ(op.id, 1u);
  EXPECT_EQ(op.addr, 0xffff800000000000u);
  EXPECT_EQ(op.width, 8u);
  op = parse("read 1 0xfff 1");
  EXPECT_EQ(op.addr, 0xfffu);
  EXPECT_EQ(op.width, 1u);
  EXPECT_EQ(parse("read 1 0xffe 2").width, 2u);
  EXPECT_EQ(parse("read 1 0xff8").width, 8u);
}

TEST(VmtOps, Write) {
  const Op op = parse("write 3 0x1ff8 8 0xffffffffffffffff");
  EXPECT_EQ(op.kind, OpKind::Write);
  EXPECT_EQ(op.id, 3u);
  EXPECT_EQ(op.addr, 0x1ff8u);
  EXPECT_EQ(op.width, 8u);
  EXPECT_EQ(op.value, UINT64_MAX);
}

TEST(VmtOps, Fetch) {
  const Op op = parse("fetch 0 0xfff");
  EXPECT_EQ(op.kind, OpKind::Fetch);
  EXPECT_EQ(op.addr, 0xfffu);
  EXPECT_EQ(op.width, 1u);
}

TEST(VmtOps, InvlpgFlushPeek) {
  Op op = parse("invlpg 9 0xdeadb000");
  EXPECT_EQ(op.kind, OpKind::Invlpg);
  EXPECT_EQ(op.id, 9u);
  EXPECT_EQ(op.addr, 0xdeadb000u);
  op = parse("flush 9");
  EXPECT_EQ(op.kind, OpKind::Flush);
  EXPECT_EQ(op.id, 9u);
  op = parse("peek 0x3ffe 2");
  EXPECT_EQ(op.kind, OpKind::Peek);
  EXPECT_EQ(op.addr, 0x3ffeu);
  EXPECT_EQ(op.width, 2u);
}

TEST(VmtOps, DirtyLog) {
  const std::pair<const char*, DirtyLogAction> cases[] = {{"enable", DirtyLogAction::Enable},
                                                          {"disable", DirtyLogAction::Disable},
                                                          {"get", DirtyLogAction::Get},
                                                          {"clear", DirtyLogAction::Clear}};
  for (const auto& [word, action] : cases) {
    const Op op = parse(std::string("dirty-log 4 ") + word);
    EXPECT_EQ(op.kind, OpKind::DirtyLog);
    EXPECT_EQ(op.id, 4u);
    EXPECT_EQ(op.dirty, action) << word;
  }
}

TEST(VmtOps, UnmapAndAge) {
  Op op = parse("unmap 0x200000 2M");
  EXPECT_EQ(op.kind, OpKind::Unmap);
  EXPECT_EQ(op.addr, 0x200000u);
  EXPECT_EQ(op.size, 2u << 20);
  op = parse("age 0xfffffffffffff000 0x1000");
  EXPECT_EQ(op.kind, OpKind::Age);
  EXPECT_EQ(op.addr, 0xfffffffffffff000u);
  EXPECT_EQ(op.size, 0x1000u);
}

TEST(VmtOps, AuditAndStats) {
  EXPECT_EQ(parse("audit").kind, OpKind::Audit);
  EXPECT_EQ(parse("stats").kind, OpKind::Stats);
}

TEST(VmtOps, UnusedFieldsKeepTheirDefaults) {
  EXPECT_EQ(describe(parse("audit")), describe([] {
              Op o;
              o.kind = OpKind::Audit;
              o.line = 5;
              return o;
            }()));
}

TEST(VmtReader, StopsAtTheFirstMalformedLineAfterEarlierOps) {
  std::istringstream in("vmt 1\nvcpu 0\n\nread 0 0x10\nread 0 zz\nread 0 0x20\n");
  VmtReader r(in);
  Op op;
  ASSERT_TRUE(r.next(op));
  EXPECT_EQ(op.kind, OpKind::Vcpu);
  ASSERT_TRUE(r.next(op));
  EXPECT_EQ(op.kind, OpKind::Read);
  EXPECT_EQ(op.line, 4u);
  try {
    r.next(op);
    FAIL() << "no error";
  } catch (const ParseError& e) {
    EXPECT_EQ(e.line(), 5u);
    EXPECT_STREQ(e.what(), "read: GVA: 'zz' is not a number");
  }
}

TEST(VmtReader, EveryOpResetsTheFieldsOfThePreviousOne) {
  const auto ops = read_all("vmt 1\nmemslot 1 0x1000 4K ro log host=2m\nregs 0 cr0=1 pkru=3\ncpu la57=0\naudit\n");
  ASSERT_EQ(ops.size(), 4u);
  Op want;
  want.kind = OpKind::Audit;
  want.line = 5;
  EXPECT_EQ(describe(ops[3]), describe(want));
}

TEST(VmtReader, ManyLines) {
  std::string text = "vmt 1\n";
  for (int i = 0; i < 10000; ++i) text += "write 0 0x" + std::to_string(i) + "000 8 " + std::to_string(i) + "\n";
  const auto ops = read_all(text);
  ASSERT_EQ(ops.size(), 10000u);
  EXPECT_EQ(ops[9999].value, 9999u);
  EXPECT_EQ(ops[9999].line, 10001u);
}

// A stream buffer that hands out its text a few bytes at a time, as a pipe may, and counts how
// far it has been asked to go.
class TrickleBuf : public std::streambuf {
 public:
  TrickleBuf(std::string text, size_t step) : text_(std::move(text)), step_(step) {}
  size_t given() const { return given_; }

 protected:
  int_type underflow() override {
    if (given_ == text_.size()) return traits_type::eof();
    const size_t n = std::min(step_, text_.size() - given_);
    char* b = text_.data() + given_;
    setg(b, b, b + n);
    given_ += n;
    return traits_type::to_int_type(*b);
  }

 private:
  std::string text_;
  size_t step_;
  size_t given_ = 0;
};

std::vector<Op> read_trickled(const std::string& text, size_t step) {
  TrickleBuf buf(text, step);
  std::istream in(&buf);
  VmtReader r(in);
  std::vector<Op> ops;
  Op op;
  while (r.next(op)) ops.push_back(op);
  return ops;
}

TEST(VmtReader, InputInSmallPiecesGivesTheSameOps) {
  const std::string text = "# x\r\nvmt 1\nmemslot 0 0 1M ro log\n\nregs 0 cr0=0x80000001 cr3=0x1000 # c\nwrite 0 0x10 4 7\nread 0 0x10";
  const auto want = read_all(text);
  ASSERT_EQ(want.size(), 4u);
  for (size_t step : {1, 2, 3, 7, 64}) {
    const auto got = read_trickled(text, step);
    ASSERT_EQ(got.size(), want.size()) << step;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(describe(got[i]), describe(want[i])) << step;
  }
}

TEST(VmtReader, ReadsNoFurtherThanTheLineItReturns) {
  // As a pipe fed one line at a time: each op comes before the next line is asked for.
  const std::string head = "vmt 1\nread 0 0x10\n";
  TrickleBuf buf(head + "read 0 0x20\n" + "read 0 0x30\n", head.size());
  std::istream in(&buf);
  VmtReader r(in);
  Op op;
  ASSERT_TRUE(r.next(op));
  EXPECT_EQ(op.addr, 0x10u);
  EXPECT_EQ(buf.given(), head.size());
}

TEST(VmtReader, LinesLongerThanTheReadChunk) {
  const std::string comment = "# " + std::string(300000, 'c') + "\n";
  const std::string spaced = "write" + std::string(100000, ' ') + "1\t\t0x20" + std::string(70000, '\t') + "2 3\n";
  const auto ops = read_all(comment + "vmt 1\n" + comment + spaced + "audit\n");
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[0].kind, OpKind::Write);
  EXPECT_EQ(ops[0].line, 4u);
  EXPECT_EQ(ops[0].id, 1u);
  EXPECT_EQ(ops[0].addr, 0x20u);
  EXPECT_EQ(ops[0].width, 2u);
  EXPECT_EQ(ops[0].value, 3u);
  EXPECT_EQ(ops[1].line, 5u);
}

TEST(VmtReader, LastLineWithoutNewline) {
  auto ops = read_all("vmt 1\r\naudit\r");
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].line, 2u);
  ops = read_all("vmt 1\nvcpu 3");
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].id, 3u);
  EXPECT_TRUE(file_fails("vmt 1\nvcpu 3 x", 2, "vcpu: extra token 'x'"));
}

TEST(VmtReader, NulBytesAreJunk) {
  EXPECT_TRUE(file_fails(std::string("vmt 1\nvcpu 1\0\n", 14), 2, "vcpu: ID: '1\\x00' is not a number: junk after '1'"));
}

// ---------------------------------------------------------------------------------------------
// Malformed lines: each form has its own message

TEST(VmtMalformed, UnknownOp) {
  EXPECT_TRUE(fails("frobnicate 1 2", "unknown op 'frobnicate'"));
  EXPECT_TRUE(fails("READ 0 0", "unknown op 'READ'"));
  EXPECT_TRUE(fails("memslot_delete 0", "unknown op 'memslot_delete'"));
  EXPECT_TRUE(fails("dirty-log", "dirty-log: missing SLOT"));
}

TEST(VmtMalformed, MissingPositionalFields) {
  EXPECT_TRUE(fails("memslot", "memslot: missing SLOT"));
  EXPECT_TRUE(fails("memslot 0", "memslot: missing GPA"));
  EXPECT_TRUE(fails("memslot 0 0", "memslot: missing SIZE"));
  EXPECT_TRUE(fails("memslot-delete", "memslot-delete: missing SLOT"));
  EXPECT_TRUE(fails("memslot-move 0", "memslot-move: missing GPA"));
  EXPECT_TRUE(fails("vcpu", "vcpu: missing ID"));
  EXPECT_TRUE(fails("regs", "regs: missing ID"));
  EXPECT_TRUE(fails("cr3 0", "cr3: missing X"));
  EXPECT_TRUE(fails("poke 0x1000", "poke: missing WIDTH"));
  EXPECT_TRUE(fails("poke 0x1000 8", "poke: missing VALUE"));
  EXPECT_TRUE(fails("read 0", "read: missing GVA"));
  EXPECT_TRUE(fails("read", "read: missing ID"));
  EXPECT_TRUE(fails("write 0 0x1000", "write: missing WIDTH"));
  EXPECT_TRUE(fails("write 0 0x1000 4", "write: missing VALUE"));
  EXPECT_TRUE(fails("fetch 0", "fetch: missing GVA"));
  EXPECT_TRUE(fails("invlpg 0", "invlpg: missing GVA"));
  EXPECT_TRUE(fails("flush", "flush: missing ID"));
  EXPECT_TRUE(fails("peek 0", "peek: missing WIDTH"));
  EXPECT_TRUE(fails("dirty-log 0", "dirty-log: missing ACTION"));
  EXPECT_TRUE(fails("unmap 0", "unmap: missing SIZE"));
  EXPECT_TRUE(fails("age", "age: missing GPA"));
}

TEST(VmtMalformed, ExtraTokens) {
  EXPECT_TRUE(fails("audit now", "audit: extra token 'now'"));
  EXPECT_TRUE(fails("stats 1", "stats: extra token '1'"));
  EXPECT_TRUE(fails("vcpu 0 1", "vcpu: extra token '1'"));
  EXPECT_TRUE(fails("flush 0 0", "flush: extra token '0'"));
  EXPECT_TRUE(fails("read 0 0x1000 8 9", "read: extra token '9'"));
  EXPECT_TRUE(fails("write 0 0x1000 8 9 9", "write: extra token '9'"));
  EXPECT_TRUE(fails("fetch 0 0x1000 1", "fetch: extra token '1'"));
  EXPECT_TRUE(fails("poke 0 1 1 ro", "poke: extra token 'ro'"));
  EXPECT_TRUE(fails("peek 0 1 1", "peek: extra token '1'"));
  EXPECT_TRUE(fails("cr3 0 0 0", "cr3: extra token '0'"));
  EXPECT_TRUE(fails("invlpg 0 0 0", "invlpg: extra token '0'"));
  EXPECT_TRUE(fails("dirty-log 0 get now", "dirty-log: extra token 'now'"));
  EXPECT_TRUE(fails("unmap 0 4K 4K", "unmap: extra token '4K'"));
  EXPECT_TRUE(fails("age 0 4K x", "age: extra token 'x'"));
  EXPECT_TRUE(fails("memslot-delete 0 0", "memslot-delete: extra token '0'"));
  EXPECT_TRUE(fails("memslot-move 0 0 0", "memslot-move: extra token '0'"));
}

TEST(VmtMalformed, UnknownKeysAndFlags) {
  EXPECT_TRUE(fails("regs 0 cr5=1", "regs: unknown key 'cr5'"));
  EXPECT_TRUE(fails("regs 0 cr0=1 CR3=1", "regs: unknown key 'CR3'"));
  EXPECT_TRUE(fails("regs 0 =1", "regs: unknown key ''"));
  EXPECT_TRUE(fails("regs 0 cr0", "regs: unknown flag 'cr0'"));
  EXPECT_TRUE(fails("cpu la48=1", "cpu: unknown key 'la48'"));
  EXPECT_TRUE(fails("cpu gbpages", "cpu: unknown flag 'gbpages'"));
  EXPECT_TRUE(fails("memslot 0 0 4K rw", "memslot: unknown flag 'rw'"));
  EXPECT_TRUE(fails("memslot 0 0 4K ro=1", "memslot: unknown key 'ro'"));
  EXPECT_TRUE(fails("memslot 0 0 4K huge=2m", "memslot: unknown key 'huge'"));
  EXPECT_TRUE(fails("read 0 0x1000 width=4", "read: unknown key 'width'"));
  EXPECT_TRUE(fails("read 0 0x1000 8 x=1", "read: unknown key 'x'"));
  EXPECT_TRUE(fails("audit x=1", "audit: unknown key 'x'"));
  EXPECT_TRUE(fails("vcpu 0 la57=1", "vcpu: unknown key 'la57'"));
}

TEST(VmtMalformed, DuplicateKeysAndFlags) {
  EXPECT_TRUE(fails("regs 0 cr0=1 cr3=2 cr0=1", "regs: duplicate key 'cr0'"));
  EXPECT_TRUE(fails("regs 0 cr3=1 cr3=2", "regs: duplicate key 'cr3'"));
  EXPECT_TRUE(fails("regs 0 cr4=1 cr4=2", "regs: duplicate key 'cr4'"));
  EXPECT_TRUE(fails("regs 0 efer=1 efer=2", "regs: duplicate key 'efer'"));
  EXPECT_TRUE(fails("regs 0 cpl=0 cpl=0", "regs: duplicate key 'cpl'"));
  EXPECT_TRUE(fails("regs 0 ac=0 ac=1", "regs: duplicate key 'ac'"));
  EXPECT_TRUE(fails("regs 0 pkru=0 pkru=0", "regs: duplicate key 'pkru'"));
  EXPECT_TRUE(fails("cpu maxphyaddr=40 maxphyaddr=40", "cpu: duplicate key 'maxphyaddr'"));
  EXPECT_TRUE(fails("cpu gbpages=0 gbpages=0", "cpu: duplicate key 'gbpages'"));
  EXPECT_TRUE(fails("cpu la57=1 la57=0", "cpu: duplicate key 'la57'"));
  EXPECT_TRUE(fails("memslot 0 0 4K ro log ro", "memslot: duplicate flag 'ro'"));
  EXPECT_TRUE(fails("memslot 0 0 4K log log", "memslot: duplicate flag 'log'"));
  EXPECT_TRUE(fails("memslot 0 0 4K host=4k host=4k", "memslot: duplicate key 'host'"));
}

TEST(VmtMalformed, FieldsThatAreNotNumbers) {
  EXPECT_TRUE(fails("memslot x 0 4K", "memslot: SLOT: 'x' is not a number"));
  EXPECT_TRUE(fails("memslot ro 0 4K", "memslot: SLOT: 'ro' is not a number"));
  EXPECT_TRUE(fails("memslot 0 x 4K", "memslot: GPA: 'x' is not a number"));
  EXPECT_TRUE(fails("memslot 0 0 x", "memslot: SIZE: 'x' is not a number"));
  EXPECT_TRUE(fails("vcpu x", "vcpu: ID: 'x' is not a number"));
  EXPECT_TRUE(fails("cr3 0 x", "cr3: X: 'x' is not a number"));
  EXPECT_TRUE(fails("poke x 1 1", "poke: GPA: 'x' is not a number"));
  EXPECT_TRUE(fails("poke 0 x 1", "poke: WIDTH: 'x' is not a number"));
  EXPECT_TRUE(fails("poke 0 1 x", "poke: VALUE: 'x' is not a number"));
  EXPECT_TRUE(fails("read 0 zz", "read: GVA: 'zz' is not a number"));
  EXPECT_TRUE(fails("read 0 0 zz", "read: WIDTH: 'zz' is not a number"));
  EXPECT_TRUE(fails("write 0 0 8 -1", "write: VALUE: '-1' is negative"));
  EXPECT_TRUE(fails("regs 0 cr0=x", "regs: cr0: 'x' is not a number"));
  EXPECT_TRUE(fails("regs 0 efer=0x", "regs: efer: '0x' has no hex digits"));
  EXPECT_TRUE(fails("cpu maxphyaddr=forty", "cpu: maxphyaddr: 'forty' is not a number"));
  EXPECT_TRUE(fails("cpu la57=yes", "cpu: la57: 'yes' is not a number"));
}

TEST(VmtMalformed, Ranges) {
  EXPECT_TRUE(fails("cpu maxphyaddr=31", "cpu: maxphyaddr: 31 is outside 32..52"));
  EXPECT_TRUE(fails("cpu maxphyaddr=53", "cpu: maxphyaddr: 53 is outside 32..52"));
  EXPECT_TRUE(fails("cpu gbpages=2", "cpu: gbpages: 2 is not 0 or 1"));
  EXPECT_TRUE(fails("cpu la57=0x10", "cpu: la57: 16 is not 0 or 1"));
  EXPECT_TRUE(fails("regs 0 cpl=1", "regs: cpl: 1 is not 0 or 3"));
  EXPECT_TRUE(fails("regs 0 cpl=256", "regs: cpl: 256 is not 0 or 3"));
  EXPECT_TRUE(fails("regs 0 ac=2", "regs: ac: 2 is not 0 or 1"));
  EXPECT_TRUE(fails("regs 0 pkru=0x100000000", "regs: pkru: 0x100000000 does not fit in 32 bits"));
  EXPECT_TRUE(fails("vcpu 4294967296", "vcpu: ID: 4294967296 does not fit in 32 bits"));
  EXPECT_TRUE(fails("read 4G 0", "read: ID: 4294967296 does not fit in 32 bits"));
  EXPECT_TRUE(fails("memslot-delete 0x100000000", "memslot-delete: SLOT: 4294967296 does not fit in 32 bits"));
  EXPECT_TRUE(fails("dirty-log 0 on", "dirty-log: ACTION: 'on' is not enable, disable, get or clear"));
  EXPECT_TRUE(fails("memslot 0 0 4K host=4K", "memslot: host: '4K' is not 4k, 2m or 1g"));
  EXPECT_TRUE(fails("memslot 0 0 4K host=", "memslot: host: '' is not 4k, 2m or 1g"));
}

TEST(VmtMalformed, Widths) {
  EXPECT_TRUE(fails("poke 0 3 0", "poke: WIDTH: 3 is not 1, 2, 4 or 8"));
  EXPECT_TRUE(fails("poke 0 0 0", "poke: WIDTH: 0 is not 1, 2, 4 or 8"));
  EXPECT_TRUE(fails("peek 0 16", "peek: WIDTH: 16 is not 1, 2, 4 or 8"));
  EXPECT_TRUE(fails("read 0 0 5", "read: WIDTH: 5 is not 1, 2, 4 or 8"));
  EXPECT_TRUE(fails("write 0 0 0x100 1", "write: WIDTH: 256 is not 1, 2, 4 or 8"));
}

TEST(VmtMalformed, ValueWiderThanWidth) {
  EXPECT_TRUE(fails("poke 0 1 0x1ff", "poke: value 0x1ff does not fit in width 1"));
  EXPECT_TRUE(fails("poke 0 2 65536", "poke: value 0x10000 does not fit in width 2"));
  EXPECT_TRUE(fails("write 0 0 4 0x100000000", "write: value 0x100000000 does not fit in width 4"));
  EXPECT_TRUE(fails("write 0 0 1 256", "write: value 0x100 does not fit in width 1"));
}

TEST(VmtMalformed, AccessCrossesAPage) {
  EXPECT_TRUE(fails("read 0 0xff9", "read: 8-byte access at 0xff9 crosses a 4 KiB page"));
  EXPECT_TRUE(fails("read 0 0x1fff 2", "read: 2-byte access at 0x1fff crosses a 4 KiB page"));
  EXPECT_TRUE(fails("write 0 0xffd 4 0", "write: 4-byte access at 0xffd crosses a 4 KiB page"));
  EXPECT_TRUE(fails("poke 0xfffffffffffffffc 8 0", "poke: 8-byte access at 0xfffffffffffffffc crosses a 4 KiB page"));
  EXPECT_TRUE(fails("peek 0x3ffa 8", "peek: 8-byte access at 0x3ffa crosses a 4 KiB page"));
  // the last bytes of a page are fine
  EXPECT_EQ(parse("read 0 0xfffffffffffffff8").addr, 0xfffffffffffffff8u);
  EXPECT_EQ(parse("write 0 0xffc 4 0").addr, 0xffcu);
  EXPECT_EQ(parse("poke 0xfff 1 0").addr, 0xfffu);
  EXPECT_EQ(parse("peek 0xffe 2").addr, 0xffeu);
}

TEST(VmtMalformed, RangeSizesAndAlignment) {
  EXPECT_TRUE(fails("unmap 0 0", "unmap: SIZE: 0 is not a non-zero multiple of 4 KiB"));
  EXPECT_TRUE(fails("age 0 0x1001", "age: SIZE: 0x1001 is not a multiple of 4 KiB"));
  EXPECT_TRUE(fails("unmap 0 1K", "unmap: SIZE: 0x400 is not a multiple of 4 KiB"));
  EXPECT_TRUE(fails("unmap 0x1800 4K", "unmap: GPA: 0x1800 is not 4 KiB aligned"));
  EXPECT_TRUE(fails("age 0x1 4K", "age: GPA: 0x1 is not 4 KiB aligned"));
  EXPECT_TRUE(fails("unmap 0xfffffffffffff000 8K", "unmap: GPA 0xfffffffffffff000 + SIZE 0x2000 overflows 64 bits"));
  EXPECT_TRUE(fails("age 0x2000 0xfffffffffffff000", "age: GPA 0x2000 + SIZE 0xfffffffffffff000 overflows 64 bits"));
  EXPECT_EQ(parse("age 0x1000 0xfffffffffffff000").size, 0xfffffffffffff000u);  // ends at 2^64 exactly
  EXPECT_TRUE(fails("memslot 0 0x800 4K", "memslot: GPA: 0x800 is not 4 KiB aligned"));
  EXPECT_TRUE(fails("memslot 0 0 0", "memslot: SIZE: 0 is not a non-zero multiple of 4 KiB"));
  EXPECT_TRUE(fails("memslot 0 0 6K", "memslot: SIZE: 0x1800 is not a multiple of 4 KiB"));
  EXPECT_TRUE(fails("memslot-move 0 0x10", "memslot-move: GPA: 0x10 is not 4 KiB aligned"));
}

TEST(VmtMalformed, EmptyLineThroughParseLine) {
  EXPECT_THROW(VmtReader::parse_line("  # nothing", 3), ParseError);
  try {
    VmtReader::parse_line("", 3);
  } catch (const ParseError& e) {
    EXPECT_EQ(e.line(), 3u);
    EXPECT_STREQ(e.what(), "empty line: expected an op");
  }
}

// ---------------------------------------------------------------------------------------------
// Property: printing a random valid op as a line and parsing it gives the same op back.

// A uniform pick in [lo, hi) whatever rapidcheck's current size (inRange scales with it).
template <class T>
T uniform(T lo, T hi) {
  return *rc::gen::resize(rc::kNominalSize, rc::gen::inRange<T>(lo, hi));
}

uint64_t any_u64() {
  // Mostly small or structured numbers, sometimes anything.
  switch (uniform(0, 4)) {
    case 0: return uniform<uint64_t>(0, 4096);
    case 1: return uniform<uint64_t>(0, 1u << 20) << uniform(0, 33);
    case 2: return UINT64_MAX - uniform<uint64_t>(0, 4096);
    default: return *rc::gen::resize(rc::kNominalSize, rc::gen::arbitrary<uint64_t>());
  }
}

uint8_t any_width() { return *rc::gen::element<uint8_t>(1, 2, 4, 8); }

uint64_t fit(uint64_t v, uint8_t width) { return width == 8 ? v : v & ((1ull << (8 * width)) - 1); }

// An address whose page offset leaves room for `width` bytes.
uint64_t in_page(uint64_t v, uint8_t width) {
  const uint64_t off = (v & 0xfff) % (4096 - width + 1);
  return (v & ~0xfffull) | off;
}

uint64_t nonzero_pages(uint64_t v) {
  const uint64_t pages = (v >> 12) == 0 ? 1 : v >> 12;
  return pages << 12;
}

Op random_op() {
  Op op;
  op.kind = static_cast<OpKind>(uniform(0, static_cast<int>(OpKind::Stats) + 1));
  op.line = 2;
  switch (op.kind) {
    case OpKind::Cpu:
      if (*rc::gen::arbitrary<bool>()) op.maxphyaddr = uniform(32u, 53u);
      if (*rc::gen::arbitrary<bool>()) op.gbpages = *rc::gen::arbitrary<bool>();
      if (*rc::gen::arbitrary<bool>()) op.la57 = *rc::gen::arbitrary<bool>();
      break;
    case OpKind::Memslot:
      op.id = *rc::gen::arbitrary<uint32_t>();
      op.addr = any_u64() & ~0xfffull;
      op.size = nonzero_pages(any_u64());
      op.readonly = *rc::gen::arbitrary<bool>();
      op.log = *rc::gen::arbitrary<bool>();
      op.host_page = *rc::gen::element(HostPageSize::Size4K, HostPageSize::Size2M, HostPageSize::Size1G);
      break;
    case OpKind::MemslotDelete:
    case OpKind::Vcpu:
    case OpKind::Flush: op.id = *rc::gen::arbitrary<uint32_t>(); break;
    case OpKind::MemslotMove:
      op.id = *rc::gen::arbitrary<uint32_t>();
      op.addr = any_u64() & ~0xfffull;
      break;
    case OpKind::Regs:
      op.id = *rc::gen::arbitrary<uint32_t>();
      if (*rc::gen::arbitrary<bool>()) op.regs.cr0 = any_u64();
      if (*rc::gen::arbitrary<bool>()) op.regs.cr3 = any_u64();
      if (*rc::gen::arbitrary<bool>()) op.regs.cr4 = any_u64();
      if (*rc::gen::arbitrary<bool>()) op.regs.efer = any_u64();
      if (*rc::gen::arbitrary<bool>()) op.regs.cpl = *rc::gen::element<uint8_t>(0, 3);
      if (*rc::gen::arbitrary<bool>()) op.regs.ac = *rc::gen::arbitrary<bool>();
      if (*rc::gen::arbitrary<bool>()) op.regs.pkru = *rc::gen::arbitrary<uint32_t>();
      break;
    case OpKind::Cr3:
    case OpKind::Invlpg:
      op.id = *rc::gen::arbitrary<uint32_t>();
      op.addr = any_u64();
      break;
    case OpKind::Poke:
    case OpKind::Write:
      if (op.kind == OpKind::Write) op.id = *rc::gen::arbitrary<uint32_t>();
      op.width = any_width();
      op.addr = in_page(any_u64(), op.width);
      op.value = fit(any_u64(), op.width);
      break;
    case OpKind::Read:
      op.id = *rc::gen::arbitrary<uint32_t>();
      op.width = any_width();
      op.addr = in_page(any_u64(), op.width);
      break;
    case OpKind::Peek:
      op.width = any_width();
      op.addr = in_page(any_u64(), op.width);
      break;
    case OpKind::Fetch:
      op.id = *rc::gen::arbitrary<uint32_t>();
      op.addr = any_u64();
      op.width = 1;
      break;
    case OpKind::DirtyLog:
      op.id = *rc::gen::arbitrary<uint32_t>();
      op.dirty = *rc::gen::element(DirtyLogAction::Enable, DirtyLogAction::Disable, DirtyLogAction::Get, DirtyLogAction::Clear);
      break;
    case OpKind::Unmap:
    case OpKind::Age:
      op.addr = any_u64() & ~0xfffull;
      op.size = nonzero_pages(any_u64());
      if (op.size - 1 > UINT64_MAX - op.addr) op.size = (UINT64_MAX - op.addr) + 1;  // up to 2^64 exactly
      break;
    case OpKind::Audit:
    case OpKind::Stats: break;
  }
  return op;
}

// A number in any of the forms the contract allows.
std::string number(uint64_t v) {
  static const char* const HEX_LOWER = "0123456789abcdef";
  static const char* const HEX_UPPER = "0123456789ABCDEF";
  const int style = uniform(0, 5);
  auto hex = [&](const char* digits) {
    std::string s;
    do {
      s.insert(s.begin(), digits[v & 15]);
      v >>= 4;
    } while (v);
    return "0x" + s;
  };
  switch (style) {
    case 1: return hex(HEX_LOWER);
    case 2: return hex(HEX_UPPER);
    case 3:  // with a suffix when it divides
      if (v != 0 && v % (1ull << 30) == 0) return std::to_string(v >> 30) + "G";
      if (v != 0 && v % (1ull << 20) == 0) return std::to_string(v >> 20) + "M";
      if (v % (1ull << 10) == 0) return std::to_string(v >> 10) + "K";
      return std::to_string(v);
    case 4: return std::string(*rc::gen::inRange<size_t>(1, 4), '0') + std::to_string(v);
    default: return std::to_string(v);
  }
}

std::string print(const Op& op) {
  std::vector<std::string> fields{std::string(op_name(op.kind))};
  std::vector<std::string> options;
  auto num = [&](uint64_t v) { fields.push_back(number(v)); };
  switch (op.kind) {
    case OpKind::Cpu:
      if (op.maxphyaddr) options.push_back("maxphyaddr=" + number(*op.maxphyaddr));
      if (op.gbpages) options.push_back("gbpages=" + number(*op.gbpages));
      if (op.la57) options.push_back("la57=" + number(*op.la57));
      break;
    case OpKind::Memslot:
      num(op.id);
      num(op.addr);
      num(op.size);
      if (op.readonly) options.push_back("ro");
      if (op.log) options.push_back("log");
      if (op.host_page != HostPageSize::Size4K || *rc::gen::arbitrary<bool>())
        options.push_back(std::string("host=") +
                          (op.host_page == HostPageSize::Size4K ? "4k" : op.host_page == HostPageSize::Size2M ? "2m" : "1g"));
      break;
    case OpKind::MemslotDelete:
    case OpKind::Vcpu:
    case OpKind::Flush: num(op.id); break;
    case OpKind::MemslotMove:
    case OpKind::Cr3:
    case OpKind::Invlpg:
    case OpKind::Fetch:
      num(op.id);
      num(op.addr);
      break;
    case OpKind::Regs:
      num(op.id);
      if (op.regs.cr0) options.push_back("cr0=" + number(*op.regs.cr0));
      if (op.regs.cr3) options.push_back("cr3=" + number(*op.regs.cr3));
      if (op.regs.cr4) options.push_back("cr4=" + number(*op.regs.cr4));
      if (op.regs.efer) options.push_back("efer=" + number(*op.regs.efer));
      if (op.regs.cpl) options.push_back("cpl=" + number(*op.regs.cpl));
      if (op.regs.ac) options.push_back("ac=" + number(*op.regs.ac));
      if (op.regs.pkru) options.push_back("pkru=" + number(*op.regs.pkru));
      break;
    case OpKind::Poke:
      num(op.addr);
      num(op.width);
      num(op.value);
      break;
    case OpKind::Read:
      num(op.id);
      num(op.addr);
      if (op.width != 8 || *rc::gen::arbitrary<bool>()) num(op.width);
      break;
    case OpKind::Write:
      num(op.id);
      num(op.addr);
      num(op.width);
      num(op.value);
      break;
    case OpKind::Peek:
      num(op.addr);
      num(op.width);
      break;
    case OpKind::DirtyLog: {
      num(op.id);
      const char* const words[] = {"enable", "disable", "get", "clear"};
      fields.push_back(words[static_cast<int>(op.dirty)]);
      break;
    }
    case OpKind::Unmap:
    case OpKind::Age:
      num(op.addr);
      num(op.size);
      break;
    case OpKind::Audit:
    case OpKind::Stats: break;
  }
  // options in any order after the positional fields
  for (size_t i = options.size(); i > 1; --i) std::swap(options[i - 1], options[uniform<size_t>(0, i)]);
  fields.insert(fields.end(), options.begin(), options.end());

  auto blanks = [] { return *rc::gen::container<std::string>(*rc::gen::inRange(1, 4), rc::gen::element(' ', '\t')); };
  std::string line = *rc::gen::arbitrary<bool>() ? blanks() : "";
  for (size_t i = 0; i < fields.size(); ++i) line += (i ? blanks() : "") + fields[i];
  if (*rc::gen::arbitrary<bool>()) line += blanks();
  if (*rc::gen::arbitrary<bool>()) line += "# a comment: read 0 zz\tx=1 # vmt 2";
  if (*rc::gen::arbitrary<bool>()) line += "\r";
  return line;
}

}  // namespace

RC_GTEST_PROP(VmtProperty, PrintedOpParsesBack, ()) {
  const Op op = random_op();
  const std::string line = print(op);
  RC_TAG(op_name(op.kind));
  const Op got = VmtReader::parse_line(line, op.line);
  RC_ASSERT(describe(got) == describe(op));
}

// The same for whole files: random ops among comments and blank lines, read by the stream reader.
RC_GTEST_PROP(VmtProperty, PrintedFileParsesBack, ()) {
  const int n = uniform(0, 40);
  std::string text = *rc::gen::arbitrary<bool>() ? "# generated\n\n" : "";
  uint64_t line = 1 + std::count(text.begin(), text.end(), '\n');
  text += "vmt 1\n";
  std::vector<Op> want;
  for (int i = 0; i < n; ++i) {
    for (int extra = uniform(0, 4) - 2; extra > 0; --extra) {
      text += *rc::gen::element<std::string>("", "  \t", "# comment", "\r", "\t# x=1 read") + "\n";
      ++line;
    }
    Op op = random_op();
    op.line = ++line;
    text += print(op) + "\n";
    want.push_back(op);
  }
  const std::vector<Op> got = read_all(text);
  RC_ASSERT(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) RC_ASSERT(describe(got[i]) == describe(want[i]));
  // and the same when the input comes a few bytes at a time
  const std::vector<Op> trickled = read_trickled(text, uniform<size_t>(1, 40));
  RC_ASSERT(trickled.size() == want.size());
  for (size_t i = 0; i < trickled.size(); ++i) RC_ASSERT(describe(trickled[i]) == describe(want[i]));
}

// Any single token that is not a valid number gives an error and never a wrong value; a valid one
// gives its value.
RC_GTEST_PROP(VmtProperty, NumbersParseExactlyOrFail, (uint64_t v)) {
  const std::string text = number(v);
  const Op op = VmtReader::parse_line("cr3 0 " + text, 1);
  RC_ASSERT(op.addr == v);
}

RC_GTEST_PROP(VmtProperty, GarbageNeverCrashes, (std::string line)) {
  try {
    const Op op = VmtReader::parse_line(line, 9);
    RC_ASSERT(op.line == 9u);
  } catch (const ParseError& e) {
    RC_ASSERT(e.line() == 9u);
    RC_ASSERT(std::string(e.what()).size() > 0u);
  }
}

}  // namespace vmmu::sim

// ---------------------------------------------------------------------------------------------
// The fuzzer's seed corpus (fuzz/corpus/vmt_text/: the shipped workloads, hand-made files and the
// reproducer of every crash fuzzing found; docs/RELIABILITY.md): each file reads to its end or
// stops at one ParseError, the same whether it comes whole or a few bytes at a time.
#include <filesystem>
#include <fstream>

namespace vmmu::sim {
namespace {

// Every op described, then the error if one stopped the read.
std::string outcome(const std::string& text, size_t step) {
  std::string out;
  try {
    for (const Op& op : step ? read_trickled(text, step) : read_all(text)) out += describe(op) + "\n";
  } catch (const ParseError& e) {
    out += "error at line " + std::to_string(e.line()) + ": " + e.what() + "\n";
  }
  return out;
}

TEST(VmtFuzzCorpus, EverySeedReadsTheSameWholeOrInPieces) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(VMMU_SOURCE_DIR) / "fuzz" / "corpus" / "vmt_text";
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    const std::string whole = outcome(text, 0);
    for (size_t step : {1, 3, 97}) EXPECT_EQ(outcome(text, step), whole) << e.path() << " in pieces of " << step;
    ++files;
  }
  EXPECT_GE(files, 10u);
}

}  // namespace
}  // namespace vmmu::sim

// Regression, found while looking at why the fuzzer's long-line inputs ran slowly: each refill of
// the window searched the whole partial line again for its '\n', so a line of L bytes arriving
// in pieces of p bytes cost L^2 / 2p. This read took 4.4 s (release build); it now takes 0.3 s,
// as the reader searches only the new bytes.
namespace vmmu::sim {
namespace {

TEST(VmtReaderRegression, LongLineInSmallPiecesIsReadInLinearTime) {
  const std::string text = "vmt 1\n# " + std::string(size_t{4} << 20, 'c') + "\nvcpu 7\n";
  const std::vector<Op> ops = read_trickled(text, 64);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].id, 7u);
  EXPECT_EQ(ops[0].line, 3u);
}

}  // namespace
}  // namespace vmmu::sim
