// The binary .vmt decoder (docs/VMT-FORMAT.md, "Binary form").
//
// Speed: the common records (read, write and fetch on the next line) are decoded in runs of up to
// RUN, straight from a window of the input, with loop-free varints; next() then hands them out
// one by one. Any other record, or anything wrong, goes to the full decoder (RecordDecoder),
// whose bounds checks only throw at the window's edge (NeedMore), where the window is refilled
// and the record decoded again from its start. Delta bases are committed only when a record is
// complete, so a retry sees the same state.
#include "sim/vmt_binary_reader.hpp"

#include <fmt/format.h>

#include <array>
#include <bit>
#include <cstring>

namespace vmmu::sim {

namespace {

namespace vb = vmt_binary;

constexpr size_t WINDOW = size_t{256} << 10;
constexpr uint64_t PAGE = 4096;

}  // namespace

std::string binary_position(uint64_t record, uint64_t offset) {
  if (record == 0) return fmt::format("header (byte offset {})", offset);
  return fmt::format("record {} (byte offset {})", record, offset);
}

// Decodes one record from [p, end): throws NeedMore when it runs past `end`, BinaryFormatError
// when a field is wrong.
class RecordDecoder {
 public:
  RecordDecoder(const VmtBinaryReader& r, const uint8_t* p, const uint8_t* end, uint64_t record, uint64_t offset)
      : r_(r), p_(p), start_(p), end_(end), record_(record), offset_(offset) {}

  size_t used() const { return static_cast<size_t>(p_ - start_); }

  uint8_t byte() {
    if (p_ == end_) [[unlikely]]
      throw VmtBinaryReader::NeedMore{};
    return *p_++;
  }

  uint64_t varint(std::string_view field) {
    if (p_ != end_ && *p_ < 0x80) [[likely]]
      return *p_++;
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; ++i) {
      const uint8_t b = byte();
      if (i == 9 && b > 1) {
        if (b & 0x80) fail_field(field, "varint longer than 10 bytes");
        fail_field(field, "varint overflows 64 bits");
      }
      v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if (!(b & 0x80)) return v;
    }
    return v;  // not reached: the 10th byte either ends the varint or fails
  }

  [[noreturn]] void fail(const std::string& what) const { r_.fail(record_, offset_, what); }
  std::string_view name() const { return op_name(kind_); }
  [[noreturn]] void fail_field(std::string_view field, const std::string& what) const {
    if (!has_kind_) fail(fmt::format("{}: {}", field, what));
    fail(fmt::format("{}: {}: {}", name(), field, what));
  }

  // One op record; false for the end record. Commits the reader's delta bases via `commit`.
  bool decode(Op& op, uint64_t& line, uint64_t* gva_bases, uint64_t& gpa) {
    const uint8_t tag = byte();
    if (tag == vb::TAG_END) return false;
    const uint8_t code = tag & vb::TAG_CODE_MASK;
    if (code == 0 || code > vb::MAX_CODE) [[unlikely]]
      fail(fmt::format("unknown tag 0x{:02x}", tag));
    const OpKind kind = vb::KIND_OF_CODE[code];
    kind_ = kind;  // its name is looked up only for a message
    has_kind_ = true;
    const unsigned wcode = tag >> vb::TAG_WIDTH_SHIFT;
    if (wcode != 0 && !vb::takes_width(kind)) [[unlikely]]
      fail(fmt::format("{}: tag 0x{:02x} has width bits, but {} takes no width", name(), tag, name()));
    uint64_t new_line;
    if (tag & vb::TAG_NEXT_LINE) [[likely]] {
      if (line == UINT64_MAX) fail_field("line", "the line number overflows 64 bits");
      new_line = line + 1;
    } else {
      const uint64_t delta = varint("line delta");
      if (delta == 0) fail_field("line delta", "0: lines must increase");
      if (delta > UINT64_MAX - line) fail_field("line delta", fmt::format("{} makes the line number overflow 64 bits", delta));
      new_line = line + delta;
    }

    r_.clear_op(op);
    op.kind = kind;
    op.line = new_line;
    const uint8_t width = static_cast<uint8_t>(1u << wcode);
    uint64_t* gva_base = nullptr;
    uint64_t new_gpa = gpa;
    switch (kind) {
      case OpKind::Read:
        op.id = id("ID");
        op.addr = gva(op.id, gva_bases, gva_base);
        op.width = width;
        check_page(op.addr, width);
        break;
      case OpKind::Write:
        op.id = id("ID");
        op.addr = gva(op.id, gva_bases, gva_base);
        op.width = width;
        op.value = value(width);
        check_page(op.addr, width);
        break;
      case OpKind::Fetch:
        op.id = id("ID");
        op.addr = gva(op.id, gva_bases, gva_base);
        op.width = 1;
        break;
      case OpKind::Invlpg:
        op.id = id("ID");
        op.addr = gva(op.id, gva_bases, gva_base);
        break;
      case OpKind::Poke:
        op.addr = new_gpa = gpa + vb::unzigzag(varint("GPA"));
        op.width = width;
        op.value = value(width);
        check_page(op.addr, width);
        break;
      case OpKind::Peek:
        op.addr = new_gpa = gpa + vb::unzigzag(varint("GPA"));
        op.width = width;
        check_page(op.addr, width);
        break;
      case OpKind::Cr3:
        op.id = id("ID");
        op.addr = varint("X");
        break;
      case OpKind::Flush:
      case OpKind::Vcpu:
        op.id = id("ID");
        break;
      case OpKind::MemslotDelete:
        op.id = id("SLOT");
        break;
      case OpKind::Regs:
        op.id = id("ID");
        regs(op.regs);
        break;
      case OpKind::Unmap:
      case OpKind::Age:
        op.addr = aligned_gpa();
        op.size = page_size();
        if (op.size - 1 > UINT64_MAX - op.addr)
          fail(fmt::format("{}: GPA 0x{:x} + SIZE 0x{:x} overflows 64 bits", name(), op.addr, op.size));
        break;
      case OpKind::DirtyLog: {
        op.id = id("SLOT");
        const uint8_t a = byte();
        if (a > static_cast<uint8_t>(DirtyLogAction::Clear))
          fail_field("ACTION", fmt::format("{} is not 0 (enable), 1 (disable), 2 (get) or 3 (clear)", a));
        op.dirty = static_cast<DirtyLogAction>(a);
        break;
      }
      case OpKind::Audit:
      case OpKind::Stats:
        break;
      case OpKind::Memslot: {
        op.id = id("SLOT");
        op.addr = aligned_gpa();
        op.size = page_size();
        const uint8_t flags = byte();
        if (flags & ~(vb::MEMSLOT_RO | vb::MEMSLOT_LOG | vb::MEMSLOT_HOST_MASK))
          fail_field("flags", fmt::format("0x{:02x} has unknown bits", flags));
        const unsigned host = (flags & vb::MEMSLOT_HOST_MASK) >> vb::MEMSLOT_HOST_SHIFT;
        if (host == 3) fail_field("flags", fmt::format("0x{:02x}: host page code 3 is not 0 (4k), 1 (2m) or 2 (1g)", flags));
        op.readonly = flags & vb::MEMSLOT_RO;
        op.log = flags & vb::MEMSLOT_LOG;
        op.host_page = static_cast<guest::HostPageSize>(host + 1);
        break;
      }
      case OpKind::MemslotMove:
        op.id = id("SLOT");
        op.addr = aligned_gpa();
        break;
      case OpKind::Cpu:
        cpu(op);
        break;
    }
    // Complete: commit the delta bases.
    line = new_line;
    if (gva_base) *gva_base = op.addr;
    gpa = new_gpa;
    return true;
  }

  // The header (record 0): magic, version, note.
  void header(std::string& note) {
    for (const char m : vb::MAGIC)
      if (byte() != static_cast<uint8_t>(m)) fail("not a binary .vmt: bad magic");
    const uint64_t version = varint("version");
    if (version != vb::VERSION) fail(fmt::format("unsupported binary .vmt version {} (this reader reads version {})", version, vb::VERSION));
    const uint64_t n = varint("note length");
    if (n > vb::MAX_NOTE_BYTES) fail_field("note length", fmt::format("{} is more than {}", n, vb::MAX_NOTE_BYTES));
    if (static_cast<uint64_t>(end_ - p_) < n) throw VmtBinaryReader::NeedMore{};
    note.assign(reinterpret_cast<const char*>(p_), n);
    p_ += n;
  }

 private:
  uint32_t id(std::string_view field) {
    const uint64_t v = varint(field);
    if (v > UINT32_MAX) [[unlikely]]
      fail_field(field, fmt::format("{} does not fit in 32 bits", v));
    return static_cast<uint32_t>(v);
  }

  uint64_t gva(uint32_t id, uint64_t* bases, uint64_t*& base) {
    base = &bases[vb::gva_base_index(id, kind_ == OpKind::Fetch)];
    return *base + vb::unzigzag(varint("GVA"));
  }

  uint64_t value(uint8_t width) {
    const uint64_t v = varint("VALUE");
    if (width < 8 && (v >> (8 * width)) != 0) [[unlikely]]
      fail(fmt::format("{}: value 0x{:x} does not fit in width {}", name(), v, width));
    return v;
  }

  void check_page(uint64_t addr, uint8_t width) const {
    if ((addr & (PAGE - 1)) + width > PAGE) [[unlikely]]
      fail(fmt::format("{}: {}-byte access at 0x{:x} crosses a 4 KiB page", name(), width, addr));
  }

  uint64_t aligned_gpa() {
    const uint64_t gpa = varint("GPA");
    if (gpa & (PAGE - 1)) fail_field("GPA", fmt::format("0x{:x} is not 4 KiB aligned", gpa));
    return gpa;
  }

  uint64_t page_size() {
    const uint64_t size = varint("SIZE");
    if (size == 0) fail_field("SIZE", "0 is not a non-zero multiple of 4 KiB");
    if (size & (PAGE - 1)) fail_field("SIZE", fmt::format("0x{:x} is not a multiple of 4 KiB", size));
    return size;
  }

  bool bit(std::string_view field) {
    const uint8_t b = byte();
    if (b > 1) fail_field(field, fmt::format("{} is not 0 or 1", b));
    return b != 0;
  }

  void regs(RegisterUpdate& r) {
    const uint8_t mask = byte();
    if (mask & 0x80) fail_field("presence", fmt::format("0x{:02x} has unknown bits", mask));
    if (mask & vb::REGS_CR0) r.cr0 = varint("cr0");
    if (mask & vb::REGS_CR3) r.cr3 = varint("cr3");
    if (mask & vb::REGS_CR4) r.cr4 = varint("cr4");
    if (mask & vb::REGS_EFER) r.efer = varint("efer");
    if (mask & vb::REGS_CPL) {
      const uint8_t c = byte();
      if (c != 0 && c != 3) fail_field("cpl", fmt::format("{} is not 0 or 3", c));
      r.cpl = c;
    }
    if (mask & vb::REGS_AC) r.ac = bit("ac");
    if (mask & vb::REGS_PKRU) {
      const uint64_t p = varint("pkru");
      if (p > UINT32_MAX) fail_field("pkru", fmt::format("0x{:x} does not fit in 32 bits", p));
      r.pkru = static_cast<uint32_t>(p);
    }
  }

  void cpu(Op& op) {
    const uint8_t mask = byte();
    if (mask & ~(vb::CPU_MAXPHYADDR | vb::CPU_GBPAGES | vb::CPU_LA57)) fail_field("presence", fmt::format("0x{:02x} has unknown bits", mask));
    if (mask & vb::CPU_MAXPHYADDR) {
      const uint8_t m = byte();
      if (m < 32 || m > 52) fail_field("maxphyaddr", fmt::format("{} is outside 32..52", m));
      op.maxphyaddr = m;
    }
    if (mask & vb::CPU_GBPAGES) op.gbpages = bit("gbpages");
    if (mask & vb::CPU_LA57) op.la57 = bit("la57");
  }

  const VmtBinaryReader& r_;
  const uint8_t* p_;
  const uint8_t* const start_;
  const uint8_t* const end_;
  const uint64_t record_, offset_;
  OpKind kind_ = OpKind::Audit;
  bool has_kind_ = false;
};

VmtBinaryReader::VmtBinaryReader(std::streambuf& in) : in_(in), buf_(WINDOW) {}

void VmtBinaryReader::fail(uint64_t record, uint64_t offset, const std::string& what) const { throw BinaryFormatError(record, offset, what); }

void VmtBinaryReader::compact() {
  if (pos_ == 0) return;
  std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
  window_offset_ += pos_;
  end_ -= pos_;
  pos_ = 0;
}

bool VmtBinaryReader::refill() {
  if (eof_) return false;
  compact();
  // What the stream holds now, or else what its next read brings (WorkloadInput's streams
  // return after one read, so a pipe is decoded as it comes, and fill the window in place).
  const std::streamsize avail = in_.in_avail();
  const size_t room = buf_.size() - end_;
  const auto want = static_cast<std::streamsize>(avail > 0 ? std::min(room, static_cast<size_t>(avail)) : room);
  const std::streamsize got = in_.sgetn(reinterpret_cast<char*>(buf_.data() + end_), want);
  if (got <= 0) {
    eof_ = true;
    return false;
  }
  end_ += static_cast<size_t>(got);
  return true;
}

// Near the window's end: what the stream holds already (never waiting), so that records rarely
// straddle the edge and the fast path keeps going.
void VmtBinaryReader::top_up() {
  if (eof_ || !fast_) return;
  const std::streamsize avail = in_.in_avail();
  if (avail <= 0) return;
  compact();
  const size_t room = buf_.size() - end_;
  const std::streamsize got = in_.sgetn(reinterpret_cast<char*>(buf_.data() + end_), static_cast<std::streamsize>(std::min(room, static_cast<size_t>(avail))));
  if (got > 0) end_ += static_cast<size_t>(got);
}

void VmtBinaryReader::read_header() {
  for (;;) {
    try {
      RecordDecoder d(*this, buf_.data() + pos_, buf_.data() + end_, 0, window_offset_ + pos_);
      d.header(note_);
      pos_ += d.used();
      header_done_ = true;
      fast_ = true;
      return;
    } catch (const NeedMore&) {
      if (!refill()) fail(0, 0, "truncated: the input ends inside the header");
    }
  }
}

namespace {

// The 7-bit groups of up to 8 varint bytes (bytes past its end already cleared), packed.
inline uint64_t pack7(uint64_t x) {
  x &= 0x7f7f7f7f7f7f7f7f;
  x = (x & 0x007f007f007f007f) | ((x & 0x7f007f007f007f00) >> 1);
  x = (x & 0x00003fff00003fff) | ((x & 0x3fff00003fff0000) >> 2);
  return (x & 0x000000000fffffff) | ((x & 0x0fffffff00000000) >> 4);
}

// Bytes p[0..7], p[0] lowest (the varint order).
inline uint64_t load64(const uint8_t* p) {
  uint64_t x;
  std::memcpy(&x, p, sizeof x);
  if constexpr (std::endian::native == std::endian::big) x = __builtin_bswap64(x);
  return x;
}

// A varint at p, where 16 bytes may be read, without a loop over its bytes (deltas and values have
// random lengths, which a byte loop mispredicts). Its length, or 0 when it is longer than 10
// bytes or overflows (the full decoder then says so).
inline unsigned fast_varint(const uint8_t* p, uint64_t& v) {
  const uint64_t a = load64(p);
  const uint64_t ends = ~a & 0x8080808080808080;
  if (ends != 0) [[likely]] {
    const unsigned last = static_cast<unsigned>(__builtin_ctzll(ends));  // 7, 15, ..., 63
    const uint64_t bytes = a & (~uint64_t{0} >> (63 - last));
    // One or two bytes (most GVA deltas: the next instruction, a nearby load) need no full pack.
    v = last < 16 ? (bytes & 0x7f) | (bytes >> 1 & 0x3f80) : pack7(bytes);
    return last / 8 + 1;
  }
  // 9 or 10 bytes (random 64-bit values: either, at random).
  const uint64_t b = load64(p + 8);
  const uint64_t b8 = b & 0xff, b9 = (b >> 8) & 0xff;
  const uint64_t ten = b8 >> 7;
  v = pack7(a) | (b8 & 0x7f) << 56 | (b9 & ten) << 63;
  const bool ok = ten == 0 || b9 <= 1;
  return ok ? static_cast<unsigned>(9 + ten) : 0;
}

// What the fast path needs of a tag: a read, write or fetch (of width 1) on the next line.
struct FastTag {
  uint64_t wide;  // the bits a VALUE of this width must not have
  uint8_t ok, kind, width, write, fetch;
};
constexpr std::array<FastTag, 256> make_fast_tags() {
  std::array<FastTag, 256> t{};
  for (unsigned tag = 0; tag < 256; ++tag) {
    const unsigned code = tag & vb::TAG_CODE_MASK, wcode = tag >> vb::TAG_WIDTH_SHIFT;
    if (!(tag & vb::TAG_NEXT_LINE) || code == 0 || code > vb::MAX_CODE) continue;
    const OpKind k = vb::KIND_OF_CODE[code];
    if (k != OpKind::Read && k != OpKind::Write && !(k == OpKind::Fetch && wcode == 0)) continue;
    const unsigned width = 1u << wcode;
    t[tag] = FastTag{width == 8 ? 0 : ~uint64_t{0} << (8 * width), 1, static_cast<uint8_t>(k), static_cast<uint8_t>(width),
                     k == OpKind::Write, k == OpKind::Fetch};
  }
  return t;
}
constexpr std::array<FastTag, 256> FAST_TAGS = make_fast_tags();

// The bytes the fast path may read: tag, a one-byte ID, then two varints read 16 bytes at a time.
constexpr size_t FAST_BYTES = 2 + 10 + 16;

}  // namespace

bool VmtBinaryReader::next_run() {
  if (end_ - pos_ < FAST_BYTES) [[unlikely]]
    top_up();
  return decode_run() != 0;
}

bool VmtBinaryReader::next_slow(Op& op) {
  if (next_run()) [[likely]] {
    take(op);
    return true;
  }
  return next_record(op);
}

// Accesses on the next line, wholly in the window and valid, up to RUN of them. The first other
// record (or anything wrong) ends the run; the full decoder then gives that op or the error.
uint32_t VmtBinaryReader::decode_run() {
  if (!fast_ || line_ > UINT64_MAX - RUN) return 0;
  // Locals, so that the stores below are not thought to change them.
  const uint8_t* const buf = buf_.data();
  const size_t end = end_;
  const uint64_t window_offset = window_offset_;
  uint64_t* const bases = gva_;
  AccessOp* const run = run_;
  size_t pos = pos_;
  uint32_t n = 0;
  for (; n < RUN && end - pos >= FAST_BYTES; ++n) {
    const uint8_t* const p = buf + pos;
    const FastTag& t = FAST_TAGS[p[0]];
    const uint64_t id = p[1];
    if (!t.ok || id >= 0x80) break;
    uint64_t delta, value = 0;
    const unsigned glen = fast_varint(p + 2, delta);
    unsigned vlen = 0;
    bool ok = glen != 0;
    if (t.write) {
      vlen = fast_varint(p + 2 + glen, value);
      ok &= vlen != 0;
    }
    const uint64_t width = t.width;
    uint64_t& base = bases[vb::gva_base_index(static_cast<uint32_t>(id), t.fetch)];
    const uint64_t gva = base + vb::unzigzag(delta);
    ok &= (value & t.wide) == 0;
    ok &= (gva & (PAGE - 1)) + width <= PAGE;
    if (!ok) [[unlikely]]
      break;
    base = gva;
    AccessOp& a = run[n];
    a.addr = gva;
    a.value = value;
    a.offset = window_offset + pos;
    a.id = static_cast<uint32_t>(id);
    a.kind = static_cast<OpKind>(t.kind);
    a.width = static_cast<uint8_t>(width);
    pos += 2 + glen + vlen;
  }
  if (n == 0) return 0;  // the last op returned keeps its position
  run_line_ = line_ + 1;
  line_ += n;
  record_ += n;
  pos_ = pos;
  run_pos_ = 0;
  run_end_ = n;
  return n;
}

bool VmtBinaryReader::next_record(Op& op) {
  if (!header_done_) [[unlikely]]
    read_header();
  if (ended_) return false;
  for (;;) {
    if (pos_ == end_ && !refill()) fail(record_ + 1, window_offset_ + pos_, "truncated: the input ends without the end record");
    const uint64_t offset = window_offset_ + pos_;
    try {
      RecordDecoder d(*this, buf_.data() + pos_, buf_.data() + end_, record_ + 1, offset);
      const bool is_op = d.decode(op, line_, gva_, gpa_);
      pos_ += d.used();
      ++record_;
      record_offset_ = offset;
      run_pos_ = run_end_ = 0;
      if (is_op) [[likely]]
        return true;
      ended_ = true;
      fast_ = false;
      if (pos_ != end_ || refill()) fail(record_ + 1, window_offset_ + pos_, "data after the end record");
      return false;
    } catch (const NeedMore&) {
      if (!refill()) fail(record_ + 1, offset, "truncated: the input ends inside a record");
    }
  }
}

}  // namespace vmmu::sim
