#pragma once
// A Linux-like guest kernel that emits .vmt ops (VMT-FORMAT.md). Every page-table write is a
// real guest `write` through the kernel's direct map (so it hits write tracking under shadow
// paging); only the early boot, with paging still off, writes tables by physical address.
//
// The model runs a reference Vm (`--mmu=none`) beside the ops it emits and reads the guest's
// page tables and fault results from it, so what it emits is valid by construction: a user
// access that faults makes the model allocate a frame, write the entry and retry. It keeps the
// contract's rule on cached translations: the kernel half (the direct map, global entries with
// A and D already set) never changes after boot; a user entry changes only while its process
// runs on exactly one vCPU, which then executes `invlpg` (a few leaves) or reloads `cr3` (many,
// or a table) before it runs user code again; the tables of a process no vCPU has loaded change
// freely (loading them later is the flush); and a freed page table is reused only after every
// vCPU has reloaded `cr3` since it was freed (FrameAllocator), since a table reused under a root
// a vCPU already has loaded is reached without a `cr3`.
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "sim/guest_os/paging_layout.hpp"
#include "sim/op.hpp"
#include "x86/access.hpp"

namespace vmmu {
class Vm;
}

namespace vmmu::sim::guest_os {

// The leaves of the kernel direct map: Largest is what Linux picks (1 GiB in long mode, else
// 2 MiB under PAE and 4 MiB under 32-bit paging); 4K makes boot write one entry per page.
enum class DirectMapPages { Largest, Size4K, Size2M, Size1G };

struct GuestOsParams {
  uint64_t memory = 4ull << 30;                   // guest-physical memory: one memslot at gpa 0
  x86::PagingMode mode = x86::PagingMode::Level4;  // Bits32, Pae, Level4 or Level5
  DirectMapPages direct_map = DirectMapPages::Largest;
  bool thp = true;              // transparent huge pages for anonymous memory where aligned
  bool zero_page = true;        // a read of untouched anonymous memory maps the shared zero page
  uint32_t vcpus = 2;           // 1..64
  uint32_t page_copy_words = 512;  // 8-byte accesses that clear or copy one page (512: all of it)
  bool audits = true;           // `audit` after boot, after each exit, and at the end of a scenario

  std::string describe() const;
};

// What the kernel did, for tests and reports.
struct GuestOsCounts {
  uint64_t ops = 0, user_accesses = 0, kernel_accesses = 0;
  uint64_t processes = 0, forks = 0, execs = 0, exits = 0, mmaps = 0, munmaps = 0, mprotects = 0;
  uint64_t page_faults = 0, demand_pages = 0, zero_page_maps = 0, huge_pages = 0, page_cache_fills = 0;
  uint64_t cow_copies = 0, cow_reuses = 0;  // write faults on shared pages: copied, or made writable
  uint64_t table_writes = 0, tables_allocated = 0, tables_freed = 0;
  uint64_t invlpgs = 0, tlb_flushes = 0, context_switches = 0, audits = 0;
};

namespace prot {
inline constexpr uint8_t R = 1, W = 2, X = 4;
}

// An executable: its pages in the page cache are shared by every process that maps it.
struct ProgramImage {
  uint32_t id = 0;
  uint64_t text_bytes = 256 << 10;
  uint64_t data_bytes = 64 << 10;   // private writable file pages (copied on write)
  uint64_t heap_bytes = 8 << 20;    // anonymous, huge-page aligned
  uint64_t stack_bytes = 1 << 20;   // anonymous, just below the top of user space
  bool flat = false;                // instead: one anonymous RWX region over all of user space (traces)
};

// Where exec put an image's regions ([start, end) each; all zero for a flat image).
struct ProgramLayout {
  uint64_t text = 0, text_end = 0, data = 0, data_end = 0, heap = 0, heap_end = 0, stack = 0, stack_end = 0;
};

// The guest ran out of memory (the model does not swap): raise the guest memory.
class OutOfGuestMemory : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Receives each op as it is emitted, with `line` numbered from 3 (line 1 is `vmt 1`, line 2 a
// comment; see VmtStreamWriter).
using OpSink = std::function<void(const Op&)>;

class GuestOs {
 public:
  GuestOs(const GuestOsParams& params, OpSink sink);
  ~GuestOs();
  GuestOs(const GuestOs&) = delete;
  GuestOs& operator=(const GuestOs&) = delete;

  // Sets up the VM (cpu, memslot, vCPUs), builds the kernel's tables and enables paging.
  void boot();
  // The first user process (init): a fresh address space running `image`.
  uint32_t spawn(const ProgramImage& image);
  // Copy-on-write fork: both sides' writable private pages become read-only and shared.
  uint32_t fork(uint32_t parent);
  // Replaces the address space of `pid` with a fresh one running `image`.
  ProgramLayout exec(uint32_t pid, const ProgramImage& image);
  // Frees the process's pages and tables; its vCPU switches to another process or idles.
  void exit(uint32_t pid);
  // An anonymous mapping (populated on demand); `huge` allows transparent huge pages.
  uint64_t mmap(uint32_t pid, uint64_t length, uint8_t prot, bool huge);
  void munmap(uint32_t pid, uint64_t addr, uint64_t length);
  void mprotect(uint32_t pid, uint64_t addr, uint64_t length, uint8_t prot);
  // One user access of `width` bytes (1, 2, 4 or 8) inside one page; faults are handled and the
  // access retried. Throws std::invalid_argument for an address outside the process's mappings.
  void access(uint32_t pid, x86::AccessKind kind, uint64_t va, unsigned width, uint64_t value = 0);
  // Makes `pid` run on some vCPU (a context switch when it does not run yet).
  void run(uint32_t pid);
  void audit();
  void stats();

  bool alive(uint32_t pid) const;
  const ProgramLayout& program(uint32_t pid) const;
  const GuestOsParams& params() const;
  const PagingLayout& layout() const;
  const GuestOsCounts& counts() const;
  const Vm& reference() const;

 private:
  struct Kernel;
  std::unique_ptr<Kernel> k_;
};

}  // namespace vmmu::sim::guest_os
