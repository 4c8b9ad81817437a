#pragma once
// Host memory behind guest memory: anonymous mappings with MAP_NORESERVE, so a multi-TiB guest
// costs nothing until its pages are touched. A host frame is identified by its host virtual
// address >> 12 (the "host frame number" SPTEs carry), so SPTEs can be walked like real tables.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace vmmu::guest {

// The host cannot give memory: an op fails with the contract's "error" result.
class HostMemoryError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One anonymous mapping, placed so that its start is congruent to `congruent_to` modulo
// `alignment` (so guest huge pages can line up with host huge pages).
class HostRegion {
 public:
  HostRegion(uint64_t size, uint64_t alignment, uint64_t congruent_to);
  ~HostRegion();
  HostRegion(const HostRegion&) = delete;
  HostRegion& operator=(const HostRegion&) = delete;

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

  // Which pages of [offset, offset + len) are resident (have a host frame at all).
  std::vector<bool> resident(uint64_t offset, uint64_t len) const;

 private:
  uint8_t* reservation_ = nullptr;
  uint64_t reservation_size_ = 0;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Fresh 4 KiB host frames for pages the host moves (`unmap`); frames are recycled once the
// pages that held them move again, after being poisoned.
class FrameArena {
 public:
  FrameArena() = default;
  ~FrameArena();
  FrameArena(const FrameArena&) = delete;
  FrameArena& operator=(const FrameArena&) = delete;

  uint8_t* allocate();
  void release(uint8_t* frame) { free_.push_back(frame); }
  uint64_t bytes() const { return chunks_.size() * CHUNK_BYTES; }

 private:
  static constexpr uint64_t CHUNK_BYTES = 2ull << 20;
  std::vector<uint8_t*> chunks_;
  std::vector<uint8_t*> free_;
  uint64_t next_in_chunk_ = CHUNK_BYTES;
};

inline constexpr uint8_t POISON_BYTE = 0x6b;  // what a frame the host took back is filled with

}  // namespace vmmu::guest
