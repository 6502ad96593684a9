// Device memory pool of the CUDA backend: freed buffers are kept by exact size and handed out again
// (a forward pass asks for the same sizes for every image, so after the first one no cudaMalloc
// runs and nothing synchronises the device), up to a quarter of the device's memory. All users of one
// pool run on one stream, so reusing a buffer as soon as its last tensor is dropped is ordered after
// every kernel that read it. (The graph cache's side lanes, graph.h, hold what they use until the
// stream has waited for them.)
#pragma once
#include <algorithm>
#include <cstddef>
#include <mutex>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/arena_plan.h"
#include "core/size_cache.h"
#include "samfast/error.h"

namespace samfast::cuda {

// A recording asked the arena for another buffer than its plan holds (graph.cu then records the
// graph with buffers of its own).
struct ArenaMismatch : Error {
  using Error::Error;
};

class DevicePool {
 public:
  explicit DevicePool(int device);
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  // A buffer of at least `bytes` (rounded up to 256) on the pool's device. When cudaMalloc fails,
  // the cached buffers are released and it is tried once more; then samfast::Error
  // "out of GPU memory: could not allocate N bytes (...)", a samfast::OutOfMemory.
  void* get(size_t bytes);
  void put(void* p, size_t bytes);
  static size_t rounded(size_t bytes) { return (bytes + 255) / 256 * 256; }
  size_t cached_bytes() const;
  // The most device memory the pool has held at once (in use, cached, the graph arena, and owned by
  // CUDA graphs recorded without a plan).
  size_t peak_bytes() const;
  // Frees every cached buffer (cudaFree: the device finishes its queued work first).
  void release_cached();

  // CUDA-graph recording (graph.cu). Between begin_recording() and end_recording(), every buffer
  // handed out belongs to the recording: freed ones go back to the recording's own free list only
  // (a recorded graph keeps reading and writing them on every replay), and end_recording() returns
  // all of them. They stay out of the pool's reach, their put() ignored, until release_recorded().
  using Buffers = std::vector<std::pair<void*, size_t>>;
  void begin_recording();
  Buffers end_recording();
  void release_recorded(const Buffers& buffers);

  // The graph arena (graph.cu): one buffer for the activations of every graph recorded with a plan.
  // Between begin_trace() and end_trace(), buffers come from the pool as always and are logged (a
  // computation's eager run). Between begin_planned() and end_planned() (its recording), the i-th
  // buffer asked for is the arena's bytes at plan.offsets[i] (another size than the trace's throws
  // ArenaMismatch), returned arena buffers stay where they are, and end_planned() gives the
  // recording's own trace, which must equal the planned one for the plan to hold.
  void begin_trace();
  ArenaTrace end_trace();
  void begin_planned(const ArenaTrace& trace, const ArenaPlan& plan);
  ArenaTrace end_planned();
  // An arena of at least `bytes`; a larger one replaces the old (freed once the device is idle:
  // graphs recorded on it must not run again). Throws samfast::OutOfMemory.
  void reserve_arena(size_t bytes);
  size_t arena_bytes() const;

 private:
  bool in_arena(const void* p) const {
    return p >= arena_ && p < static_cast<const char*>(arena_) + arena_bytes_;
  }
  void* device_malloc(size_t bytes);  // cudaMalloc, retried after release_cached(); OutOfMemory
  void keep(void* p, size_t bytes);   // into the cache, freeing what the cache's limit evicts
  void note_peak() { peak_ = std::max(peak_, in_use_ + cache_.cached_bytes() + graph_bytes_ + arena_bytes_); }

  int device_;
  mutable std::mutex mu_;  // everything below but cache_ (which has its own lock)
  SizeCache cache_;
  size_t in_use_ = 0, peak_ = 0;
  bool recording_ = false;
  std::unordered_multimap<size_t, void*> recording_free_;
  Buffers recorded_;                          // of the recording under way
  std::unordered_set<void*> graph_owned_;     // of every recording not yet released
  size_t graph_bytes_ = 0;
  enum class Mode { Normal, Tracing, Planned } mode_ = Mode::Normal;
  ArenaTracer tracer_;
  const ArenaTrace* planned_trace_ = nullptr;
  const ArenaPlan* plan_ = nullptr;
  size_t planned_next_ = 0;
  void* arena_ = nullptr;
  size_t arena_bytes_ = 0;
};

// Page-locked host buffers for downloads: a copy into pinned memory runs at the bus's full rate and
// needs no staging through a driver buffer (masks of a 16-prompt batch are ~200 MB). Kept by exact
// size like the device pool, up to kMaxCachedBytes; larger leftovers are freed.
class PinnedPool {
 public:
  PinnedPool() = default;
  ~PinnedPool();
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;
  void* get(size_t bytes);  // throws samfast::Error when the host has no page-locked memory left
  void put(void* p, size_t bytes);

 private:
  SizeCache cache_{size_t(1) << 30};
};

}  // namespace samfast::cuda
