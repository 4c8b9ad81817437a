#pragma once
// The library's entry point, shaped like KVM's API: a VM with a CPU model, memslots and vCPUs,
// dirty logging, host invalidation and aging, an audit and statistics. The MMU behind it is
// chosen at creation: the reference walker (`none`) or an engine.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "guest/guest_memory.hpp"
#include "guest/host_allocator.hpp"
#include "guest/memslots.hpp"
#include "mmu/mmu.hpp"
#include "mmu/shadow_mmu.hpp"
#include "mmu/tdp_mmu.hpp"
#include "vm/vcpu.hpp"
#include "x86/cpu_state.hpp"

namespace vmmu {

using guest::HostMemoryError;
using guest::MemslotSpec;
using guest::UsageError;

enum class MmuKind { None, Tdp, Shadow };

const char* name(MmuKind k);
std::optional<MmuKind> parse_mmu_kind(const std::string& s);

struct VmConfig {
  MmuKind mmu = MmuKind::None;
  mmu::TdpOptions tdp{};
  mmu::ShadowOptions shadow{};
  // Where the VM's metadata (memslot bitmaps, the engine's tables and maps) gets host memory;
  // null: the heap and the arenas. It must outlive the Vm (tests inject refusals through it).
  guest::HostAllocator* allocator = nullptr;
  // Engines: each vCPU keeps a software TLB of this many pages it used last (a power of two, 2 or more;
  // 32 bytes each; mmu/translation_cache.hpp), so a repeat access skips the engine. 0: none,
  // every access goes through the engine (for comparisons).
  uint32_t translation_cache_entries = 8192;
};

// A memslot's dirty bitmap as KVM_GET_DIRTY_LOG returns it: bit i of words[i / 64] is the
// slot's page i (gfn base_gfn + i).
struct DirtyBitmap {
  uint64_t base_gfn = 0;
  uint64_t npages = 0;
  std::vector<uint64_t> words;
};

class Vm {
 public:
  explicit Vm(const VmConfig& config = {});
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // The CPU model shared by all vCPUs; only before the first vCPU exists.
  void set_cpu_model(const x86::CpuModel& model);
  const x86::CpuModel& cpu_model() const { return model_; }

  void add_memslot(const MemslotSpec& spec);
  void delete_memslot(uint32_t id);
  void move_memslot(uint32_t id, uint64_t gpa);
  const guest::Memslots& memslots() const { return slots_; }

  Vcpu& create_vcpu(uint32_t id);
  Vcpu& vcpu(uint32_t id);  // throws UsageError for an unknown id
  bool has_vcpu(uint32_t id) const { return vcpus_.count(id) != 0; }

  // The VMM's own accesses to guest memory (not guest accesses: no dirty log, no A/D bits).
  // The range lies in one memslot and one page.
  void write_guest(uint64_t gpa, unsigned width, uint64_t value);
  uint64_t read_guest(uint64_t gpa, unsigned width) const;

  // Dirty logging with KVM's manual-protect semantics: `get` returns the pages written since
  // logging was enabled and not cleared since, and changes nothing; `clear` clears exactly the
  // pages given (64-page words from `first_page`, slot-relative and a multiple of 64) and
  // re-protects them, so their next write is logged again.
  void set_dirty_logging(uint32_t slot, bool on);
  DirtyBitmap get_dirty_log(uint32_t slot);
  void clear_dirty_log(uint32_t slot, uint64_t first_page, const std::vector<uint64_t>& words);
  // The same as sorted gfn lists, for sparse use (a replay prints and clears gfns).
  std::vector<uint64_t> dirty_gfns(uint32_t slot);
  void clear_dirty_gfns(uint32_t slot, const std::vector<uint64_t>& gfns);

  // Dirty rings (KVM_CAP_DIRTY_LOG_RING), before the first vCPU: each vCPU then also pushes the
  // pages it dirties to its ring (Vcpu::harvest_dirty_ring); `reset_dirty_rings` clears the
  // harvested pages from the log and re-protects them. Needs write-protect logging in TDP.
  void enable_dirty_ring(uint32_t entries);
  void reset_dirty_rings();

  // The host moves the pages of [gpa, gpa + size) to new frames (an MMU-notifier invalidation).
  void unmap(uint64_t gpa, uint64_t size);
  // The gfns of [gpa, gpa + size) the guest used since the last `age` of them; clears that.
  std::vector<uint64_t> age(uint64_t gpa, uint64_t size);

  // KVM's page-track API (--mmu=shadow): guest writes to a tracked gfn are emulated and reported
  // to the notifier after they are performed. Other engines refuse (UsageError).
  void set_write_notifier(mmu::WriteTrackNotifier* notifier);
  void track_writes(uint64_t gfn, bool on);

  std::vector<std::string> audit() const;
  // {"stats": {...}, "memory": {...}}
  nlohmann::ordered_json stats() const;

  mmu::Mmu& mmu() { return *mmu_; }
  mmu::Mmu& mmu() const { return *mmu_; }
  MmuKind mmu_kind() const { return config_.mmu; }

 private:
  friend class Vcpu;
  guest::Memslot& slot_of_range(uint64_t gpa, uint64_t size) const;
  guest::Memslot& logged_slot(uint32_t slot) const;
  void clear_dirty_chunks(guest::Memslot& s, std::vector<mmu::DirtyChunk>& chunks);

  VmConfig config_;
  x86::CpuModel model_;
  uint32_t dirty_ring_entries_ = 0;
  guest::Memslots slots_;
  guest::GuestMemory memory_{slots_};
  std::map<uint32_t, std::unique_ptr<Vcpu>> vcpus_;  // outlives mmu_, which points at their contexts
  std::unique_ptr<mmu::Mmu> mmu_;
};

}  // namespace vmmu
