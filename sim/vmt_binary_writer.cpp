#include "sim/vmt_binary_writer.hpp"

#include <fmt/format.h>

#include <stdexcept>

namespace vmmu::sim {

namespace {

namespace vb = vmt_binary;

constexpr size_t DRAIN_AT = size_t{64} << 10;

}  // namespace

VmtBinaryWriter::VmtBinaryWriter(std::ostream& out, std::string_view note) : out_(out) {
  std::string text(note.substr(0, vb::MAX_NOTE_BYTES));
  for (char& c : text)
    if (c == '\n') c = ' ';
  buf_.reserve(DRAIN_AT + 256);
  buf_.append(vb::MAGIC_VIEW);
  varint(vb::VERSION);
  varint(text.size());
  buf_ += text;
}

void VmtBinaryWriter::varint(uint64_t v) {
  while (v >= 0x80) {
    put(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  put(static_cast<uint8_t>(v));
}

void VmtBinaryWriter::drain() {
  out_.write(buf_.data(), static_cast<std::streamsize>(buf_.size()));
  buf_.clear();
}

void VmtBinaryWriter::write(const Op& op) {
  if (finished_) throw std::logic_error("VmtBinaryWriter: an op after finish()");
  if (op.line <= line_)
    throw std::invalid_argument(fmt::format("binary .vmt: op line {} does not come after line {}", op.line, line_));
  uint8_t tag = vb::code_of(op.kind);
  if (vb::takes_width(op.kind)) {
    const auto code = vb::width_code(op.width);
    if (!code) throw std::invalid_argument(fmt::format("binary .vmt: line {}: width {} is not 1, 2, 4 or 8", op.line, op.width));
    tag |= static_cast<uint8_t>(*code << vb::TAG_WIDTH_SHIFT);
  } else if (op.kind == OpKind::Fetch && op.width != 1) {
    throw std::invalid_argument(fmt::format("binary .vmt: line {}: a fetch has width 1, not {}", op.line, op.width));
  }
  const bool next_line = op.line == line_ + 1;
  if (next_line) tag |= vb::TAG_NEXT_LINE;
  put(tag);
  if (!next_line) varint(op.line - line_);
  line_ = op.line;

  auto gva = [&] {
    uint64_t& base = gva_[vb::gva_base_index(op.id, op.kind == OpKind::Fetch)];
    varint(vb::zigzag(op.addr - base));
    base = op.addr;
  };
  auto gpa = [&] {
    varint(vb::zigzag(op.addr - gpa_));
    gpa_ = op.addr;
  };
  switch (op.kind) {
    case OpKind::Read:
    case OpKind::Fetch:
    case OpKind::Invlpg:
      varint(op.id);
      gva();
      break;
    case OpKind::Write:
      varint(op.id);
      gva();
      varint(op.value);
      break;
    case OpKind::Poke:
      gpa();
      varint(op.value);
      break;
    case OpKind::Peek:
      gpa();
      break;
    case OpKind::Cr3:
      varint(op.id);
      varint(op.addr);
      break;
    case OpKind::Flush:
    case OpKind::Vcpu:
    case OpKind::MemslotDelete:
      varint(op.id);
      break;
    case OpKind::Regs: {
      const RegisterUpdate& r = op.regs;
      uint8_t mask = 0;
      if (r.cr0) mask |= vb::REGS_CR0;
      if (r.cr3) mask |= vb::REGS_CR3;
      if (r.cr4) mask |= vb::REGS_CR4;
      if (r.efer) mask |= vb::REGS_EFER;
      if (r.cpl) mask |= vb::REGS_CPL;
      if (r.ac) mask |= vb::REGS_AC;
      if (r.pkru) mask |= vb::REGS_PKRU;
      varint(op.id);
      put(mask);
      if (r.cr0) varint(*r.cr0);
      if (r.cr3) varint(*r.cr3);
      if (r.cr4) varint(*r.cr4);
      if (r.efer) varint(*r.efer);
      if (r.cpl) put(*r.cpl);
      if (r.ac) put(*r.ac ? 1 : 0);
      if (r.pkru) varint(*r.pkru);
      break;
    }
    case OpKind::Unmap:
    case OpKind::Age:
      varint(op.addr);
      varint(op.size);
      break;
    case OpKind::DirtyLog:
      varint(op.id);
      put(static_cast<uint8_t>(op.dirty));
      break;
    case OpKind::Audit:
    case OpKind::Stats:
      break;
    case OpKind::Memslot: {
      const auto host = static_cast<unsigned>(op.host_page);
      if (host < 1 || host > 3) throw std::invalid_argument(fmt::format("binary .vmt: line {}: host page code {}", op.line, host));
      varint(op.id);
      varint(op.addr);
      varint(op.size);
      put(static_cast<uint8_t>((op.readonly ? vb::MEMSLOT_RO : 0) | (op.log ? vb::MEMSLOT_LOG : 0) | ((host - 1) << vb::MEMSLOT_HOST_SHIFT)));
      break;
    }
    case OpKind::MemslotMove:
      varint(op.id);
      varint(op.addr);
      break;
    case OpKind::Cpu: {
      if (op.maxphyaddr && *op.maxphyaddr > 255)
        throw std::invalid_argument(fmt::format("binary .vmt: line {}: maxphyaddr {} does not fit in a byte", op.line, *op.maxphyaddr));
      put(static_cast<uint8_t>((op.maxphyaddr ? vb::CPU_MAXPHYADDR : 0) | (op.gbpages ? vb::CPU_GBPAGES : 0) | (op.la57 ? vb::CPU_LA57 : 0)));
      if (op.maxphyaddr) put(static_cast<uint8_t>(*op.maxphyaddr));
      if (op.gbpages) put(*op.gbpages ? 1 : 0);
      if (op.la57) put(*op.la57 ? 1 : 0);
      break;
    }
  }
  ++ops_;
  if (buf_.size() >= DRAIN_AT) drain();
}

void VmtBinaryWriter::finish() {
  if (finished_) return;
  put(vb::TAG_END);
  finished_ = true;
  drain();
  out_.flush();
}

}  // namespace vmmu::sim
