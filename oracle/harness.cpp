// The oracle's guest harness image (harness.hpp, docs/ORACLES.md). Everything here is generated
// straight-line code: the image builder tracks every vCPU's registers while it reads the ops, so
// each access becomes a short specialized sequence (load the paging registers if they changed, set
// PKRU and RFLAGS.AC, enter CPL 3 if asked, perform the access, report).
#include "oracle/harness.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>

#include "oracle/x86_asm.hpp"
#include "x86/control_registers.hpp"

namespace vmmu::oracle {

const char* name(HarnessMode m) {
  switch (m) {
    case HarnessMode::Bits32: return "32bit";
    case HarnessMode::Pae: return "pae";
    case HarnessMode::Level4: return "4level";
    case HarnessMode::Level5: return "5level";
  }
  return "?";
}

std::optional<HarnessMode> parse_harness_mode(const std::string& s) {
  if (s == "32bit" || s == "pse") return HarnessMode::Bits32;
  if (s == "pae") return HarnessMode::Pae;
  if (s == "4level") return HarnessMode::Level4;
  if (s == "5level") return HarnessMode::Level5;
  return std::nullopt;
}

namespace {

using sim::Op;
using sim::OpKind;

// Harness pages (index i lives at gpa HARNESS_GPA + i * 4 KiB and at the harness linear base + i * 4 KiB).
enum Page : unsigned {
  P_VARS = 0, P_GDT = 1, P_IDT = 2, P_HPT = 3, P_HPD = 4, P_HPDPT = 5, P_HPML4 = 6, P_BOOTROOT = 7,
  P_IDPT = 8, P_IDPD = 9, P_IDPDPT = 10, P_IDPML4 = 11, P_KSTACK = 12, P_USTACK = 13, P_WINDOW = 14,
  P_USTUBS = 15, P_CODE = 16, P_COUNT = 512,
};
// Offsets in the VARS page.
constexpr int V_CONT = 0x00, V_IDX = 0x08, V_REC = 0x10, V_GDTR = 0x40, V_IDTR = 0x50, V_BOOT_GDTR = 0x60;
constexpr int REC_SIZE = 23;  // a5, idx:4, kind:1, vector:1, value:8, cr2:8
constexpr uint32_t MB_HEADER_OFF = 0x800;

constexpr uint16_t SEL_KCODE32 = 0x08, SEL_KDATA = 0x10, SEL_KCODE64 = 0x18, SEL_UDATA = 0x23,
                   SEL_UCODE32 = 0x2b, SEL_UCODE64 = 0x33, SEL_TSS = 0x38;
constexpr uint8_t PORT_DEBUGCON = 0xe9, PORT_EXIT = 0xf4;

constexpr uint64_t gpa_of(unsigned page) { return HARNESS_GPA + uint64_t(page) * 4096; }

bool long_mode(HarnessMode m) { return m == HarnessMode::Level4 || m == HarnessMode::Level5; }

std::optional<HarnessMode> mode_of(const x86::CpuState& s) {
  switch (s.mode()) {
    case x86::PagingMode::Bits32: return HarnessMode::Bits32;
    case x86::PagingMode::Pae: return HarnessMode::Pae;
    case x86::PagingMode::Level4: return HarnessMode::Level4;
    case x86::PagingMode::Level5: return HarnessMode::Level5;
    default: return std::nullopt;
  }
}

bool backed(uint64_t gpa, uint64_t size) {
  const uint64_t end = gpa + size;
  if (end <= 0xa0000) return true;
  return gpa >= 0x100000 && end <= ORACLE_RAM_LIMIT;
}

struct Slot {
  uint64_t gpa, size;
};

class Builder {
 public:
  Builder(const std::vector<Op>& ops, const std::vector<OpInfo>& info) : ops_(ops), info_(info) {}

  Image build() {
    scan_model_and_mode();
    lin_ = long_mode(img_.mode) ? HARNESS_LINEAR_64 : HARNESS_LINEAR_32;
    x64_ = long_mode(img_.mode);
    pages_.assign(P_CODE * 4096, 0);
    // The main code runs at its linear address; the boot code (32-bit, paging off) precedes it
    // and is generated after it, when its size is known, then placed in front.
    const std::vector<uint8_t> boot_probe = boot_code(0, 0);
    Asm main(x64_, lin(P_CODE) + boot_probe.size());
    emit_main(main);
    const uint64_t main_phys = gpa_of(P_CODE) + boot_probe.size();
    const std::vector<uint8_t> boot = boot_code(main_phys, high_entry_);
    if (boot.size() != boot_probe.size()) throw std::logic_error("harness: boot code size changed");
    std::vector<uint8_t> code = boot;
    code.insert(code.end(), main.bytes().begin(), main.bytes().end());
    if (P_CODE * 4096 + code.size() > HARNESS_SIZE - 64 * 1024)
      throw NotCheckable(fmt::format("too many ops for one harness image ({} bytes of code)", code.size()));
    build_tables();
    build_descriptors();
    build_user_stubs();
    build_multiboot_header(P_CODE * 4096 + code.size());
    img_.bytes = pages_;
    img_.bytes.insert(img_.bytes.end(), code.begin(), code.end());
    uint64_t top = HARNESS_GPA + HARNESS_SIZE;
    for (const Slot& s : slots_)
      if (backed(s.gpa, s.size)) top = std::max(top, s.gpa + s.size);
    img_.ram_bytes = ((top + (32ull << 20)) + (2ull << 20) - 1) & ~((2ull << 20) - 1);
    return img_;
  }

 private:
  uint64_t lin(unsigned page) const { return lin_ + uint64_t(page) * 4096; }
  uint64_t lin_vars(int off) const { return lin(P_VARS) + off; }
  unsigned pte_size() const { return img_.mode == HarnessMode::Bits32 ? 4 : 8; }
  // Index of harness page i in the harness page table.
  unsigned hpt_index(unsigned i) const { return img_.mode == HarnessMode::Bits32 ? 512 + i : i; }

  void put(unsigned page, uint64_t off, uint64_t v, unsigned width) {
    for (unsigned i = 0; i < width; ++i) pages_[page * 4096 + off + i] = uint8_t(v >> (8 * i));
  }

  // ---- what the workload asks for
  void scan_model_and_mode() {
    std::map<uint32_t, x86::CpuState> st;
    bool mode_set = false;
    for (const Op& op : ops_) {
      if (op.kind == OpKind::Memslot) {
        if (op.addr < HARNESS_GPA + HARNESS_SIZE && HARNESS_GPA < op.addr + op.size)
          throw NotCheckable(fmt::format("line {}: memslot overlaps the oracle harness [{:#x}, {:#x})", op.line,
                                         HARNESS_GPA, HARNESS_GPA + HARNESS_SIZE));
        slots_.push_back({op.addr, op.size});
        if (op.readonly) ro_slots_.push_back({op.addr, op.size});
      } else if (op.kind == OpKind::Cpu) {
        if (op.maxphyaddr) img_.model.maxphyaddr = *op.maxphyaddr;
        if (op.gbpages) img_.model.gbpages = *op.gbpages;
        if (op.la57) img_.model.la57 = *op.la57;
      } else if (op.kind == OpKind::Regs && !mode_set) {
        x86::CpuState& s = st[op.id];
        apply_regs(s, op);
        if (auto m = mode_of(s)) {
          img_.mode = *m;
          mode_set = true;
        }
      }
    }
  }
  static void apply_regs(x86::CpuState& s, const Op& op) {
    const RegisterUpdate& u = op.regs;
    if (u.cr0) s.cr0 = *u.cr0;
    if (u.cr3) s.cr3 = *u.cr3;
    if (u.cr4) s.cr4 = *u.cr4;
    if (u.efer) s.efer = *u.efer;
    if (u.cpl) s.cpl = *u.cpl;
    if (u.ac) s.ac = *u.ac;
    if (u.pkru) s.pkru = *u.pkru;
  }

  void skip(const Op& op, std::string why) { img_.skipped.emplace_back(op.line, std::move(why)); }
  void stop(const Op& op, std::string why) {
    img_.stop_line = op.line;
    skip(op, std::move(why));
  }

  bool in_harness_linear(uint64_t gva) const {
    switch (img_.mode) {
      case HarnessMode::Bits32: return gva >= 0xffc00000ull;
      case HarnessMode::Pae: return gva >= 0xc0000000ull;
      case HarnessMode::Level4: return gva >= 0xffffff8000000000ull;
      case HarnessMode::Level5: return gva >= 0xffff000000000000ull;
    }
    return false;
  }
  uint64_t root_slot_gpa(uint64_t cr3) const {
    switch (img_.mode) {
      case HarnessMode::Bits32: return (cr3 & 0xfffff000ull) + 1023 * 4;
      case HarnessMode::Pae: return (cr3 & 0xffffffe0ull) + 3 * 8;
      default: return (cr3 & 0x000ffffffffff000ull) + 511 * 8;
    }
  }
  uint64_t root_slot_value() const {
    switch (img_.mode) {
      case HarnessMode::Bits32: return gpa_of(P_HPT) | 0x27;
      case HarnessMode::Pae: return gpa_of(P_HPD) | 0x1;
      case HarnessMode::Level4: return gpa_of(P_HPDPT) | 0x27;
      case HarnessMode::Level5: return gpa_of(P_HPML4) | 0x27;
    }
    return 0;
  }

  // ---- code
  std::vector<uint8_t> boot_code(uint64_t main_phys, uint64_t high_entry) {
    Asm a(false, gpa_of(P_CODE));
    a.cli();
    a.mov_imm(SP, gpa_of(P_KSTACK + 1));
    a.mov_imm(AX, gpa_of(P_VARS) + V_BOOT_GDTR);
    a.lgdt_rax();
    a.db(0xea);  // ljmp SEL_KCODE32:next
    a.d32(uint32_t(a.here() + 6));
    a.d16(SEL_KCODE32);
    a.mov_ax16(SEL_KDATA);
    for (int s : {0, 2, 3, 4, 5}) a.mov_seg_ax(s);
    a.cld();
    // BIOS leftovers below 640 KiB would be seen as page-table entries and data: zero what
    // the workload's memslots cover there.
    for (const Slot& s : slots_) {
      if (s.gpa >= 0xa0000) continue;
      const uint64_t end = std::min<uint64_t>(s.gpa + s.size, 0xa0000);
      a.mov_imm(DI, s.gpa);
      a.mov_imm(CX, (end - s.gpa) / 4);
      a.xor_eax();
      a.rep_stosd();
    }
    uint64_t cr4 = 0;
    if (img_.mode != HarnessMode::Bits32) cr4 |= x86::cr4::PAE;
    if (img_.mode == HarnessMode::Level5) cr4 |= x86::cr4::LA57;
    a.mov_imm(AX, cr4);
    a.mov_cr_from_rax(4);
    a.mov_imm(AX, gpa_of(P_BOOTROOT));
    a.mov_cr_from_rax(3);
    a.mov_imm(CX, 0xc0000080);
    a.rdmsr();
    a.and_eax(~uint32_t(x86::efer::NXE | x86::efer::LME));
    if (x64_) a.or_eax(uint32_t(x86::efer::LME));
    a.wrmsr();
    a.mov_imm(AX, 0x80000011);
    a.mov_cr_from_rax(0);
    if (x64_) {
      a.db(0xea);  // ljmp SEL_KCODE64:main_phys (the trampoline at the start of main)
      a.d32(uint32_t(main_phys));
      a.d16(SEL_KCODE64);
    } else {
      a.mov_imm(AX, high_entry);
      a.jmp_rax();
    }
    return a.bytes();
  }

  void set_cont(Asm& a, uint32_t idx, std::size_t& patch) {
    a.mov_imm(BX, lin_vars(0));
    patch = a.load_address_placeholder();
    a.store(BX, V_CONT, AX);
    a.store_imm32(BX, V_IDX, idx);
  }

  void emit_report(Asm& a) {  // rbx = vars; fills the record's marker and index, writes it out
    a.load32(AX, BX, V_IDX);
    a.store32(BX, V_REC + 1, AX);
    a.store_imm8(BX, V_REC, 0xa5);
    a.mov_imm(SI, lin_vars(V_REC));
    a.mov_imm(CX, REC_SIZE);
    a.db({0x66, 0xba, PORT_DEBUGCON, 0x00});  // mov dx, 0xe9
    a.cld();
    a.rep_outsb();
  }
  // stores rax (32-bit: eax, then edx or zero) as the record's 8-byte field at `off`
  void store_field(Asm& a, int off, bool edx_high) {
    if (x64_) {
      a.store(BX, int8_t(off), AX);
    } else {
      a.store32(BX, int8_t(off), AX);
      if (edx_high) a.store32(BX, int8_t(off + 4), DX);
      else a.store_imm32(BX, int8_t(off + 4), 0);
    }
  }

  void emit_handlers(Asm& a) {
    // int 0x80: the access completed; rax (edx:eax) holds the value read
    h_ok_ = a.here();
    a.mov_imm(BX, lin_vars(0));
    store_field(a, V_REC + 7, true);
    a.xor_eax();
    a.xor_edx();
    store_field(a, V_REC + 15, true);
    a.store_imm8(BX, V_REC + 5, 0);
    a.store_imm8(BX, V_REC + 6, 0);
    std::size_t jumps[3];
    jumps[0] = a.size();
    a.jmp(a.here());
    // #PF and #GP
    for (uint8_t vec : {uint8_t(14), uint8_t(13)}) {
      (vec == 14 ? h_pf_ : h_gp_) = a.here();
      a.mov_imm(BX, lin_vars(0));
      a.pop(AX);  // error code
      store_field(a, V_REC + 7, false);
      if (vec == 14) a.mov_rax_from_cr(2);
      else a.xor_eax();
      store_field(a, V_REC + 15, false);
      a.store_imm8(BX, V_REC + 5, 1);
      a.store_imm8(BX, V_REC + 6, vec);
      jumps[vec == 14 ? 1 : 2] = a.size();
      a.jmp(a.here());
    }
    // the common tail: report, reset the stack, continue
    const uint64_t tail = a.here();
    emit_report(a);
    a.mov_imm(SP, lin(P_KSTACK + 1));
    a.jmp_mem_rbx();
    for (std::size_t j : jumps) patch_jmp(a, j, tail);
    // unexpected exceptions: report the vector and whatever is on the stack, then stop
    h_unexpected_ = a.here();
    a.mov_imm(BX, lin_vars(0));
    a.pop(AX);
    a.db({0x88, 0x43, uint8_t(V_REC + 6)});  // mov [rbx+vec], al
    a.pop(AX);
    store_field(a, V_REC + 7, false);
    a.mov_rax_from_cr(2);
    store_field(a, V_REC + 15, false);
    a.store_imm8(BX, V_REC + 5, 3);
    emit_report(a);
    a.mov_imm(AX, 1);
    a.out_al(PORT_EXIT);
    a.hlt();
    for (unsigned v = 0; v < 256; ++v) {
      vec_stub_[v] = a.here();
      a.push_imm8(uint8_t(v));
      a.jmp(h_unexpected_);
    }
  }
  // The handlers' `jmp rel32` placeholders: find the E9 that follows `start`'s sequence.
  void patch_jmp(Asm& a, std::size_t pos, uint64_t target) {
    auto& b = a.bytes();
    const uint64_t from = a.here() - b.size() + pos + 5;
    const uint32_t rel = uint32_t(int32_t(int64_t(target) - int64_t(from)));
    std::memcpy(&b[pos + 1], &rel, 4);
  }
  void map_window(Asm& a, uint64_t gpa) {
    const uint64_t entry = (gpa & ~0xfffull) | 0x63;
    a.mov_imm(BX, lin(P_HPT) + hpt_index(P_WINDOW) * pte_size());
    if (x64_) {
      a.mov_imm(AX, entry);
      a.store(BX, 0, AX);
    } else {
      a.mov_imm(AX, uint32_t(entry));
      a.store32(BX, 0, AX);
      if (pte_size() == 8) {
        a.mov_imm(AX, entry >> 32);
        a.store32(BX, 4, AX);
      }
    }
    a.mov_imm(AX, lin(P_WINDOW));
    a.invlpg_rax();
    a.mov_imm(DI, lin(P_WINDOW) + (gpa & 0xfff));
  }
  void value_to_rax(Asm& a, uint64_t v) {
    if (x64_) {
      a.mov_imm(AX, v);
    } else {
      a.mov_imm(AX, uint32_t(v));
      a.mov_imm(DX, v >> 32);
    }
  }
  void poke(Asm& a, uint64_t gpa, unsigned width, uint64_t value) {
    map_window(a, gpa);
    value_to_rax(a, value);
    a.store_width(width);
  }

  void load_state(Asm& a, const x86::CpuState& s) {
    const uint64_t slot = root_slot_gpa(s.cr3);
    poke(a, slot, pte_size(), root_slot_value());
    injected_.insert(slot);
    if (img_.mode == HarnessMode::Pae)
      for (unsigned i = 0; i < 4; ++i) img_.pae_pdpte_gpas.push_back((s.cr3 & 0xffffffe0ull) + 8 * i);
    uint64_t cr4 = s.cr4 & (x86::cr4::PSE | x86::cr4::PAE | x86::cr4::PGE | x86::cr4::LA57 | x86::cr4::SMEP |
                            x86::cr4::SMAP | x86::cr4::PKE);
    a.mov_imm(AX, cr4 & ~x86::cr4::PGE);
    a.mov_cr_from_rax(4);
    a.mov_imm(CX, 0xc0000080);
    a.rdmsr();
    a.and_eax(~uint32_t(x86::efer::NXE));
    if (s.efer & x86::efer::NXE) a.or_eax(uint32_t(x86::efer::NXE));
    a.wrmsr();
    a.mov_imm(AX, 0x80000011 | (s.cr0 & x86::cr0::WP));
    a.mov_cr_from_rax(0);
    a.mov_imm(AX, s.cr3);
    a.mov_cr_from_rax(3);
    if (cr4 & x86::cr4::PGE) {
      a.mov_imm(AX, cr4);
      a.mov_cr_from_rax(4);
    }
  }

  // User stubs: one per (kind, width); each performs the access and returns with int 0x80.
  uint64_t user_stub(x86::AccessKind k, unsigned width) const {
    const unsigned w = width == 1 ? 0 : width == 2 ? 1 : width == 4 ? 2 : 3;
    const unsigned i = k == x86::AccessKind::Read ? w : k == x86::AccessKind::Write ? 4 + w : 8;
    return lin(P_USTUBS) + 32 * i;
  }
  void build_user_stubs() {
    for (unsigned i = 0; i < 9; ++i) {
      Asm a(x64_, lin(P_USTUBS) + 32 * i);
      if (i < 4) {
        a.xor_eax();
        a.xor_edx();
        a.load_width(1u << i);
      } else if (i < 8) {
        a.store_width(1u << (i - 4));
      } else {
        a.call_rdi();
      }
      a.int_(0x80);
      std::memcpy(&pages_[P_USTUBS * 4096 + 32 * i], a.bytes().data(), a.bytes().size());
    }
  }

  void access(Asm& a, const Op& op, const x86::CpuState& s, uint32_t idx) {
    const x86::AccessKind kind = op.kind == OpKind::Read    ? x86::AccessKind::Read
                                 : op.kind == OpKind::Write ? x86::AccessKind::Write
                                                            : x86::AccessKind::Fetch;
    const unsigned width = op.kind == OpKind::Fetch ? 1 : op.width;
    std::size_t patch;
    set_cont(a, idx, patch);
    if (s.cr4 & x86::cr4::PKE) {
      a.xor_ecx();
      a.xor_edx();
      a.mov_imm(AX, kind == x86::AccessKind::Fetch ? 0 : s.pkru);  // fetches ignore PKRU; the stack does not
      a.wrpkru();
    }
    if (s.cpl == 0) {  // RFLAGS.AC through pushf/popf (STAC/CLAC need CPUID.SMAP)
      a.db(0x9c);
      if (s.ac) a.db({0x81, 0x0c, 0x24});  // or dword [rsp], AC
      else a.db({0x81, 0x24, 0x24});       // and dword [rsp], ~AC
      a.d32(s.ac ? uint32_t(x86::rflags::AC) : ~uint32_t(x86::rflags::AC));
      a.db(0x9d);
    }
    a.mov_imm(DI, op.addr);
    if (kind == x86::AccessKind::Write) value_to_rax(a, op.value);
    if (s.cpl == 0) {
      if (kind == x86::AccessKind::Read) {
        a.xor_eax();
        a.xor_edx();
        a.load_width(width);
      } else if (kind == x86::AccessKind::Write) {
        a.store_width(width);
      } else {
        a.call_rdi();
      }
      a.int_(0x80);
    } else {
      const uint32_t flags = 0x2 | (s.ac ? uint32_t(x86::rflags::AC) : 0);
      a.push_imm8(SEL_UDATA);
      a.push_imm32(uint32_t(lin(P_USTACK + 1)));
      a.push_imm32(flags);
      a.push_imm8(x64_ ? SEL_UCODE64 : SEL_UCODE32);
      a.push_imm32(uint32_t(user_stub(kind, width)));
      a.iret();
    }
    a.patch_address(patch, a.here());
  }

  void peek(Asm& a, uint64_t gpa, unsigned width, uint32_t idx) {
    std::size_t patch;
    set_cont(a, idx, patch);
    map_window(a, gpa);
    a.xor_eax();
    a.xor_edx();
    a.load_width(width);
    a.int_(0x80);
    a.patch_address(patch, a.here());
  }

  void emit_main(Asm& a) {
    std::size_t tramp_patch = 0;
    if (x64_) {  // the trampoline, still at its physical address: jump to the linear entry
      a.db({0x48, 0xb8});
      tramp_patch = a.size();
      a.d64(0);
      a.jmp_rax();
    }
    emit_handlers(a);
    high_entry_ = a.here();
    if (x64_) {
      const uint64_t v = high_entry_;
      std::memcpy(&a.bytes()[tramp_patch], &v, 8);
    }
    a.mov_imm(AX, lin_vars(V_GDTR));
    a.lgdt_rax();
    a.mov_imm(AX, lin_vars(V_IDTR));
    a.lidt_rax();
    a.mov_ax16(SEL_TSS);
    a.ltr_ax();
    a.mov_imm(SP, lin(P_KSTACK + 1));
    if (!x64_) {
      a.mov_ax16(SEL_UDATA);
      a.mov_seg_ax(0);
      a.mov_seg_ax(3);
    }
    emit_ops(a);
    // done
    a.mov_imm(BX, lin_vars(0));
    a.store_imm32(BX, V_IDX, uint32_t(img_.probes.size()));
    a.store_imm8(BX, V_REC + 5, 4);
    emit_report(a);
    a.mov_imm(AX, 0);
    a.out_al(PORT_EXIT);
    a.hlt();
  }

  void emit_ops(Asm& a) {
    std::map<uint32_t, x86::CpuState> st;
    // The vCPU whose paging registers the CPU holds (none before the first load or after a change).
    struct Loaded {
      bool valid = false;
      uint32_t id = 0;
      x86::CpuState state{};
    } loaded;
    auto paging_regs_equal = [](const x86::CpuState& x, const x86::CpuState& y) {
      return x.cr0 == y.cr0 && x.cr3 == y.cr3 && x.cr4 == y.cr4 && x.efer == y.efer;
    };
    for (std::size_t i = 0; i < ops_.size() && !img_.stop_line; ++i) {
      const Op& op = ops_[i];
      const OpInfo& inf = info_[i];
      switch (op.kind) {
        case OpKind::Cpu: break;
        case OpKind::Vcpu: st[op.id] = {}; break;
        case OpKind::Memslot: break;
        case OpKind::MemslotDelete:
        case OpKind::MemslotMove: stop(op, "memslot-delete/move: the oracle's RAM cannot follow"); break;
        case OpKind::Regs:
        case OpKind::Cr3:
        case OpKind::Flush: {
          if (inf.paging_op_faulted) {
            // vmmu refused the PDPTEs (#GP) and kept the old registers; QEMU would not check them
            // at all (it reads PDPTEs at every walk): keep the old registers here too.
            skip(op, "masked qemu-pdpte-not-latched: the PDPTE load gave #GP in vmmu");
            break;
          }
          x86::CpuState& s = st[op.id];
          if (op.kind == OpKind::Regs) apply_regs(s, op);
          if (op.kind == OpKind::Cr3) s.cr3 = op.addr;
          if (op.kind != OpKind::Regs || op.regs.touches_paging()) stale_pdptes_.erase(op.id);
          if (loaded.valid && loaded.id == op.id && (op.kind != OpKind::Regs || !paging_regs_equal(loaded.state, s)))
            loaded.valid = false;
          break;
        }
        case OpKind::Invlpg:
          if (loaded.valid && loaded.id == op.id) {
            a.mov_imm(AX, op.addr);
            a.invlpg_rax();
          }
          break;
        case OpKind::Poke: {
          if (!backed(op.addr, op.width) || !in_slot(op.addr)) {
            stop(op, "poke outside the oracle's RAM");
            break;
          }
          if (touches_injected(op.addr, op.width)) {
            stop(op, "poke to a root-table entry the harness owns");
            break;
          }
          if (img_.mode == HarnessMode::Pae) {
            // vmmu latched the PDPTEs at the last load; QEMU reads them at every walk
            for (const auto& [id, vs] : st)
              if (mode_of(vs) == HarnessMode::Pae && op.addr < (vs.cr3 & 0xffffffe0ull) + 32 &&
                  (vs.cr3 & 0xffffffe0ull) < op.addr + op.width)
                stale_pdptes_.insert(id);
          }
          poke(a, op.addr, op.width, op.value);
          break;
        }
        case OpKind::Peek: {
          if (!backed(op.addr, op.width)) { skip(op, "peek outside the oracle's RAM"); break; }
          if (touches_injected(op.addr, op.width)) { skip(op, "peek of a root-table entry the harness owns"); break; }
          if (in_ro_slot(op.addr)) { skip(op, "peek in a read-only memslot (the oracle's RAM is writable)"); break; }
          const uint32_t idx = uint32_t(img_.probes.size());
          img_.probes.push_back({i, true, true});
          peek(a, op.addr, op.width, idx);
          break;
        }
        case OpKind::Read:
        case OpKind::Write:
        case OpKind::Fetch: {
          const x86::CpuState& s = st[op.id];
          const auto m = mode_of(s);
          if (!m) { skip(op, "paging is off"); break; }
          if (*m != img_.mode) { skip(op, fmt::format("paging mode {} in a {} image", name(*m), name(img_.mode))); break; }
          if (in_harness_linear(op.addr)) { skip(op, "linear address in the harness's region"); break; }
          if (stale_pdptes_.count(op.id)) {
            skip(op, "masked qemu-pdpte-not-latched: a PDPTE changed in memory since the vCPU loaded them");
            break;
          }
          if (op.kind == OpKind::Fetch && inf.pf_error_code && (*inf.pf_error_code & 0x8) &&
              ((img_.mode == HarnessMode::Bits32 && img_.model.maxphyaddr < 40) ||
               (long_mode(img_.mode) && !img_.model.gbpages))) {
            // QEMU ignores these reserved bits (docs/ORACLES.md) and would execute whatever lies
            // at the address they form, possibly beyond its RAM
            skip(op, "masked qemu-pse36-ignores-maxphyaddr / qemu-1g-pages-without-pdpe1gb: reserved-bit fetch");
            break;
          }
          if (op.kind == OpKind::Fetch && inf.gpa && (inf.mmio || inf.fetch_byte != 0xc3)) {
            skip(op, "fetch target is not a ret (0xc3)");
            break;
          }
          if (!loaded.valid || loaded.id != op.id || !paging_regs_equal(loaded.state, s)) {
            load_state(a, s);
            loaded = {true, op.id, s};
          }
          const bool value_ok = !inf.gpa || (!inf.mmio && backed(*inf.gpa, 8) && !in_ro_slot(*inf.gpa));
          const uint32_t idx = uint32_t(img_.probes.size());
          img_.probes.push_back({i, false, value_ok});
          access(a, op, s, idx);
          break;
        }
        default: skip(op, fmt::format("{}: no oracle", sim::op_name(op.kind))); break;
      }
    }
  }
  bool touches_injected(uint64_t gpa, unsigned width) const {
    for (uint64_t e : injected_)
      if (gpa < e + pte_size() && e < gpa + width) return true;
    return false;
  }
  bool in_slot(uint64_t gpa) const {
    for (const Slot& s : slots_)
      if (gpa >= s.gpa && gpa < s.gpa + s.size) return true;
    return false;
  }
  bool in_ro_slot(uint64_t gpa) const {
    for (const Slot& s : ro_slots_)
      if (gpa >= s.gpa && gpa < s.gpa + s.size) return true;
    return false;
  }

  // ---- data
  void build_tables() {
    const unsigned es = pte_size();
    for (unsigned i = 0; i < P_COUNT; ++i) {
      const bool user = i == P_USTACK || i == P_USTUBS;
      put(P_HPT, hpt_index(i) * es, gpa_of(i) | 0x63 | (user ? 4 : 0), es);
    }
    put(P_HPD, 511 * 8, gpa_of(P_HPT) | 0x27, 8);
    put(P_HPDPT, 511 * 8, gpa_of(P_HPD) | 0x27, 8);
    put(P_HPML4, 511 * 8, gpa_of(P_HPDPT) | 0x27, 8);
    // identity map of the harness for the boot code
    const unsigned id0 = img_.mode == HarnessMode::Bits32 ? unsigned((HARNESS_GPA >> 12) & 1023)
                                                          : unsigned((HARNESS_GPA >> 12) & 511);
    for (unsigned i = 0; i < P_COUNT; ++i) put(P_IDPT, (id0 + i) * es, gpa_of(i) | 0x63, es);
    put(P_IDPD, ((HARNESS_GPA >> 21) & 511) * 8, gpa_of(P_IDPT) | 0x27, 8);
    put(P_IDPDPT, ((HARNESS_GPA >> 30) & 511) * 8, gpa_of(P_IDPD) | 0x27, 8);
    put(P_IDPML4, 0, gpa_of(P_IDPDPT) | 0x27, 8);
    switch (img_.mode) {
      case HarnessMode::Bits32:
        put(P_BOOTROOT, (HARNESS_GPA >> 22) * 4, gpa_of(P_IDPT) | 0x27, 4);
        put(P_BOOTROOT, 1023 * 4, gpa_of(P_HPT) | 0x27, 4);
        break;
      case HarnessMode::Pae:
        put(P_BOOTROOT, (HARNESS_GPA >> 30) * 8, gpa_of(P_IDPD) | 0x1, 8);
        put(P_BOOTROOT, 3 * 8, gpa_of(P_HPD) | 0x1, 8);
        break;
      case HarnessMode::Level4:
        put(P_BOOTROOT, 0, gpa_of(P_IDPDPT) | 0x27, 8);
        put(P_BOOTROOT, 511 * 8, gpa_of(P_HPDPT) | 0x27, 8);
        break;
      case HarnessMode::Level5:
        put(P_BOOTROOT, 0, gpa_of(P_IDPML4) | 0x27, 8);
        put(P_BOOTROOT, 511 * 8, gpa_of(P_HPML4) | 0x27, 8);
        break;
    }
  }

  void build_descriptors() {
    // GDT: null, kcode32, kdata, kcode64, udata, ucode32, ucode64, TSS
    put(P_GDT, 0x08, 0x00cf9a000000ffffull, 8);
    put(P_GDT, 0x10, 0x00cf92000000ffffull, 8);
    put(P_GDT, 0x18, 0x00af9a000000ffffull, 8);
    put(P_GDT, 0x20, 0x00cff2000000ffffull, 8);
    put(P_GDT, 0x28, 0x00cffa000000ffffull, 8);
    put(P_GDT, 0x30, 0x00affa000000ffffull, 8);
    const uint64_t tss = lin(P_GDT) + 0x100;
    const uint64_t lo = 0x67 | ((tss & 0xffffff) << 16) | (0x89ull << 40) | (((tss >> 24) & 0xff) << 56);
    put(P_GDT, 0x38, lo, 8);
    put(P_GDT, 0x40, x64_ ? (tss >> 32) : 0, 8);
    if (x64_) {
      put(P_GDT, 0x100 + 4, lin(P_KSTACK + 1), 8);
    } else {
      put(P_GDT, 0x100 + 4, lin(P_KSTACK + 1), 4);
      put(P_GDT, 0x100 + 8, SEL_KDATA, 4);
    }
    put(P_GDT, 0x100 + 0x66, 0x68, 2);
    // pseudo-descriptors
    put(P_VARS, V_GDTR, 0x47, 2);
    put(P_VARS, V_GDTR + 2, lin(P_GDT), x64_ ? 8 : 4);
    put(P_VARS, V_BOOT_GDTR, 0x47, 2);
    put(P_VARS, V_BOOT_GDTR + 2, gpa_of(P_GDT), 4);
    const unsigned gate = x64_ ? 16 : 8;
    put(P_VARS, V_IDTR, 256 * gate - 1, 2);
    put(P_VARS, V_IDTR + 2, lin(P_IDT), x64_ ? 8 : 4);
    const uint16_t cs = x64_ ? SEL_KCODE64 : SEL_KCODE32;
    for (unsigned v = 0; v < 256; ++v) {
      const uint64_t target = v == 14 ? h_pf_ : v == 13 ? h_gp_ : v == 0x80 ? h_ok_ : vec_stub_[v];
      const uint64_t attr = v == 0x80 ? 0xee : 0x8e;
      const uint64_t g = (target & 0xffff) | (uint64_t(cs) << 16) | (attr << 40) | (((target >> 16) & 0xffff) << 48);
      put(P_IDT, v * gate, g, 8);
      if (x64_) put(P_IDT, v * gate + 8, target >> 32, 8);
    }
  }

  void build_multiboot_header(uint64_t image_size) {
    const uint32_t magic = 0x1badb002, flags = 1u << 16;
    put(P_VARS, MB_HEADER_OFF + 0, magic, 4);
    put(P_VARS, MB_HEADER_OFF + 4, flags, 4);
    put(P_VARS, MB_HEADER_OFF + 8, uint32_t(0) - magic - flags, 4);
    put(P_VARS, MB_HEADER_OFF + 12, HARNESS_GPA + MB_HEADER_OFF, 4);
    put(P_VARS, MB_HEADER_OFF + 16, HARNESS_GPA, 4);
    put(P_VARS, MB_HEADER_OFF + 20, HARNESS_GPA + image_size, 4);
    put(P_VARS, MB_HEADER_OFF + 24, HARNESS_GPA + image_size, 4);
    put(P_VARS, MB_HEADER_OFF + 28, gpa_of(P_CODE), 4);
  }

  const std::vector<Op>& ops_;
  const std::vector<OpInfo>& info_;
  Image img_;
  uint64_t lin_ = 0;
  bool x64_ = true;
  std::vector<uint8_t> pages_;
  std::vector<Slot> slots_, ro_slots_;
  std::set<uint64_t> injected_;
  std::set<uint32_t> stale_pdptes_;
  uint64_t high_entry_ = 0, h_ok_ = 0, h_pf_ = 0, h_gp_ = 0, h_unexpected_ = 0;
  uint64_t vec_stub_[256] = {};
};

}  // namespace

Image build_image(const std::vector<sim::Op>& ops, const std::vector<OpInfo>& info) {
  if (info.size() != ops.size()) throw std::invalid_argument("build_image: one OpInfo per op");
  return Builder(ops, info).build();
}

std::vector<Record> parse_records(const std::string& d) {
  std::vector<Record> out;
  auto u64 = [&](std::size_t p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | uint8_t(d[p + i]);
    return v;
  };
  for (std::size_t p = 0; p + REC_SIZE <= d.size();) {
    if (uint8_t(d[p]) != 0xa5) {
      ++p;
      continue;
    }
    Record r;
    r.index = uint32_t(u64(p + 1, 4));
    r.kind = uint8_t(d[p + 5]);
    r.vector = uint8_t(d[p + 6]);
    r.value = u64(p + 7, 8);
    r.cr2 = u64(p + 15, 8);
    out.push_back(r);
    p += REC_SIZE;
  }
  return out;
}

}  // namespace vmmu::oracle
