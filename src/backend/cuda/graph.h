// CUDA graphs for Ops::run_recorded: a computation (the image encoder, the mask decoder) is run
// eagerly the first time for a key (cuBLASLt plans, kernel attributes and buffers get made), recorded
// by stream capture the second time, and replayed from then on: one graph launch instead of a few
// hundred kernel launches, so that small batches are not bound by the host's launch rate.
// Inputs are copied (device inputs) or uploaded (host inputs) into the graph's own input buffers
// before each replay, and outputs copied out after it (a few MB, microseconds), so callers own what
// they get, as with an eager run.
// Anything the recording cannot take (an API that is illegal during capture) makes that key run
// eagerly from then on, with one line on stderr; nothing fails because of a graph.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/cuda_memory.h"
#include "backend/ops.h"

namespace samfast {
class CudaOps;

namespace cuda {

class GraphCache {
 public:
  GraphCache() = default;
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;
  std::vector<Tensor> run(CudaOps& ops, const std::string& key, const std::vector<Tensor>& inputs,
                          const Ops::Computation& fn);
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    int calls = 0;
    bool failed = false;
    uint64_t last_use = 0;
    cudaGraphExec_t exec = nullptr;
    std::vector<Tensor> inputs, outputs;  // the graph's own buffers
    DevicePool::Buffers owned;            // every buffer the recording handed out
    std::shared_ptr<DevicePool> pool;
    ~Entry();
  };
  bool record(const CudaOps& ops, Entry& e, const std::string& key, const std::vector<Tensor>& inputs,
              const Ops::Computation& fn);  // inputs: only their shapes and dtypes are used
  void evict_oldest();

  static constexpr size_t kMaxGraphs = 24;  // (encoder and decoder shapes of a run; LRU beyond)
  std::map<std::string, std::unique_ptr<Entry>> entries_;
  uint64_t clock_ = 0;
};

}  // namespace cuda
}  // namespace samfast
