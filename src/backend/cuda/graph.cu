#include "backend/cuda/graph.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace samfast::cuda {
namespace {

std::string full_key(const std::string& key, const std::vector<Tensor>& inputs) {
  std::string k = key;
  for (const Tensor& t : inputs)
    k += " " + shape_str(t.shape) + (t.on_host() ? "host" : "") + (t.dtype == DType::F32 ? "f32" : t.dtype == DType::U8 ? "u8" : "h");
  return k;
}

void copy_into(cudaStream_t stream, const Tensor& dst, const Tensor& src) {
  CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, stream));
}

// A replay's device-to-device copies (the inputs in, or the outputs out) as one kernel rather than
// a memcpy each: a memcpy between kernels hands the stream to a copy engine and back, microseconds
// of idle GPU each way at a decode's ~0.5 ms. Pieces that are not 16-byte aligned fall back to
// memcpy.
constexpr int kMaxCopies = 8;
struct CopyList {
  const uint4* src[kMaxCopies];
  uint4* dst[kMaxCopies];
  int64_t n16[kMaxCopies];  // 16-byte words
  int count;
};

__global__ void copy_list_kernel(CopyList l) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int c = 0; c < l.count; ++c)
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.n16[c]; i += stride)
      l.dst[c][i] = l.src[c][i];
}

void copy_all(cudaStream_t stream, const std::vector<std::pair<Tensor, Tensor>>& dst_src) {
  CopyList l{};
  int64_t most = 0;
  for (const auto& [dst, src] : dst_src) {
    const size_t bytes = src.nbytes();
    const uintptr_t addresses = reinterpret_cast<uintptr_t>(dst.data) | reinterpret_cast<uintptr_t>(src.data);
    const bool aligned = (addresses | bytes) % 16 == 0;
    if (!aligned || l.count == kMaxCopies) {
      copy_into(stream, dst, src);
      continue;
    }
    l.src[l.count] = reinterpret_cast<const uint4*>(src.data);
    l.dst[l.count] = reinterpret_cast<uint4*>(dst.data);
    l.n16[l.count] = int64_t(bytes / 16);
    most = std::max(most, l.n16[l.count++]);
  }
  if (l.count == 0 || most == 0) return;
  constexpr int kThreads = 256;
  const unsigned blocks = unsigned(std::min<int64_t>((most + kThreads - 1) / kThreads, 1024));
  copy_list_kernel<<<blocks, kThreads, 0, stream>>>(l);
  CUDA_LAUNCH_CHECK();
}

// ctx.workspace is the lane's while a lane's graph is recorded (cuBLASLt and CUTLASS calls bake it
// into the graph): two lanes' GEMMs may run at once.
struct WorkspaceOf {
  CudaContext& ctx;
  void* saved;
  WorkspaceOf(CudaContext& c, void* lane_workspace) : ctx(c), saved(c.workspace) {
    if (lane_workspace) ctx.workspace = lane_workspace;
  }
  ~WorkspaceOf() { ctx.workspace = saved; }
};

int lane_count_from_env() {
  const char* v = std::getenv("SAMFAST_LANES");
  if (!v) return 3;
  const std::string s(v);
  if (s.size() != 1 || s[0] < '1' || s[0] > '4') throw Error("SAMFAST_LANES: expected 1 to 4, got '" + s + "'");
  return s[0] - '0';
}

}  // namespace

GraphCache::GraphCache() : lane_count_(lane_count_from_env()) {}

GraphCache::~GraphCache() {
  // No throwing here. Lanes' work ends before their buffers go back to the pool.
  for (Lane& l : lanes_) {
    if (l.stream) cudaStreamSynchronize(l.stream);
    l.keep.clear();
    if (l.workspace) l.pool->put(l.workspace, l.workspace_bytes);
    if (l.fork) cudaEventDestroy(l.fork);
    if (l.done) cudaEventDestroy(l.done);
    if (l.stream) cudaStreamDestroy(l.stream);
  }
  entries_.clear();
}

GraphCache::Lane& GraphCache::lane_of(const CudaOps& ops, int lane) {
  if (lane < 1 || lane >= lane_count_) throw Error("graph lane " + std::to_string(lane) + " of " + std::to_string(lane_count_));
  if (lanes_.empty()) lanes_.resize(size_t(lane_count_ - 1));
  Lane& l = lanes_[size_t(lane - 1)];
  if (!l.stream) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&l.stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&l.fork, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&l.done, cudaEventDisableTiming));
    l.pool = ops.context().pool;
    l.workspace_bytes = ops.context().workspace_bytes;
    l.workspace = l.pool->get(l.workspace_bytes);
  }
  return l;
}

void GraphCache::join_lanes(const CudaOps& ops) {
  for (Lane& l : lanes_) {
    if (!l.pending) continue;
    CUDA_CHECK(cudaEventRecord(l.done, l.stream));
    CUDA_CHECK(cudaStreamWaitEvent(ops.context().stream, l.done, 0));
    l.pending = false;
    l.keep.clear();  // (back to the pool, for work queued after the wait)
  }
}

GraphCache::Entry::~Entry() {
  // No throwing here. The buffers go back to the pool for work queued after the graph's last launch.
  inputs.clear();
  outputs.clear();
  if (pool) pool->release_recorded(owned);
  if (exec) cudaGraphExecDestroy(exec);
}

std::string GraphCache::capture(const CudaOps& ops, Entry& e, const Ops::Computation& fn, bool planned,
                                bool& buffers_differ) {
  CudaContext& ctx = ops.context();
  WorkspaceOf workspace(ctx, e.lane > 0 ? lane_of(ops, e.lane).workspace : nullptr);
  std::string why;
  buffers_differ = false;
  cudaGraph_t graph = nullptr;
  if (planned)
    ctx.pool->begin_planned(e.trace, e.plan);
  else
    ctx.pool->begin_recording();
  // Relaxed: a first-time cudaMalloc of the pool may run during the capture.
  cudaError_t err = cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeRelaxed);
  if (err == cudaSuccess) {
    try {
      e.outputs = fn(e.inputs);
    } catch (const ArenaMismatch& ex) {
      why = ex.what(), buffers_differ = true;
    } catch (const std::exception& ex) {
      why = ex.what();
    }
    err = cudaStreamEndCapture(ctx.stream, &graph);
    if (why.empty() && err != cudaSuccess) why = cudaGetErrorString(err);
  } else {
    why = cudaGetErrorString(err);
  }
  if (planned) {
    if (ctx.pool->end_planned() != e.trace && why.empty())
      why = "its buffers were not the eager run's", buffers_differ = true;
  } else {
    e.owned = ctx.pool->end_recording();
  }
  if (why.empty()) {
    err = cudaGraphInstantiate(&e.exec, graph, 0);
    if (err != cudaSuccess) why = cudaGetErrorString(err), e.exec = nullptr;
  }
  if (graph) cudaGraphDestroy(graph);
  if (!why.empty()) {
    cudaGetLastError();  // capture errors are not sticky: clear them
    e.outputs.clear();
    ctx.pool->release_recorded(e.owned);
    e.owned.clear();
  }
  e.planned = planned && why.empty();
  return why;
}

bool GraphCache::record(const CudaOps& ops, Entry& e, const std::string& key, const std::vector<Tensor>& inputs,
                        const Ops::Computation& fn) {
  CudaContext& ctx = ops.context();
  if (e.inputs.empty())
    for (const Tensor& t : inputs)  // (host fp32 arrives in the backend's precision, bytes as bytes)
      e.inputs.push_back(t.on_host() && t.dtype != DType::U8 ? ops.empty(t.shape) : ops.empty(t.shape, t.dtype));
  e.pool = ctx.pool;
  bool buffers_differ = false;
  std::string why;
  if (e.lane > 0) {  // (buffers of its own: it may run beside the arena's graphs)
    why = capture(ops, e, fn, /*planned=*/false, buffers_differ);
    buffers_differ = false;
  } else {
    e.plan = plan_arena(e.trace);
    if (e.plan.bytes > ctx.pool->arena_bytes()) {
      drop_arena_graphs();
      ctx.pool->reserve_arena(e.plan.bytes);
    }
    why = capture(ops, e, fn, /*planned=*/true, buffers_differ);
  }
  if (why.empty()) return true;
  if (buffers_differ) {
    std::fprintf(stderr, "samfast: the CUDA graph of %s keeps buffers of its own (%s)\n", key.c_str(), why.c_str());
    why = capture(ops, e, fn, /*planned=*/false, buffers_differ);
    if (why.empty()) return true;
  }
  std::fprintf(stderr, "samfast: could not record a CUDA graph of %s (%s); it runs without one\n", key.c_str(),
               why.c_str());
  e.failed = true;
  e.inputs.clear();
  return false;
}

void GraphCache::drop_arena_graphs() {
  for (auto& [k, e] : entries_)
    if (e->planned && e->exec) {
      cudaGraphExecDestroy(e->exec);
      e->exec = nullptr;
      e->outputs.clear();  // (arena bytes: nothing returns to the pool)
      e->planned = false;
    }
}

size_t GraphCache::planned_graphs() const {
  size_t n = 0;
  for (const auto& [k, e] : entries_) n += e->planned && e->exec;
  return n;
}

void GraphCache::evict_oldest(const CudaOps& ops) {
  join_lanes(ops);  // (a lane's graph may be running: its buffers go back to the pool)
  auto oldest = entries_.begin();
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->second->last_use < oldest->second->last_use) oldest = it;
  entries_.erase(oldest);
}

std::vector<Tensor> GraphCache::run(CudaOps& ops, const std::string& key, const std::vector<Tensor>& inputs,
                                    const Ops::Computation& fn, int lane) {
  if (lane < 0 || lane >= lane_count_) throw Error("graph lane " + std::to_string(lane) + " of " + std::to_string(lane_count_));
  const std::string k = full_key(key, inputs) + (lane > 0 ? " lane " + std::to_string(lane) : "");
  auto it = entries_.find(k);
  if (it == entries_.end()) {
    if (entries_.size() >= kMaxGraphs) evict_oldest(ops);
    it = entries_.emplace(k, std::make_unique<Entry>()).first;
    it->second->lane = lane;
  }
  Entry& e = *it->second;
  e.last_use = ++clock_;
  auto device_inputs = [&] {
    std::vector<Tensor> dev;
    for (const Tensor& t : inputs) dev.push_back(t.on_host() ? ops.upload(t) : t);
    return dev;
  };
  if (e.failed) return fn(device_inputs());
  // The first call runs eagerly: it makes the cuBLASLt plans, sets kernel attributes and traces the
  // computation's buffers, none of which belongs in a graph.
  if (++e.calls < 2) {
    DevicePool& pool = *ops.context().pool;
    std::vector<Tensor> dev = device_inputs(), out;
    pool.begin_trace();
    try {
      out = fn(dev);
    } catch (...) {
      pool.end_trace();
      throw;
    }
    e.trace = pool.end_trace();
    dev.clear();
    pool.release_cached();  // its buffers: the recording takes its own from the arena
    return out;
  }
  if (!e.exec && !record(ops, e, k, inputs, fn)) return fn(device_inputs());
  CudaContext& ctx = ops.context();
  std::vector<std::pair<Tensor, Tensor>> copies;
  if (lane > 0) {  // inputs uploaded and outputs made on the stream, copied in and out on the lane's
    Lane& l = lane_of(ops, lane);
    std::vector<Tensor> dev = device_inputs(), out;
    for (const Tensor& t : e.outputs) out.push_back(ops.empty(t.shape, t.dtype));
    CUDA_CHECK(cudaEventRecord(l.fork, ctx.stream));
    CUDA_CHECK(cudaStreamWaitEvent(l.stream, l.fork, 0));
    for (size_t i = 0; i < dev.size(); ++i) copies.emplace_back(e.inputs[i], dev[i]);
    copy_all(l.stream, copies);
    CUDA_CHECK(cudaGraphLaunch(e.exec, l.stream));
    copies.clear();
    for (size_t i = 0; i < out.size(); ++i) copies.emplace_back(out[i], e.outputs[i]);
    copy_all(l.stream, copies);
    l.pending = true;
    l.keep.insert(l.keep.end(), dev.begin(), dev.end());
    l.keep.insert(l.keep.end(), out.begin(), out.end());
    return out;
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].on_host())
      ops.upload_into(inputs[i], e.inputs[i]);
    else
      copies.emplace_back(e.inputs[i], inputs[i]);
  }
  copy_all(ctx.stream, copies);
  CUDA_CHECK(cudaGraphLaunch(e.exec, ctx.stream));
  std::vector<Tensor> out;
  copies.clear();
  for (const Tensor& t : e.outputs) {
    out.push_back(ops.empty(t.shape, t.dtype));
    copies.emplace_back(out.back(), t);
  }
  copy_all(ctx.stream, copies);
  return out;
}

}  // namespace samfast::cuda
