// The text .vmt parser (VMT-FORMAT.md, version 1).
//
// It checks syntax, ranges and widths only: whatever needs VM state (an unknown vcpu, a poke
// outside every slot, PG without PE, overlapping slots...) is the library's to refuse, and the
// replayer reports its UsageError at the same FILE:LINE.
//
// Speed matters (traces of billions of ops): the input is taken in chunks from the stream buffer
// and each line is parsed in place, numbers straight from the line with a fast path for plain
// decimal and hex; nothing is allocated except the reused input window and error messages.
#include "sim/vmt_reader.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>

namespace vmmu::sim {

namespace {

using std::string_view;

constexpr uint64_t PAGE = 4096;

constexpr bool is_blank(char c) { return c == ' ' || c == '\t'; }
constexpr bool is_digit(unsigned char c) { return static_cast<unsigned>(c - '0') <= 9u; }

// A token as it appears in a message: quoted, with unprintable bytes escaped, cut if very long.
std::string quote(string_view tok) {
  constexpr size_t MAX_SHOWN = 64;
  std::string out = "'";
  const bool cut = tok.size() > MAX_SHOWN;
  if (cut) tok = tok.substr(0, MAX_SHOWN);
  for (const char c : tok) {
    const auto u = static_cast<unsigned char>(c);
    if (u == '\\' || u == '\'') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u >= 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  out += cut ? "'..." : "'";
  return out;
}

constexpr bool is_separator(char c) { return c == ' ' || c == '\t' || c == '#'; }

// Walks one line: tokens are separated by blanks, and `#` ends the line wherever it is.
class Cursor {
 public:
  explicit Cursor(string_view line) : p_(line.data()), end_(line.data() + line.size()) {
    if (p_ != end_ && end_[-1] == '\r') --end_;  // CRLF line ends
  }
  // Skips blanks: false at the end of the line (or a comment), else a token starts at p().
  bool at_token() {
    while (p_ != end_ && is_blank(*p_)) ++p_;
    if (p_ == end_ || *p_ == '#') {
      p_ = end_;
      return false;
    }
    return true;
  }
  // The token at p() (after at_token() said there is one).
  string_view token() {
    const char* const b = p_;
    while (p_ != end_ && !is_separator(*p_)) ++p_;
    return {b, static_cast<size_t>(p_ - b)};
  }
  bool next(string_view& tok) {
    if (!at_token()) return false;
    tok = token();
    return true;
  }
  const char* p() const { return p_; }
  const char* end() const { return end_; }
  void skip_to(const char* p) { p_ = p; }

 private:
  const char* p_;
  const char* end_;
};

enum class NumStatus : uint8_t { Ok, Empty, NoDigits, Negative, NotNumber, Junk, Overflow };

// Digit values: 0..15 for hex digits of either case, 0xff for anything else.
constexpr std::array<uint8_t, 256> HEX_DIGIT = [] {
  std::array<uint8_t, 256> t{};
  for (auto& v : t) v = 0xff;
  for (int c = '0'; c <= '9'; ++c) t[c] = static_cast<uint8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[c] = static_cast<uint8_t>(c - 'a' + 10);
  for (int c = 'A'; c <= 'F'; ++c) t[c] = static_cast<uint8_t>(c - 'A' + 10);
  return t;
}();

// A number of the contract: decimal (optionally with a K, M or G suffix, powers of 1024) or `0x`
// hex (digits of either case). `end` is where the number's characters stop (for Junk).
NumStatus parse_number(string_view s, uint64_t& out, size_t& end) {
  const size_t n = s.size();
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  uint64_t v = 0;
  size_t i = 0;
  if (n == 0) return NumStatus::Empty;
  if (n >= 2 && p[0] == '0' && p[1] == 'x') {
    // At most 16 significant digits: leading zeros first, then the digits that count.
    i = 2;
    while (i < n && p[i] == '0') ++i;
    const size_t first = i;
    uint8_t d;
    while (i < n && (d = HEX_DIGIT[p[i]]) != 0xff) {
      v = (v << 4) | d;
      ++i;
    }
    if (i == 2) return n == 2 ? NumStatus::NoDigits : NumStatus::NotNumber;
    if (i - first > 16) return NumStatus::Overflow;
  } else {
    if (!is_digit(p[0])) return p[0] == '-' && n > 1 && is_digit(p[1]) ? NumStatus::Negative : NumStatus::NotNumber;
    unsigned d;
    while (i < n && (d = static_cast<unsigned>(p[i] - '0')) <= 9u) {
      if (v > (UINT64_MAX - d) / 10) return NumStatus::Overflow;
      v = v * 10 + d;
      ++i;
    }
    if (i < n) {
      unsigned shift = 0;
      switch (p[i]) {
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        default: break;
      }
      if (shift != 0) {
        ++i;
        if (v > (UINT64_MAX >> shift)) {
          end = i;
          // junk after an overflowing suffix is still junk: report what comes first in reading
          return i < n ? NumStatus::Junk : NumStatus::Overflow;
        }
        v <<= shift;
      }
    }
  }
  end = i;
  if (i < n) [[unlikely]] return NumStatus::Junk;
  out = v;
  return NumStatus::Ok;
}

constexpr bool valid_width(uint64_t w) { return w == 1 || w == 2 || w == 4 || w == 8; }

struct OpName {
  string_view name;
  OpKind kind;
};

// The hot ops first.
constexpr std::array<OpName, 19> OP_NAMES{{
    {"read", OpKind::Read},
    {"write", OpKind::Write},
    {"fetch", OpKind::Fetch},
    {"invlpg", OpKind::Invlpg},
    {"poke", OpKind::Poke},
    {"peek", OpKind::Peek},
    {"cr3", OpKind::Cr3},
    {"flush", OpKind::Flush},
    {"regs", OpKind::Regs},
    {"unmap", OpKind::Unmap},
    {"age", OpKind::Age},
    {"dirty-log", OpKind::DirtyLog},
    {"audit", OpKind::Audit},
    {"stats", OpKind::Stats},
    {"memslot", OpKind::Memslot},
    {"memslot-delete", OpKind::MemslotDelete},
    {"memslot-move", OpKind::MemslotMove},
    {"vcpu", OpKind::Vcpu},
    {"cpu", OpKind::Cpu},
}};

bool lookup_op(string_view name, OpKind& kind) {
  for (const OpName& o : OP_NAMES) {
    if (o.name == name) {
      kind = o.kind;
      return true;
    }
  }
  return false;
}

// Parses the fields of one op line; every error names the op and the field.
class LineParser {
 public:
  LineParser(string_view text, uint64_t line) : cur_(text), line_(line) {}

  // False for a blank or comment-only line.
  bool has_content() { return cur_.at_token(); }

  void parse(Op& op) {
    string_view first;
    if (!cur_.next(first)) fail("empty line: expected an op");
    if (!lookup_op(first, op.kind)) [[unlikely]] {
      if (first == "vmt") fail("repeated 'vmt' header: it may only be the first line");
      fail(fmt::format("unknown op {}", quote(first)));
    }
    name_ = first;
    switch (op.kind) {
      case OpKind::Read:
        op.id = id("ID");
        op.addr = number("GVA");
        if (cur_.at_token()) {
          if (!is_digit(static_cast<unsigned char>(*cur_.p()))) {  // not a number: a key=value (no op takes one) or junk
            const string_view tok = cur_.token();
            if (tok.find('=') != string_view::npos) unknown_key(tok);
            number(tok, "WIDTH");  // fails
          }
          op.width = width();
        }
        check_page(op.addr, op.width);
        break;
      case OpKind::Write:
        op.id = id("ID");
        op.addr = number("GVA");
        op.width = width();
        op.value = value(op.width);
        check_page(op.addr, op.width);
        break;
      case OpKind::Fetch:
        op.id = id("ID");
        op.addr = number("GVA");
        op.width = 1;
        break;
      case OpKind::Invlpg:
        op.id = id("ID");
        op.addr = number("GVA");
        break;
      case OpKind::Poke:
        op.addr = number("GPA");
        op.width = width();
        op.value = value(op.width);
        check_page(op.addr, op.width);
        break;
      case OpKind::Peek:
        op.addr = number("GPA");
        op.width = width();
        check_page(op.addr, op.width);
        break;
      case OpKind::Cr3:
        op.id = id("ID");
        op.addr = number("X");
        break;
      case OpKind::Flush:
      case OpKind::Vcpu:
        op.id = id("ID");
        break;
      case OpKind::Regs:
        op.id = id("ID");
        regs_options(op.regs);
        return;
      case OpKind::Unmap:
      case OpKind::Age:
        op.addr = aligned_gpa();
        op.size = page_size();
        if (op.size - 1 > UINT64_MAX - op.addr)
          fail(fmt::format("{}: GPA 0x{:x} + SIZE 0x{:x} overflows 64 bits", name_, op.addr, op.size));
        break;
      case OpKind::DirtyLog: {
        op.id = id("SLOT");
        const string_view a = required("ACTION");
        if (a == "enable") {
          op.dirty = DirtyLogAction::Enable;
        } else if (a == "disable") {
          op.dirty = DirtyLogAction::Disable;
        } else if (a == "get") {
          op.dirty = DirtyLogAction::Get;
        } else if (a == "clear") {
          op.dirty = DirtyLogAction::Clear;
        } else {
          fail_field("ACTION", fmt::format("{} is not enable, disable, get or clear", quote(a)));
        }
        break;
      }
      case OpKind::Audit:
      case OpKind::Stats:
        break;
      case OpKind::Memslot:
        op.id = id("SLOT");
        op.addr = aligned_gpa();
        op.size = page_size();
        memslot_options(op);
        return;
      case OpKind::MemslotDelete:
        op.id = id("SLOT");
        break;
      case OpKind::MemslotMove:
        op.id = id("SLOT");
        op.addr = aligned_gpa();
        break;
      case OpKind::Cpu:
        cpu_options(op);
        return;
    }
    no_more();
  }

  // The header line `vmt 1` (known to have content).
  void header() {
    string_view first, version;
    cur_.next(first);
    if (first != "vmt") {
      OpKind kind;
      if (lookup_op(first, kind)) fail("expected 'vmt 1' header before the first op");
      fail(fmt::format("expected 'vmt 1' header, got {}", quote(first)));
    }
    if (!cur_.next(version)) fail("vmt: missing version (expected 'vmt 1')");
    uint64_t v = 0;
    size_t end = 0;
    if (parse_number(version, v, end) != NumStatus::Ok)
      fail(fmt::format("vmt: version {} is not a number (expected 'vmt 1')", quote(version)));
    if (v != 1) fail(fmt::format("unsupported .vmt version {}", v));
    if (string_view extra; cur_.next(extra)) fail(fmt::format("vmt: extra token {}", quote(extra)));
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw ParseError(line_, what); }
  [[noreturn]] void fail_field(string_view field, const std::string& what) const {
    fail(fmt::format("{}: {}: {}", name_, field, what));
  }
  [[noreturn]] void missing(string_view field) const { fail(fmt::format("{}: missing {}", name_, field)); }

  string_view required(string_view field) {
    string_view tok;
    if (!cur_.next(tok)) missing(field);
    return tok;
  }

  // The next token as a number. Plain decimal (up to 19 digits) and hex (up to 16 digits) are
  // read straight from the line; anything else (a suffix, more digits, an error) by the full
  // parse of the token, which gives the same value or says what is wrong.
  uint64_t number(string_view field) {
    if (!cur_.at_token()) missing(field);
    const char* const start = cur_.p();
    const char* const end = cur_.end();
    const char* p = start;
    uint64_t v = 0;
    if (end - p > 2 && p[0] == '0' && p[1] == 'x') {
      p += 2;
      const char* const limit = end - p > 16 ? p + 16 : end;
      uint8_t d;
      while (p != limit && (d = HEX_DIGIT[static_cast<unsigned char>(*p)]) != 0xff) {
        v = (v << 4) | d;
        ++p;
      }
      if (p != start + 2 && (p == end || is_separator(*p))) {
        cur_.skip_to(p);
        return v;
      }
    } else {
      const char* const limit = end - p > 19 ? p + 19 : end;
      unsigned d;
      while (p != limit && (d = static_cast<unsigned>(static_cast<unsigned char>(*p) - '0')) <= 9u) {
        v = v * 10 + d;
        ++p;
      }
      if (p != start && (p == end || is_separator(*p))) {
        cur_.skip_to(p);
        return v;
      }
    }
    return number(cur_.token(), field);
  }

  // `tok` as a number, or the error that says why not.
  uint64_t number(string_view tok, string_view field) const {
    uint64_t v = 0;
    size_t end = 0;
    switch (parse_number(tok, v, end)) {
      case NumStatus::Ok: return v;
      case NumStatus::Empty: fail_field(field, "empty number");
      case NumStatus::NoDigits: fail_field(field, fmt::format("{} has no hex digits", quote(tok)));
      case NumStatus::Negative: fail_field(field, fmt::format("{} is negative", quote(tok)));
      case NumStatus::NotNumber: fail_field(field, fmt::format("{} is not a number", quote(tok)));
      case NumStatus::Junk:
        fail_field(field, fmt::format("{} is not a number: junk after {}", quote(tok), quote(tok.substr(0, end))));
      case NumStatus::Overflow: fail_field(field, fmt::format("{} does not fit in 64 bits", quote(tok)));
    }
    fail_field(field, "bad number");
  }

  uint32_t id(string_view field) {
    const uint64_t v = number(field);
    if (v > UINT32_MAX) fail_field(field, fmt::format("{} does not fit in 32 bits", v));
    return static_cast<uint32_t>(v);
  }

  uint8_t width() {
    const uint64_t w = number("WIDTH");
    if (!valid_width(w)) fail_field("WIDTH", fmt::format("{} is not 1, 2, 4 or 8", w));
    return static_cast<uint8_t>(w);
  }

  uint64_t value(uint8_t width) {
    const uint64_t v = number("VALUE");
    if (width < 8 && (v >> (8 * width)) != 0) fail(fmt::format("{}: value 0x{:x} does not fit in width {}", name_, v, width));
    return v;
  }

  void check_page(uint64_t addr, uint8_t width) const {
    if ((addr & (PAGE - 1)) + width > PAGE)
      fail(fmt::format("{}: {}-byte access at 0x{:x} crosses a 4 KiB page", name_, width, addr));
  }

  uint64_t aligned_gpa() {
    const uint64_t gpa = number("GPA");
    if (gpa & (PAGE - 1)) fail_field("GPA", fmt::format("0x{:x} is not 4 KiB aligned", gpa));
    return gpa;
  }

  uint64_t page_size() {
    const uint64_t size = number("SIZE");
    if (size == 0) fail_field("SIZE", "0 is not a non-zero multiple of 4 KiB");
    if (size & (PAGE - 1)) fail_field("SIZE", fmt::format("0x{:x} is not a multiple of 4 KiB", size));
    return size;
  }

  [[noreturn]] void unknown_key(string_view tok) const {
    fail(fmt::format("{}: unknown key {}", name_, quote(tok.substr(0, tok.find('=')))));
  }

  // The end of an op without options: any further token is an error.
  void no_more() {
    string_view tok;
    if (!cur_.next(tok)) return;
    if (tok.find('=') != string_view::npos) unknown_key(tok);
    fail(fmt::format("{}: extra token {}", name_, quote(tok)));
  }

  // Splits `key=value`; false for a flag (no '=').
  static bool split_option(string_view tok, string_view& key, string_view& val) {
    const size_t eq = tok.find('=');
    if (eq == string_view::npos) return false;
    key = tok.substr(0, eq);
    val = tok.substr(eq + 1);
    return true;
  }

  [[noreturn]] void duplicate_key(string_view key) const { fail(fmt::format("{}: duplicate key {}", name_, quote(key))); }
  [[noreturn]] void unknown_flag(string_view tok) const { fail(fmt::format("{}: unknown flag {}", name_, quote(tok))); }

  bool bit(string_view key, string_view val) const {
    const uint64_t v = number(val, key);
    if (v > 1) fail_field(key, fmt::format("{} is not 0 or 1", v));
    return v != 0;
  }

  void cpu_options(Op& op) {
    string_view tok, key, val;
    while (cur_.next(tok)) {
      if (!split_option(tok, key, val)) unknown_flag(tok);
      if (key == "maxphyaddr") {
        if (op.maxphyaddr) duplicate_key(key);
        const uint64_t m = number(val, key);
        if (m < 32 || m > 52) fail_field(key, fmt::format("{} is outside 32..52", m));
        op.maxphyaddr = static_cast<unsigned>(m);
      } else if (key == "gbpages") {
        if (op.gbpages) duplicate_key(key);
        op.gbpages = bit(key, val);
      } else if (key == "la57") {
        if (op.la57) duplicate_key(key);
        op.la57 = bit(key, val);
      } else {
        unknown_key(tok);
      }
    }
  }

  void memslot_options(Op& op) {
    bool seen_ro = false, seen_log = false, seen_host = false;
    string_view tok, key, val;
    while (cur_.next(tok)) {
      if (!split_option(tok, key, val)) {
        if (tok == "ro") {
          if (seen_ro) fail(fmt::format("{}: duplicate flag 'ro'", name_));
          seen_ro = op.readonly = true;
        } else if (tok == "log") {
          if (seen_log) fail(fmt::format("{}: duplicate flag 'log'", name_));
          seen_log = op.log = true;
        } else {
          unknown_flag(tok);
        }
      } else if (key == "host") {
        if (seen_host) duplicate_key(key);
        seen_host = true;
        if (val == "4k") {
          op.host_page = guest::HostPageSize::Size4K;
        } else if (val == "2m") {
          op.host_page = guest::HostPageSize::Size2M;
        } else if (val == "1g") {
          op.host_page = guest::HostPageSize::Size1G;
        } else {
          fail_field(key, fmt::format("{} is not 4k, 2m or 1g", quote(val)));
        }
      } else {
        unknown_key(tok);
      }
    }
  }

  void regs_options(RegisterUpdate& r) {
    string_view tok, key, val;
    while (cur_.next(tok)) {
      if (!split_option(tok, key, val)) unknown_flag(tok);
      std::optional<uint64_t>* const reg = key == "cr0"    ? &r.cr0
                                           : key == "cr3"  ? &r.cr3
                                           : key == "cr4"  ? &r.cr4
                                           : key == "efer" ? &r.efer
                                                           : nullptr;
      if (reg) {
        if (*reg) duplicate_key(key);
        *reg = number(val, key);
      } else if (key == "cpl") {
        if (r.cpl) duplicate_key(key);
        const uint64_t c = number(val, key);
        if (c != 0 && c != 3) fail_field(key, fmt::format("{} is not 0 or 3", c));
        r.cpl = static_cast<uint8_t>(c);
      } else if (key == "ac") {
        if (r.ac) duplicate_key(key);
        r.ac = bit(key, val);
      } else if (key == "pkru") {
        if (r.pkru) duplicate_key(key);
        const uint64_t p = number(val, key);
        if (p > UINT32_MAX) fail_field(key, fmt::format("0x{:x} does not fit in 32 bits", p));
        r.pkru = static_cast<uint32_t>(p);
      } else {
        unknown_key(tok);
      }
    }
  }

  Cursor cur_;
  uint64_t line_;
  string_view name_;
};

constexpr size_t CHUNK = size_t{64} << 10;

// The next line of the input (without its '\n') from the window buf[pos, end), refilled from
// `in`'s stream buffer with whatever it has (at least one byte, so a pipe is read as it comes).
bool read_line(std::istream& in, std::string& buf, size_t& pos, size_t& end, bool& eof, string_view& line) {
  // [pos, scanned) holds no '\n': each refill searches only the new bytes, so a long line that
  // arrives in small pieces costs linear time, not quadratic.
  size_t scanned = pos;
  for (;;) {
    if (scanned != end) {
      if (const void* nl = std::memchr(buf.data() + scanned, '\n', end - scanned)) {
        const auto at = static_cast<size_t>(static_cast<const char*>(nl) - buf.data());
        line = string_view(buf.data() + pos, at - pos);
        pos = at + 1;
        return true;
      }
      scanned = end;
    }
    if (eof) {
      if (pos == end) return false;
      line = string_view(buf.data() + pos, end - pos);  // the last line has no '\n'
      pos = end;
      return true;
    }
    // Keep the partial line at the front, grow for a long line, then append.
    if (pos != 0) {
      std::memmove(buf.data(), buf.data() + pos, end - pos);
      end -= pos;
      scanned -= pos;
      pos = 0;
    }
    if (buf.size() - end < CHUNK / 2) buf.resize(std::max(CHUNK, 2 * buf.size()));
    std::streambuf* const sb = in.rdbuf();
    if (sb == nullptr || std::streambuf::traits_type::eq_int_type(sb->sgetc(), std::streambuf::traits_type::eof())) {
      eof = true;
      continue;
    }
    const std::streamsize avail = sb->in_avail();  // what the stream holds now (>= 1 if buffered)
    const auto want = static_cast<std::streamsize>(std::min(buf.size() - end, avail > 0 ? static_cast<size_t>(avail) : size_t{1}));
    end += static_cast<size_t>(sb->sgetn(buf.data() + end, want));
  }
}

}  // namespace

VmtReader::VmtReader(std::istream& in) : in_(in) {}

bool VmtReader::next(Op& op) {
  string_view text;
  while (read_line(in_, buf_, pos_, end_, eof_, text)) {
    ++line_;
    LineParser parser(text, line_);
    if (!parser.has_content()) continue;
    if (!header_seen_) [[unlikely]] {
      parser.header();
      header_seen_ = true;
      continue;
    }
    op = Op{};
    op.line = line_;
    parser.parse(op);
    return true;
  }
  if (!header_seen_) throw ParseError(line_ == 0 ? 1 : line_, "missing 'vmt 1' header: the input has no op");
  return false;
}

Op VmtReader::parse_line(string_view text, uint64_t line) {
  Op op;
  op.line = line;
  LineParser(text, line).parse(op);
  return op;
}

bool VmtTextSource::next(Op& op) {
  try {
    return reader_.next(op);
  } catch (const ParseError& e) {
    throw OpSourceError(name_ + ":" + std::to_string(e.line()) + ": " + e.what());
  }
}

}  // namespace vmmu::sim
