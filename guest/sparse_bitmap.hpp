#pragma once
// A bitmap over a guest range of up to 64 TiB whose storage is allocated lazily, one GiB of
// guest frames (32 KiB of bits) at a time, so a huge memslot costs only what it uses.
// vCPU threads set bits concurrently (a chunk is published by compare-and-swap), while another
// thread reads or clears them. Storage comes from the VM's HostAllocator; callers `prepare` the
// chunk of a bit before a change that will set it, so that setting it later cannot fail.
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "guest/host_allocator.hpp"

namespace vmmu::guest {

class SparseBitmap {
 public:
  static constexpr unsigned CHUNK_SHIFT = 18;  // 2^18 frames = 1 GiB of 4 KiB pages
  static constexpr uint64_t CHUNK_BITS = 1ull << CHUNK_SHIFT;
  static constexpr uint64_t CHUNK_WORDS = CHUNK_BITS / 64;
  using Word = std::atomic<uint64_t>;

  SparseBitmap() = default;
  explicit SparseBitmap(uint64_t nbits, HostAllocator& host = default_host_allocator())
      : host_(&host), nbits_(nbits), nchunks_((nbits + CHUNK_BITS - 1) >> CHUNK_SHIFT) {
    chunks_ = static_cast<std::atomic<Word*>*>(host.allocate(nchunks_ * sizeof(std::atomic<Word*>), alignof(std::atomic<Word*>)));
    for (uint64_t i = 0; i < nchunks_; ++i) new (&chunks_[i]) std::atomic<Word*>(nullptr);
  }
  ~SparseBitmap() { release(); }
  SparseBitmap(const SparseBitmap&) = delete;
  SparseBitmap& operator=(const SparseBitmap&) = delete;
  SparseBitmap(SparseBitmap&& o) noexcept { *this = std::move(o); }
  SparseBitmap& operator=(SparseBitmap&& o) noexcept {
    if (this != &o) {
      release();
      host_ = o.host_;
      nbits_ = o.nbits_;
      nchunks_ = o.nchunks_;
      chunks_ = o.chunks_;
      o.nbits_ = o.nchunks_ = 0;
      o.chunks_ = nullptr;
    }
    return *this;
  }

  uint64_t size() const { return nbits_; }

  // Has the storage of bit i made now (it may throw HostMemoryError), so that a later `set`
  // of it allocates nothing.
  void prepare(uint64_t i) { chunk(i >> CHUNK_SHIFT); }
  bool prepared(uint64_t i) const { return chunk_if_any(i >> CHUNK_SHIFT) != nullptr; }
  // The same storage as `other` has (another bitmap of the same size).
  void prepare_like(const SparseBitmap& other) {
    for (uint64_t c = 0; c < nchunks_ && c < other.nchunks_; ++c)
      if (other.chunk_if_any(c)) chunk(c);
  }

  bool test(uint64_t i) const {
    const Word* c = chunk_if_any(i >> CHUNK_SHIFT);
    return c && ((c[(i & (CHUNK_BITS - 1)) / 64].load(std::memory_order_relaxed) >> (i & 63)) & 1);
  }

  // Sets bit i; true when this call set it (it was clear).
  bool set(uint64_t i) {
    Word& w = chunk(i >> CHUNK_SHIFT)[(i & (CHUNK_BITS - 1)) / 64];
    const uint64_t bit = 1ull << (i & 63);
    if (w.load(std::memory_order_relaxed) & bit) return false;
    return !(w.fetch_or(bit, std::memory_order_relaxed) & bit);
  }

  void clear(uint64_t i) {
    if (Word* c = chunk_if_any(i >> CHUNK_SHIFT)) c[(i & (CHUNK_BITS - 1)) / 64].fetch_and(~(1ull << (i & 63)), std::memory_order_relaxed);
  }

  // Word `w` (bits 64w .. 64w+63), and clearing some of its bits; returns the bits that were set.
  uint64_t word(uint64_t w) const {
    const Word* c = chunk_if_any((w * 64) >> CHUNK_SHIFT);
    return c ? c[w % CHUNK_WORDS].load(std::memory_order_relaxed) : 0;
  }
  uint64_t clear_word_bits(uint64_t w, uint64_t mask) {
    Word* c = chunk_if_any((w * 64) >> CHUNK_SHIFT);
    return c ? c[w % CHUNK_WORDS].fetch_and(~mask, std::memory_order_relaxed) & mask : 0;
  }

  // Calls f(index) for every set bit in [first, last), in ascending order.
  template <class F>
  void for_each_set(uint64_t first, uint64_t last, F&& f) const {
    for (uint64_t i = first; i < last;) {
      const Word* c = chunk_if_any(i >> CHUNK_SHIFT);
      if (!c) {
        i = ((i >> CHUNK_SHIFT) + 1) << CHUNK_SHIFT;
        continue;
      }
      const uint64_t word_base = i & ~63ull;
      uint64_t w = c[(i & (CHUNK_BITS - 1)) / 64].load(std::memory_order_relaxed) & (~0ull << (i & 63));
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
    uint64_t n = nchunks_ * sizeof(void*);
    for (uint64_t i = 0; i < nchunks_; ++i)
      if (chunk_if_any(i)) n += CHUNK_WORDS * sizeof(uint64_t);
    return n;
  }

 private:
  Word* chunk_if_any(uint64_t index) const { return chunks_[index].load(std::memory_order_acquire); }
  Word* chunk(uint64_t index) {
    Word* c = chunk_if_any(index);
    if (c) return c;
    Word* fresh = static_cast<Word*>(host_->allocate(CHUNK_WORDS * sizeof(Word), alignof(Word)));
    for (uint64_t w = 0; w < CHUNK_WORDS; ++w) new (&fresh[w]) Word(0);
    if (chunks_[index].compare_exchange_strong(c, fresh, std::memory_order_acq_rel)) return fresh;
    host_->deallocate(fresh, CHUNK_WORDS * sizeof(Word), alignof(Word));  // another thread published one first
    return c;
  }
  void release() {
    if (!chunks_) return;
    for (uint64_t i = 0; i < nchunks_; ++i)
      if (Word* c = chunks_[i].load(std::memory_order_relaxed)) host_->deallocate(c, CHUNK_WORDS * sizeof(Word), alignof(Word));
    host_->deallocate(chunks_, nchunks_ * sizeof(std::atomic<Word*>), alignof(std::atomic<Word*>));
    chunks_ = nullptr;
  }

  HostAllocator* host_ = &default_host_allocator();
  uint64_t nbits_ = 0;
  uint64_t nchunks_ = 0;
  std::atomic<Word*>* chunks_ = nullptr;
};

}  // namespace vmmu::guest
