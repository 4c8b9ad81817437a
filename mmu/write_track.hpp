#pragma once
// KVM's page-track notifier, for users of the library that must see every guest write to some
// guest frames (as KVMGT does for a GPU's tables): the engine write-protects each tracked gfn in
// every mapping, emulates the guest's writes to it and reports them after they are performed.
#include <cstdint>

namespace vmmu::mmu {

class WriteTrackNotifier {
 public:
  virtual ~WriteTrackNotifier() = default;
  // vCPU `vcpu` wrote `value` (`width` bytes) at `gpa` in a tracked frame; the write is done.
  virtual void track_write(uint32_t vcpu, uint64_t gpa, unsigned width, uint64_t value) = 0;
};

}  // namespace vmmu::mmu
