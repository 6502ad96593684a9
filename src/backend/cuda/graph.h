// CUDA graphs for Ops::run_recorded: a computation (the image encoder, the mask decoder) is run
// eagerly the first time for a key (cuBLASLt plans, kernel attributes and buffers get made), recorded
// by stream capture the second time, and replayed from then on: one graph launch instead of a few
// hundred kernel launches, so that small batches are not bound by the host's launch rate.
// Inputs are copied (device inputs) or uploaded (host inputs) into the graph's own input buffers
// before each replay, and outputs copied out after it (a few MB, microseconds), so callers own what
// they get, as with an eager run.
// Anything the recording cannot take (an API that is illegal during capture) makes that key run
// eagerly from then on, with one line on stderr; nothing fails because of a graph.
//   Memory: the eager first run's buffers are traced (core/arena_plan.h), and the recording places
// every buffer of the computation at an offset planned from that trace in the pool's one graph
// arena, which all graphs share (they replay one at a time on one stream, and each one's outputs
// are copied out right after it): the arena is as large as the largest graph's plan, not the sum of
// all graphs' buffers. The eager run's buffers are freed once it ends. A larger plan replaces the
// arena and re-records the graphs made on the old one at their next run. Should a recording ask for
// other buffers than its eager run did, the graph keeps buffers of its own instead (one line on
// stderr).
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
  size_t planned_graphs() const;  // graphs replaying with their buffers in the arena

 private:
  struct Entry {
    int calls = 0;
    bool failed = false;
    uint64_t last_use = 0;
    cudaGraphExec_t exec = nullptr;
    std::vector<Tensor> inputs, outputs;  // the graph's own buffers
    ArenaTrace trace;                     // of the eager run's buffers
    ArenaPlan plan;                       // their offsets in the arena
    bool planned = false;                 // recorded with the plan (else: with buffers of its own)
    DevicePool::Buffers owned;            // every buffer a recording without a plan handed out
    std::shared_ptr<DevicePool> pool;
    ~Entry();
  };
  bool record(const CudaOps& ops, Entry& e, const std::string& key, const std::vector<Tensor>& inputs,
              const Ops::Computation& fn);  // inputs: only their shapes and dtypes are used
  // Stream capture of fn on e.inputs into e.exec (planned: its buffers in the arena); the reason on
  // failure, and whether it was that the recording's buffers were not those of the plan.
  std::string capture(const CudaOps& ops, Entry& e, const Ops::Computation& fn, bool planned, bool& buffers_differ);
  void drop_arena_graphs();  // before the arena moves: those graphs re-record at their next run
  void evict_oldest();

  static constexpr size_t kMaxGraphs = 24;  // (encoder and decoder shapes of a run; LRU beyond)
  std::map<std::string, std::unique_ptr<Entry>> entries_;
  uint64_t clock_ = 0;
};

}  // namespace cuda
}  // namespace samfast
