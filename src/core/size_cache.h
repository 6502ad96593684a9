// Freed buffers kept by exact size and handed out again, up to a byte limit: the one free list behind
// the host tensor pool, the CUDA device pool and the pinned download pool. A forward pass asks for
// the same sizes for every image, so after the first one no allocation reaches the allocator.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace samfast {

class SizeCache {
 public:
  explicit SizeCache(size_t max_bytes = SIZE_MAX) : max_(max_bytes) {}
  SizeCache(const SizeCache&) = delete;
  SizeCache& operator=(const SizeCache&) = delete;

  // A cached buffer of exactly `bytes`, or nullptr.
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(bytes);
    if (it == free_.end()) return nullptr;
    void* p = it->second;
    free_.erase(it);
    cached_ -= bytes;
    return p;
  }
  // Caches p unless that would pass the limit; false means the caller frees it.
  bool keep(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_ + bytes > max_) return false;
    free_.emplace(bytes, p);
    cached_ += bytes;
    return true;
  }
  // Hands every cached buffer to free_fn(p, bytes) and forgets it.
  template <class Free>
  void clear(Free free_fn) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [bytes, p] : free_) free_fn(p, bytes);
    free_.clear();
    cached_ = 0;
  }
  size_t cached_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  const size_t max_;
  mutable std::mutex mu_;
  std::unordered_multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

}  // namespace samfast
