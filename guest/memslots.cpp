#include "guest/memslots.hpp"

#include <cstring>

#include <fmt/format.h>

namespace vmmu::guest {

Memslot::Memslot(const MemslotSpec& spec, HostAllocator& host)
    : id_(spec.id),
      base_gfn_(spec.gpa >> x86::PAGE_SHIFT),
      npages_(spec.size >> x86::PAGE_SHIFT),
      readonly_(spec.readonly),
      host_page_(spec.host_page),
      // Congruent to the gpa modulo 1 GiB, so every guest huge page can sit on a host one.
      host_(std::make_unique<HostRegion>(spec.size, x86::SIZE_1G, spec.gpa)),
      dirty_(npages_, host),
      accessed_(npages_, host) {}

uint64_t Memslot::metadata_bytes() const {
  return sizeof(*this) + sizeof(HostRegion) +
         relocated_.size() * (sizeof(uint64_t) + sizeof(uint8_t*) + 2 * sizeof(void*));
}

void Memslots::check_free(uint64_t gfn, uint64_t npages, const Memslot* ignore) const {
  for (const Memslot* s : by_gfn_) {
    if (s == ignore) continue;
    if (gfn < s->end_gfn() && s->base_gfn() < gfn + npages) {
      throw UsageError(fmt::format("overlaps memslot {} (gpa 0x{:x}..0x{:x})", s->id(),
                                   s->base_gfn() << x86::PAGE_SHIFT, s->end_gfn() << x86::PAGE_SHIFT));
    }
  }
}

void Memslots::sort() {
  std::sort(by_gfn_.begin(), by_gfn_.end(), [](const Memslot* a, const Memslot* b) { return a->base_gfn() < b->base_gfn(); });
}

Memslot& Memslots::add(const MemslotSpec& spec) {
  if (spec.id > MAX_MEMSLOT_ID) throw UsageError(fmt::format("memslot id {} is above {}", spec.id, MAX_MEMSLOT_ID));
  if (by_id(spec.id)) throw UsageError(fmt::format("memslot {} already exists", spec.id));
  if (spec.gpa & x86::PAGE_OFFSET_MASK) throw UsageError(fmt::format("gpa 0x{:x} is not 4 KiB aligned", spec.gpa));
  if (spec.size == 0) throw UsageError("size is 0: a memslot cannot be empty");
  if (spec.size & x86::PAGE_OFFSET_MASK) throw UsageError(fmt::format("size 0x{:x} is not a multiple of 4 KiB", spec.size));
  if (spec.size > MAX_MEMSLOT_BYTES) throw UsageError(fmt::format("size 0x{:x} is over 64 TiB", spec.size));
  if (spec.gpa >= MAX_GPA || spec.size > MAX_GPA - spec.gpa)
    throw UsageError(fmt::format("gpa 0x{:x} + size 0x{:x} ends above the 52-bit physical address space", spec.gpa, spec.size));
  if (spec.readonly && spec.log_dirty) throw UsageError("a read-only memslot has no dirty log: ro and log together");
  check_free(spec.gpa >> x86::PAGE_SHIFT, spec.size >> x86::PAGE_SHIFT, nullptr);
  auto slot = std::make_unique<Memslot>(spec, *host_);  // may throw HostMemoryError: nothing changed yet
  slot->dirty_logging_ = spec.log_dirty;
  Memslot& s = *slot;
  owned_.push_back(std::move(slot));
  by_gfn_.push_back(&s);
  sort();
  ++generation_;
  return s;
}

Memslot* Memslots::by_id(uint32_t id) const {
  for (const auto& s : owned_)
    if (s->id() == id) return s.get();
  return nullptr;
}

Memslot& Memslots::get(uint32_t id) const {
  Memslot* s = by_id(id);
  if (!s) throw UsageError(fmt::format("no memslot {}", id));
  return *s;
}

void Memslots::remove(uint32_t id) {
  Memslot& s = get(id);
  for (const auto& [offset, frame] : s.relocated_) {
    moved_frames_.erase(frame);
    frames_.release(frame);
  }
  by_gfn_.erase(std::find(by_gfn_.begin(), by_gfn_.end(), &s));
  owned_.erase(std::find_if(owned_.begin(), owned_.end(), [&](const auto& p) { return p.get() == &s; }));
  ++generation_;
}

void Memslots::move(uint32_t id, uint64_t new_gpa) {
  check_move(id, new_gpa);
  Memslot& s = get(id);
  s.base_gfn_ = new_gpa >> x86::PAGE_SHIFT;
  sort();
  ++generation_;
}

void Memslots::check_move(uint32_t id, uint64_t new_gpa) const {
  const Memslot& s = get(id);
  if (new_gpa & x86::PAGE_OFFSET_MASK) throw UsageError(fmt::format("gpa 0x{:x} is not 4 KiB aligned", new_gpa));
  const uint64_t size = s.npages() << x86::PAGE_SHIFT;
  if (new_gpa >= MAX_GPA || size > MAX_GPA - new_gpa)
    throw UsageError(fmt::format("gpa 0x{:x} + size 0x{:x} ends above the 52-bit physical address space", new_gpa, size));
  check_free(new_gpa >> x86::PAGE_SHIFT, s.npages(), &s);
}

bool Memslots::set_dirty_logging(uint32_t id, bool on) {
  Memslot& s = get(id);
  if (on && s.readonly()) throw UsageError(fmt::format("memslot {} is read-only: it has no dirty log", id));
  if (on == s.dirty_logging_) return false;  // the same flags again: nothing changes (as in KVM)
  SparseBitmap fresh(s.npages(), *host_);     // logging starts afresh; stopping drops the log
  if (on) fresh.prepare_like(s.accessed_);     // wherever pages may be mapped (may throw: nothing changed yet)
  s.dirty_ = std::move(fresh);
  s.dirty_logging_ = on;
  ++generation_;
  return true;
}

uint64_t Memslots::relocate(uint64_t gfn, uint64_t npages) {
  Memslot* s = find(gfn);
  if (!s || gfn + npages > s->end_gfn()) throw UsageError(fmt::format("gpa range 0x{:x} is not inside one memslot", gfn << x86::PAGE_SHIFT));
  const uint64_t first = gfn - s->base_gfn();
  // A page the host never gave a frame to has nothing to move.
  const std::vector<bool> resident = s->host_->resident(first << x86::PAGE_SHIFT, npages << x86::PAGE_SHIFT);
  uint64_t moved = 0;
  for (uint64_t i = 0; i < npages; ++i) {
    const uint64_t offset = first + i;
    auto it = s->relocated_.find(offset);
    if (it == s->relocated_.end() && !resident[i]) continue;
    uint8_t* old_frame = it != s->relocated_.end() ? it->second : s->original_host_page(s->base_gfn() + offset);
    uint8_t* new_frame = frames_.allocate();
    std::memcpy(new_frame, old_frame, x86::PAGE_SIZE);
    std::memset(old_frame, POISON_BYTE, x86::PAGE_SIZE);
    if (it != s->relocated_.end()) {
      moved_frames_.erase(old_frame);
      frames_.release(old_frame);
      it->second = new_frame;
    } else {
      s->relocated_.emplace(offset, new_frame);
    }
    moved_frames_[new_frame] = {s->id(), offset};
    ++moved;
  }
  return moved;
}

Memslot* Memslots::slot_of_frame(const uint8_t* frame, uint64_t& gfn) const {
  for (Memslot* s : by_gfn_) {
    const uint8_t* base = s->host_->data();
    if (frame >= base && frame < base + (s->npages() << x86::PAGE_SHIFT)) {
      const uint64_t page = static_cast<uint64_t>(frame - base) >> x86::PAGE_SHIFT;
      if (s->relocated_.count(page)) return nullptr;  // the old frame of a moved page: poison
      gfn = s->base_gfn() + page;
      return s;
    }
  }
  auto it = moved_frames_.find(frame);
  if (it == moved_frames_.end()) return nullptr;
  Memslot* s = by_id(it->second.first);
  gfn = s->base_gfn() + it->second.second;
  return s;
}

uint64_t Memslots::metadata_bytes() const {
  uint64_t n = by_gfn_.capacity() * sizeof(Memslot*) + owned_.capacity() * sizeof(owned_[0]) +
               moved_frames_.size() * (sizeof(void*) + 16 + 4 * sizeof(void*));
  for (const Memslot* s : by_gfn_) n += s->metadata_bytes();
  return n;
}

}  // namespace vmmu::guest
