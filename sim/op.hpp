#pragma once
// One operation of a .vmt workload (VMT-FORMAT.md), as the reader yields it.
#include <cstdint>
#include <optional>
#include <string_view>

#include "guest/memslot.hpp"
#include "vm/vcpu.hpp"

namespace vmmu::sim {

enum class OpKind : uint8_t {
  Cpu,            // cpu [maxphyaddr=N] [gbpages=0|1] [la57=0|1]
  Memslot,        // memslot SLOT GPA SIZE [ro] [log] [host=4k|2m|1g]
  MemslotDelete,  // memslot-delete SLOT
  MemslotMove,    // memslot-move SLOT GPA
  Vcpu,           // vcpu ID
  Regs,           // regs ID [cr0=X] [cr3=X] [cr4=X] [efer=X] [cpl=0|3] [ac=0|1] [pkru=X]
  Cr3,            // cr3 ID X
  Poke,           // poke GPA WIDTH VALUE
  Read,           // read ID GVA [WIDTH]
  Write,          // write ID GVA WIDTH VALUE
  Fetch,          // fetch ID GVA
  Invlpg,         // invlpg ID GVA
  Flush,          // flush ID
  Peek,           // peek GPA WIDTH
  DirtyLog,       // dirty-log SLOT enable|disable|get|clear
  Unmap,          // unmap GPA SIZE
  Age,            // age GPA SIZE
  Audit,          // audit
  Stats,          // stats
};

// The op's name as written in a .vmt line and in the JSON output.
std::string_view op_name(OpKind k);

enum class DirtyLogAction : uint8_t { Enable, Disable, Get, Clear };

struct Op {
  OpKind kind = OpKind::Audit;
  uint64_t line = 0;   // 1-based line number in the file
  uint32_t id = 0;     // vcpu ID or memslot SLOT
  uint64_t addr = 0;   // GVA, GPA, or the X of `cr3`
  uint64_t size = 0;   // SIZE of memslot/unmap/age
  uint64_t value = 0;  // VALUE of poke/write
  uint8_t width = 8;   // WIDTH of read/write/poke/peek (1 for fetch)
  DirtyLogAction dirty = DirtyLogAction::Get;
  // cpu: keys given on the line (omitted keys keep their values)
  std::optional<unsigned> maxphyaddr;
  std::optional<bool> gbpages, la57;
  // memslot
  bool readonly = false, log = false;
  guest::HostPageSize host_page = guest::HostPageSize::Size4K;
  // regs
  RegisterUpdate regs;
};

// A read, write or fetch decoded ahead by a binary source, without an Op (AccessRun).
struct AccessOp {
  uint64_t addr, value;
  uint64_t offset;  // the record's byte offset in the source (for its messages)
  uint32_t id;
  OpKind kind;
  uint8_t width;
};

// Accesses on consecutive lines, the first on `first_line`: what a replay of a long trace mostly
// executes, taken in runs so that no Op is built for each (OpSource::pending_accesses).
struct AccessRun {
  const AccessOp* ops = nullptr;
  uint32_t count = 0;
  uint64_t first_line = 0;
};

}  // namespace vmmu::sim
