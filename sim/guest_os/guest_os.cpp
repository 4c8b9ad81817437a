#include "sim/guest_os/guest_os.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "sim/guest_os/frame_allocator.hpp"
#include "sim/random_workload.hpp"
#include "sim/replayer.hpp"
#include "vm/vm.hpp"
#include "x86/control_registers.hpp"
#include "x86/page_fault.hpp"

namespace vmmu::sim::guest_os {

namespace {

namespace pte = x86::pte;
using x86::AccessKind;
using x86::PagingMode;

constexpr uint64_t MIB = 1ull << 20;
constexpr uint64_t PAGE = x86::PAGE_SIZE;

// The guest-physical map below the allocator: the kernel image (text, then data) and the zero page.
constexpr uint64_t KERNEL_TEXT = 1 * MIB;
constexpr uint64_t KERNEL_DATA = 8 * MIB;
constexpr uint64_t ZERO_PAGE = 15 * MIB;
constexpr uint64_t FIRST_FREE = 16 * MIB;

// Entry flags as Linux writes them.
constexpr uint64_t KERNEL_TABLE = pte::P | pte::RW | pte::A | pte::D;            // _KERNPG_TABLE
constexpr uint64_t USER_TABLE = pte::P | pte::RW | pte::US | pte::A | pte::D;    // _PAGE_TABLE
constexpr uint64_t KERNEL_PAGE = pte::P | pte::RW | pte::A | pte::D | pte::G;    // __PAGE_KERNEL, global

// Places in the kernel's text where the model "executes": one fetch per kernel entry.
enum class Entry : uint64_t { PageFault = 0, Syscall = 1, Schedule = 2 };

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct Vma {
  uint64_t start = 0, end = 0;
  uint8_t prot = 0;
  bool anon = true;
  bool huge = false;       // transparent huge pages allowed
  uint32_t image = 0;      // file-backed: the image, and the file page at `start`
  uint64_t file_page = 0;
};

struct Process {
  uint32_t pid = 0;
  bool alive = true;
  uint64_t root = 0;       // gpa of the top-level table (PAE: the PDPT)
  int vcpu = -1;           // where it runs, or -1
  uint64_t kstack = 0;     // gpa of its kernel stack page
  uint64_t mmap_next = 0;  // where the next mmap goes
  std::map<uint64_t, Vma> vmas;  // by start
  ProgramLayout program;
};

struct VcpuState {
  int64_t pid = -1;  // the process it runs, or -1 (idle, on the kernel's own tables)
  uint8_t cpl = 0;
};

struct FrameUse {
  uint32_t refs = 0;
  uint64_t size = PAGE;
};

struct Leaf {
  uint64_t va, table;
  unsigned level, index;
  uint64_t entry;
};

}  // namespace

struct GuestOs::Kernel {
  Kernel(const GuestOsParams& p, OpSink s)
      : params(p),
        layout(PagingLayout::for_mode(p.mode, p.memory)),
        sink(std::move(s)),
        ref(VmConfig{MmuKind::None}),
        replayer(ref, nullptr),
        frames(FIRST_FREE, std::min(p.memory, layout.direct_map_size)) {}

  GuestOsParams params;
  PagingLayout layout;
  OpSink sink;
  Vm ref;
  Replayer replayer;
  FrameAllocator frames;
  GuestOsCounts counts;

  uint64_t next_line = 3;
  bool paging = false;
  uint64_t swapper = 0;      // the kernel's own top-level table (init_mm)
  uint32_t kv = 0;           // the vCPU the kernel works on now
  uint32_t rr = 0;           // round-robin cursor for placing processes on vCPUs
  std::vector<VcpuState> vcpus;
  std::vector<bool> flushed_in_epoch;  // per vCPU
  std::map<uint32_t, Process> procs;
  std::vector<uint64_t> root_pool;  // freed top-level tables, kernel half still in place
  std::unordered_map<uint64_t, FrameUse> uses;  // mapped data frames -> references
  std::map<std::pair<uint32_t, uint64_t>, uint64_t> page_cache;  // (image, file page) -> frame

  // ---- ops ------------------------------------------------------------------------------------
  static Op make(OpKind k) {
    Op o;
    o.kind = k;
    return o;
  }

  void emit(Op o) {
    o.line = next_line++;
    try {
      replayer.apply(o);
    } catch (const ReplayError& e) {
      throw std::logic_error(fmt::format("guest OS model emitted a malformed op `{}`: {}", format_op(o), e.what()));
    }
    ++counts.ops;
    sink(o);
  }

  AccessResult emit_access(uint32_t v, AccessKind kind, uint64_t va, unsigned width, uint64_t value) {
    Op o = make(kind == AccessKind::Read ? OpKind::Read : kind == AccessKind::Write ? OpKind::Write : OpKind::Fetch);
    o.id = v;
    o.addr = va;
    o.width = static_cast<uint8_t>(kind == AccessKind::Fetch ? 1 : width);
    o.value = kind == AccessKind::Write && width < 8 ? value & ((1ull << (8 * width)) - 1) : value;
    if (kind != AccessKind::Write) o.value = 0;
    o.line = next_line++;
    const AccessResult r = ref.vcpu(v).access(o.addr, kind, o.width, o.value);
    ++counts.ops;
    sink(o);
    return r;
  }

  void set_cpl(uint32_t v, uint8_t cpl) {
    if (vcpus[v].cpl == cpl) return;
    Op o = make(OpKind::Regs);
    o.id = v;
    o.regs.cpl = cpl;
    emit(o);
    vcpus[v].cpl = cpl;
  }

  void invlpg(uint32_t v, uint64_t va) {
    set_cpl(v, 0);
    Op o = make(OpKind::Invlpg);
    o.id = v;
    o.addr = va;
    emit(o);
    ++counts.invlpgs;
  }

  void load_cr3(uint32_t v, uint64_t root) {
    set_cpl(v, 0);
    Op o = make(OpKind::Cr3);
    o.id = v;
    o.addr = root;
    emit(o);
    flushed(v);
  }

  // Flush epochs (see FrameAllocator): one ends when every vCPU has loaded CR3 since it began.
  void flushed(uint32_t v) {
    if (flushed_in_epoch[v]) return;
    flushed_in_epoch[v] = true;
    if (std::find(flushed_in_epoch.begin(), flushed_in_epoch.end(), false) != flushed_in_epoch.end()) return;
    std::fill(flushed_in_epoch.begin(), flushed_in_epoch.end(), false);
    frames.next_epoch();
  }

  // Out of frames while freed tables cool down: every vCPU reloads CR3, twice, to free them.
  bool reclaim() {
    if (!frames.cooling()) return false;
    for (int round = 0; round < 2; ++round)
      for (uint32_t v = 0; v < vcpus.size(); ++v) flush_all(v);
    return true;
  }

  // ---- kernel memory accesses -------------------------------------------------------------------
  // Through the direct map once paging is on; by physical address during early boot.
  uint64_t kernel_access(AccessKind kind, uint64_t gpa, unsigned width, uint64_t value = 0) {
    const uint64_t va = paging ? layout.direct_va(gpa) : gpa;
    if (paging) set_cpl(kv, 0);
    const AccessResult r = emit_access(kv, kind, va, width, value);
    ++counts.kernel_accesses;
    if (!r.ok())
      throw std::logic_error(fmt::format("guest OS model: a kernel {} of gpa 0x{:x} (va 0x{:x}) failed", x86::name(kind), gpa, va));
    return r.value;
  }
  void kwrite(uint64_t gpa, unsigned width, uint64_t value) { kernel_access(AccessKind::Write, gpa, width, value); }
  uint64_t kread(uint64_t gpa, unsigned width) { return kernel_access(AccessKind::Read, gpa, width); }

  // An entry as the model's bookkeeping sees it (no op: the kernel's own loads are emitted only
  // on the fault path, where they are few).
  uint64_t peek_entry(uint64_t table, unsigned index) const {
    return ref.read_guest(table + uint64_t{index} * layout.entry_bytes, layout.entry_bytes);
  }
  uint64_t read_entry(uint64_t table, unsigned index) { return kread(table + uint64_t{index} * layout.entry_bytes, layout.entry_bytes); }
  void write_entry(uint64_t table, unsigned index, uint64_t value) {
    kwrite(table + uint64_t{index} * layout.entry_bytes, layout.entry_bytes, value);
    ++counts.table_writes;
  }

  // Entering the kernel: CPL 0, a fetch of the handler, a store to the process's kernel stack.
  void enter_kernel(uint32_t v, Entry where) {
    kv = v;
    set_cpl(v, 0);
    emit_access(v, AccessKind::Fetch, layout.direct_va(KERNEL_TEXT + static_cast<uint64_t>(where) * 0x1000 + 0x40), 1, 0);
    ++counts.kernel_accesses;
    const int64_t pid = vcpus[v].pid;
    if (pid >= 0) kwrite(procs.at(static_cast<uint32_t>(pid)).kstack + PAGE - 8 * (1 + static_cast<uint64_t>(where)), 8, counts.ops);
  }

  // ---- frames ---------------------------------------------------------------------------------
  [[noreturn]] void out_of_memory(const char* what) const {
    throw OutOfGuestMemory(fmt::format("guest OS model: the guest ran out of memory for {} ({} MiB usable); give it more memory", what,
                                       (std::min(params.memory, layout.direct_map_size) - FIRST_FREE) >> 20));
  }

  uint64_t new_table() {
    auto t = frames.table();
    if (!t && reclaim()) t = frames.table();
    if (!t) out_of_memory("a page table");
    ++counts.tables_allocated;
    return *t;
  }

  // Clears or copies a page the way clear_page/copy_page do: `page_copy_words` 8-byte accesses
  // spread over it.
  void clear_or_copy(uint64_t dst, std::optional<uint64_t> src, uint64_t size) {
    const uint64_t words = std::max<uint64_t>(1, std::min<uint64_t>(params.page_copy_words, size / 8));
    const uint64_t stride = (size / words) & ~7ull;
    for (uint64_t i = 0; i < words; ++i) {
      const uint64_t off = i * stride;
      kwrite(dst + off, 8, src ? kread(*src + off, 8) : 0);
    }
  }

  uint64_t new_page(std::optional<uint64_t> copy_from = {}) {
    auto f = frames.page();
    if (!f && reclaim()) f = frames.page();
    if (!f) out_of_memory("a page");
    if (copy_from || !f->zero) clear_or_copy(f->gpa, copy_from, PAGE);
    uses[f->gpa] = FrameUse{1, PAGE};
    return f->gpa;
  }

  std::optional<uint64_t> new_huge(std::optional<uint64_t> copy_from = {}) {
    const uint64_t size = layout.huge_size();
    const auto f = frames.huge(size);
    if (!f) return std::nullopt;
    if (copy_from || !f->zero) clear_or_copy(f->gpa, copy_from, size);
    uses[f->gpa] = FrameUse{1, size};
    return f->gpa;
  }

  uint32_t refs(uint64_t gpa) const {
    auto it = uses.find(gpa);
    return it == uses.end() ? 0 : it->second.refs;
  }
  void get_frame(uint64_t gpa) {
    if (auto it = uses.find(gpa); it != uses.end()) ++it->second.refs;
  }
  void put_frame(uint64_t gpa) {
    auto it = uses.find(gpa);
    if (it == uses.end()) return;  // the zero page
    if (--it->second.refs > 0) return;
    if (it->second.size == PAGE) frames.free_page(gpa);
    else frames.free_huge(gpa, it->second.size);
    uses.erase(it);
  }

  // The page-cache frame of an image's file page, read in from "disk" (VMM writes, as DMA is).
  uint64_t cached_page(uint32_t image, uint64_t file_page) {
    auto [it, fresh] = page_cache.try_emplace({image, file_page}, 0);
    if (!fresh) return it->second;
    auto f = frames.page();
    if (!f && reclaim()) f = frames.page();
    if (!f) out_of_memory("the page cache");
    it->second = f->gpa;
    uses[f->gpa] = FrameUse{1, PAGE};  // the cache's own reference
    const uint64_t words = std::max<uint32_t>(1, std::min<uint32_t>(params.page_copy_words, 512));
    for (uint64_t i = 0; i < words; ++i) {
      Op o = make(OpKind::Poke);
      o.addr = f->gpa + i * (PAGE / words & ~7ull);
      o.width = 8;
      o.value = mix(image * 0x100000001ull + file_page * 512 + i);
      emit(o);
    }
    ++counts.page_cache_fills;
    return f->gpa;
  }

  // ---- page tables ----------------------------------------------------------------------------
  uint64_t pointer_to(uint64_t table, unsigned level, bool user) const {
    if (layout.mode == PagingMode::Pae && level == 3) return table | pte::P;  // a PDPTE has no RW/US/A
    return table | (user ? USER_TABLE : KERNEL_TABLE);
  }

  // Writes a leaf for `va` at `leaf_level` under `root`, creating the tables on the way.
  void install(uint64_t root, uint64_t va, unsigned leaf_level, uint64_t leaf, bool user) {
    uint64_t table = root;
    for (unsigned level = layout.root_level; level > leaf_level; --level) {
      const unsigned i = layout.index(va, level);
      const uint64_t e = peek_entry(table, i);
      if (e & pte::P) {
        if (layout.is_leaf(e, level)) throw std::logic_error(fmt::format("guest OS model: va 0x{:x} already has a huge leaf", va));
        table = layout.target(e, level);
        continue;
      }
      const uint64_t t = new_table();
      write_entry(table, i, pointer_to(t, level, user));
      table = t;
    }
    write_entry(table, layout.index(va, leaf_level), leaf);
  }

  // Every present leaf under `table` mapping addresses in [lo, hi).
  void leaves(uint64_t table, unsigned level, uint64_t base, uint64_t lo, uint64_t hi, std::vector<Leaf>& out) const {
    const unsigned n = level == layout.root_level ? user_indices() : layout.entries(level);
    const uint64_t span = layout.span(level);
    for (unsigned i = 0; i < n; ++i) {
      const uint64_t va = base + uint64_t{i} * span;
      if (va + span <= lo || va >= hi) continue;
      const uint64_t e = peek_entry(table, i);
      if (!(e & pte::P)) continue;
      if (layout.is_leaf(e, level)) out.push_back(Leaf{va, table, level, i, e});
      else leaves(layout.target(e, level), level - 1, va, lo, hi, out);
    }
  }

  unsigned user_indices() const { return layout.kernel_first_index; }

  // Clears every user entry under `table` (post-order, so freed tables are all zero), collecting
  // the frames and tables to release once no vCPU can use them.
  void teardown(uint64_t table, unsigned level, std::vector<uint64_t>& data, std::vector<uint64_t>& tables) {
    const unsigned n = level == layout.root_level ? user_indices() : layout.entries(level);
    for (unsigned i = 0; i < n; ++i) {
      const uint64_t e = peek_entry(table, i);
      if (!(e & pte::P)) continue;
      if (layout.is_leaf(e, level)) {
        write_entry(table, i, 0);
        data.push_back(layout.target(e, level));
        continue;
      }
      const uint64_t child = layout.target(e, level);
      teardown(child, level - 1, data, tables);
      if (layout.mode == PagingMode::Pae && level == 3) continue;  // the user PDs stay with their PDPT
      write_entry(table, i, 0);
      tables.push_back(child);
    }
  }

  void release(const std::vector<uint64_t>& data, const std::vector<uint64_t>& tables) {
    for (uint64_t f : data) put_frame(f);
    for (uint64_t t : tables) {
      frames.free_table(t);
      ++counts.tables_freed;
    }
  }

  // A top-level table with the kernel half of the kernel's own (clone_pgd_range); PAE also
  // preallocates the three user PDs, as the PDPTEs are latched at every CR3 load.
  uint64_t new_root() {
    if (!root_pool.empty()) {
      const uint64_t r = root_pool.back();
      root_pool.pop_back();
      return r;
    }
    const uint64_t r = new_table();
    const unsigned n = layout.entries(layout.root_level);
    for (unsigned i = layout.kernel_first_index; i < n; ++i) {
      const uint64_t e = peek_entry(swapper, i);
      if (e & pte::P) write_entry(r, i, e);
    }
    if (layout.mode == PagingMode::Pae)
      for (unsigned i = 0; i < layout.kernel_first_index; ++i) write_entry(r, i, pointer_to(new_table(), 3, true));
    return r;
  }

  uint64_t user_leaf(uint64_t frame, unsigned level, bool writable, bool dirty, bool exec) const {
    uint64_t e = frame | pte::P | pte::US | pte::A;
    if (writable) e |= pte::RW;
    if (dirty) e |= pte::D;
    if (level > 1) e |= pte::PS;
    if (!exec && layout.nx) e |= pte::XD;
    return e;
  }

  // ---- processes ------------------------------------------------------------------------------
  Process& proc(uint32_t pid) {
    auto it = procs.find(pid);
    if (it == procs.end() || !it->second.alive) throw std::invalid_argument(fmt::format("guest OS model: no process {}", pid));
    return it->second;
  }

  const Vma* find_vma(const Process& p, uint64_t va) const {
    auto it = p.vmas.upper_bound(va);
    if (it == p.vmas.begin()) return nullptr;
    --it;
    return va < it->second.end ? &it->second : nullptr;
  }

  uint32_t new_process() {
    const uint32_t pid = procs.empty() ? 1 : procs.rbegin()->first + 1;
    Process p;
    p.pid = pid;
    p.kstack = new_page();
    procs.emplace(pid, std::move(p));
    ++counts.processes;
    return pid;
  }

  // Puts `pid` on vCPU `v` (MOV to CR3 in the kernel's context switch).
  void switch_to(uint32_t v, int64_t pid) {
    const int64_t old = vcpus[v].pid;
    if (old == pid) return;
    if (old >= 0) procs.at(static_cast<uint32_t>(old)).vcpu = -1;
    vcpus[v].pid = pid;
    if (pid >= 0) procs.at(static_cast<uint32_t>(pid)).vcpu = static_cast<int>(v);
    kv = v;
    if (paging) enter_kernel(v, Entry::Schedule);
    load_cr3(v, pid >= 0 ? procs.at(static_cast<uint32_t>(pid)).root : swapper);
    ++counts.context_switches;
  }

  uint32_t place(uint32_t pid) {
    Process& p = proc(pid);
    if (p.vcpu >= 0) return static_cast<uint32_t>(p.vcpu);
    uint32_t v = 0;
    bool idle = false;
    for (uint32_t i = 0; i < vcpus.size() && !idle; ++i)
      if (vcpus[i].pid < 0) v = i, idle = true;
    if (!idle) v = rr = (rr + 1) % static_cast<uint32_t>(vcpus.size());
    switch_to(v, pid);
    return v;
  }

  // After changing leaves of the process running on `v`: INVLPG each (a few), else reload CR3
  // (Linux's tlb_single_page_flush_ceiling is 33).
  void flush_leaves(uint32_t v, const std::vector<uint64_t>& vas) {
    if (vas.empty()) return;
    if (vas.size() <= 32) {
      for (uint64_t va : vas) invlpg(v, va);
      return;
    }
    flush_all(v);
  }
  void flush_all(uint32_t v) {
    const int64_t pid = vcpus[v].pid;
    load_cr3(v, pid >= 0 ? procs.at(static_cast<uint32_t>(pid)).root : swapper);
    ++counts.tlb_flushes;
  }

  ProgramLayout map_image(Process& p, const ProgramImage& image) {
    p.vmas.clear();
    ProgramLayout l;
    const uint64_t huge = layout.huge_size();
    auto round = [](uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); };
    if (image.flat) {
      // From 0: a trace's accesses were valid in the traced program, whatever they are.
      p.vmas[0] = Vma{0, layout.user_top, prot::R | prot::W | prot::X, true, true, 0, 0};
      p.mmap_next = layout.user_top;  // no room left for mmap
      return l;
    }
    const bool wide = layout.long_mode();
    l.text = wide ? 0x400000 : 0x08048000;
    l.text_end = l.text + round(std::max<uint64_t>(image.text_bytes, PAGE), PAGE);
    l.data = round(l.text_end, PAGE);
    l.data_end = l.data + round(std::max<uint64_t>(image.data_bytes, PAGE), PAGE);
    l.heap = round(l.data_end, huge);
    l.heap_end = l.heap + round(std::max<uint64_t>(image.heap_bytes, PAGE), PAGE);
    l.stack_end = (layout.user_top - 16 * MIB) & ~(huge - 1);
    l.stack = l.stack_end - round(std::max<uint64_t>(image.stack_bytes, PAGE), PAGE);
    p.vmas[l.text] = Vma{l.text, l.text_end, prot::R | prot::X, false, false, image.id, 0};
    p.vmas[l.data] = Vma{l.data, l.data_end, prot::R | prot::W, false, false, image.id, (l.data - l.text) / PAGE};
    p.vmas[l.heap] = Vma{l.heap, l.heap_end, prot::R | prot::W, true, true, 0, 0};
    p.vmas[l.stack] = Vma{l.stack, l.stack_end, prot::R | prot::W, true, false, 0, 0};
    p.mmap_next = wide ? 0x7f0000000000ull : 0x40000000ull;
    p.program = l;
    return l;
  }

  // A system call on the pages of [addr, addr + length) of a process: it runs on the process's
  // vCPU, and the range covers each huge leaf in it whole (splitting one is not modelled).
  struct RangeCall {
    uint32_t vcpu;
    uint64_t lo, hi;
    std::vector<Leaf> leaves;
  };
  RangeCall range_call(uint32_t pid, uint64_t addr, uint64_t length, const char* what) {
    RangeCall c;
    c.vcpu = place(pid);
    enter_kernel(c.vcpu, Entry::Syscall);
    c.lo = addr & ~(PAGE - 1);
    c.hi = (addr + length + PAGE - 1) & ~(PAGE - 1);
    leaves(proc(pid).root, layout.root_level, 0, c.lo, c.hi, c.leaves);
    for (const Leaf& leaf : c.leaves)
      if (leaf.va < c.lo || leaf.va + layout.span(leaf.level) > c.hi)
        throw std::invalid_argument(fmt::format("process {}: {} of [0x{:x}, 0x{:x}) would split a huge page", pid, what, c.lo, c.hi));
    return c;
  }

  // ---- faults ---------------------------------------------------------------------------------
  bool permits(const Vma& vma, AccessKind kind) const {
    const uint8_t need = kind == AccessKind::Read ? prot::R : kind == AccessKind::Write ? prot::W : prot::X;
    return (vma.prot & need) != 0;
  }

  void handle_fault(Process& p, uint32_t v, uint64_t va, AccessKind kind, uint32_t error_code) {
    ++counts.page_faults;
    enter_kernel(v, Entry::PageFault);
    const Vma* vma = find_vma(p, va);
    if (!vma || !permits(*vma, kind))
      throw std::invalid_argument(fmt::format("process {}: {} of 0x{:x} outside its mappings (SIGSEGV)", p.pid, x86::name(kind), va));
    if (error_code & x86::pfec::RSVD) throw std::logic_error(fmt::format("guest OS model: reserved-bit fault at 0x{:x}", va));
    // The handler walks the tables with loads through the direct map.
    uint64_t table = p.root;
    bool fresh = false;  // the table was just allocated: nothing to read in it
    for (unsigned level = layout.root_level;; --level) {
      const unsigned i = layout.index(va, level);
      const uint64_t e = fresh ? 0 : read_entry(table, i);
      if (e & pte::P) {
        if (layout.is_leaf(e, level)) return write_fault(v, *vma, va, level, table, i, e);
        table = layout.target(e, level);
        continue;
      }
      if (level == 1) return fill_pte(*vma, va, kind, table, i);
      if (level == 2 && huge_fault(*vma, va, table, i)) return;
      const uint64_t t = new_table();
      write_entry(table, i, pointer_to(t, level, true));
      table = t;
      fresh = true;
    }
  }

  bool huge_fault(const Vma& vma, uint64_t va, uint64_t table, unsigned index) {
    const uint64_t size = layout.huge_size();
    const uint64_t start = va & ~(size - 1);
    if (!params.thp || !vma.anon || !vma.huge || start < vma.start || start + size > vma.end) return false;
    const auto f = new_huge();
    if (!f) return false;  // fall back to small pages, as Linux does
    write_entry(table, index, user_leaf(*f, 2, vma.prot & prot::W, true, vma.prot & prot::X));  // Linux makes it dirty
    ++counts.huge_pages;
    return true;
  }

  void fill_pte(const Vma& vma, uint64_t va, AccessKind kind, uint64_t table, unsigned index) {
    const bool w = kind == AccessKind::Write, exec = vma.prot & prot::X;
    uint64_t leaf;
    if (vma.anon) {
      if (kind == AccessKind::Read && params.zero_page) {
        leaf = user_leaf(ZERO_PAGE, 1, false, false, exec);
        ++counts.zero_page_maps;
      } else {
        leaf = user_leaf(new_page(), 1, vma.prot & prot::W, w, exec);
        ++counts.demand_pages;
      }
    } else {
      const uint64_t cached = cached_page(vma.image, vma.file_page + (va - vma.start) / PAGE);
      if (w) {  // a private file mapping: the first write copies the page
        leaf = user_leaf(new_page(cached), 1, true, true, exec);
        ++counts.cow_copies;
      } else {
        get_frame(cached);
        leaf = user_leaf(cached, 1, false, false, exec);
      }
    }
    write_entry(table, index, leaf);
  }

  // A write to a present read-only leaf of a writable mapping: copy-on-write.
  void write_fault(uint32_t v, const Vma& vma, uint64_t va, unsigned level, uint64_t table, unsigned index, uint64_t e) {
    if (!(vma.prot & prot::W) || (e & pte::RW))
      throw std::logic_error(fmt::format("guest OS model: unexpected protection fault at 0x{:x} (entry 0x{:x})", va, e));
    const uint64_t frame = layout.target(e, level);
    const bool exec = vma.prot & prot::X;
    uint64_t leaf;
    if (refs(frame) == 1) {
      leaf = e | pte::RW | pte::D;  // the last user: reuse it
      ++counts.cow_reuses;
    } else {
      uint64_t copy;
      if (level == 1) {
        copy = frame == ZERO_PAGE ? new_page() : new_page(frame);
      } else {
        const auto h = new_huge(frame);
        if (!h) out_of_memory("a copied huge page");
        copy = *h;
      }
      put_frame(frame);
      leaf = user_leaf(copy, level, true, true, exec);
      ++(frame == ZERO_PAGE ? counts.demand_pages : counts.cow_copies);
    }
    write_entry(table, index, leaf);
    invlpg(v, va);
  }
};

std::string GuestOsParams::describe() const {
  static const char* dm[] = {"largest", "4k", "2m", "1g"};
  return fmt::format("guest-os mode={} memory={}M direct_map={} thp={} zero_page={} vcpus={} page_copy_words={}", x86::name(mode),
                     memory >> 20, dm[static_cast<unsigned>(direct_map)], thp ? 1 : 0, zero_page ? 1 : 0, vcpus, page_copy_words);
}

GuestOs::GuestOs(const GuestOsParams& params, OpSink sink) {
  if (params.memory < 64 * MIB || params.memory % (2 * MIB) != 0)
    throw std::invalid_argument("guest OS model: guest memory must be at least 64 MiB and a multiple of 2 MiB");
  if (params.vcpus < 1 || params.vcpus > 64) throw std::invalid_argument("guest OS model: vcpus must be 1..64");
  k_ = std::make_unique<Kernel>(params, std::move(sink));
}

GuestOs::~GuestOs() = default;

void GuestOs::boot() {
  Kernel& k = *k_;
  const PagingLayout& l = k.layout;
  const PagingMode mode = k.params.mode;

  // A direct-map leaf size the mode has.
  unsigned dm_level = 1;
  switch (k.params.direct_map) {
    case DirectMapPages::Size4K: dm_level = 1; break;
    case DirectMapPages::Size2M: dm_level = 2; break;
    case DirectMapPages::Size1G:
    case DirectMapPages::Largest: dm_level = l.long_mode() ? 3 : 2; break;
  }
  while (dm_level > 1 && l.direct_map_size % l.span(dm_level) != 0) --dm_level;

  Op cpu = Kernel::make(OpKind::Cpu);
  cpu.maxphyaddr = 46;
  cpu.gbpages = true;
  cpu.la57 = mode == PagingMode::Level5;
  k.emit(cpu);
  Op slot = Kernel::make(OpKind::Memslot);
  slot.id = 0;
  slot.addr = 0;
  slot.size = k.params.memory;
  slot.host_page = guest::HostPageSize::Size2M;
  k.emit(slot);
  for (uint32_t v = 0; v < k.params.vcpus; ++v) {
    Op o = Kernel::make(OpKind::Vcpu);
    o.id = v;
    k.emit(o);
    k.vcpus.push_back(VcpuState{});
    k.flushed_in_epoch.push_back(false);
  }
  // The boot CPU in protected mode without paging builds the kernel's tables by physical address.
  RegisterUpdate pe;
  pe.cr0 = x86::cr0::PE | 0x10;  // ET
  Op regs = Kernel::make(OpKind::Regs);
  regs.id = 0;
  regs.regs = pe;
  k.emit(regs);
  k.kv = 0;
  k.swapper = k.new_table();
  if (mode == PagingMode::Pae) {  // the kernel's PD sits in PDPTE 3
    k.write_entry(k.swapper, 3, k.pointer_to(k.new_table(), 3, false));
  }
  const uint64_t leaf_size = l.span(dm_level);
  for (uint64_t gpa = 0; gpa < l.direct_map_size; gpa += leaf_size) {
    uint64_t e = gpa | KERNEL_PAGE;
    if (dm_level > 1) e |= pte::PS;
    if (l.nx && gpa >= KERNEL_DATA) e |= pte::XD;  // only the kernel's text is executable
    k.install(k.swapper, l.direct_va(gpa), dm_level, e, false);
  }
  // Paging on, on every vCPU (the boot CPU, then the others as they come up).
  RegisterUpdate on;
  uint64_t cr4 = x86::cr4::PGE | x86::cr4::SMEP | x86::cr4::SMAP;
  uint64_t efer = l.nx ? x86::efer::NXE : 0;
  if (mode == PagingMode::Bits32) cr4 |= x86::cr4::PSE;
  if (mode != PagingMode::Bits32) cr4 |= x86::cr4::PAE;
  if (mode == PagingMode::Level5) cr4 |= x86::cr4::LA57;
  if (l.long_mode()) efer |= x86::efer::LME | x86::efer::SCE;
  on.cr0 = x86::cr0::PG | x86::cr0::WP | x86::cr0::PE | 0x10;
  on.cr4 = cr4;
  on.efer = efer;
  on.cr3 = k.swapper;
  for (uint32_t v = 0; v < k.params.vcpus; ++v) {
    Op o = Kernel::make(OpKind::Regs);
    o.id = v;
    o.regs = on;
    k.emit(o);
  }
  k.paging = true;
  // start_kernel: some of the kernel's own text and data, on every vCPU.
  for (uint32_t v = 0; v < k.params.vcpus; ++v) {
    k.kv = v;
    for (uint64_t i = 0; i < 16; ++i) {
      k.emit_access(v, AccessKind::Fetch, l.direct_va(KERNEL_TEXT + i * 0x3040), 1, 0);
      k.kwrite(KERNEL_DATA + v * PAGE + i * 64, 8, i);
      k.counts.kernel_accesses++;
    }
  }
  if (k.params.audits) audit();
}

uint32_t GuestOs::spawn(const ProgramImage& image) {
  Kernel& k = *k_;
  const uint32_t pid = k.new_process();
  Process& p = k.procs.at(pid);
  p.root = k.new_root();
  k.map_image(p, image);
  ++k.counts.execs;
  return pid;
}

uint32_t GuestOs::fork(uint32_t parent) {
  Kernel& k = *k_;
  const uint32_t v = k.place(parent);
  k.enter_kernel(v, Entry::Syscall);
  const uint32_t pid = k.new_process();
  Process& pp = k.procs.at(parent);
  Process& c = k.procs.at(pid);
  c.root = k.new_root();
  c.vmas = pp.vmas;
  c.program = pp.program;
  c.mmap_next = pp.mmap_next;
  std::vector<Leaf> leaves;
  k.leaves(pp.root, k.layout.root_level, 0, 0, k.layout.user_top, leaves);
  bool changed = false;
  for (const Leaf& leaf : leaves) {
    const Vma* vma = k.find_vma(pp, leaf.va);
    if (!vma) throw std::logic_error(fmt::format("guest OS model: process {} maps 0x{:x} outside its VMAs", parent, leaf.va));
    if (!vma->anon && !(vma->prot & prot::W)) continue;  // shared text: the child faults it in from the page cache
    uint64_t child = leaf.entry & ~pte::A;
    if ((vma->prot & prot::W) && (leaf.entry & pte::RW)) {
      k.write_entry(leaf.table, leaf.index, leaf.entry & ~pte::RW);
      changed = true;
    }
    child &= ~pte::RW;
    k.get_frame(k.layout.target(leaf.entry, leaf.level));
    k.install(c.root, leaf.va, leaf.level, child, true);
  }
  if (changed) k.flush_all(v);  // flush_tlb_mm
  ++k.counts.forks;
  return pid;
}

ProgramLayout GuestOs::exec(uint32_t pid, const ProgramImage& image) {
  Kernel& k = *k_;
  const uint32_t v = k.place(pid);
  k.enter_kernel(v, Entry::Syscall);
  Process& p = k.proc(pid);
  const uint64_t old = p.root;
  p.root = k.new_root();
  const ProgramLayout l = k.map_image(p, image);
  k.load_cr3(v, p.root);  // activate_mm, then the old mm goes
  std::vector<uint64_t> data, tables;
  k.teardown(old, k.layout.root_level, data, tables);
  k.release(data, tables);
  k.root_pool.push_back(old);
  ++k.counts.execs;
  return l;
}

void GuestOs::exit(uint32_t pid) {
  Kernel& k = *k_;
  const uint32_t v = k.place(pid);
  k.enter_kernel(v, Entry::Syscall);
  Process& p = k.proc(pid);
  std::vector<uint64_t> data, tables;
  k.teardown(p.root, k.layout.root_level, data, tables);  // exit_mmap, with the mm still loaded
  data.push_back(p.kstack);
  // The vCPU moves on to a process that runs nowhere, or idles on the kernel's tables.
  int64_t next = -1;
  for (const auto& [q, proc] : k.procs)
    if (q != pid && proc.alive && proc.vcpu < 0) {
      next = q;
      break;
    }
  k.switch_to(v, next);
  k.release(data, tables);
  k.root_pool.push_back(p.root);
  p.alive = false;
  p.vmas.clear();
  ++k.counts.exits;
  if (k.params.audits) audit();
}

uint64_t GuestOs::mmap(uint32_t pid, uint64_t length, uint8_t protection, bool huge) {
  Kernel& k = *k_;
  const uint32_t v = k.place(pid);
  k.enter_kernel(v, Entry::Syscall);
  Process& p = k.proc(pid);
  const uint64_t align = huge ? k.layout.huge_size() : PAGE;
  const uint64_t start = (p.mmap_next + align - 1) & ~(align - 1);
  const uint64_t len = (length + PAGE - 1) & ~(PAGE - 1);
  if (len == 0 || start + len > k.layout.user_top || start + len < start)
    throw std::invalid_argument(fmt::format("process {}: no room for an mmap of {} bytes", pid, length));
  p.vmas[start] = Vma{start, start + len, protection, true, huge, 0, 0};
  p.mmap_next = start + len + PAGE;  // a guard gap
  ++k.counts.mmaps;
  return start;
}

namespace {

// Cuts [lo, hi) out of the VMAs; returns the pieces that were inside it.
std::vector<Vma> carve(std::map<uint64_t, Vma>& vmas, uint64_t lo, uint64_t hi) {
  std::vector<Vma> inside;
  std::vector<Vma> keep;
  for (auto it = vmas.begin(); it != vmas.end();) {
    const Vma v = it->second;
    if (v.end <= lo || v.start >= hi) {
      ++it;
      continue;
    }
    it = vmas.erase(it);
    auto piece = [&](uint64_t s, uint64_t e) {
      Vma x = v;
      x.start = s;
      x.end = e;
      if (!x.anon) x.file_page = v.file_page + (s - v.start) / PAGE;
      return x;
    };
    if (v.start < lo) keep.push_back(piece(v.start, lo));
    if (v.end > hi) keep.push_back(piece(hi, v.end));
    inside.push_back(piece(std::max(v.start, lo), std::min(v.end, hi)));
  }
  for (const Vma& v : keep) vmas[v.start] = v;
  return inside;
}

}  // namespace

void GuestOs::munmap(uint32_t pid, uint64_t addr, uint64_t length) {
  Kernel& k = *k_;
  const Kernel::RangeCall call = k.range_call(pid, addr, length, "munmap");
  Process& p = k.proc(pid);
  std::vector<uint64_t> data, vas;
  for (const Leaf& leaf : call.leaves) {
    k.write_entry(leaf.table, leaf.index, 0);
    data.push_back(k.layout.target(leaf.entry, leaf.level));
    vas.push_back(leaf.va);
  }
  carve(p.vmas, call.lo, call.hi);
  k.flush_leaves(call.vcpu, vas);
  k.release(data, {});
  ++k.counts.munmaps;
}

void GuestOs::mprotect(uint32_t pid, uint64_t addr, uint64_t length, uint8_t protection) {
  Kernel& k = *k_;
  const Kernel::RangeCall call = k.range_call(pid, addr, length, "mprotect");
  Process& p = k.proc(pid);
  std::vector<uint64_t> vas;
  for (const Leaf& leaf : call.leaves) {
    uint64_t e = leaf.entry & ~(pte::RW | pte::XD);
    // Write access only for pages this process alone maps; shared ones still copy on write.
    if ((protection & prot::W) && k.refs(k.layout.target(leaf.entry, leaf.level)) == 1) e |= leaf.entry & pte::RW;
    if (!(protection & prot::X) && k.layout.nx) e |= pte::XD;
    if (e == leaf.entry) continue;
    k.write_entry(leaf.table, leaf.index, e);
    vas.push_back(leaf.va);
  }
  for (Vma x : carve(p.vmas, call.lo, call.hi)) {
    x.prot = protection;
    p.vmas[x.start] = x;
  }
  k.flush_leaves(call.vcpu, vas);
  ++k.counts.mprotects;
}

void GuestOs::access(uint32_t pid, AccessKind kind, uint64_t va, unsigned width, uint64_t value) {
  Kernel& k = *k_;
  Process& p = k.proc(pid);
  if (va >= k.layout.user_top || (va & (PAGE - 1)) + (kind == AccessKind::Fetch ? 1 : width) > PAGE)
    throw std::invalid_argument(fmt::format("process {}: access of {} bytes at 0x{:x} is not in one user page", pid, width, va));
  const uint32_t v = k.place(pid);
  for (int attempt = 0; attempt < 4; ++attempt) {
    k.set_cpl(v, 3);
    const AccessResult r = k.emit_access(v, kind, va, width, value);
    ++k.counts.user_accesses;
    if (r.ok()) return;
    if (r.status != AccessResult::Status::Fault || r.fault.vector != x86::VECTOR_PF)
      throw std::logic_error(fmt::format("guest OS model: process {}: {} of 0x{:x} neither translated nor page-faulted", pid, x86::name(kind), va));
    k.handle_fault(p, v, va, kind, r.fault.error_code);
  }
  throw std::logic_error(fmt::format("guest OS model: process {}: {} of 0x{:x} still faults after its faults were handled", pid, x86::name(kind), va));
}

void GuestOs::run(uint32_t pid) { k_->place(pid); }

void GuestOs::audit() {
  k_->emit(Kernel::make(OpKind::Audit));
  ++k_->counts.audits;
}

void GuestOs::stats() { k_->emit(Kernel::make(OpKind::Stats)); }

bool GuestOs::alive(uint32_t pid) const {
  auto it = k_->procs.find(pid);
  return it != k_->procs.end() && it->second.alive;
}
const ProgramLayout& GuestOs::program(uint32_t pid) const { return k_->procs.at(pid).program; }
const GuestOsParams& GuestOs::params() const { return k_->params; }
const PagingLayout& GuestOs::layout() const { return k_->layout; }
const GuestOsCounts& GuestOs::counts() const { return k_->counts; }
const Vm& GuestOs::reference() const { return k_->ref; }

}  // namespace vmmu::sim::guest_os
