#include "backend/cuda/cuda_memory.h"

#include <algorithm>
#include <string>

#include "backend/cuda/common.cuh"

namespace samfast::cuda {

DevicePool::~DevicePool() { release_cached(); }

void DevicePool::release_cached() {
  int prev = 0;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  cache_.clear([](void* p, size_t) { cudaFree(p); });  // no throw: also runs from the destructor
  cudaSetDevice(prev);
}

void* DevicePool::get(size_t bytes) {
  bytes = rounded(bytes == 0 ? 1 : bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (recording_) {
    if (auto it = recording_free_.find(bytes); it != recording_free_.end()) {
      void* p = it->second;
      recording_free_.erase(it);
      return p;
    }
  }
  void* p = cache_.take(bytes);
  if (p && recording_) {
    graph_owned_.insert(p);
    recorded_.emplace_back(p, bytes);
    graph_bytes_ += bytes;
    return p;
  }
  if (p) {
    in_use_ += bytes;
    return p;
  }
  int prev = 0;
  CUDA_CHECK(cudaGetDevice(&prev));
  CUDA_CHECK(cudaSetDevice(device_));
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
                std::to_string(device_) + ": " + mib(in_use_) + " in use by samfast, " + mib(free_b) +
                " free of " + mib(total_b) + "; try a smaller batch)");
  }
  CUDA_CHECK(cudaSetDevice(prev));
  if (recording_) {
    graph_owned_.insert(p);
    recorded_.emplace_back(p, bytes);
    graph_bytes_ += bytes;
  } else {
    in_use_ += bytes;
  }
  peak_ = std::max(peak_, in_use_ + cache_.cached_bytes() + graph_bytes_);
  return p;
}

void DevicePool::put(void* p, size_t bytes) {
  bytes = rounded(bytes == 0 ? 1 : bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (graph_owned_.count(p)) {  // a recording's buffer: reusable within that recording only
    if (recording_) recording_free_.emplace(bytes, p);
    return;
  }
  in_use_ -= bytes;
  cache_.keep(p, bytes);  // no limit: always kept
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
    cache_.keep(p, bytes);
  }
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
  if (!cache_.keep(p, bytes)) cudaFreeHost(p);
}

}  // namespace samfast::cuda
