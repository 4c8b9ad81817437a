#pragma once
// A tiny x86 machine-code emitter for the oracle's test images: just the instructions the harness
// uses, hand-encoded (Intel SDM Vol. 2). `x64` selects 64-bit mode encodings (REX.W where a
// 64-bit operand is meant); otherwise 32-bit protected mode. Registers use their hardware numbers.
#include <cstdint>
#include <cstring>
#include <vector>

namespace vmmu::oracle {

enum Reg : uint8_t { AX = 0, CX = 1, DX = 2, BX = 3, SP = 4, BP = 5, SI = 6, DI = 7 };

class Asm {
 public:
  Asm(bool x64, uint64_t base) : x64_(x64), base_(base) {}

  bool x64() const { return x64_; }
  uint64_t here() const { return base_ + code_.size(); }
  std::size_t size() const { return code_.size(); }
  std::vector<uint8_t>& bytes() { return code_; }

  void db(uint8_t b) { code_.push_back(b); }
  void db(std::initializer_list<uint8_t> bs) { code_.insert(code_.end(), bs); }
  void d16(uint16_t v) { put(v, 2); }
  void d32(uint32_t v) { put(v, 4); }
  void d64(uint64_t v) { put(v, 8); }

  // mov reg, imm (64-bit mode: zero-extended imm32 when it fits, else imm64)
  void mov_imm(Reg r, uint64_t v) {
    if (x64_ && v > 0xffffffffull) {
      db({0x48, uint8_t(0xb8 + r)});
      d64(v);
    } else {
      db(uint8_t(0xb8 + r));
      d32(uint32_t(v));
    }
  }
  // op-size prefix for a natural-width operation (REX.W in 64-bit mode)
  void w() {
    if (x64_) db(0x48);
  }
  // mov [base + disp8], reg (natural width) / mov reg, [base + disp8]
  void store(Reg base, int8_t disp, Reg src) { w(); db({0x89, modrm(1, src, base), uint8_t(disp)}); }
  void load(Reg dst, Reg base, int8_t disp) { w(); db({0x8b, modrm(1, dst, base), uint8_t(disp)}); }
  void store32(Reg base, int8_t disp, Reg src) { db({0x89, modrm(1, src, base), uint8_t(disp)}); }
  void load32(Reg dst, Reg base, int8_t disp) { db({0x8b, modrm(1, dst, base), uint8_t(disp)}); }
  void store_imm32(Reg base, int8_t disp, uint32_t v) { db({0xc7, modrm(1, 0, base), uint8_t(disp)}); d32(v); }
  void store_imm8(Reg base, int8_t disp, uint8_t v) { db({0xc6, modrm(1, 0, base), uint8_t(disp), v}); }
  // Data accesses of `width` bytes at [rdi] to/from rax (in 32-bit mode, 8 bytes are edx:eax).
  void load_width(unsigned width) {
    switch (width) {
      case 1: db({0x8a, 0x07}); break;
      case 2: db({0x66, 0x8b, 0x07}); break;
      case 4: db({0x8b, 0x07}); break;
      default:
        if (x64_) db({0x48, 0x8b, 0x07});
        else db({0x8b, 0x07, 0x8b, 0x57, 0x04});
    }
  }
  void store_width(unsigned width) {
    switch (width) {
      case 1: db({0x88, 0x07}); break;
      case 2: db({0x66, 0x89, 0x07}); break;
      case 4: db({0x89, 0x07}); break;
      default:
        if (x64_) db({0x48, 0x89, 0x07});
        else db({0x89, 0x07, 0x89, 0x57, 0x04});
    }
  }
  void xor_eax() { db({0x31, 0xc0}); }
  void xor_ecx() { db({0x31, 0xc9}); }
  void xor_edx() { db({0x31, 0xd2}); }
  void mov_cr_from_rax(int cr) { db({0x0f, 0x22, uint8_t(0xc0 | (cr << 3))}); }
  void mov_rax_from_cr(int cr) { db({0x0f, 0x20, uint8_t(0xc0 | (cr << 3))}); }
  void rdmsr() { db({0x0f, 0x32}); }
  void wrmsr() { db({0x0f, 0x30}); }
  void wrpkru() { db({0x0f, 0x01, 0xef}); }
  void stac() { db({0x0f, 0x01, 0xcb}); }
  void clac() { db({0x0f, 0x01, 0xca}); }
  void invlpg_rax() { db({0x0f, 0x01, 0x38}); }
  void lgdt_rax() { db({0x0f, 0x01, 0x10}); }
  void lidt_rax() { db({0x0f, 0x01, 0x18}); }
  void ltr_ax() { db({0x0f, 0x00, 0xd8}); }
  void mov_seg_ax(int sreg) { db({0x8e, uint8_t(0xc0 | (sreg << 3))}); }  // es=0 ss=2 ds=3 fs=4 gs=5
  void mov_ax16(uint16_t v) { db({0x66, 0xb8}); d16(v); }
  void int_(uint8_t v) { db({0xcd, v}); }
  void iret() { w(); db(0xcf); }
  void call_rdi() { db({0xff, 0xd7}); }
  void jmp_rax() { db({0xff, 0xe0}); }
  void jmp_mem_rbx() { db({0xff, 0x23}); }
  void push_imm8(uint8_t v) { db({0x6a, v}); }
  void push_imm32(uint32_t v) { db(0x68); d32(v); }
  void push(Reg r) { db(uint8_t(0x50 + r)); }
  void pop(Reg r) { db(uint8_t(0x58 + r)); }
  void out_al(uint8_t port) { db({0xe6, port}); }
  void cli() { db(0xfa); }
  void cld() { db(0xfc); }
  void hlt() { db(0xf4); }
  void rep_outsb() { db({0xf3, 0x6e}); }
  void rep_stosd() { db({0xf3, 0xab}); }
  // or eax, imm32
  void or_eax(uint32_t v) { db(0x0d); d32(v); }
  void and_eax(uint32_t v) { db(0x25); d32(v); }
  // jmp/call rel32 to an absolute target
  void jmp(uint64_t target) { rel(0xe9, target); }
  void call(uint64_t target) { rel(0xe8, target); }
  // lea rax, [rip + rel32] (64-bit) or mov eax, imm32 (32-bit) with a target patched later:
  // returns the patch position.
  std::size_t load_address_placeholder() {
    if (x64_) {
      db({0x48, 0x8d, 0x05});
      d32(0);
      return code_.size() - 4;
    }
    db(0xb8);
    d32(0);
    return code_.size() - 4;
  }
  void patch_address(std::size_t pos, uint64_t target) {
    uint32_t v = x64_ ? uint32_t(int32_t(int64_t(target) - int64_t(base_ + pos + 4))) : uint32_t(target);
    std::memcpy(&code_[pos], &v, 4);
  }

 private:
  static uint8_t modrm(int mod, int reg, int rm) { return uint8_t((mod << 6) | ((reg & 7) << 3) | (rm & 7)); }
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) code_.push_back(uint8_t(v >> (8 * i)));
  }
  void rel(uint8_t opcode, uint64_t target) {
    db(opcode);
    d32(uint32_t(int32_t(int64_t(target) - int64_t(here() + 4))));
  }

  bool x64_;
  uint64_t base_;
  std::vector<uint8_t> code_;
};

}  // namespace vmmu::oracle
