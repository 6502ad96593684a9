#include "backend/cuda/graph.h"

#include <cstdio>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace samfast::cuda {
namespace {

std::string full_key(const std::string& key, const std::vector<Tensor>& inputs) {
  std::string k = key;
  for (const Tensor& t : inputs)
    k += " " + shape_str(t.shape) + (t.on_host() ? "host" : t.dtype == DType::F32 ? "f32" : "h");
  return k;
}

void copy_into(const CudaOps& ops, const Tensor& dst, const Tensor& src) {
  CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, ops.context().stream));
}

}  // namespace

GraphCache::Entry::~Entry() {
  // No throwing here. The buffers go back to the pool for work queued after the graph's last launch.
  inputs.clear();
  outputs.clear();
  if (pool) pool->release_recorded(owned);
  if (exec) cudaGraphExecDestroy(exec);
}

bool GraphCache::record(const CudaOps& ops, Entry& e, const std::string& key, const std::vector<Tensor>& inputs,
                        const Ops::Computation& fn) {
  CudaContext& ctx = ops.context();
  for (const Tensor& t : inputs) e.inputs.push_back(t.on_host() ? ops.empty(t.shape) : ops.empty(t.shape, t.dtype));
  e.pool = ctx.pool;
  std::string why;
  cudaGraph_t graph = nullptr;
  ctx.pool->begin_recording();
  // Relaxed: a first-time cudaMalloc of the pool may run during the capture.
  cudaError_t err = cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeRelaxed);
  if (err == cudaSuccess) {
    try {
      e.outputs = fn(e.inputs);
    } catch (const std::exception& ex) {
      why = ex.what();
    }
    err = cudaStreamEndCapture(ctx.stream, &graph);
    if (why.empty() && err != cudaSuccess) why = cudaGetErrorString(err);
  } else {
    why = cudaGetErrorString(err);
  }
  e.owned = ctx.pool->end_recording();
  if (why.empty()) {
    err = cudaGraphInstantiate(&e.exec, graph, 0);
    if (err != cudaSuccess) why = cudaGetErrorString(err), e.exec = nullptr;
  }
  if (graph) cudaGraphDestroy(graph);
  if (why.empty()) return true;
  cudaGetLastError();  // capture errors are not sticky: clear them
  std::fprintf(stderr, "samfast: could not record a CUDA graph of %s (%s); it runs without one\n", key.c_str(),
               why.c_str());
  e.failed = true;
  e.outputs.clear();
  e.inputs.clear();
  ctx.pool->release_recorded(e.owned);
  e.owned.clear();
  return false;
}

void GraphCache::evict_oldest() {
  auto oldest = entries_.begin();
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->second->last_use < oldest->second->last_use) oldest = it;
  entries_.erase(oldest);
}

std::vector<Tensor> GraphCache::run(CudaOps& ops, const std::string& key, const std::vector<Tensor>& inputs,
                                    const Ops::Computation& fn) {
  const std::string k = full_key(key, inputs);
  auto it = entries_.find(k);
  if (it == entries_.end()) {
    if (entries_.size() >= kMaxGraphs) evict_oldest();
    it = entries_.emplace(k, std::make_unique<Entry>()).first;
  }
  Entry& e = *it->second;
  e.last_use = ++clock_;
  // The first call runs eagerly: it makes the cuBLASLt plans, sets kernel attributes and fills the
  // pool, none of which belongs in a graph.
  auto eager = [&] {
    std::vector<Tensor> dev;
    for (const Tensor& t : inputs) dev.push_back(t.on_host() ? ops.upload(t) : t);
    return fn(dev);
  };
  if (e.failed || ++e.calls < 2) return eager();
  if (!e.exec && !record(ops, e, k, inputs, fn)) return eager();
  CudaContext& ctx = ops.context();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].on_host())
      ops.upload_into(inputs[i], e.inputs[i]);
    else
      copy_into(ops, e.inputs[i], inputs[i]);
  }
  CUDA_CHECK(cudaGraphLaunch(e.exec, ctx.stream));
  std::vector<Tensor> out;
  for (const Tensor& t : e.outputs) {
    out.push_back(ops.empty(t.shape, t.dtype));
    copy_into(ops, out.back(), t);
  }
  return out;
}

}  // namespace samfast::cuda
