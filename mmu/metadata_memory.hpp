#pragma once
// The shadow engine's small metadata (hash nodes, parent lists, huge-page reverse map, ...) as a
// std::pmr::memory_resource over the VM's HostAllocator, with a reserve topped up before each
// fault or host operation, as KVM tops up its memory caches: the containers' allocations in the
// middle of a change are served from the reserve, so the host's refusal surfaces at top-up time,
// before anything changed. Blocks up to SMALL_MAX bytes come from free lists by size (carved
// from 64 KiB chunks, kept for reuse); bigger ones (bucket arrays, reverse-map hint regions) go
// to the host directly, and their callers make them before a change (`reserve`, `prepare`).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "guest/host_allocator.hpp"

namespace vmmu::mmu {

class MetadataMemory final : public std::pmr::memory_resource {
 public:
  static constexpr std::size_t GRAIN = 16;
  static constexpr std::size_t SMALL_MAX = 512;
  static constexpr std::size_t CHUNK = 64 * 1024;
  static constexpr std::size_t RESERVE = 16 * 1024;  // more than one op's small blocks

  explicit MetadataMemory(guest::HostAllocator& host) : host_(host) {}
  ~MetadataMemory() override {
    for (void* c : chunks_) host_.deallocate(c, CHUNK, GRAIN);
  }
  MetadataMemory(const MetadataMemory&) = delete;
  MetadataMemory& operator=(const MetadataMemory&) = delete;

  // Before a change: at least RESERVE bytes of small blocks at hand (may throw HostMemoryError).
  void top_up() {
    if (static_cast<std::size_t>(end_ - next_) < RESERVE) new_chunk();
  }

  uint64_t bytes_in_use() const { return in_use_; }  // what the containers hold now
  uint64_t bytes_held() const { return chunks_.size() * CHUNK + large_; }  // what the host gave

 private:
  static std::size_t size_class(std::size_t bytes) { return (bytes + GRAIN - 1) / GRAIN; }

  void new_chunk() {
    void* c = host_.allocate(CHUNK, GRAIN);
    try {
      chunks_.push_back(c);
    } catch (...) {
      host_.deallocate(c, CHUNK, GRAIN);
      throw;
    }
    // The tail of the old chunk goes to the free list of its size, if it makes a block.
    while (end_ - next_ >= static_cast<std::ptrdiff_t>(GRAIN)) {
      const std::size_t n = std::min(static_cast<std::size_t>(end_ - next_) / GRAIN * GRAIN, SMALL_MAX);
      give_back(next_, n);
      next_ += n;
    }
    next_ = static_cast<std::byte*>(c);
    end_ = next_ + CHUNK;
  }
  void give_back(void* p, std::size_t rounded) {
    auto* block = static_cast<Block*>(p);
    block->next = free_[size_class(rounded)];
    free_[size_class(rounded)] = block;
  }

  void* do_allocate(std::size_t bytes, std::size_t align) override {
    if (bytes > SMALL_MAX || align > GRAIN) {
      void* p = host_.allocate(bytes, align);
      large_ += bytes;
      in_use_ += bytes;
      return p;
    }
    const std::size_t cls = size_class(bytes == 0 ? 1 : bytes);
    if (Block* b = free_[cls]) {
      free_[cls] = b->next;
      in_use_ += cls * GRAIN;
      return b;
    }
    if (static_cast<std::size_t>(end_ - next_) < cls * GRAIN) new_chunk();  // past the reserve: may throw
    void* p = next_;
    next_ += cls * GRAIN;
    in_use_ += cls * GRAIN;
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
    if (bytes > SMALL_MAX || align > GRAIN) {
      host_.deallocate(p, bytes, align);
      large_ -= bytes;
      in_use_ -= bytes;
      return;
    }
    const std::size_t cls = size_class(bytes == 0 ? 1 : bytes);
    in_use_ -= cls * GRAIN;
    give_back(p, cls * GRAIN);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }

  struct Block {
    Block* next;
  };
  guest::HostAllocator& host_;
  std::vector<void*> chunks_;
  std::array<Block*, SMALL_MAX / GRAIN + 1> free_{};
  std::byte* next_ = nullptr;
  std::byte* end_ = nullptr;
  uint64_t in_use_ = 0, large_ = 0;
};

}  // namespace vmmu::mmu
