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
//   Lanes: a replay on lane l >= 1 (run's `lane`) runs on a side stream of its own, beside the
// stream's later work and the other lanes', until join_lanes(): independent computations (one
// image's decode beside another's) fill the GPU where each alone is a chain of small kernels. A
// lane's graph keeps buffers and a cuBLASLt workspace of its own (not the arena, which lane 0's
// graphs share). Its inputs are copied in and its outputs out on its stream, and the tensors it
// reads or writes are kept alive here until join_lanes(). Its first two runs (eager, then the
// recording) run on the stream itself, as lane 0's do.
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
  GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;
  ~GraphCache();
  std::vector<Tensor> run(CudaOps& ops, const std::string& key, const std::vector<Tensor>& inputs,
                          const Ops::Computation& fn, int lane = 0);
  int lanes() const { return lane_count_; }
  void join_lanes(const CudaOps& ops);  // the stream waits for every lane's work so far
  size_t size() const { return entries_.size(); }
  size_t planned_graphs() const;  // graphs replaying with their buffers in the arena

 private:
  struct Entry {
    int lane = 0;
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
  void evict_oldest(const CudaOps& ops);
  struct Lane {
    cudaStream_t stream = nullptr;
    cudaEvent_t fork = nullptr, done = nullptr;
    std::shared_ptr<DevicePool> pool;
    void* workspace = nullptr;  // from the pool, ctx.workspace_bytes
    size_t workspace_bytes = 0;
    bool pending = false;       // work queued since the last join
    std::vector<Tensor> keep;   // what that work reads and writes
  };
  Lane& lane_of(const CudaOps& ops, int lane);  // lane >= 1, made on first use
  // SAMFAST_LANES (1 to 4, default 3): how many lanes, the stream's own included; 1 turns them off.
  int lane_count_ = 3;
  std::vector<Lane> lanes_;  // lane l at lanes_[l - 1]

  static constexpr size_t kMaxGraphs = 32;  // (encoder and decoder shapes of a run, per lane; LRU beyond)
  std::map<std::string, std::unique_ptr<Entry>> entries_;
  uint64_t clock_ = 0;
};

}  // namespace cuda
}  // namespace samfast
