#include "mmu/tdp_mmu.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "guest/guest_memory.hpp"
#include "guest/walker.hpp"
#include "mmu/kvm_layout.hpp"
#include "mmu/spte.hpp"

namespace vmmu::mmu {

namespace {

// Thrown out of a walk or translation that hit a range the host is invalidating: the access
// is abandoned and entered again once the lock has been dropped (KVM's RET_PF_RETRY).
struct RetryAccess {};

uint64_t load(const uint64_t* p) { return std::atomic_ref<uint64_t>(*const_cast<uint64_t*>(p)).load(std::memory_order_acquire); }
// Sequentially consistent: a write-protect must be ordered before the read of the vCPU
// epochs that follows it, against the vCPU's epoch update before its SPTE read (a Dekker pair).
bool cas(uint64_t* p, uint64_t old, uint64_t updated) {
  return std::atomic_ref<uint64_t>(*p).compare_exchange_strong(old, updated, std::memory_order_seq_cst);
}
void store(uint64_t* p, uint64_t v) { std::atomic_ref<uint64_t>(*p).store(v, std::memory_order_release); }
uint64_t exchange(uint64_t* p, uint64_t v) { return std::atomic_ref<uint64_t>(*p).exchange(v, std::memory_order_acq_rel); }

constexpr uint64_t first_gfn_of_entry(uint64_t gfn, unsigned level) { return gfn & ~(frames_per_entry(level) - 1); }
constexpr const char* LEVEL_NAMES[] = {"", "pages_4k", "pages_2m", "pages_1g"};

}  // namespace

// Per-vCPU: the page cache faults take from, and the hot counters (summed in report()).
struct TdpMmu::VcpuState : VcpuMmuState {
  PageCache cache;
  uint64_t pf_fixed = 0, pf_spurious = 0, pf_fast = 0, pf_mmio_spte_created = 0, mmu_cache_miss = 0;
  uint64_t tdp_exits = 0, mmio_exits = 0, pf_retry = 0, walks = 0, guest_walk_refs = 0;
  int64_t installed[4] = {};  // leaf SPTEs this vCPU installed, by level (no shared cache line)
};

int64_t TdpMmu::leaf_count(unsigned level) const {
  int64_t n = pages_[level].load(std::memory_order_relaxed);
  for (const VcpuContext* v : vcpus_) n += static_cast<const VcpuState&>(*v->mmu_state).installed[level];
  return n;
}

// The walker's port under TDP: every guest-table read is a gpa that goes through the TDP tables
// (faulting them in as hardware would), and an A/D update is a guest write through them.
class TdpMmu::Port {
 public:
  Port(TdpMmu& mmu, VcpuContext& vcpu) : mmu_(mmu), vcpu_(vcpu) {}

  template <class Entry>
  bool read_entry(uint64_t gpa, Entry& out) {
    const Target t = mmu_.translate_gfn(vcpu_, gpa >> x86::PAGE_SHIFT, x86::AccessKind::Read, false);
    if (t.outcome != Outcome::Mapped) return false;  // an entry in MMIO: not present
    out = guest::GuestMemory::atomic_load<Entry>(t.host + (gpa & x86::PAGE_OFFSET_MASK));
    return true;
  }

  template <class Entry>
  guest::EntryUpdate update_entry(uint64_t gpa, Entry old, Entry updated) {
    const Target t = mmu_.translate_gfn(vcpu_, gpa >> x86::PAGE_SHIFT, x86::AccessKind::Write, true);
    if (t.outcome != Outcome::Mapped) return guest::EntryUpdate::ReadOnly;
    return guest::GuestMemory::atomic_cmpxchg<Entry>(t.host + (gpa & x86::PAGE_OFFSET_MASK), old, updated)
               ? guest::EntryUpdate::Done
               : guest::EntryUpdate::Changed;
  }

 private:
  TdpMmu& mmu_;
  VcpuContext& vcpu_;
};

TdpMmu::TdpMmu(guest::Memslots& slots, TdpOptions options) : Mmu(slots), options_(options), pool_(slots.allocator()) {
  if (options_.max_mmu_memory && options_.max_mmu_memory < MIN_MAX_MMU_MEMORY)
    throw guest::UsageError("--max-mmu-memory must be at least 131072 (128K)");
}

TdpMmu::~TdpMmu() = default;  // the pool's arena goes with it, cached pages included

void TdpMmu::vcpu_created(VcpuContext& vcpu) {
  Mmu::vcpu_created(vcpu);
  vcpu.mmu_state = std::make_unique<VcpuState>();
  // The CPU model is fixed once a vCPU exists: 5-level TDP only when gpas need more than 48 bits.
  root_level_ = vcpu.paging.maxphyaddr() > 48 ? 5 : 4;
}

// ---------------------------------------------------------------------------------------------
// Lookups and faults (shared lock)

TdpMmu::Leaf TdpMmu::lookup(uint64_t gfn) const {
  const ShadowPage* root = root_.load(std::memory_order_acquire);
  if (!root) return {};
  const uint64_t* table = pool_.table(root);
  for (unsigned level = root_level_;; --level) {
    const uint64_t* p = &table[spte_index(gfn, level)];
    const uint64_t s = load(p);
    if (!spte::is_present(s) || spte::is_leaf(s, level)) return {const_cast<uint64_t*>(p), s, level};
    table = spte::table_of(s);
  }
}

TdpMmu::Target TdpMmu::translate_gfn(VcpuContext& vcpu, uint64_t gfn, x86::AccessKind kind, bool set_accessed) {
  auto& vs = static_cast<VcpuState&>(*vcpu.mmu_state);
  const bool write = kind == x86::AccessKind::Write;
  for (;;) {
    const Leaf l = lookup(gfn);
    if (spte::is_present(l.spte)) {
      const uint64_t s = l.spte;
      if (write && !(s & spte::RW)) {
        if (!(s & spte::HOST_WRITABLE)) return {Outcome::ReadOnly, nullptr};
        if (l.level > 1) {
          // Only a logged slot write-protects a huge leaf: split it, and log the 4 KiB page.
          if (!split_on_fault(vcpu, l.sptep, s, l.level, gfn)) ++vs.pf_retry;
          continue;
        }
        // Fast page fault: only dirty logging keeps W clear; restore it by compare-and-swap,
        // without building anything (KVM's fast_page_fault). The page is marked dirty after
        // the swap: a `clear` that re-protects in between then sees W and waits for this access.
        if (cas(l.sptep, s, s | spte::RW)) {
          ++vs.pf_fast;
          guest::Memslot* slot = slots_.find(gfn);
          if (slot && slot->dirty_logging() && options_.dirty_log == DirtyLogMode::WriteProtect) vcpu.mark_dirty(*slot, gfn);
        }
        continue;
      }
      // The simulated hardware sets A on use and D on write (guest-table reads set nothing:
      // the contract's `age` counts what the guest read, wrote or fetched).
      const bool accessed = set_accessed || write;
      const uint64_t need = (accessed ? spte::A : 0) | (write ? spte::D : 0);
      if ((s & need) != need) std::atomic_ref<uint64_t>(*l.sptep).fetch_or(need, std::memory_order_acq_rel);
      // Through a huge mapping the hardware also records which 4 KiB page was used, so `age`
      // of part of it stays exact (one accessed bit per huge SPTE could not tell).
      if (accessed && l.level > 1) note_huge_access(gfn);
      const uint64_t frame_offset = gfn & (frames_per_entry(l.level) - 1);
      return {Outcome::Mapped, spte::host_address(s) + (frame_offset << x86::PAGE_SHIFT)};
    }
    if (spte::is_mmio(l.spte) && spte::mmio_is_current(l.spte, slots_.generation())) {
      ++vs.mmio_exits;
      return {Outcome::Mmio, nullptr};
    }
    ++vs.tdp_exits;
    Target t;
    if (fault(vcpu, gfn, kind, l, set_accessed, t)) return t;
    ++vs.pf_retry;
  }
}

Mmu::HardwareMapping TdpMmu::hardware_mapping(const VcpuContext&, uint64_t gpa) const {
  const Leaf l = lookup(gpa >> x86::PAGE_SHIFT);
  if (!l.sptep) return {};
  return {static_cast<uint8_t>(root_level_), static_cast<uint8_t>(l.level), spte::is_present(l.spte)};
}

void TdpMmu::note_huge_access(uint64_t gfn) {
  if (guest::Memslot* slot = slots_.find(gfn)) slot->mark_accessed(gfn);
}

ShadowPage* TdpMmu::new_page(VcpuState& vs, uint64_t gfn, unsigned level) {
  ShadowPage* sp = vs.cache.take();
  sp->gfn = gfn & ~(frames_per_page(level) - 1);  // the seed's large-SPTE trap: round to the span
  sp->role = Role().with_level(level).with_direct(true).with_access(x86::acc::ALL);
  return sp;
}

void TdpMmu::ensure_root(VcpuContext& vcpu) {
  if (root_.load(std::memory_order_acquire)) return;
  auto& vs = static_cast<VcpuState&>(*vcpu.mmu_state);
  ShadowPage* sp = new_page(vs, 0, root_level_);
  sp->root_count = 1;
  ShadowPage* expected = nullptr;
  if (!root_.compare_exchange_strong(expected, sp, std::memory_order_acq_rel)) {
    vs.cache.give_back(sp);
    return;
  }
  ++vs.mmu_cache_miss;
  free_invalid_roots();  // the deferred half of the last fast zap
}

unsigned TdpMmu::max_mapping_level(const guest::Memslot& slot, uint64_t gfn) const {
  if (slot.dirty_logging()) return 1;
  for (unsigned level = static_cast<unsigned>(slot.host_page()); level >= 2; --level) {
    const uint64_t n = frames_per_entry(level);
    const uint64_t first = first_gfn_of_entry(gfn, level);
    if (first < slot.base_gfn() || first + n > slot.end_gfn()) continue;
    const uint64_t host_frame = reinterpret_cast<uintptr_t>(slot.original_host_page(first)) >> x86::PAGE_SHIFT;
    if (host_frame & (n - 1)) continue;  // the host's pages do not line up (a moved slot)
    if (slot.relocated_in(first, n)) continue;  // the host moved some of them: not contiguous
    return level;
  }
  return 1;
}

uint64_t TdpMmu::make_leaf(const guest::Memslot& slot, uint64_t gfn, unsigned level, bool writable) const {
  const uint64_t first = first_gfn_of_entry(gfn, level);
  uint64_t s = reinterpret_cast<uintptr_t>(slot.host_page(first)) | spte::P | spte::US;
  if (level > 1) s |= spte::PS;
  if (!slot.readonly()) s |= spte::HOST_WRITABLE | spte::MMU_WRITABLE;
  if (writable) s |= spte::RW;
  return s;
}

bool TdpMmu::fault(VcpuContext& vcpu, uint64_t gfn, x86::AccessKind kind, const Leaf& from, bool set_accessed, Target& out) {
  auto& vs = static_cast<VcpuState&>(*vcpu.mmu_state);
  vs.cache.top_up(pool_);  // before anything is built: the install below allocates nothing
  const bool fresh_root = !from.sptep;
  if (fresh_root) ensure_root(vcpu);

  // MMU-notifier protocol: note the sequence before resolving the host frame; a fault that
  // overlaps an invalidation in progress, or raced with one, installs nothing and retries.
  const uint64_t seq = invalidate_seq_.load(std::memory_order_acquire);
  auto invalidated = [&] {
    if (invalidate_in_progress_.load(std::memory_order_acquire) && gfn >= invalidate_gfn_ && gfn < invalidate_end_gfn_)
      throw RetryAccess{};  // the host is moving this page: leave the lock to it
    return invalidate_seq_.load(std::memory_order_acquire) != seq;
  };
  if (invalidated()) return false;

  guest::Memslot* slot = slots_.find(gfn);
  if (slot) slot->prepare_bitmaps(gfn);  // folding the leaf's A/D bits in later allocates nothing
  const bool write = kind == x86::AccessKind::Write;
  const unsigned target = slot ? max_mapping_level(*slot, gfn) : 0;
  const bool wp_logging = slot && slot->dirty_logging() && options_.dirty_log == DirtyLogMode::WriteProtect;

  // Start where the lookup stopped; descend through tables other vCPUs may be adding.
  unsigned level = fresh_root ? root_level_ : from.level;
  uint64_t* p = fresh_root ? &pool_.table(root_.load(std::memory_order_acquire))[spte_index(gfn, level)] : from.sptep;
  for (;;) {
    const uint64_t s = load(p);
    if (spte::is_present(s)) {
      if (spte::is_leaf(s, level)) {
        ++vs.pf_spurious;  // another vCPU mapped it first
        return false;
      }
      --level;
      p = &spte::table_of(s)[spte_index(gfn, level)];
      continue;
    }
    const uint64_t first = first_gfn_of_entry(gfn, level);
    const bool leaf_here = slot ? level <= target : (level == 1 || !slots_.any_in(first, frames_per_entry(level)));
    if (!leaf_here) {
      ShadowPage* sp = new_page(vs, first, level - 1);
      sp->parent_spte = p;
      uint64_t* child = pool_.table(sp);
      if (!cas(p, s, spte::make_table(child))) {
        vs.cache.give_back(sp);  // lost a race: look at this entry again
        continue;
      }
      ++vs.mmu_cache_miss;
      --level;
      p = &child[spte_index(gfn, level)];
      continue;
    }
    if (invalidated()) return false;
    if (!slot) {
      if (!cas(p, s, spte::make_mmio(slots_.generation()))) return false;
      ++vs.pf_mmio_spte_created;
      out = {Outcome::Mmio, nullptr};
      return true;
    }
    const bool writable = !slot->readonly() && (!wp_logging || write);
    const bool refused = write && slot->readonly();
    // The access that faulted happens right after: the leaf is born with the A (and D) bits the
    // hardware would set for it.
    uint64_t leaf = make_leaf(*slot, gfn, level, writable);
    if (!refused && (set_accessed || write)) leaf |= spte::A;
    if (!refused && write) leaf |= spte::D;
    if (!cas(p, s, leaf)) return false;
    pool_.header(p)->set_gfn(spte_index(gfn, level), first);  // checks the seed's formula (debug builds)
    if (writable && wp_logging) vcpu.mark_dirty(*slot, gfn);  // after the install, before the write (see above)
    ++vs.installed[level];
    ++vs.pf_fixed;
    if (refused) {
      out = {Outcome::ReadOnly, nullptr};
      return true;
    }
    if (level > 1 && (set_accessed || write)) slot->mark_accessed(gfn);
    out = {Outcome::Mapped, spte::host_address(leaf) + ((gfn & (frames_per_entry(level) - 1)) << x86::PAGE_SHIFT)};
    return true;
  }
}

AccessResult TdpMmu::access(VcpuContext& vcpu, uint64_t gva, x86::AccessKind kind, unsigned width, uint64_t value) {
  if (!fits(access_pages())) make_room(vcpu);
  auto& vs = static_cast<VcpuState&>(*vcpu.mmu_state);
  Port port(*this, vcpu);
  const guest::AccessMode mode{kind, vcpu.state.cpl == 3, vcpu.state.ac, vcpu.state.pkru};
  AccessResult r;
  Target t;
  unsigned guest_page_shift = x86::PAGE_SHIFT;
  try {
    const guest::WalkResult w = guest::walk_guest(vcpu.paging, vcpu.pdptes, port, gva, mode);
    if (vcpu.paging.mode() != x86::PagingMode::Off) ++vs.walks;
    vs.guest_walk_refs += w.walk.refs;
    if (!w.ok) {
      r.status = AccessResult::Status::Fault;
      r.fault = w.fault;
      return r;
    }
    r.gpa = w.walk.gpa;
    if (vcpu.paging.mode() != x86::PagingMode::Off && w.walk.level > 1)  // 4 MiB pages in 32-bit paging
      guest_page_shift = vcpu.paging.mode() == x86::PagingMode::Bits32 ? 22 : x86::PAGE_SHIFT + 9 * (w.walk.level - 1);
    t = translate_gfn(vcpu, r.gpa >> x86::PAGE_SHIFT, kind, true);
  } catch (const RetryAccess&) {
    ++vs.pf_retry;
    r.status = AccessResult::Status::Retry;
    return r;
  }
  if (t.outcome == Outcome::Mmio) {
    r.status = AccessResult::Status::Mmio;
    return r;
  }
  if (t.outcome == Outcome::ReadOnly) {
    r.status = AccessResult::Status::ReadOnly;
    return r;
  }
  uint8_t* host = t.host + (r.gpa & x86::PAGE_OFFSET_MASK);
  if (kind == x86::AccessKind::Read) r.value = guest::GuestMemory::load(host, width);
  if (kind == x86::AccessKind::Write) guest::GuestMemory::store(host, width, value);
  // A and D are set in the guest's entries and the SPTE, the page is logged: until a flush,
  // the same access needs none of this again.
  if (vcpu.translations) vcpu.translations->fill(gva, r.gpa, host, kind, vcpu.state.cpl == 3, guest_page_shift);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Zapping (exclusive lock unless noted)

void TdpMmu::fold_leaf(uint64_t s, unsigned level) {
  // A dropped SPTE's accessed and dirty bits go to the memslot's bitmaps, found through the
  // host frame (the slot may have moved since the SPTE was made).
  const bool accessed = (s & spte::A) && level == 1;  // huge mappings recorded their pages already
  const bool dirty = (s & spte::D) && options_.dirty_log == DirtyLogMode::DirtyBit;
  if (!accessed && !dirty) return;
  uint64_t gfn = 0;
  guest::Memslot* slot = slots_.slot_of_frame(spte::host_address(s), gfn);
  if (!slot) return;  // the slot is gone, or the frame was taken back
  const uint64_t n = frames_per_entry(level);
  for (uint64_t i = 0; i < n && gfn + i < slot->end_gfn(); ++i) {
    if (accessed) slot->mark_accessed(gfn + i);
    if (dirty) slot->mark_dirty(gfn + i);
  }
}

void TdpMmu::drop_spte(uint64_t s, unsigned level) {
  if (!spte::is_present(s)) return;
  if (spte::is_leaf(s, level)) {
    fold_leaf(s, level);
    pages_[level].fetch_sub(1, std::memory_order_relaxed);
  } else {
    free_table(spte::table_of(s), level - 1);
  }
}

void TdpMmu::free_table(uint64_t* table, unsigned level) {
  for (unsigned i = 0; i < SPTE_PER_PAGE; ++i) {
    const uint64_t s = table[i];
    if (!s) continue;
    table[i] = 0;  // pool pages go back all zero
    drop_spte(s, level);
  }
  pool_.release(pool_.header(table));
  mmu_shadow_zapped_.fetch_add(1, std::memory_order_relaxed);
}

void TdpMmu::zap_entry(uint64_t* sptep, unsigned level) { drop_spte(exchange(sptep, 0), level); }

template <class F>
void TdpMmu::walk_range(uint64_t gfn, uint64_t npages, bool yield, F&& f) {
  ShadowPage* const root = root_.load(std::memory_order_acquire);
  if (!root || !npages) return;
  const uint64_t end = gfn + npages;
  bool stop = false;
  auto visit = [&](auto& self, uint64_t* table, unsigned level, uint64_t table_first) -> void {
    const uint64_t span = frames_per_entry(level);
    const unsigned lo = gfn > table_first ? static_cast<unsigned>((gfn - table_first) / span) : 0;
    for (unsigned i = lo; i < SPTE_PER_PAGE && !stop; ++i) {
      const uint64_t entry_first = table_first + i * span;
      if (entry_first >= end) break;
      const uint64_t s = load(&table[i]);
      if (!s || !f(&table[i], s, level, entry_first, entry_first >= gfn && entry_first + span <= end)) continue;
      self(self, spte::table_of(s), level - 1, entry_first);
      if (yield && level == root_level_) {
        lock_.yield_exclusive();
        // Someone else may have invalidated the root meanwhile: its SPTEs are unreachable.
        stop = root_.load(std::memory_order_acquire) != root;
      }
    }
  };
  visit(visit, pool_.table(root), root_level_, 0);
}

template <class F>
void TdpMmu::for_each_leaf(uint64_t gfn, uint64_t npages, F&& f) {
  walk_range(gfn, npages, false, [&](uint64_t* p, uint64_t s, unsigned level, uint64_t first, bool) {
    if (spte::is_present(s) && !spte::is_leaf(s, level)) return true;
    f(p, s, level, first);
    return false;
  });
}

void TdpMmu::zap_range(uint64_t gfn, uint64_t npages) {
  // Whole tables inside the range go at once; partial ones are visited. Between top-level
  // entries the lock is yielded, so a long zap does not stall the vCPUs.
  walk_range(gfn, npages, true, [&](uint64_t* p, uint64_t s, unsigned level, uint64_t, bool inside) {
    if (spte::is_mmio(s)) {
      store(p, 0);
    } else if (spte::is_leaf(s, level) || inside) {
      zap_entry(p, level);
    } else {
      return true;
    }
    return false;
  });
}

void TdpMmu::invalidate_root() {
  // KVM's fast zap: the root becomes obsolete at once (nothing reaches its SPTEs any more);
  // freeing its pages, and folding their A/D bits, happens with the next root.
  ShadowPage* root = root_.load(std::memory_order_acquire);
  if (!root) return;
  root->role = root->role.with_invalid(true);
  {
    std::lock_guard g(invalid_roots_lock_);
    invalid_roots_.push_back(root);
  }
  root_.store(nullptr, std::memory_order_release);
}

void TdpMmu::free_invalid_roots() {
  std::vector<ShadowPage*> roots;
  {
    std::lock_guard g(invalid_roots_lock_);
    roots.swap(invalid_roots_);
  }
  for (ShadowPage* r : roots) free_table(pool_.table(r), r->role.level());
}

void TdpMmu::zap_all_mmio() {
  mmio_zap_all_.fetch_add(1, std::memory_order_relaxed);
  for_each_leaf(0, frames_per_page(root_level_), [&](uint64_t* p, uint64_t s, unsigned, uint64_t) {
    if (spte::is_mmio(s)) store(p, 0);
  });
}

void TdpMmu::remote_tlb_flush() {
  remote_tlb_flush_.fetch_add(1, std::memory_order_relaxed);
  note_tlb_flush();
  wait_for_accesses();
}

// ---------------------------------------------------------------------------------------------
// Memslots, dirty logging, host invalidation, aging

void TdpMmu::memslot_leaving(guest::Memslot&) {
  invalidate_root();
  remote_tlb_flush();
  // Not deferred this time: the dropped SPTEs' A/D bits are folded through their host frames,
  // and once the slot is gone its host memory may back a new slot at the same address.
  free_invalid_roots();
}

void TdpMmu::memslots_changed() {
  // MMIO SPTEs carry the memslot generation and go stale by themselves; when the generation's
  // bits wrap, an old SPTE could look current again, so every MMIO SPTE goes.
  const uint64_t epoch = slots_.generation() >> spte::MMIO_GEN_BITS;
  if (epoch != mmio_epoch_) {
    zap_all_mmio();
    mmio_epoch_ = epoch;
  }
}

uint64_t* TdpMmu::fill_split_table(ShadowPage* sp, uint64_t s, unsigned level, uint64_t first_gfn, uint64_t* parent) const {
  // 512 leaves one level down over the huge leaf's frames, with its rights. D starts afresh
  // (logging); A is not inherited (the huge leaf's pages were recorded one by one as used);
  // write protection follows the logging mode.
  sp->gfn = first_gfn;
  sp->role = Role().with_level(level - 1).with_direct(true).with_access(x86::acc::ALL);
  sp->parent_spte = parent;
  uint64_t* child = pool_.table(sp);
  const uint64_t child_bytes = frames_per_entry(level - 1) << x86::PAGE_SHIFT;
  uint64_t base = s & ~(spte::PS | spte::D | spte::A | spte::RW);
  // D-bit logging keeps 4 KiB leaves writable; a huge child stays protected until split too.
  if (options_.dirty_log == DirtyLogMode::DirtyBit && level - 1 == 1 && (s & spte::HOST_WRITABLE)) base |= spte::RW;
  if (level - 1 > 1) base |= spte::PS;
  for (unsigned i = 0; i < SPTE_PER_PAGE; ++i) child[i] = base + i * child_bytes;
  return child;
}

void TdpMmu::split_huge(uint64_t* sptep, unsigned level, uint64_t first_gfn) {
  // Under the exclusive lock (eager split): down to 4 KiB at once.
  exclusive_cache_.top_up(pool_, 1);
  if (guest::Memslot* slot = slots_.find(first_gfn)) {  // the 4 KiB leaves' bitmaps (two chunks at most)
    slot->prepare_bitmaps(first_gfn);
    slot->prepare_bitmaps(std::min(first_gfn + frames_per_entry(level), slot->end_gfn()) - 1);
  }
  uint64_t* child = fill_split_table(exclusive_cache_.take(), load(sptep), level, first_gfn, sptep);
  store(sptep, spte::make_table(child));
  pages_[level].fetch_sub(1, std::memory_order_relaxed);
  pages_[level - 1].fetch_add(SPTE_PER_PAGE, std::memory_order_relaxed);
  huge_splits_.fetch_add(1, std::memory_order_relaxed);
  if (level - 1 > 1) {
    for (unsigned i = 0; i < SPTE_PER_PAGE; ++i) split_huge(&child[i], level - 1, first_gfn + i * frames_per_entry(level - 1));
  }
}

bool TdpMmu::split_on_fault(VcpuContext& vcpu, uint64_t* sptep, uint64_t s, unsigned level, uint64_t gfn) {
  // Under the shared lock: a write hit a huge leaf of a logged slot that the eager split has
  // not reached yet (or a lazy split): replace it by a table one level down, by
  // compare-and-swap (KVM's TDP MMU splits huge pages under its read lock the same way).
  auto& vs = static_cast<VcpuState&>(*vcpu.mmu_state);
  vs.cache.top_up(pool_);
  if (guest::Memslot* slot = slots_.find(gfn)) {  // the smaller leaves' bitmaps (two chunks at most)
    const uint64_t first = first_gfn_of_entry(gfn, level);
    slot->prepare_bitmaps(std::max(first, slot->base_gfn()));
    slot->prepare_bitmaps(std::min(first + frames_per_entry(level), slot->end_gfn()) - 1);
  }
  ShadowPage* sp = vs.cache.take();
  uint64_t* child = fill_split_table(sp, s, level, first_gfn_of_entry(gfn, level), sptep);
  if (!cas(sptep, s, spte::make_table(child))) {
    std::memset(child, 0, 4096);
    vs.cache.give_back(sp);
    return false;
  }
  --vs.installed[level];
  vs.installed[level - 1] += SPTE_PER_PAGE;
  huge_splits_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void TdpMmu::zap_huge_leaves(const guest::Memslot& slot) {
  for_each_leaf(slot.base_gfn(), slot.npages(), [&](uint64_t* p, uint64_t s, unsigned level, uint64_t) {
    if (spte::is_present(s) && level > 1) {
      store(p, s & ~spte::D);  // writes from before logging started are not logged
      zap_entry(p, level);
    }
  });
}

void TdpMmu::make_room(VcpuContext& vcpu) {
  // Recycling changes structure: the exclusive lock, taken in between. Meanwhile this vCPU is
  // outside any access as remote flushes see it (its epoch even), and it holds no SPTE yet.
  struct Reenter {
    MmuLock& lock;
    std::atomic<uint64_t>& epoch;
    ~Reenter() {
      lock.lock_shared();
      epoch.fetch_add(1, std::memory_order_seq_cst);
    }
  };
  vcpu.access_epoch.fetch_add(1, std::memory_order_seq_cst);
  lock_.unlock_shared();
  Reenter reenter{lock_, vcpu.access_epoch};
  std::lock_guard g(lock_);
  if (!fits(access_pages())) recycle(access_pages());
}

void TdpMmu::recycle(uint64_t more_pages) {
  // Whole 1 GiB subtrees (a level-2 table and its leaf tables) go, round robin over the gfn
  // space from where the last recycling stopped: TDP keeps no LRU, and anything it drops is
  // rebuilt by faults. No vCPU is inside an access (exclusive lock): no flush to wait for.
  const uint64_t before = pool_.pages_in_use();
  free_invalid_roots();
  const uint64_t total = frames_per_page(root_level_);
  const uint64_t span = frames_per_entry(3);
  const uint64_t start = recycle_cursor_ % total;
  for (int pass = 0; pass < 2 && !fits(more_pages); ++pass) {
    const uint64_t lo = pass == 0 ? start : 0, hi = pass == 0 ? total : start;
    walk_range(lo, hi - lo, false, [&](uint64_t* p, uint64_t s, unsigned level, uint64_t first, bool) {
      if (fits(more_pages) || !spte::is_present(s) || spte::is_leaf(s, level)) return false;
      if (level > 3) return true;
      zap_entry(p, level);
      recycle_cursor_ = first + span;
      return false;
    });
  }
  if (!fits(more_pages)) {
    // Upper tables and cached pages are all that is left: they go too, the root with them.
    for (VcpuContext* v : vcpus_) static_cast<VcpuState&>(*v->mmu_state).cache.drain(pool_);
    exclusive_cache_.drain(pool_);
    invalidate_root();
    free_invalid_roots();
  }
  mmu_recycled_ += before - std::min(before, pool_.pages_in_use());
  if (!fits(more_pages))
    throw guest::HostMemoryError("--max-mmu-memory=" + std::to_string(options_.max_mmu_memory) + " cannot hold one access's tables");
}

void TdpMmu::dirty_logging_changing(guest::Memslot&) {
  // Dropped SPTEs still to be folded belong to the log as it was (D bits from before logging
  // starts must not count once it has).
  free_invalid_roots();
}

void TdpMmu::dirty_logging_changed(guest::Memslot& slot) {
  const bool wp = options_.dirty_log == DirtyLogMode::WriteProtect;
  if (slot.dirty_logging()) {
    // Logging starts. First, in one pass: every 4 KiB SPTE is write-protected or has its D bit
    // cleared, and every huge one is write-protected (a write to it splits it) or, lazily,
    // dropped (refaulted at 4K). Then, eagerly, the huge ones are split, yielding the lock
    // between batches: a vCPU that writes meanwhile splits its own on the fault path.
    for_each_leaf(slot.base_gfn(), slot.npages(), [&](uint64_t* p, uint64_t s, unsigned level, uint64_t) {
      if (!spte::is_present(s)) return;
      if (level > 1 && !options_.eager_split) {
        store(p, s & ~spte::D);  // writes from before logging started are not logged
        zap_entry(p, level);
        return;
      }
      const uint64_t cleared = s & ~(wp || level > 1 ? spte::RW | spte::D : spte::D);
      if (cleared != s) store(p, cleared);
    });
    if (options_.eager_split) {
      try {
        walk_range(slot.base_gfn(), slot.npages(), true, [&](uint64_t* p, uint64_t s, unsigned level, uint64_t first, bool) {
          if (!spte::is_present(s)) return false;
          if (!spte::is_leaf(s, level)) return true;
          if (level == 1) return false;
          if (fits(level == 2 ? 1 : 1 + SPTE_PER_PAGE)) {
            split_huge(p, level, first);
          } else {
            zap_entry(p, level);  // over the byte budget: refaulted at 4K on demand instead
            ++mmu_recycled_;
          }
          return false;
        });
      } catch (const guest::HostMemoryError&) {
        // The host refused a table: what is not split yet is dropped (refaulted at 4K), so no
        // huge leaf stays in a logged slot; the op still reports the error.
        zap_huge_leaves(slot);
        remote_tlb_flush();
        throw;
      }
    }
  } else {
    // Logging stops: drop the 4 KiB tables under regions that may be mapped huge again, so the
    // next fault collapses them back (KVM's zap of collapsible SPTEs).
    if (ShadowPage* root = root_.load(std::memory_order_acquire)) {
      auto visit = [&](auto& self, uint64_t* table, unsigned level, uint64_t table_first) -> void {
        const uint64_t span = frames_per_entry(level);
        for (unsigned i = 0; i < SPTE_PER_PAGE; ++i) {
          const uint64_t entry_first = table_first + i * span;
          if (entry_first + span <= slot.base_gfn() || entry_first >= slot.end_gfn()) continue;
          const uint64_t s = load(&table[i]);
          if (!spte::is_present(s) || spte::is_leaf(s, level)) continue;
          if (level <= 3 && max_mapping_level(slot, entry_first) >= level) {
            zap_entry(&table[i], level);
          } else {
            self(self, spte::table_of(s), level - 1, entry_first);
          }
        }
      };
      visit(visit, pool_.table(root), root_level_, 0);
    }
  }
  remote_tlb_flush();
}

void TdpMmu::dirty_log_sync(guest::Memslot& slot) {
  free_invalid_roots();
  if (options_.dirty_log != DirtyLogMode::DirtyBit) return;
  // Harvest the D bits the hardware set; they stay set until `clear` (manual protect).
  for_each_leaf(slot.base_gfn(), slot.npages(), [&](uint64_t*, uint64_t s, unsigned level, uint64_t first) {
    if (spte::is_present(s) && (s & spte::D) && level == 1) slot.mark_dirty(first);
  });
}

void TdpMmu::dirty_log_cleared(guest::Memslot& slot, const std::vector<DirtyChunk>& chunks) {
  // Runs under the shared lock, beside faulting vCPUs: every change is a compare-and-swap.
  const uint64_t take = options_.dirty_log == DirtyLogMode::WriteProtect ? spte::RW : spte::D;
  bool changed = false;
  uint64_t cached_key = ~0ull;
  uint64_t* cached_table = nullptr;
  for (const DirtyChunk& c : chunks) {
    for (uint64_t m = c.mask; m; m &= m - 1) {
      const uint64_t gfn = slot.base_gfn() + c.first + static_cast<uint64_t>(__builtin_ctzll(m));
      uint64_t* p;
      if ((gfn >> LEVEL_BITS) == cached_key) {
        p = &cached_table[spte_index(gfn, 1)];
      } else {
        const Leaf l = lookup(gfn);
        if (!l.sptep || l.level != 1) continue;  // not mapped (or not yet split): nothing to protect
        p = l.sptep;
        cached_key = gfn >> LEVEL_BITS;
        cached_table = p - spte_index(gfn, 1);
      }
      for (uint64_t s = load(p); spte::is_present(s) && (s & take);) {
        if (cas(p, s, s & ~take)) {
          changed = true;
          break;
        }
        s = load(p);
      }
    }
  }
  if (changed) remote_tlb_flush();
}

void TdpMmu::invalidate_start(uint64_t gfn, uint64_t npages) {
  invalidate_gfn_ = gfn;
  invalidate_end_gfn_ = gfn + npages;
  invalidate_in_progress_.fetch_add(1, std::memory_order_acq_rel);
  free_invalid_roots();
  zap_range(gfn, npages);
  remote_tlb_flush();
}

void TdpMmu::invalidate_end(uint64_t, uint64_t) {
  invalidate_seq_.fetch_add(1, std::memory_order_acq_rel);
  invalidate_in_progress_.fetch_sub(1, std::memory_order_acq_rel);
}

void TdpMmu::harvest_accessed(guest::Memslot& slot, uint64_t gfn, uint64_t npages) {
  free_invalid_roots();
  for_each_leaf(gfn, npages, [&](uint64_t* p, uint64_t s, unsigned level, uint64_t first) {
    if (!spte::is_present(s) || !(s & spte::A)) return;
    // A huge leaf's pages are in the memslot's record already; only a 4 KiB leaf's A bit says
    // something the record does not. Clear it only for a whole leaf in the range.
    if (level > 1) {
      if (first >= gfn && first + frames_per_entry(level) <= gfn + npages) store(p, s & ~spte::A);
      return;
    }
    store(p, s & ~spte::A);
    slot.mark_accessed(first);
  });
}

// ---------------------------------------------------------------------------------------------
// Audit and report

void TdpMmu::audit(std::vector<std::string>& v) const {
  auto* self = const_cast<TdpMmu*>(this);
  uint64_t pages = 0;
  int64_t leaves[4] = {};
  const bool wp = options_.dirty_log == DirtyLogMode::WriteProtect;
  auto check_table = [&](auto& rec, const uint64_t* table, unsigned level, uint64_t table_first, const uint64_t* parent) -> void {
    ++pages;
    const ShadowPage* sp = pool_.header(table);
    if (sp->role.level() != level || !sp->role.direct())
      v.push_back(fmt::format("tdp: page at gfn 0x{:x}: role level {} direct {}, expected level {} direct", sp->gfn, sp->role.level(), sp->role.direct(), level));
    if (sp->gfn != table_first || (sp->gfn & (frames_per_page(level) - 1)))
      v.push_back(fmt::format("tdp: page at level {} has base gfn 0x{:x}, expected 0x{:x} (aligned to its span)", level, sp->gfn, table_first));
    if (parent && sp->parent_spte != parent) v.push_back(fmt::format("tdp: page at gfn 0x{:x} level {}: parent pointer disagrees", sp->gfn, level));
    for (unsigned i = 0; i < SPTE_PER_PAGE; ++i) {
      const uint64_t s = table[i];
      if (!s) continue;
      const uint64_t first = table_first + i * frames_per_entry(level);
      if (sp->gfn_at(i) != first) v.push_back(fmt::format("tdp: gfn_at({}) = 0x{:x}, expected 0x{:x}", i, sp->gfn_at(i), first));
      if (spte::is_mmio(s)) {
        if (spte::mmio_is_current(s, slots_.generation()) && slots_.any_in(first, frames_per_entry(level)))
          v.push_back(fmt::format("tdp: current MMIO SPTE over gfn 0x{:x} (level {}), which a memslot holds", first, level));
        continue;
      }
      if (!spte::is_present(s)) {
        v.push_back(fmt::format("tdp: non-present SPTE 0x{:x} that is not MMIO at gfn 0x{:x}", s, first));
        continue;
      }
      if (!spte::is_leaf(s, level)) {
        if (!pool_.owns(spte::table_of(s))) {
          v.push_back(fmt::format("tdp: table SPTE at gfn 0x{:x} points outside the pool", first));
          continue;
        }
        rec(rec, spte::table_of(s), level - 1, first, &table[i]);
        continue;
      }
      ++leaves[level];
      const guest::Memslot* slot = slots_.find(first);
      const uint64_t n = frames_per_entry(level);
      if (!slot || first + n > slot->end_gfn()) {
        v.push_back(fmt::format("tdp: SPTE maps gfn 0x{:x} (level {}) outside every live memslot", first, level));
        continue;
      }
      if (spte::host_address(s) != slot->host_page(first))
        v.push_back(fmt::format("tdp: SPTE for gfn 0x{:x} maps frame 0x{:x}, the memslot says 0x{:x}", first, spte::frame(s),
                                reinterpret_cast<uintptr_t>(slot->host_page(first)) >> 12));
      if (level > self->max_mapping_level(*slot, first))
        v.push_back(fmt::format("tdp: level-{} SPTE at gfn 0x{:x} where only level {} is allowed", level, first, self->max_mapping_level(*slot, first)));
      if (slot->readonly() && (s & (spte::RW | spte::HOST_WRITABLE)))
        v.push_back(fmt::format("tdp: writable SPTE for gfn 0x{:x} in read-only memslot {}", first, slot->id()));
      if (slot->dirty_logging() && wp && (s & spte::RW) && !slot->dirty_bitmap().test(first - slot->base_gfn()))
        v.push_back(fmt::format("tdp: writable SPTE for gfn 0x{:x} in logged memslot {} that the log does not show dirty", first, slot->id()));
    }
  };
  if (const ShadowPage* root = root_.load()) check_table(check_table, pool_.table(root), root_level_, 0, nullptr);
  {
    std::lock_guard g(self->invalid_roots_lock_);
    for (const ShadowPage* r : invalid_roots_) {
      if (!r->role.invalid()) v.push_back("tdp: a root awaiting freeing is not marked invalid");
      uint64_t sub = 0;
      auto count = [&](auto& rec, const uint64_t* table, unsigned level) -> void {
        ++sub;
        for (unsigned i = 0; i < SPTE_PER_PAGE; ++i)
          if (spte::is_present(table[i]) && !spte::is_leaf(table[i], level)) rec(rec, spte::table_of(table[i]), level - 1);
      };
      count(count, pool_.table(r), r->role.level());
      pages += sub;
    }
  }
  uint64_t cached = exclusive_cache_.size();
  for (const VcpuContext* vc : vcpus_) cached += static_cast<const VcpuState&>(*vc->mmu_state).cache.size();
  if (pages + cached != pool_.pages_in_use())
    v.push_back(fmt::format("tdp: {} pages reachable and {} cached, but {} in use", pages, cached, pool_.pages_in_use()));
  for (unsigned l = 1; l <= 3; ++l) {
    if (leaves[l] != leaf_count(l) && invalid_roots_.empty())
      v.push_back(fmt::format("tdp: {} counts {} but the tables hold {}", LEVEL_NAMES[l], leaf_count(l), leaves[l]));
  }
}

void TdpMmu::report(nlohmann::ordered_json& stats, nlohmann::ordered_json& memory) const {
  VcpuState sum;
  for (const VcpuContext* vc : vcpus_) {
    const auto& vs = static_cast<const VcpuState&>(*vc->mmu_state);
    sum.pf_fixed += vs.pf_fixed;
    sum.pf_spurious += vs.pf_spurious;
    sum.pf_fast += vs.pf_fast;
    sum.pf_mmio_spte_created += vs.pf_mmio_spte_created;
    sum.mmu_cache_miss += vs.mmu_cache_miss;
    sum.tdp_exits += vs.tdp_exits;
    sum.mmio_exits += vs.mmio_exits;
    sum.pf_retry += vs.pf_retry;
    sum.walks += vs.walks;
    sum.guest_walk_refs += vs.guest_walk_refs;
  }
  stats["walks"] = sum.walks;
  stats["walk_refs"] = sum.guest_walk_refs;
  stats["tdp_exits"] = sum.tdp_exits;
  stats["pf_fixed"] = sum.pf_fixed;
  stats["pf_spurious"] = sum.pf_spurious;
  stats["pf_fast"] = sum.pf_fast;
  stats["pf_retry"] = sum.pf_retry;
  stats["pf_mmio_spte_created"] = sum.pf_mmio_spte_created;
  stats["mmio_exits_cached"] = sum.mmio_exits;
  stats["mmu_cache_miss"] = sum.mmu_cache_miss;
  stats["mmu_shadow_zapped"] = mmu_shadow_zapped_.load();
  stats["remote_tlb_flush"] = remote_tlb_flush_.load();
  stats["huge_page_splits"] = huge_splits_.load();
  stats["mmio_zap_all"] = mmio_zap_all_.load();
  stats["mmu_recycled"] = mmu_recycled_;
  uint64_t cached = exclusive_cache_.size();
  for (const VcpuContext* vc : vcpus_) cached += static_cast<const VcpuState&>(*vc->mmu_state).cache.size();
  const uint64_t pages = pool_.pages_in_use() - cached;
  for (unsigned l = 1; l <= 3; ++l) stats[LEVEL_NAMES[l]] = leaf_count(l);
  stats["shadow_pages"] = pages;
  const uint64_t tables = pages * 4096, headers = pages * sizeof(ShadowPage);
  memory["shadow_tables"] = tables;
  memory["shadow_headers"] = headers;
  memory["translations"] = 0;  // direct pages keep no gfn array
  memory["mapping_total"] = tables + headers;
  memory["mmu_memory"] = pool_.pages_in_use() * PagePool::PAGE_BYTES;  // what max_mmu_memory bounds (cached pages too)
  memory["page_pool_free"] = (pool_.pages_free() + cached) * 4096;
  const KvmLayoutModel kvm = kvm_layouts(slots_, pages, /*indirect_pages=*/0, /*rmap_aliases=*/0, /*tdp=*/true);
  memory["kvm_pre2010"] = kvm.pre2010;
  memory["kvm_2010"] = kvm.after2010;
  memory["kvm_today"] = kvm.today;
}

}  // namespace vmmu::mmu
