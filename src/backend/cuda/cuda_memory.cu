#include "backend/cuda/cuda_memory.h"

#include <algorithm>
#include <string>

#include "backend/cuda/common.cuh"

namespace samfast::cuda {

namespace {

// A quarter of the device's memory for freed buffers: far above what the passes of a few shapes
// keep (those stay cached), while a server that sees images of ever new sizes stops growing there.
size_t cache_limit(int device) {
  int prev = 0;
  size_t free_b = 0, total_b = 0;
  if (cudaGetDevice(&prev) != cudaSuccess) return SIZE_MAX;
  cudaSetDevice(device);
  const cudaError_t err = cudaMemGetInfo(&free_b, &total_b);
  cudaSetDevice(prev);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return SIZE_MAX;
  }
  return total_b / 4;
}

}  // namespace

DevicePool::DevicePool(int device) : device_(device), cache_(cache_limit(device)) {}

DevicePool::~DevicePool() {
  release_cached();
  if (arena_) cudaFree(arena_);  // (no throw)
}

void DevicePool::release_cached() {
  int prev = 0;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  cache_.clear([](void* p, size_t) { cudaFree(p); });  // no throw: also runs from the destructor
  cudaSetDevice(prev);
}

void* DevicePool::device_malloc(size_t bytes) {
  int prev = 0;
  CUDA_CHECK(cudaGetDevice(&prev));
  CUDA_CHECK(cudaSetDevice(device_));
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free allocation error
    release_cached();
    err = cudaMalloc(&p, bytes);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaSetDevice(prev);
    auto mib = [](size_t b) { return std::to_string(b >> 20) + " MiB"; };
    throw OutOfMemory("out of GPU memory: could not allocate " + std::to_string(bytes) + " bytes (device " +
                      std::to_string(device_) + ": " + mib(in_use_ + graph_bytes_ + arena_bytes_) +
                      " in use by samfast, " + mib(free_b) + " free of " + mib(total_b) + "; try a smaller batch)");
  }
  CUDA_CHECK(cudaSetDevice(prev));
  return p;
}

void* DevicePool::get(size_t bytes) {
  bytes = rounded(bytes == 0 ? 1 : bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (mode_ == Mode::Planned) {
    const size_t i = planned_next_++;
    if (i >= planned_trace_->buffers.size() || planned_trace_->buffers[i].bytes != bytes ||
        plan_->offsets[i] + bytes > arena_bytes_)
      throw ArenaMismatch("graph recording: buffer " + std::to_string(i) + " of " + std::to_string(bytes) +
                  " bytes is not the eager run's (" +
                  (i < planned_trace_->buffers.size() ? std::to_string(planned_trace_->buffers[i].bytes) + " bytes"
                                                      : std::string("it asked for fewer")) +
                  ")");
    void* p = static_cast<char*>(arena_) + plan_->offsets[i];
    tracer_.on_get(p, bytes);
    return p;
  }
  if (recording_) {
    if (auto it = recording_free_.find(bytes); it != recording_free_.end()) {
      void* p = it->second;
      recording_free_.erase(it);
      return p;
    }
  }
  void* p = cache_.take(bytes);
  if (!p) p = device_malloc(bytes);
  if (recording_) {
    graph_owned_.insert(p);
    recorded_.emplace_back(p, bytes);
    graph_bytes_ += bytes;
  } else {
    in_use_ += bytes;
  }
  if (mode_ == Mode::Tracing) tracer_.on_get(p, bytes);
  note_peak();
  return p;
}

void DevicePool::put(void* p, size_t bytes) {
  bytes = rounded(bytes == 0 ? 1 : bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (mode_ != Mode::Normal) tracer_.on_put(p);
  if (in_arena(p)) return;  // (the arena's bytes are planned, not handed back)
  if (graph_owned_.count(p)) {  // a recording's buffer: reusable within that recording only
    if (recording_) recording_free_.emplace(bytes, p);
    return;
  }
  in_use_ -= bytes;
  keep(p, bytes);
}

void DevicePool::keep(void* p, size_t bytes) {
  SizeCache::Buffers evicted;
  // (no cudaFree while a graph is traced or recorded: the frees wait for the next keep after it)
  if (!cache_.keep(p, bytes, evicted, !recording_ && mode_ == Mode::Normal)) evicted.emplace_back(p, bytes);
  if (evicted.empty()) return;
  int prev = 0;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  for (auto& [q, n] : evicted) cudaFree(q);  // (waits for the device: rare, only when new sizes come)
  cudaSetDevice(prev);
}

void DevicePool::begin_recording() {
  std::lock_guard<std::mutex> lock(mu_);
  recording_ = true;
  recorded_.clear();
  recording_free_.clear();
}

DevicePool::Buffers DevicePool::end_recording() {
  std::lock_guard<std::mutex> lock(mu_);
  recording_ = false;
  recording_free_.clear();
  return std::move(recorded_);
}

void DevicePool::release_recorded(const Buffers& buffers) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [p, bytes] : buffers) {
    graph_owned_.erase(p);
    graph_bytes_ -= bytes;
    keep(p, bytes);
  }
}

void DevicePool::begin_trace() {
  std::lock_guard<std::mutex> lock(mu_);
  mode_ = Mode::Tracing;
  tracer_ = ArenaTracer();
}

ArenaTrace DevicePool::end_trace() {
  std::lock_guard<std::mutex> lock(mu_);
  mode_ = Mode::Normal;
  return tracer_.finish();
}

void DevicePool::begin_planned(const ArenaTrace& trace, const ArenaPlan& plan) {
  std::lock_guard<std::mutex> lock(mu_);
  mode_ = Mode::Planned;
  tracer_ = ArenaTracer();
  planned_trace_ = &trace, plan_ = &plan, planned_next_ = 0;
}

ArenaTrace DevicePool::end_planned() {
  std::lock_guard<std::mutex> lock(mu_);
  mode_ = Mode::Normal;
  planned_trace_ = nullptr, plan_ = nullptr;
  const bool overlapped = tracer_.overlapped();
  ArenaTrace t = tracer_.finish();
  if (overlapped) t.buffers.clear();  // (never equal to a plan's trace)
  return t;
}

void DevicePool::reserve_arena(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (bytes <= arena_bytes_) return;
  if (arena_) {
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device_);
    CUDA_CHECK(cudaDeviceSynchronize());  // (graphs recorded on it may still run)
    CUDA_CHECK(cudaFree(arena_));
    cudaSetDevice(prev);
    arena_ = nullptr, arena_bytes_ = 0;
  }
  arena_ = device_malloc(bytes);
  arena_bytes_ = bytes;
  note_peak();
}

size_t DevicePool::arena_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return arena_bytes_;
}

size_t DevicePool::cached_bytes() const { return cache_.cached_bytes(); }

size_t DevicePool::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

PinnedPool::~PinnedPool() {
  cache_.clear([](void* p, size_t) { cudaFreeHost(p); });
}

void* PinnedPool::get(size_t bytes) {
  bytes = DevicePool::rounded(bytes == 0 ? 1 : bytes);
  if (void* p = cache_.take(bytes)) return p;
  void* p = nullptr;
  if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
    cudaGetLastError();
    throw Error("out of page-locked host memory: could not allocate " + std::to_string(bytes) + " bytes");
  }
  return p;
}

void PinnedPool::put(void* p, size_t bytes) {
  bytes = DevicePool::rounded(bytes == 0 ? 1 : bytes);
  SizeCache::Buffers evicted;
  if (!cache_.keep(p, bytes, evicted)) cudaFreeHost(p);
  for (auto& [q, n] : evicted) cudaFreeHost(q);
}

}  // namespace samfast::cuda
