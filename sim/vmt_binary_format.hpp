#pragma once
// The constants of the binary .vmt form (docs/VMT-FORMAT.md, "Binary form"), shared by its
// writer and reader: the header, the tag byte and the code of each op kind.
//
// The codes are spelled out here rather than derived from OpKind, so that reordering the enum
// never changes the files already written.
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include "sim/op.hpp"

namespace vmmu::sim::vmt_binary {

// First 8 bytes: 0x89 cannot start a text .vmt (its first non-comment line is `vmt 1`), and the
// CR LF / ^Z / LF tail catches transfers that rewrite line ends.
inline constexpr std::array<char, 8> MAGIC{'\x89', 'V', 'M', 'T', '\r', '\n', '\x1a', '\n'};
inline constexpr std::string_view MAGIC_VIEW{MAGIC.data(), MAGIC.size()};
inline constexpr uint64_t VERSION = 1;
inline constexpr uint64_t MAX_NOTE_BYTES = 4096;

// Tag byte: bits 0-4 the op code (0 with the other bits clear: the end record), bit 5 "line =
// previous line + 1" (else a varint line delta follows), bits 6-7 log2(WIDTH) for the ops that
// take a width (read, write, poke, peek), 0 for every other op.
inline constexpr uint8_t TAG_END = 0x00;
inline constexpr uint8_t TAG_CODE_MASK = 0x1f;
inline constexpr uint8_t TAG_NEXT_LINE = 0x20;
inline constexpr unsigned TAG_WIDTH_SHIFT = 6;

// Accesses store their gva as a zigzag delta against the previous gva of the same vCPU and
// stream: instruction fetches have one base, data accesses (read, write) and invlpg another, as
// code and data run apart. vCPUs 0..255 have their own pair; higher IDs share one pair.
inline constexpr uint32_t GVA_VCPUS = 256;
inline constexpr uint32_t GVA_BASES = 2 * (GVA_VCPUS + 1);
constexpr uint32_t gva_base_index(uint32_t id, bool fetch) { return 2 * (id < GVA_VCPUS ? id : GVA_VCPUS) + (fetch ? 1 : 0); }

// The op codes 1..19.
inline constexpr std::array<OpKind, 20> KIND_OF_CODE{
    OpKind::Audit,  // 0: not an op code (the end record)
    OpKind::Cpu,           OpKind::Memslot, OpKind::MemslotDelete, OpKind::MemslotMove, OpKind::Vcpu,
    OpKind::Regs,          OpKind::Cr3,     OpKind::Poke,          OpKind::Read,        OpKind::Write,
    OpKind::Fetch,         OpKind::Invlpg,  OpKind::Flush,         OpKind::Peek,        OpKind::DirtyLog,
    OpKind::Unmap,         OpKind::Age,     OpKind::Audit,         OpKind::Stats,
};
inline constexpr uint8_t MAX_CODE = 19;

constexpr uint8_t code_of(OpKind k) {
  for (uint8_t c = 1; c <= MAX_CODE; ++c)
    if (KIND_OF_CODE[c] == k) return c;
  return 0;
}

constexpr bool takes_width(OpKind k) { return k == OpKind::Read || k == OpKind::Write || k == OpKind::Poke || k == OpKind::Peek; }

// log2 of a width 1, 2, 4 or 8; nothing for any other width.
constexpr std::optional<uint8_t> width_code(uint64_t width) {
  switch (width) {
    case 1: return 0;
    case 2: return 1;
    case 4: return 2;
    case 8: return 3;
    default: return std::nullopt;
  }
}

// Presence bits of the `cpu` and `regs` records, and the flags of `memslot`.
inline constexpr uint8_t CPU_MAXPHYADDR = 0x01, CPU_GBPAGES = 0x02, CPU_LA57 = 0x04;
inline constexpr uint8_t REGS_CR0 = 0x01, REGS_CR3 = 0x02, REGS_CR4 = 0x04, REGS_EFER = 0x08, REGS_CPL = 0x10, REGS_AC = 0x20,
                         REGS_PKRU = 0x40;
inline constexpr uint8_t MEMSLOT_RO = 0x01, MEMSLOT_LOG = 0x02, MEMSLOT_HOST_SHIFT = 2, MEMSLOT_HOST_MASK = 0x0c;

constexpr uint64_t zigzag(uint64_t delta) { return (delta << 1) ^ (0 - (delta >> 63)); }
constexpr uint64_t unzigzag(uint64_t z) { return (z >> 1) ^ (0 - (z & 1)); }

}  // namespace vmmu::sim::vmt_binary
