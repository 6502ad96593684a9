// The graph arena's planner (core/arena_plan.h): traces from get/put events, and offsets that never
// put two buffers alive at the same time on the same bytes, in an arena no larger than needed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/arena_plan.h"
#include "core/rng.h"

namespace samfast {
namespace {

void* ptr(uintptr_t i) { return reinterpret_cast<void*>(i * 4096); }

// Every pair of buffers alive together lies on disjoint bytes, offsets are aligned, all fit.
void expect_valid(const ArenaTrace& t, const ArenaPlan& p) {
  ASSERT_EQ(p.offsets.size(), t.buffers.size());
  for (size_t i = 0; i < t.buffers.size(); ++i) {
    EXPECT_EQ(p.offsets[i] % ArenaPlan::kAlign, 0u);
    EXPECT_LE(p.offsets[i] + t.buffers[i].bytes, p.bytes);
    for (size_t j = 0; j < i; ++j) {
      const auto &a = t.buffers[i], &b = t.buffers[j];
      if (a.born < b.died && b.born < a.died)
        EXPECT_TRUE(p.offsets[i] + a.bytes <= p.offsets[j] || p.offsets[j] + b.bytes <= p.offsets[i])
            << "buffers " << j << " and " << i << " are alive together on the same bytes";
    }
  }
}

TEST(ArenaPlan, TracesLifetimesInEventOrder) {
  ArenaTracer tr;
  tr.on_put(ptr(9));  // from before the trace: ignored
  tr.on_get(ptr(1), 512);
  tr.on_get(ptr(2), 256);
  tr.on_put(ptr(1));
  tr.on_get(ptr(1), 512);  // the same pointer again: a new buffer
  EXPECT_FALSE(tr.overlapped());
  const ArenaTrace t = tr.finish();
  ASSERT_EQ(t.buffers.size(), 3u);
  EXPECT_EQ(t.buffers[0], (ArenaTrace::Buffer{512, 0, 2}));
  EXPECT_EQ(t.buffers[1], (ArenaTrace::Buffer{256, 1, ArenaTrace::kNever}));
  EXPECT_EQ(t.buffers[2], (ArenaTrace::Buffer{512, 3, ArenaTrace::kNever}));
  ArenaTracer again;
  again.on_get(ptr(1), 256);
  again.on_get(ptr(1), 256);  // handed out twice while held
  EXPECT_TRUE(again.overlapped());
}

TEST(ArenaPlan, ReusesTheBytesOfDeadBuffers) {
  // A chain a -> b -> c -> d where each buffer dies once the next one exists: two live at a time.
  ArenaTracer tr;
  tr.on_get(ptr(1), 1024);
  for (uintptr_t i = 2; i <= 6; ++i) {
    tr.on_get(ptr(i), 1024);
    tr.on_put(ptr(i - 1));
  }
  const ArenaTrace t = tr.finish();
  const ArenaPlan p = plan_arena(t);
  expect_valid(t, p);
  EXPECT_EQ(p.bytes, 2048u);
}

TEST(ArenaPlan, KeepsAliveBuffersApart) {
  ArenaTracer tr;
  tr.on_get(ptr(1), 1000);  // (rounded up to 1024 in the arena)
  tr.on_get(ptr(2), 300);
  tr.on_get(ptr(3), 5000);
  const ArenaTrace t = tr.finish();
  const ArenaPlan p = plan_arena(t);
  expect_valid(t, p);
  EXPECT_EQ(p.bytes, 1024u + 512u + 5120u);
}

TEST(ArenaPlan, RandomTracesArePlannedSoundly) {
  Rng rng{7};
  for (int trial = 0; trial < 50; ++trial) {
    ArenaTracer tr;
    std::vector<uintptr_t> live;
    uintptr_t next = 1;
    size_t live_bytes = 0, most_live = 0;
    std::vector<size_t> size_of(1000, 0);
    for (int step = 0; step < 300; ++step) {
      if (live.empty() || rng.uniform(0.f, 1.f) < 0.55f) {
        const size_t bytes = 256 * (1 + static_cast<size_t>(rng.uniform(0.f, 64.f)));
        tr.on_get(ptr(next), bytes);
        size_of[next] = bytes, live_bytes += bytes;
        live.push_back(next++);
        most_live = std::max(most_live, live_bytes);
        if (next >= size_of.size()) break;
      } else {
        const size_t k = static_cast<size_t>(rng.uniform(0.f, 0.999f) * live.size());
        tr.on_put(ptr(live[k]));
        live_bytes -= size_of[live[k]];
        live.erase(live.begin() + k);
      }
    }
    const ArenaTrace t = tr.finish();
    const ArenaPlan p = plan_arena(t);
    expect_valid(t, p);
    size_t total = 0;
    for (const auto& b : t.buffers) total += b.bytes;
    EXPECT_GE(p.bytes, most_live);  // (no plan can do with less)
    EXPECT_LT(p.bytes, total);      // bytes of dead buffers were reused
  }
}

}  // namespace
}  // namespace samfast
