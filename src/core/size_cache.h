// Freed buffers kept by exact size and handed out again, up to a byte limit: the one free list behind
// the host tensor pool, the CUDA device pool and the pinned download pool. A forward pass asks for
// the same sizes for every image, so after the first one no allocation reaches the allocator. Past
// the limit the least recently kept buffers go first: the sizes still in use stay, and a long-running
// server that sees images of ever new sizes (each one's mask buffers) does not grow without end.
#pragma once
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace samfast {

class SizeCache {
 public:
  using Buffers = std::vector<std::pair<void*, size_t>>;

  explicit SizeCache(size_t max_bytes = SIZE_MAX) : max_(max_bytes) {}
  SizeCache(const SizeCache&) = delete;
  SizeCache& operator=(const SizeCache&) = delete;

  // A cached buffer of exactly `bytes`, or nullptr.
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_size_.find(bytes);
    if (it == by_size_.end()) return nullptr;
    void* p = it->second->first;
    forget(it);
    return p;
  }
  // Caches p, first evicting the least recently kept buffers as far as the limit needs: they are
  // appended to `evicted` for the caller to free (outside this lock). False, and p not kept, when p
  // alone is past the limit. With evict false (nothing may be freed now) p is kept all the same,
  // and the next keep that may evict brings the cache back within its limit.
  bool keep(void* p, size_t bytes, Buffers& evicted, bool evict = true) {
    std::lock_guard<std::mutex> lock(mu_);
    if (evict && bytes > max_) return false;
    while (evict && cached_ + bytes > max_ && !lru_.empty()) {
      auto oldest = lru_.begin();
      evicted.push_back(*oldest);
      auto [first, last] = by_size_.equal_range(oldest->second);
      for (auto it = first; it != last; ++it)
        if (it->second == oldest) {
          forget(it);
          break;
        }
    }
    lru_.emplace_back(p, bytes);
    by_size_.emplace(bytes, std::prev(lru_.end()));
    cached_ += bytes;
    return true;
  }
  // Hands every cached buffer to free_fn(p, bytes) and forgets it.
  template <class Free>
  void clear(Free free_fn) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [p, bytes] : lru_) free_fn(p, bytes);
    lru_.clear();
    by_size_.clear();
    cached_ = 0;
  }
  size_t cached_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  using Lru = std::list<std::pair<void*, size_t>>;  // (buffer, bytes), least recently kept first
  void forget(std::unordered_multimap<size_t, Lru::iterator>::iterator it) {
    cached_ -= it->first;
    lru_.erase(it->second);
    by_size_.erase(it);
  }

  const size_t max_;
  mutable std::mutex mu_;
  Lru lru_;
  std::unordered_multimap<size_t, Lru::iterator> by_size_;
  size_t cached_ = 0;
};

}  // namespace samfast
