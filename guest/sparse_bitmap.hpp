#pragma once
// A bitmap over a guest range of up to 64 TiB whose storage is allocated lazily, one GiB of
// guest frames (32 KiB of bits) at a time, so a huge memslot costs only what it uses.
// Bits are set with atomic fetch_or: vCPU threads may mark pages while another thread reads.
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace vmmu::guest {

class SparseBitmap {
 public:
  static constexpr unsigned CHUNK_SHIFT = 18;  // 2^18 frames = 1 GiB of 4 KiB pages
  static constexpr uint64_t CHUNK_BITS = 1ull << CHUNK_SHIFT;
  static constexpr uint64_t CHUNK_WORDS = CHUNK_BITS / 64;

  SparseBitmap() = default;
  explicit SparseBitmap(uint64_t nbits) : nbits_(nbits), chunks_((nbits + CHUNK_BITS - 1) >> CHUNK_SHIFT) {}

  uint64_t size() const { return nbits_; }

  bool test(uint64_t i) const {
    const auto& c = chunks_[i >> CHUNK_SHIFT];
    if (!c) return false;
    return (c[(i & (CHUNK_BITS - 1)) / 64].load(std::memory_order_relaxed) >> (i & 63)) & 1;
  }

  void set(uint64_t i) {
    std::atomic<uint64_t>* c = chunk(i >> CHUNK_SHIFT);
    std::atomic<uint64_t>& w = c[(i & (CHUNK_BITS - 1)) / 64];
    const uint64_t bit = 1ull << (i & 63);
    if (!(w.load(std::memory_order_relaxed) & bit)) w.fetch_or(bit, std::memory_order_relaxed);
  }

  void clear(uint64_t i) {
    auto& c = chunks_[i >> CHUNK_SHIFT];
    if (!c) return;
    c[(i & (CHUNK_BITS - 1)) / 64].fetch_and(~(1ull << (i & 63)), std::memory_order_relaxed);
  }

  // Word `w` (bits 64w .. 64w+63), and clearing some of its bits; returns the bits that were set.
  uint64_t word(uint64_t w) const {
    const auto& c = chunks_[(w * 64) >> CHUNK_SHIFT];
    return c ? c[w % CHUNK_WORDS].load(std::memory_order_relaxed) : 0;
  }
  uint64_t clear_word_bits(uint64_t w, uint64_t mask) {
    auto& c = chunks_[(w * 64) >> CHUNK_SHIFT];
    return c ? c[w % CHUNK_WORDS].fetch_and(~mask, std::memory_order_relaxed) & mask : 0;
  }

  // Calls f(index) for every set bit in [first, last), in ascending order.
  template <class F>
  void for_each_set(uint64_t first, uint64_t last, F&& f) const {
    for (uint64_t i = first; i < last;) {
      const auto& c = chunks_[i >> CHUNK_SHIFT];
      if (!c) {
        i = ((i >> CHUNK_SHIFT) + 1) << CHUNK_SHIFT;
        continue;
      }
      const uint64_t word_index = (i & (CHUNK_BITS - 1)) / 64;
      uint64_t w = c[word_index].load(std::memory_order_relaxed) & (~0ull << (i & 63));
      const uint64_t word_base = i & ~63ull;
      while (w) {
        const uint64_t bit = word_base + static_cast<uint64_t>(__builtin_ctzll(w));
        if (bit >= last) return;
        f(bit);
        w &= w - 1;
      }
      i = word_base + 64;
    }
  }

  // Bytes of storage held (chunks allocated plus the chunk table).
  uint64_t bytes() const {
    uint64_t n = chunks_.size() * sizeof(chunks_[0]);
    for (const auto& c : chunks_)
      if (c) n += CHUNK_WORDS * sizeof(uint64_t);
    return n;
  }

 private:
  std::atomic<uint64_t>* chunk(uint64_t index) {
    auto& c = chunks_[index];
    if (!c) c = std::make_unique<std::atomic<uint64_t>[]>(CHUNK_WORDS);  // value-initialized: zero
    return c.get();
  }

  uint64_t nbits_ = 0;
  std::vector<std::unique_ptr<std::atomic<uint64_t>[]>> chunks_;
};

}  // namespace vmmu::guest
