#include "sim/trace_import/pin_reader.hpp"

#include <utility>

#include "sim/trace_import/trace_fields.hpp"

namespace vmmu::sim::trace_import {

namespace {

// The next whitespace-separated token of `s` (removed from it), or an empty view.
std::string_view token(std::string_view& s) {
  size_t b = 0;
  while (b < s.size() && (s[b] == ' ' || s[b] == '\t')) ++b;
  size_t e = b;
  while (e < s.size() && s[e] != ' ' && s[e] != '\t') ++e;
  const std::string_view t = s.substr(b, e - b);
  s.remove_prefix(e);
  return t;
}

bool parse_pointer(std::string_view s, uint64_t& out) {
  if (s == "(nil)") {
    out = 0;
    return true;
  }
  return parse_hex(s, out);
}

}  // namespace

bool PinReader::refill(std::vector<TraceAccess>& queue) {
  using Unit = TraceError::Unit;
  while (!done_ && in_.read_line(text_)) {
    ++line_;
    std::string_view s = text_;
    std::string_view first = token(s);
    if (first.empty()) continue;
    if (first[0] == '#') {
      if (first == "#eof") done_ = true;
      continue;
    }
    auto fail = [&](const char* field, const std::string& what) { throw TraceError(in_.path(), Unit::Line, line_, field, what); };
    uint64_t ip = 0, addr = 0, size = 8;
    if (first.back() != ':') fail("ip", "expected `IP: R|W ADDR`");
    first.remove_suffix(1);
    if (!parse_pointer(first, ip)) fail("ip", "not a hex number");
    const std::string_view kind = token(s);
    if (kind != "R" && kind != "W") fail("kind", "expected R or W");
    if (!parse_pointer(token(s), addr)) fail("address", "missing, or not a hex number");
    if (const std::string_view size_text = token(s); !size_text.empty()) {
      if (!parse_decimal(size_text, size)) fail("size", "not a decimal number");
      if (size > MAX_TRACED_ACCESS) fail("size", fmt::format("{} bytes is more than a page", size));
    }
    check_user_space(in_.path(), Unit::Line, line_, "address", addr, std::max<uint64_t>(size, 1), user_top_, guest_);
    if (!have_ip_ || ip != last_ip_) {
      check_user_space(in_.path(), Unit::Line, line_, "ip", ip, 1, user_top_, guest_);
      queue.push_back(TraceAccess{x86::AccessKind::Fetch, ip, 1});
      have_ip_ = true;
      last_ip_ = ip;
    }
    queue.push_back(TraceAccess{kind == "R" ? x86::AccessKind::Read : x86::AccessKind::Write, addr, size});
    return true;
  }
  in_.finish(done_);  // after #eof the rest is not read
  return false;
}

}  // namespace vmmu::sim::trace_import
