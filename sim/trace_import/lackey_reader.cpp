#include "sim/trace_import/lackey_reader.hpp"

#include <utility>

#include "sim/trace_import/trace_fields.hpp"

namespace vmmu::sim::trace_import {

bool LackeyReader::refill(std::vector<TraceAccess>& queue) {
  using Unit = TraceError::Unit;
  while (in_.read_line(text_)) {
    ++line_;
    std::string_view s = text_;
    if (s.empty() || s.starts_with("==") || s.starts_with("--") || s.starts_with("SB ")) continue;
    auto fail = [&](const char* field, const std::string& what) { throw TraceError(in_.path(), Unit::Line, line_, field, what); };
    char kind = 0;
    if (s[0] == 'I') kind = 'I';
    else if (s.size() > 1 && s[0] == ' ' && (s[1] == 'L' || s[1] == 'S' || s[1] == 'M')) kind = s[1];
    else fail("kind", "expected `I  ADDR,SIZE`, ` L ADDR,SIZE`, ` S ADDR,SIZE` or ` M ADDR,SIZE`");
    s.remove_prefix(kind == 'I' ? 1 : 2);
    if (s.empty() || s[0] != ' ') fail("kind", "expected a space after the kind");
    while (!s.empty() && s[0] == ' ') s.remove_prefix(1);
    const size_t comma = s.find(',');
    if (comma == std::string_view::npos) fail("address", "expected ADDR,SIZE");
    uint64_t addr = 0, size = 0;
    if (!parse_hex(s.substr(0, comma), addr)) fail("address", "not a hex number");
    std::string_view size_text = s.substr(comma + 1);
    while (!size_text.empty() && size_text.back() == ' ') size_text.remove_suffix(1);
    if (!parse_decimal(size_text, size)) fail("size", "not a decimal number");
    if (size > MAX_TRACED_ACCESS) fail("size", fmt::format("{} bytes is more than a page", size));
    check_user_space(in_.path(), Unit::Line, line_, "address", addr, std::max<uint64_t>(size, 1), user_top_, guest_);
    switch (kind) {
      case 'I': queue.push_back(TraceAccess{x86::AccessKind::Fetch, addr, size}); break;
      case 'L': queue.push_back(TraceAccess{x86::AccessKind::Read, addr, size}); break;
      case 'S': queue.push_back(TraceAccess{x86::AccessKind::Write, addr, size}); break;
      default:  // M: a read, then a write of the same bytes
        queue.push_back(TraceAccess{x86::AccessKind::Read, addr, size});
        queue.push_back(TraceAccess{x86::AccessKind::Write, addr, size});
    }
    return true;
  }
  in_.finish();
  return false;
}

}  // namespace vmmu::sim::trace_import
