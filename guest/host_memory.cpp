#include "guest/host_memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vmmu::guest {

namespace {
constexpr uint64_t PAGE = 4096;

uint8_t* map_anonymous(uint64_t size) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    throw HostMemoryError("host mmap of " + std::to_string(size) + " bytes failed: " + std::strerror(errno));
  }
  return static_cast<uint8_t*>(p);
}
}  // namespace

HostRegion::HostRegion(uint64_t size, uint64_t alignment, uint64_t congruent_to) : size_(size) {
  if (alignment < PAGE) alignment = PAGE;
  reservation_size_ = size + alignment;
  reservation_ = map_anonymous(reservation_size_);
  const uint64_t base = reinterpret_cast<uint64_t>(reservation_);
  const uint64_t want = congruent_to & (alignment - 1);
  const uint64_t shift = (want - (base & (alignment - 1))) & (alignment - 1);
  data_ = reservation_ + shift;
}

HostRegion::~HostRegion() {
  if (reservation_) munmap(reservation_, reservation_size_);
}

std::vector<bool> HostRegion::resident(uint64_t offset, uint64_t len) const {
  const uint64_t pages = len / PAGE;
  std::vector<unsigned char> vec(pages);
  std::vector<bool> out(pages, true);
  if (pages && mincore(data_ + offset, len, vec.data()) == 0) {
    for (uint64_t i = 0; i < pages; ++i) out[i] = vec[i] & 1;
  }
  return out;
}

FrameArena::~FrameArena() {
  for (uint8_t* c : chunks_) munmap(c, CHUNK_BYTES);
}

uint8_t* FrameArena::allocate() {
  if (!free_.empty()) {
    uint8_t* f = free_.back();
    free_.pop_back();
    return f;
  }
  if (next_in_chunk_ == CHUNK_BYTES) {
    chunks_.push_back(map_anonymous(CHUNK_BYTES));
    next_in_chunk_ = 0;
  }
  uint8_t* f = chunks_.back() + next_in_chunk_;
  next_in_chunk_ += PAGE;
  return f;
}

}  // namespace vmmu::guest
