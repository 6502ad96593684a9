// SizeCache: buffers handed back by exact size; past its limit the least recently kept go first.
#include "core/size_cache.h"

#include <gtest/gtest.h>

namespace samfast {
namespace {

void* at(uintptr_t i) { return reinterpret_cast<void*>(i); }

TEST(SizeCache, HandsBackByExactSize) {
  SizeCache cache(1000);
  SizeCache::Buffers evicted;
  EXPECT_TRUE(cache.keep(at(1), 100, evicted));
  EXPECT_TRUE(cache.keep(at(2), 200, evicted));
  EXPECT_EQ(cache.take(150), nullptr);
  EXPECT_EQ(cache.take(200), at(2));
  EXPECT_EQ(cache.take(200), nullptr);
  EXPECT_EQ(cache.cached_bytes(), 100u);
  EXPECT_TRUE(evicted.empty());
}

TEST(SizeCache, EvictsTheLeastRecentlyKeptPastItsLimit) {
  SizeCache cache(1000);
  SizeCache::Buffers evicted;
  cache.keep(at(1), 400, evicted);
  cache.keep(at(2), 300, evicted);
  cache.keep(at(3), 400, evicted);  // 1100 > 1000: the first goes
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0], std::make_pair(at(1), size_t(400)));
  EXPECT_EQ(cache.cached_bytes(), 700u);
  // a size taken and kept again is recent: the 300 goes next, not the newer 400
  EXPECT_EQ(cache.take(400), at(3));
  cache.keep(at(3), 400, evicted);
  cache.keep(at(4), 500, evicted);
  ASSERT_EQ(evicted.size(), 2u);
  EXPECT_EQ(evicted[1], std::make_pair(at(2), size_t(300)));
  EXPECT_EQ(cache.take(400), at(3));
  EXPECT_EQ(cache.take(500), at(4));
  EXPECT_EQ(cache.cached_bytes(), 0u);
}

TEST(SizeCache, ABufferPastTheLimitIsNotKept) {
  SizeCache cache(1000);
  SizeCache::Buffers evicted;
  cache.keep(at(1), 600, evicted);
  EXPECT_FALSE(cache.keep(at(2), 1001, evicted));
  EXPECT_TRUE(evicted.empty());
  EXPECT_EQ(cache.take(600), at(1));
}

TEST(SizeCache, KeepsPastItsLimitWhenNothingMayBeFreedThenCatchesUp) {
  SizeCache cache(1000);
  SizeCache::Buffers evicted;
  cache.keep(at(1), 600, evicted);
  EXPECT_TRUE(cache.keep(at(2), 600, evicted, /*evict=*/false));
  EXPECT_EQ(cache.cached_bytes(), 1200u);
  EXPECT_TRUE(evicted.empty());
  cache.keep(at(3), 100, evicted);  // back within the limit: the oldest goes
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].first, at(1));
  EXPECT_EQ(cache.cached_bytes(), 700u);
}

TEST(SizeCache, ClearHandsEveryBufferToItsFreeFunction) {
  SizeCache cache;
  SizeCache::Buffers evicted, freed;
  cache.keep(at(1), 10, evicted);
  cache.keep(at(2), 10, evicted);
  cache.clear([&](void* p, size_t n) { freed.emplace_back(p, n); });
  EXPECT_EQ(freed.size(), 2u);
  EXPECT_EQ(cache.cached_bytes(), 0u);
  EXPECT_EQ(cache.take(10), nullptr);
}

}  // namespace
}  // namespace samfast
