#pragma once
// The role of a shadow page (KVM's union kvm_mmu_page_role): everything besides the gfn that
// decides whether two walks may share the page. Packed into 32 bits; constexpr accessors with
// explicit shifts (no bitfields), so the encoding is the same on every compiler.
#include <cstdint>

namespace vmmu::mmu {

class Role {
 public:
  constexpr Role() = default;
  static constexpr Role from_bits(uint32_t bits) { return Role(bits); }
  constexpr uint32_t bits() const { return bits_; }

  constexpr unsigned level() const { return get(LEVEL); }             // 1 = holds 4 KiB leaves
  constexpr bool direct() const { return get(DIRECT); }               // maps a linear gfn range
  constexpr bool has_4byte_gpte() const { return get(GPTE4); }        // shadows a 32-bit guest table
  constexpr unsigned quadrant() const { return get(QUADRANT); }       // which part of a 4-byte table
  constexpr unsigned access() const { return get(ACCESS); }           // rights inherited from above
  constexpr bool invalid() const { return get(INVALID); }             // obsolete root, freed later
  constexpr bool efer_nx() const { return get(EFER_NX); }
  constexpr bool cr0_wp() const { return get(CR0_WP); }
  constexpr bool smep_andnot_wp() const { return get(SMEP_ANDNOT_WP); }
  constexpr bool smap_andnot_wp() const { return get(SMAP_ANDNOT_WP); }
  constexpr bool cr4_pse() const { return get(CR4_PSE); }
  constexpr bool pke() const { return get(PKE); }
  constexpr unsigned guest_root_level() const { return get(ROOT_LEVEL); }  // 0 for TDP
  constexpr unsigned pkey() const { return get(PKEY); }  // direct pages under a guest huge leaf: its key
  // The bits that come from the vCPU's paging registers rather than from the walk.
  constexpr uint32_t context_bits() const { return bits_ & CONTEXT_MASK; }

  constexpr Role with_level(unsigned v) const { return with(LEVEL, v); }
  constexpr Role with_direct(bool v) const { return with(DIRECT, v); }
  constexpr Role with_4byte_gpte(bool v) const { return with(GPTE4, v); }
  constexpr Role with_quadrant(unsigned v) const { return with(QUADRANT, v); }
  constexpr Role with_access(unsigned v) const { return with(ACCESS, v); }
  constexpr Role with_invalid(bool v) const { return with(INVALID, v); }
  constexpr Role with_efer_nx(bool v) const { return with(EFER_NX, v); }
  constexpr Role with_cr0_wp(bool v) const { return with(CR0_WP, v); }
  constexpr Role with_smep_andnot_wp(bool v) const { return with(SMEP_ANDNOT_WP, v); }
  constexpr Role with_smap_andnot_wp(bool v) const { return with(SMAP_ANDNOT_WP, v); }
  constexpr Role with_cr4_pse(bool v) const { return with(CR4_PSE, v); }
  constexpr Role with_pke(bool v) const { return with(PKE, v); }
  constexpr Role with_guest_root_level(unsigned v) const { return with(ROOT_LEVEL, v); }
  constexpr Role with_pkey(unsigned v) const { return with(PKEY, v); }

  friend constexpr bool operator==(Role a, Role b) = default;

 private:
  struct Field {
    unsigned shift, width;
  };
  static constexpr Field LEVEL{0, 3}, DIRECT{3, 1}, GPTE4{4, 1}, QUADRANT{5, 2}, ACCESS{7, 3}, INVALID{10, 1},
      EFER_NX{11, 1}, CR0_WP{12, 1}, SMEP_ANDNOT_WP{13, 1}, SMAP_ANDNOT_WP{14, 1}, CR4_PSE{15, 1}, PKE{16, 1},
      ROOT_LEVEL{17, 3}, PKEY{20, 4};
  static constexpr uint32_t CONTEXT_MASK = (1u << 4) | (0x1ffu << 11);  // 4-byte entries; NX .. root level

  constexpr explicit Role(uint32_t bits) : bits_(bits) {}
  constexpr unsigned get(Field f) const { return (bits_ >> f.shift) & ((1u << f.width) - 1); }
  constexpr Role with(Field f, unsigned v) const {
    const uint32_t mask = ((1u << f.width) - 1) << f.shift;
    return Role((bits_ & ~mask) | ((v << f.shift) & mask));
  }

  uint32_t bits_ = 0;
};

static_assert(sizeof(Role) == 4);
static_assert(Role().with_level(5).with_quadrant(3).with_access(7).level() == 5);
static_assert(Role().with_quadrant(3).with_access(7).quadrant() == 3);
static_assert(Role().with_guest_root_level(5).with_pke(true).guest_root_level() == 5);
static_assert(Role().with_level(3).with_access(7).with_quadrant(2).with_direct(true).with_pkey(9).context_bits() == 0);
static_assert(Role().with_guest_root_level(7).with_efer_nx(true).with_4byte_gpte(true).context_bits() ==
              Role().with_guest_root_level(7).with_efer_nx(true).with_4byte_gpte(true).bits());

}  // namespace vmmu::mmu
