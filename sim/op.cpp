#include "sim/op.hpp"

namespace vmmu::sim {

std::string_view op_name(OpKind k) {
  switch (k) {
    case OpKind::Cpu: return "cpu";
    case OpKind::Memslot: return "memslot";
    case OpKind::MemslotDelete: return "memslot-delete";
    case OpKind::MemslotMove: return "memslot-move";
    case OpKind::Vcpu: return "vcpu";
    case OpKind::Regs: return "regs";
    case OpKind::Cr3: return "cr3";
    case OpKind::Poke: return "poke";
    case OpKind::Read: return "read";
    case OpKind::Write: return "write";
    case OpKind::Fetch: return "fetch";
    case OpKind::Invlpg: return "invlpg";
    case OpKind::Flush: return "flush";
    case OpKind::Peek: return "peek";
    case OpKind::DirtyLog: return "dirty-log";
    case OpKind::Unmap: return "unmap";
    case OpKind::Age: return "age";
    case OpKind::Audit: return "audit";
    case OpKind::Stats: return "stats";
  }
  return "?";
}

}  // namespace vmmu::sim
