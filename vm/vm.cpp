#include "vm/vm.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <shared_mutex>

#include "mmu/reference_mmu.hpp"

namespace vmmu {

namespace {
constexpr uint32_t MAX_VCPU_ID = 4095;

// Appends a slot-relative page to 64-page chunks built from pages in ascending order.
void add_page(std::vector<mmu::DirtyChunk>& chunks, uint64_t page) {
  if (chunks.empty() || chunks.back().first != (page & ~63ull)) chunks.push_back({page & ~63ull, 0});
  chunks.back().mask |= 1ull << (page & 63);
}

std::unique_ptr<mmu::Mmu> make_mmu(const VmConfig& config, guest::Memslots& slots) {
  switch (config.mmu) {
    case MmuKind::None: return std::make_unique<mmu::ReferenceMmu>(slots);
    case MmuKind::Tdp: return std::make_unique<mmu::TdpMmu>(slots, config.tdp);
    case MmuKind::Shadow: return std::make_unique<mmu::ShadowMmu>(slots, config.shadow);
  }
  throw UsageError(fmt::format("--mmu={} is not implemented", name(config.mmu)));
}
}  // namespace

const char* name(MmuKind k) {
  switch (k) {
    case MmuKind::None: return "none";
    case MmuKind::Tdp: return "tdp";
    case MmuKind::Shadow: return "shadow";
  }
  return "?";
}

std::optional<MmuKind> parse_mmu_kind(const std::string& s) {
  if (s == "none") return MmuKind::None;
  if (s == "tdp") return MmuKind::Tdp;
  if (s == "shadow") return MmuKind::Shadow;
  return std::nullopt;
}

Vm::Vm(const VmConfig& config)
    : config_(config),
      slots_(config.allocator ? *config.allocator : guest::default_host_allocator()),
      mmu_(make_mmu(config, slots_)) {
  const uint32_t n = config.translation_cache_entries;
  if (n == 1 || (n & (n - 1))) throw UsageError(fmt::format("translation cache entries {} is not 0 or a power of two of at least 2", n));
}
Vm::~Vm() = default;

void Vm::set_cpu_model(const x86::CpuModel& model) {
  if (!vcpus_.empty()) throw UsageError("the cpu model is fixed once a vcpu exists");
  if (model.maxphyaddr < x86::MIN_MAXPHYADDR || model.maxphyaddr > x86::MAX_MAXPHYADDR)
    throw UsageError(fmt::format("maxphyaddr {} is outside {}..{}", model.maxphyaddr, x86::MIN_MAXPHYADDR, x86::MAX_MAXPHYADDR));
  model_ = model;
}

void Vm::add_memslot(const MemslotSpec& spec) {
  std::lock_guard g(mmu_->lock());
  mmu_->memslot_arrived(slots_.add(spec));
  mmu_->memslots_changed();
  mmu_->drop_translation_caches();
}

void Vm::delete_memslot(uint32_t id) {
  std::lock_guard g(mmu_->lock());
  mmu_->memslot_leaving(slots_.get(id));
  mmu_->drop_translation_caches();  // before its host memory goes
  slots_.remove(id);
  mmu_->memslots_changed();
}

void Vm::move_memslot(uint32_t id, uint64_t gpa) {
  std::lock_guard g(mmu_->lock());
  guest::Memslot& s = slots_.get(id);
  slots_.check_move(id, gpa);  // refuse before any mapping is dropped
  mmu_->memslot_leaving(s);
  mmu_->drop_translation_caches();
  slots_.move(id, gpa);
  mmu_->memslot_arrived(s);
  mmu_->memslots_changed();
}

Vcpu& Vm::create_vcpu(uint32_t id) {
  if (id > MAX_VCPU_ID) throw UsageError(fmt::format("vcpu id {} is above {}", id, MAX_VCPU_ID));
  if (vcpus_.count(id)) throw UsageError(fmt::format("vcpu {} already exists", id));
  auto& v = vcpus_[id];
  v = std::make_unique<Vcpu>(*this, id);
  mmu_->vcpu_created(v->ctx_);
  return *v;
}

Vcpu& Vm::vcpu(uint32_t id) {
  auto it = vcpus_.find(id);
  if (it == vcpus_.end()) throw UsageError(fmt::format("no vcpu {}", id));
  return *it->second;
}

guest::Memslot& Vm::slot_of_range(uint64_t gpa, uint64_t size) const {
  guest::Memslot* s = slots_.find(gpa >> x86::PAGE_SHIFT);
  if (!s || size == 0 || size - 1 > ~gpa || ((gpa + size - 1) >> x86::PAGE_SHIFT) >= s->end_gfn())
    throw UsageError(fmt::format("gpa range 0x{:x}+0x{:x} is not inside one memslot", gpa, size));
  return *s;
}

void Vm::write_guest(uint64_t gpa, unsigned width, uint64_t value) {
  if ((gpa & x86::PAGE_OFFSET_MASK) + width > x86::PAGE_SIZE) throw UsageError(fmt::format("{} bytes at 0x{:x} cross a page", width, gpa));
  std::lock_guard g(mmu_->lock());
  slot_of_range(gpa, width);
  memory_.write(gpa, width, value);
  mmu_->vmm_write(gpa, width);
  mmu_->drop_translation_caches();
}

uint64_t Vm::read_guest(uint64_t gpa, unsigned width) const {
  if ((gpa & x86::PAGE_OFFSET_MASK) + width > x86::PAGE_SIZE) throw UsageError(fmt::format("{} bytes at 0x{:x} cross a page", width, gpa));
  std::shared_lock g(mmu_->lock());
  slot_of_range(gpa, width);
  uint64_t v = 0;
  memory_.read(gpa, width, v);
  return v;
}

void Vm::set_dirty_logging(uint32_t slot, bool on) {
  std::lock_guard g(mmu_->lock());
  guest::Memslot& s = slots_.get(slot);
  if (on == s.dirty_logging()) return;  // the same flags again: nothing changes (as in KVM)
  mmu_->dirty_logging_changing(s);
  if (!slots_.set_dirty_logging(slot, on)) return;
  mmu_->dirty_logging_changed(slots_.get(slot));
  mmu_->memslots_changed();
  mmu_->drop_translation_caches();
}

guest::Memslot& Vm::logged_slot(uint32_t slot) const {
  guest::Memslot& s = slots_.get(slot);
  if (s.readonly()) throw UsageError(fmt::format("memslot {} is read-only: it has no dirty log", slot));
  if (!s.dirty_logging()) throw UsageError(fmt::format("memslot {} has no dirty logging", slot));
  return s;
}

DirtyBitmap Vm::get_dirty_log(uint32_t slot) {
  std::shared_lock g(mmu_->lock());
  guest::Memslot& s = logged_slot(slot);
  mmu_->dirty_log_sync(s);
  DirtyBitmap b{s.base_gfn(), s.npages(), std::vector<uint64_t>((s.npages() + 63) / 64)};
  for (uint64_t w = 0; w < b.words.size(); ++w) b.words[w] = s.dirty_bitmap().word(w);
  return b;
}

std::vector<uint64_t> Vm::dirty_gfns(uint32_t slot) {
  std::shared_lock g(mmu_->lock());
  guest::Memslot& s = logged_slot(slot);
  mmu_->dirty_log_sync(s);
  std::vector<uint64_t> gfns;
  s.dirty_bitmap().for_each_set(0, s.npages(), [&](uint64_t i) { gfns.push_back(s.base_gfn() + i); });
  return gfns;
}

void Vm::clear_dirty_chunks(guest::Memslot& s, std::vector<mmu::DirtyChunk>& chunks) {
  // Bring the bitmap up to date (engines logging by D bits harvest them), clear the bits, then
  // re-protect what was dirty: a write that slips in between is in memory, and the VMM reads
  // the page after `clear` returns (KVM's order in kvm_clear_dirty_log_protect).
  mmu_->dirty_log_sync(s);
  for (mmu::DirtyChunk& c : chunks) c.mask = s.dirty_bitmap().clear_word_bits(c.first / 64, c.mask);
  mmu_->dirty_log_cleared(s, chunks);
  mmu_->drop_translation_caches();  // a write through an old entry would not be logged
}

void Vm::clear_dirty_log(uint32_t slot, uint64_t first_page, const std::vector<uint64_t>& words) {
  if (first_page % 64) throw UsageError(fmt::format("first page {} is not a multiple of 64", first_page));
  std::shared_lock g(mmu_->lock());
  guest::Memslot& s = logged_slot(slot);
  if (first_page + 64 * words.size() > ((s.npages() + 63) & ~63ull)) throw UsageError("the bitmap reaches past the memslot");
  std::vector<mmu::DirtyChunk> chunks;
  for (uint64_t w = 0; w < words.size(); ++w) {
    uint64_t mask = words[w];
    if (first_page + 64 * w + 64 > s.npages() && s.npages() % 64) mask &= (1ull << (s.npages() % 64)) - 1;
    if (mask) chunks.push_back({first_page + 64 * w, mask});
  }
  clear_dirty_chunks(s, chunks);
}

void Vm::clear_dirty_gfns(uint32_t slot, const std::vector<uint64_t>& gfns) {
  std::shared_lock g(mmu_->lock());
  guest::Memslot& s = slots_.get(slot);
  if (s.readonly()) throw UsageError(fmt::format("memslot {} is read-only: it has no dirty log", slot));
  if (!s.dirty_logging()) return;
  std::vector<mmu::DirtyChunk> chunks;
  for (uint64_t g : gfns) {
    if (!s.contains(g)) throw UsageError(fmt::format("gfn 0x{:x} is not in memslot {}", g, slot));
    add_page(chunks, g - s.base_gfn());
  }
  clear_dirty_chunks(s, chunks);
}

void Vm::enable_dirty_ring(uint32_t entries) {
  if (!vcpus_.empty()) throw UsageError("dirty rings are enabled before the first vcpu");
  if (entries == 0 || (entries & (entries - 1))) throw UsageError(fmt::format("ring size {} is not a power of two", entries));
  if (config_.mmu == MmuKind::Tdp && config_.tdp.dirty_log != mmu::DirtyLogMode::WriteProtect)
    throw UsageError("dirty rings need write-protect dirty logging");
  dirty_ring_entries_ = entries;
}

void Vm::reset_dirty_rings() {
  std::map<uint32_t, std::vector<uint64_t>> pages;  // slot -> harvested pages
  for (auto& [id, v] : vcpus_) {
    if (!v->ctx_.dirty_ring) continue;
    for (const mmu::DirtyRingEntry& e : v->ctx_.dirty_ring->take_harvested()) pages[e.slot].push_back(e.page);
  }
  std::shared_lock g(mmu_->lock());
  for (auto& [slot_id, list] : pages) {
    guest::Memslot* s = slots_.by_id(slot_id);
    if (!s || !s->dirty_logging()) continue;  // the slot went, or stopped logging, meanwhile
    std::sort(list.begin(), list.end());
    std::vector<mmu::DirtyChunk> chunks;
    for (uint64_t page : list) {
      if (page < s->npages()) add_page(chunks, page);
    }
    clear_dirty_chunks(*s, chunks);
  }
}

void Vm::unmap(uint64_t gpa, uint64_t size) {
  if ((gpa | size) & x86::PAGE_OFFSET_MASK) throw UsageError(fmt::format("range 0x{:x}+0x{:x} is not 4 KiB aligned", gpa, size));
  std::lock_guard g(mmu_->lock());
  slot_of_range(gpa, size);
  const uint64_t gfn = gpa >> x86::PAGE_SHIFT, n = size >> x86::PAGE_SHIFT;
  mmu_->invalidate_start(gfn, n);
  mmu_->drop_translation_caches();  // before the host frames move
  slots_.relocate(gfn, n);
  mmu_->invalidate_end(gfn, n);
}

std::vector<uint64_t> Vm::age(uint64_t gpa, uint64_t size) {
  if ((gpa | size) & x86::PAGE_OFFSET_MASK) throw UsageError(fmt::format("range 0x{:x}+0x{:x} is not 4 KiB aligned", gpa, size));
  std::lock_guard g(mmu_->lock());
  guest::Memslot& s = slot_of_range(gpa, size);
  const uint64_t gfn = gpa >> x86::PAGE_SHIFT, n = size >> x86::PAGE_SHIFT;
  mmu_->harvest_accessed(s, gfn, n);
  mmu_->drop_translation_caches();  // the next use of each page must be seen again
  std::vector<uint64_t> out;
  const uint64_t first = gfn - s.base_gfn();
  s.accessed_bitmap().for_each_set(first, first + n, [&](uint64_t i) { out.push_back(s.base_gfn() + i); });
  for (uint64_t g : out) s.accessed_bitmap().clear(g - s.base_gfn());
  return out;
}

void Vm::set_write_notifier(mmu::WriteTrackNotifier* notifier) {
  std::lock_guard g(mmu_->lock());
  mmu_->set_write_notifier(notifier);
}

void Vm::track_writes(uint64_t gfn, bool on) {
  std::lock_guard g(mmu_->lock());
  mmu_->track_writes(gfn, on);
  mmu_->drop_translation_caches();  // writes to it must reach the engine now
}

std::vector<std::string> Vm::audit() const {
  std::lock_guard g(mmu_->lock());
  std::vector<std::string> v;
  // Memslots: sorted, disjoint, inside the physical address space.
  const auto& slots = slots_.slots();
  for (size_t i = 0; i < slots.size(); ++i) {
    const guest::Memslot* s = slots[i];
    if (s->npages() == 0) v.push_back(fmt::format("memslot {} is empty", s->id()));
    if (s->end_gfn() > (guest::MAX_GPA >> x86::PAGE_SHIFT)) v.push_back(fmt::format("memslot {} ends above 2^52", s->id()));
    if (i + 1 < slots.size() && s->end_gfn() > slots[i + 1]->base_gfn())
      v.push_back(fmt::format("memslot {} overlaps memslot {}", s->id(), slots[i + 1]->id()));
    if (slots_.by_id(s->id()) != s) v.push_back(fmt::format("memslot {} is not found by its id", s->id()));
    if (slots_.find(s->base_gfn()) != s || slots_.find(s->end_gfn() - 1) != s)
      v.push_back(fmt::format("memslot {} is not found by its gfns", s->id()));
  }
  mmu_->audit(v);
  return v;
}

nlohmann::ordered_json Vm::stats() const {
  std::lock_guard g(mmu_->lock());
  nlohmann::ordered_json stats = nlohmann::ordered_json::object();
  nlohmann::ordered_json memory = nlohmann::ordered_json::object();
  VcpuStats sum;
  for (const auto& [id, v] : vcpus_) {
    const VcpuStats& s = v->stats();
    sum.reads += s.reads;
    sum.writes += s.writes;
    sum.fetches += s.fetches;
    sum.page_faults += s.page_faults;
    sum.gp_faults += s.gp_faults;
    sum.mmio += s.mmio;
    sum.readonly_writes += s.readonly_writes;
    for (const auto& [ec, n] : s.pf_by_error_code) sum.pf_by_error_code[ec] += n;
  }
  stats["accesses"] = sum.reads + sum.writes + sum.fetches;
  stats["reads"] = sum.reads;
  stats["writes"] = sum.writes;
  stats["fetches"] = sum.fetches;
  stats["page_faults"] = sum.page_faults;
  stats["gp_faults"] = sum.gp_faults;
  stats["mmio_exits"] = sum.mmio;
  stats["readonly_writes"] = sum.readonly_writes;
  nlohmann::ordered_json by_ec = nlohmann::ordered_json::object();
  for (const auto& [ec, n] : sum.pf_by_error_code) by_ec[fmt::format("0x{:x}", ec)] = n;
  stats["pf_by_error_code"] = by_ec;
  stats["memslots"] = slots_.slots().size();
  stats["vcpus"] = vcpus_.size();

  uint64_t dirty = 0, accessed = 0, relocated = 0;
  for (const guest::Memslot* s : slots_.slots()) {
    dirty += s->dirty_bitmap().bytes();
    accessed += s->accessed_bitmap().bytes();
    relocated += s->relocated_pages();
  }
  memory["memslots"] = slots_.metadata_bytes();
  memory["dirty_bitmaps"] = dirty;
  memory["age_bitmaps"] = accessed;
  memory["relocated_frames"] = relocated * x86::PAGE_SIZE;
  uint64_t translation_caches = 0;  // the vCPUs' software TLBs: a cache, not mapping metadata
  for (const auto& [id, v] : vcpus_)
    if (v->ctx_.translations) translation_caches += v->ctx_.translations->bytes();
  memory["translation_caches"] = translation_caches;
  mmu_->report(stats, memory);
  nlohmann::ordered_json out;
  out["stats"] = stats;
  out["memory"] = memory;
  return out;
}

}  // namespace vmmu
