// Normalisation, elementwise, layout and transfer ops of the CUDA backend, and the backend's
// constructor and tensor allocation. Arithmetic is fp32 whatever the storage type.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/postprocess.h"

namespace samfast {

using cuda::from_f32;
using cuda::gelu;
using cuda::to_f32;

namespace {
// The storage type of activations and weights at a precision (fp8: the bulk Linear layers' weights
// alone are fp8, beside bf16).
DType storage_type(Precision precision) {
  switch (precision) {
    case Precision::FP32: return DType::F32;
    case Precision::BF16: return DType::BF16;
    case Precision::FP16: return DType::F16;
    case Precision::FP8: return DType::BF16;
    case Precision::INT8:
      throw Error("precision int8 runs on the CPU only (on Hopper GPUs cuBLASLt's int8 GEMMs are slower than "
                  "bf16, BENCHMARKS.md): on a GPU use fp8 or bf16");
    default: throw Error("CUDA backend: precision " + to_string(precision) + " is not a number format");
  }
}
}  // namespace

CudaOps::CudaOps(int device, Precision precision, bool graphs)
    : CudaOps(std::make_shared<CudaContext>(device), precision, graphs ? std::make_shared<cuda::GraphCache>() : nullptr) {}

CudaOps::CudaOps(std::shared_ptr<CudaContext> ctx, Precision precision, std::shared_ptr<cuda::GraphCache> graphs)
    : ctx_(std::move(ctx)), dt_(storage_type(precision)), fp8_bulk_(precision == Precision::FP8), graphs_(std::move(graphs)) {
  if (fp8_bulk_ && ctx_->cc_major * 10 + ctx_->cc_minor < 89)
    throw Error("precision fp8 needs fp8 tensor cores (compute capability 8.9 or newer); this GPU has " +
                std::to_string(ctx_->cc_major) + "." + std::to_string(ctx_->cc_minor) + ": use bf16");
}

std::shared_ptr<CudaOps> CudaOps::sibling(Precision precision) const {
  return std::shared_ptr<CudaOps>(new CudaOps(ctx_, precision, graphs_));
}

std::vector<Tensor> CudaOps::run_recorded(const std::string& key, const std::vector<Tensor>& inputs,
                                          const Computation& fn) {
  if (graphs_) return graphs_->run(*this, key, inputs, fn);
  std::vector<Tensor> dev;
  for (const Tensor& t : inputs) dev.push_back(t.on_host() ? upload(t) : t);
  return fn(dev);
}

std::vector<Tensor> CudaOps::run_recorded_on_lane(int lane, const std::string& key, const std::vector<Tensor>& inputs,
                                                  const Computation& fn) {
  if (lane != 0 && graphs_) return graphs_->run(*this, key, inputs, fn, lane);
  return run_recorded(key, inputs, fn);
}

void CudaOps::join_lanes() {
  if (graphs_) graphs_->join_lanes(*this);
}

Tensor CudaOps::empty(Shape shape, DType dtype) const {
  for (int64_t d : shape)
    if (d < 0) throw Error("negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.shape = std::move(shape);
  const size_t bytes = element_size(dtype) * static_cast<size_t>(std::max<int64_t>(1, numel_of(t.shape)));
  std::shared_ptr<cuda::DevicePool> pool = ctx_->pool;
  float* p = static_cast<float*>(pool->get(bytes));
  t.storage = std::shared_ptr<float[]>(p, [pool, bytes](float* q) { pool->put(q, bytes); });
  t.data = p;
  t.device = Device::CUDA;
  t.dtype = dtype;
  return t;
}

void CudaOps::expect(const Tensor& t, const char* op, const char* name) const {
  if (!t.defined() || t.device != Device::CUDA || t.dtype != dt_)
    throw Error(std::string(op) + ": " + name + " " + shape_str(t.shape) + " is not a tensor of this CUDA backend (" +
                (t.device == Device::CPU ? "host memory" : "another precision") + "); upload it first");
}

namespace {

void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

constexpr int kThreads = 256;

template <class T>
__device__ __forceinline__ float apply(float v, Act act) {
  if (act == Act::ReLU) return fmaxf(v, 0.f);
  if (act == Act::GELU) return gelu<T>(v);
  return v;
}

// One warp per row: mean, then variance around it (two passes in fp32), then the affine map.
template <class T>
__global__ void layer_norm_kernel(const T* __restrict x, const T* __restrict w, const T* __restrict b,
                                  T* __restrict y, int64_t rows, int C, float eps, Act act) {
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* in = x + row * C;
  float s = 0.f;
  for (int c = lane; c < C; c += 32) s += to_f32(in[c]);
  for (int o = 16; o; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float mean = s / C;
  float v = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float d = to_f32(in[c]) - mean;
    v += d * d;
  }
  for (int o = 16; o; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const float rstd = rsqrtf(v / C + eps);
  T* out = y + row * C;
  for (int c = lane; c < C; c += 32)
    out[c] = from_f32<T>(apply<T>((to_f32(in[c]) - mean) * rstd * to_f32(w[c]) + to_f32(b[c]), act));
}

// The vectorised LayerNorm: a group of G lanes per row (G = 32, or fewer for narrow rows so that no
// lane idles: 8 lanes for the 64 channels of the decoder's upscaling), each holding NV 16-byte chunks
// of the row in registers: one read and one write of memory, where the scalar kernel above read
// each element three times with 2-byte accesses. With pe (pe_rows rows, x's repeating over them),
// also y + pe into y_pe, rounded as ops.add rounds it.
template <class T, int G, int NV>
__global__ void layer_norm_vec_kernel(const T* __restrict x, const T* __restrict w, const T* __restrict b,
                                      T* __restrict y, int64_t rows, int C, float eps, Act act,
                                      const T* __restrict pe, int64_t pe_rows, T* __restrict y_pe) {
  constexpr int kPer = 16 / sizeof(T);
  const int sub = threadIdx.x % G, nvec = C / kPer;
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / G;
  const bool active = row < rows;  // inactive lanes still join the shuffles
  float v[NV][kPer];
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int c = sub + j * G;
    uint4 raw = make_uint4(0, 0, 0, 0);
    if (active && c < nvec) raw = reinterpret_cast<const uint4*>(x + row * C)[c];
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int k = 0; k < kPer; ++k) v[j][k] = to_f32(e[k]), s += v[j][k];
  }
  for (int o = G / 2; o; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float mean = s / C;
  float q = 0.f;
#pragma unroll
  for (int j = 0; j < NV; ++j)
    if (sub + j * G < nvec)
#pragma unroll
      for (int k = 0; k < kPer; ++k) q += (v[j][k] - mean) * (v[j][k] - mean);
  for (int o = G / 2; o; o /= 2) q += __shfl_xor_sync(0xffffffffu, q, o);
  const float rstd = rsqrtf(q / C + eps);
  if (!active) return;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int c = sub + j * G;
    if (c >= nvec) continue;
    const uint4 rw = reinterpret_cast<const uint4*>(w)[c], rb = reinterpret_cast<const uint4*>(b)[c];
    const T* ew = reinterpret_cast<const T*>(&rw);
    const T* eb = reinterpret_cast<const T*>(&rb);
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      e[k] = from_f32<T>(apply<T>((v[j][k] - mean) * rstd * to_f32(ew[k]) + to_f32(eb[k]), act));
    reinterpret_cast<uint4*>(y + row * C)[c] = raw;
    if (pe)
      reinterpret_cast<uint4*>(y_pe + row * C)[c] =
          cuda::add_vec16<T>(raw, reinterpret_cast<const uint4*>(pe + row % pe_rows * C)[c]);
  }
}

// Launches the vectorised LayerNorm when the row fits its shapes; false otherwise.
// (pe: see layer_norm_vec_kernel; null for none.)
template <class T>
bool launch_layer_norm_vec(const T* x, const T* w, const T* b, T* y, int64_t rows, int C, float eps, Act act,
                           cudaStream_t stream, const T* pe = nullptr, int64_t pe_rows = 1, T* y_pe = nullptr) {
  constexpr int kPer = 16 / sizeof(T);
  const int nvec = C / kPer;
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (C % kPer != 0 || nvec > 32 * 10 || !aligned(x) || !aligned(w) || !aligned(b) || !aligned(y)) return false;
  if (pe && (!aligned(pe) || !aligned(y_pe))) return false;
  auto go = [&](auto g, auto nv) {
    constexpr int kG = decltype(g)::value, kNV = decltype(nv)::value;
    const int threads = 256;
    const unsigned blocks = static_cast<unsigned>((rows * kG + threads - 1) / threads);
    layer_norm_vec_kernel<T, kG, kNV><<<blocks, threads, 0, stream>>>(x, w, b, y, rows, C, eps, act, pe, pe_rows, y_pe);
    return true;
  };
  using std::integral_constant;
  if (nvec <= 4) return go(integral_constant<int, 4>{}, integral_constant<int, 1>{});
  if (nvec <= 8) return go(integral_constant<int, 8>{}, integral_constant<int, 1>{});
  if (nvec <= 16) return go(integral_constant<int, 16>{}, integral_constant<int, 1>{});
  switch ((nvec + 31) / 32) {
    case 1: return go(integral_constant<int, 32>{}, integral_constant<int, 1>{});
    case 2: return go(integral_constant<int, 32>{}, integral_constant<int, 2>{});
    case 3: return go(integral_constant<int, 32>{}, integral_constant<int, 3>{});
    case 4: return go(integral_constant<int, 32>{}, integral_constant<int, 4>{});
    case 5: return go(integral_constant<int, 32>{}, integral_constant<int, 5>{});
    case 6: return go(integral_constant<int, 32>{}, integral_constant<int, 6>{});
    case 7: return go(integral_constant<int, 32>{}, integral_constant<int, 7>{});
    case 8: return go(integral_constant<int, 32>{}, integral_constant<int, 8>{});
    case 9: return go(integral_constant<int, 32>{}, integral_constant<int, 9>{});
    default: return go(integral_constant<int, 32>{}, integral_constant<int, 10>{});
  }
}

// I: the index type; 32-bit wherever the tensor allows, since a 64-bit modulo per element costs
// more than the addition's memory traffic.
template <class T, class I>
__global__ void add_kernel(const T* __restrict a, const T* __restrict b, T* __restrict y, I n, I m) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x)
    y[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i % m]));
}

template <class T, class I>
__global__ void add_vec_kernel(const T* __restrict a, const T* __restrict b, T* __restrict y, I nvec, I m) {
  constexpr int V = 16 / sizeof(T);
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < nvec; i += (I)gridDim.x * blockDim.x) {
    reinterpret_cast<uint4*>(y)[i] =
        cuda::add_vec16<T>(reinterpret_cast<const uint4*>(a)[i], *reinterpret_cast<const uint4*>(b + (i * V) % m));
  }
}

template <class T, class I>
__global__ void bias_act_residual_kernel(T* __restrict y, I n, I cols, const T* __restrict bias, Act act,
                                         const T* __restrict residual) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
    float v = to_f32(y[i]);
    if (bias) v += to_f32(bias[i % cols]);
    v = apply<T>(v, act);
    if (residual) v += to_f32(residual[i]);
    y[i] = from_f32<T>(v);
  }
}

// The same, 16 bytes per access (8 bf16 or 4 fp32): the GELU after the MLP's first GEMM touches
// 4096 x 4 E values per image, and the scalar 2-byte loads left it well short of memory bandwidth.
template <class T, class I>
__global__ void bias_act_residual_vec_kernel(T* __restrict y, I nvec, I cols, const T* __restrict bias, Act act,
                                             const T* __restrict residual) {
  constexpr int V = 16 / sizeof(T);
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < nvec; i += (I)gridDim.x * blockDim.x) {
    uint4 raw = reinterpret_cast<const uint4*>(y)[i], braw = {}, rraw = {};
    if (bias) braw = *reinterpret_cast<const uint4*>(bias + (i * V) % cols);
    if (residual) rraw = reinterpret_cast<const uint4*>(residual)[i];
    T* e = reinterpret_cast<T*>(&raw);
    const T* be = reinterpret_cast<const T*>(&braw);
    const T* re = reinterpret_cast<const T*>(&rraw);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      float v = to_f32(e[k]);
      if (bias) v += to_f32(be[k]);
      v = apply<T>(v, act);
      if (residual) v += to_f32(re[k]);
      e[k] = from_f32<T>(v);
    }
    reinterpret_cast<uint4*>(y)[i] = raw;
  }
}

// (batch, R, S) -> (batch, S, R) through a 32x32 shared-memory tile (coalesced reads and writes).
template <class T>
__global__ void transpose_kernel(const T* __restrict x, T* __restrict y, int64_t R, int64_t S) {
  __shared__ T tile[32][33];
  const int64_t bi = blockIdx.z;
  const int64_t r0 = blockIdx.y * 32, s0 = blockIdx.x * 32;
  const T* xb = x + bi * R * S;
  T* yb = y + bi * R * S;
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int64_t r = r0 + k, s = s0 + threadIdx.x;
    if (r < R && s < S) tile[k][threadIdx.x] = xb[r * S + s];
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int64_t s = s0 + k, r = r0 + threadIdx.x;
    if (r < R && s < S) yb[s * R + r] = tile[threadIdx.x][k];
  }
}

// The same for R <= 4 rows (an image's channels): one thread per column, reading each row coalesced
// and writing its R values next to each other (the 32 x 32 tiles above would idle 29 of 32 rows).
template <class T, class I>
__global__ void transpose_few_rows_kernel(const T* __restrict x, T* __restrict y, I batch, int R, I S) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < batch * S; i += (I)gridDim.x * blockDim.x) {
    const I bi = i / S, s = i - bi * S;
    for (int r = 0; r < R; ++r) y[i * R + r] = x[(bi * R + r) * S + s];
  }
}

// normalize_rgb: a thread a pixel, its three channels into the three planes; (v - mean) / std in
// fp32 (an IEEE division, as the host's), then rounded once to T.
template <class T>
__global__ void normalize_rgb_kernel(const uint8_t* __restrict rgb, const uint8_t* __restrict extent, T* __restrict y,
                                     int64_t pixels, int S, float3 mean, float3 stdev) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pixels; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / (int64_t(S) * S);
    const int r = int(i / S % S), x = int(i % S);
    const bool in = extent[b * 2 * S + r] != 0 && extent[(b * 2 + 1) * S + x] != 0;
    const uint8_t* p = rgb + 3 * i;
    T* plane = y + (b * 3 * S + r) * int64_t(S) + x;  // channel 0 of the pixel; the others S * S apart
    plane[0] = from_f32<T>(in ? (static_cast<float>(p[0]) - mean.x) / stdev.x : 0.f);
    plane[int64_t(S) * S] = from_f32<T>(in ? (static_cast<float>(p[1]) - mean.y) / stdev.y : 0.f);
    plane[2 * int64_t(S) * S] = from_f32<T>(in ? (static_cast<float>(p[2]) - mean.z) / stdev.z : 0.f);
  }
}

template <class From, class To>
__global__ void convert_kernel(const From* __restrict x, To* __restrict y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f32<To>(to_f32(x[i]));
}


}  // namespace

namespace cuda {
void bias_act_residual(CudaContext& ctx, DType dt, void* y, int64_t rows, int64_t cols, const void* bias, Act act,
                       const void* residual) {
  const int64_t n = rows * cols;
  if (n == 0 || (!bias && act == Act::None && !residual)) return;
  const bool small = n < (int64_t(1) << 31) - kThreads * int64_t(blocks_for(n, kThreads));
  const int64_t vec = 16 / element_size(dt);
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (small && cols % vec == 0 && aligned(y) && (!bias || aligned(bias)) && (!residual || aligned(residual))) {
    SAMFAST_DISPATCH(dt, T,
                     bias_act_residual_vec_kernel<T, int32_t><<<blocks_for(n / vec, kThreads), kThreads, 0, ctx.stream>>>(
                         static_cast<T*>(y), (int32_t)(n / vec), (int32_t)cols, static_cast<const T*>(bias), act,
                         static_cast<const T*>(residual)));
    CUDA_LAUNCH_CHECK();
    return;
  }
  SAMFAST_DISPATCH(dt, T,
                   if (small) bias_act_residual_kernel<T, int32_t><<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(
                       static_cast<T*>(y), (int32_t)n, (int32_t)cols, static_cast<const T*>(bias), act,
                       static_cast<const T*>(residual));
                   else bias_act_residual_kernel<T, int64_t><<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(
                       static_cast<T*>(y), n, cols, static_cast<const T*>(bias), act, static_cast<const T*>(residual)));
  CUDA_LAUNCH_CHECK();
}
}  // namespace cuda

Tensor CudaOps::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Act act) {
  expect(x, "layer_norm", "input");
  expect(w, "layer_norm", "weight");
  expect(b, "layer_norm", "bias");
  check_layer_norm(x, w, b);
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  Tensor y = empty(x.shape);
  if (rows == 0) return y;
  bool done = false;
  SAMFAST_DISPATCH(dt_, T,
                   done = launch_layer_norm_vec<T>(x.ptr<T>(), w.ptr<T>(), b.ptr<T>(), y.ptr<T>(), rows, (int)C, eps,
                                                   act, ctx_->stream));
  if (done) {
    CUDA_LAUNCH_CHECK();
    return y;
  }
  const int warps = kThreads / 32;
  const unsigned blocks = static_cast<unsigned>((rows + warps - 1) / warps);
  SAMFAST_DISPATCH(dt_, T,
                   layer_norm_kernel<T><<<blocks, kThreads, 0, ctx_->stream>>>(
                       x.ptr<T>(), w.ptr<T>(), b.ptr<T>(), y.ptr<T>(), rows, (int)C, eps, act));
  CUDA_LAUNCH_CHECK();
  return y;
}

std::pair<Tensor, Tensor> CudaOps::layer_norm_pe(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                                                 const Tensor& pe) {
  expect(x, "layer_norm_pe", "input");
  expect(w, "layer_norm_pe", "weight");
  expect(b, "layer_norm_pe", "bias");
  expect(pe, "layer_norm_pe", "positional term");
  check_layer_norm(x, w, b);
  check_add(x, pe);
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  if (rows == 0 || pe.numel() % C != 0) return Ops::layer_norm_pe(x, w, b, eps, pe);  // (pe not whole rows)
  Tensor y = empty(x.shape), y_pe = empty(x.shape);
  bool done = false;
  SAMFAST_DISPATCH(dt_, T,
                   done = launch_layer_norm_vec<T>(x.ptr<T>(), w.ptr<T>(), b.ptr<T>(), y.ptr<T>(), rows, (int)C, eps,
                                                   Act::None, ctx_->stream, pe.ptr<T>(), pe.numel() / C, y_pe.ptr<T>()));
  if (!done) return Ops::layer_norm_pe(x, w, b, eps, pe);
  CUDA_LAUNCH_CHECK();
  return {y, y_pe};
}

Tensor CudaOps::add(const Tensor& a, const Tensor& b) {
  expect(a, "add", "a");
  expect(b, "add", "b");
  check_add(a, b);
  const int64_t n = a.numel(), m = b.numel();
  Tensor y = empty(a.shape);
  if (n == 0) return y;
  const bool small = n < (int64_t(1) << 31) - kThreads * int64_t(cuda::blocks_for(n, kThreads));
  const int64_t vec = 16 / element_size(dt_);
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (small && m % vec == 0 && aligned(a.data) && aligned(b.data) && aligned(y.data)) {  // 16 bytes per access
    SAMFAST_DISPATCH(dt_, T,
                     add_vec_kernel<T, int32_t><<<cuda::blocks_for(n / vec, kThreads), kThreads, 0, ctx_->stream>>>(
                         a.ptr<T>(), b.ptr<T>(), y.ptr<T>(), (int32_t)(n / vec), (int32_t)m));
    CUDA_LAUNCH_CHECK();
    return y;
  }
  SAMFAST_DISPATCH(dt_, T,
                   if (small) add_kernel<T, int32_t><<<cuda::blocks_for(n, kThreads), kThreads, 0, ctx_->stream>>>(
                       a.ptr<T>(), b.ptr<T>(), y.ptr<T>(), (int32_t)n, (int32_t)m);
                   else add_kernel<T, int64_t><<<cuda::blocks_for(n, kThreads), kThreads, 0, ctx_->stream>>>(
                       a.ptr<T>(), b.ptr<T>(), y.ptr<T>(), n, m));
  CUDA_LAUNCH_CHECK();
  return y;
}

namespace {
// (batch, R, S) -> (batch, S, R)
void transpose(CudaContext& ctx, DType dt, const void* x, void* y, int64_t batch, int64_t R, int64_t S) {
  if (batch * R * S == 0) return;
  if (R <= 4) {
    const int threads = 256;
    const unsigned blocks = cuda::blocks_for(batch * S, threads);
    const bool small = batch * R * S < (int64_t(1) << 31);
    SAMFAST_DISPATCH(dt, T, {
      if (small)
        transpose_few_rows_kernel<T, int32_t><<<blocks, threads, 0, ctx.stream>>>(
            static_cast<const T*>(x), static_cast<T*>(y), (int32_t)batch, (int)R, (int32_t)S);
      else
        transpose_few_rows_kernel<T, int64_t><<<blocks, threads, 0, ctx.stream>>>(static_cast<const T*>(x),
                                                                                  static_cast<T*>(y), batch, (int)R, S);
    });
    CUDA_LAUNCH_CHECK();
    return;
  }
  if (batch > 65535 || (R + 31) / 32 > 65535) throw Error("layout transpose: shape too large");
  const dim3 grid(static_cast<unsigned>((S + 31) / 32), static_cast<unsigned>((R + 31) / 32),
                  static_cast<unsigned>(batch));
  SAMFAST_DISPATCH(dt, T,
                   transpose_kernel<T><<<grid, dim3(32, 8), 0, ctx.stream>>>(static_cast<const T*>(x),
                                                                              static_cast<T*>(y), R, S));
  CUDA_LAUNCH_CHECK();
}
}  // namespace

Tensor CudaOps::nchw_to_nhwc(const Tensor& x) {
  expect(x, "nchw_to_nhwc", "input");
  check_4d(x, "nchw_to_nhwc", "(B, C, H, W)");
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor y = empty({B, H, W, C});
  transpose(*ctx_, dt_, x.data, y.data, B, C, H * W);
  return y;
}

Tensor CudaOps::nhwc_to_nchw(const Tensor& x) {
  expect(x, "nhwc_to_nchw", "input");
  check_4d(x, "nhwc_to_nchw", "(B, H, W, C)");
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor y = empty({B, C, H, W});
  transpose(*ctx_, dt_, x.data, y.data, B, H * W, C);
  return y;
}

Tensor CudaOps::normalize_rgb(const Tensor& rgb, const Tensor& extent, const std::array<float, 3>& mean,
                              const std::array<float, 3>& stdev) {
  check_normalize_rgb(rgb, extent);
  const Tensor px = upload(rgb), ex = upload(extent);  // (host bytes, or bytes already here)
  const int64_t B = rgb.dim(0), S = rgb.dim(1), pixels = B * S * S;
  Tensor y = empty({B, 3, S, S});
  if (pixels == 0) return y;
  SAMFAST_DISPATCH(dt_, T,
                   normalize_rgb_kernel<T><<<cuda::blocks_for(pixels, kThreads), kThreads, 0, ctx_->stream>>>(
                       px.ptr<uint8_t>(), ex.ptr<uint8_t>(), y.ptr<T>(), pixels, (int)S,
                       make_float3(mean[0], mean[1], mean[2]), make_float3(stdev[0], stdev[1], stdev[2])));
  CUDA_LAUNCH_CHECK();
  return y;
}

Tensor CudaOps::slice(const Tensor& x, int64_t first, int64_t count) {
  expect(x, "slice", "input");
  check_slice(x, first, count);
  const int64_t B = x.dim(0), N = x.dim(1), inner = x.numel() / std::max<int64_t>(1, B * N);
  Shape s = x.shape;
  s[1] = count;
  Tensor y = empty(s);
  const size_t es = element_size(dt_);
  if (y.numel() > 0)
    CUDA_CHECK(cudaMemcpy2DAsync(y.data, es * count * inner, static_cast<const char*>(x.ptr<char>()) + es * first * inner,
                                 es * N * inner, es * count * inner, B, cudaMemcpyDeviceToDevice, ctx_->stream));
  return y;
}

Tensor CudaOps::concat(const std::vector<Tensor>& xs) {
  check_concat(xs);
  for (const Tensor& x : xs) expect(x, "concat", "input");
  const int64_t B = xs[0].dim(0), inner = xs[0].numel() / std::max<int64_t>(1, B * xs[0].dim(1));
  int64_t N = 0;
  for (const Tensor& x : xs) N += x.dim(1);
  Shape s = xs[0].shape;
  s[1] = N;
  Tensor y = empty(s);
  const size_t es = element_size(dt_);
  int64_t at = 0;
  for (const Tensor& x : xs) {
    const int64_t n = x.dim(1) * inner;
    if (n > 0 && B > 0)
      CUDA_CHECK(cudaMemcpy2DAsync(y.ptr<char>() + es * at, es * N * inner, x.data, es * n, es * n, B,
                                   cudaMemcpyDeviceToDevice, ctx_->stream));
    at += n;
  }
  return y;
}

Tensor CudaOps::expand_batch(const Tensor& x, int64_t batch) {
  expect(x, "expand_batch", "input");
  check_expand_batch(x, batch);
  Shape s = x.shape;
  s[0] = batch;
  Tensor y = empty(s);
  for (int64_t b = 0; b < batch; ++b)
    CUDA_CHECK(cudaMemcpyAsync(y.ptr<char>() + b * x.nbytes(), x.data, x.nbytes(), cudaMemcpyDeviceToDevice,
                               ctx_->stream));
  return y;
}

Tensor CudaOps::upload(const Tensor& host) {
  const bool floats = host.dtype == DType::F32 || host.dtype == DType::BF16 || host.dtype == DType::F16;
  if (host.device == Device::CUDA && floats && host.dtype != dt_) {
    // a sibling's tensor (the image encoder's embedding, bf16, for an fp16 decoder)
    Tensor y = empty(host.shape);
    const int64_t n = host.numel();
    const unsigned blocks = cuda::blocks_for(n, kThreads);
    if (n > 0)
      SAMFAST_DISPATCH(host.dtype, From,
                       SAMFAST_DISPATCH(dt_, To,
                                        convert_kernel<From, To><<<blocks, kThreads, 0, ctx_->stream>>>(
                                            host.ptr<From>(), y.ptr<To>(), n)));
    CUDA_LAUNCH_CHECK();
    return y;
  }
  if (host.device == Device::CUDA) {
    if (host.dtype != DType::U8) expect(host, "upload", "tensor");
    return host;
  }
  Tensor y = empty(host.shape, host.dtype == DType::U8 ? DType::U8 : dt_);  // (uint8 pixels stay bytes)
  upload_into(host, y);
  return y;
}

void CudaOps::upload_into(const Tensor& host, const Tensor& y) {
  const bool bytes = host.dtype == DType::U8;  // uint8 pixels (normalize_rgb), copied as they are
  check(host.device == Device::CPU && (host.dtype == DType::F32 || bytes), "upload", "host tensors are fp32 or uint8");
  if (bytes)
    check(y.device == Device::CUDA && y.dtype == DType::U8, "upload", "uint8 goes to a uint8 destination");
  else
    expect(y, "upload", "destination");
  check(y.numel() == host.numel(), "upload", "destination " + shape_str(y.shape) + " does not fit " + shape_str(host.shape));
  const int64_t n = host.numel();
  if (n == 0) return;
  if (bytes) {
    CUDA_CHECK(cudaMemcpyAsync(y.data, host.data, static_cast<size_t>(n), cudaMemcpyHostToDevice, ctx_->stream));
    return;
  }
  // From pageable memory the copy returns once the host buffer has been staged, so the caller
  // may free it right away.
  if (dt_ == DType::F32) {
    CUDA_CHECK(cudaMemcpyAsync(y.data, host.data, sizeof(float) * n, cudaMemcpyHostToDevice, ctx_->stream));
    return;
  }
  // Through an fp32 staging buffer of at most 8 MB, converted chunk by chunk: a batch of 8 images
  // would otherwise keep a 100 MB staging buffer in the pool (and in the peak) for good.
  constexpr int64_t kChunk = int64_t(2) << 20;
  Tensor staging = empty({std::min(n, kChunk)}, DType::F32);
  for (int64_t at = 0; at < n; at += kChunk) {
    const int64_t m = std::min(kChunk, n - at);
    CUDA_CHECK(cudaMemcpyAsync(staging.data, host.data + at, sizeof(float) * m, cudaMemcpyHostToDevice, ctx_->stream));
    SAMFAST_DISPATCH(dt_, T,
                     convert_kernel<float, T><<<cuda::blocks_for(m, kThreads), kThreads, 0, ctx_->stream>>>(
                         staging.ptr<float>(), y.ptr<T>() + at, m));
    CUDA_LAUNCH_CHECK();
  }
  // staging returns to the pool; its next user runs after the last conversion on this stream
}

Ops::Later<Tensor> CudaOps::download_later(const Tensor& x) {
  join_lanes();  // (x may be a lane's output)
  if (x.dtype != DType::F32 && x.dtype != DType::U8 && x.dtype != DType::BF16 && x.dtype != DType::F16)
    expect(x, "download", "tensor");
  check(x.defined() && x.device == Device::CUDA, "download", "tensor " + shape_str(x.shape) + " is not on the GPU");
  // Into page-locked memory, which returns to its pool when the last view of it is dropped. Bytes
  // (binary masks) stay bytes; everything else becomes fp32.
  Tensor host;
  host.shape = x.shape;
  host.dtype = x.dtype == DType::U8 ? DType::U8 : DType::F32;
  const size_t host_bytes = element_size(host.dtype) * static_cast<size_t>(std::max<int64_t>(1, x.numel()));
  std::shared_ptr<cuda::PinnedPool> pinned = ctx_->pinned;
  float* hp = static_cast<float*>(pinned->get(host_bytes));
  host.storage = std::shared_ptr<float[]>(hp, [pinned, host_bytes](float* q) { pinned->put(q, host_bytes); });
  host.data = hp;
  const int64_t n = x.numel();
  if (n == 0) return [host] { return host; };
  Tensor f32 = x;
  if (x.dtype != host.dtype) {
    f32 = empty(x.shape, DType::F32);
    SAMFAST_DISPATCH(x.dtype, T,
                     convert_kernel<T, float><<<cuda::blocks_for(n, kThreads), kThreads, 0, ctx_->stream>>>(
                         x.ptr<T>(), f32.ptr<float>(), n));
    CUDA_LAUNCH_CHECK();
  }
  CUDA_CHECK(cudaMemcpyAsync(host.data, f32.data, host.nbytes(), cudaMemcpyDeviceToHost, ctx_->stream));
  // An event after the copy: waiting on it does not wait for work queued later on the stream.
  cudaEvent_t ev = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  std::shared_ptr<CUevent_st> done(ev, [](cudaEvent_t e) { cudaEventDestroy(e); });
  CUDA_CHECK(cudaEventRecord(ev, ctx_->stream));
  return [host, done] {
    CUDA_CHECK(cudaEventSynchronize(done.get()));
    return host;
  };
}

Tensor CudaOps::download(const Tensor& x) { return download_later(x)(); }


void CudaOps::synchronize() {
  join_lanes();
  CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
}

int64_t CudaOps::peak_memory_bytes() const {
  return static_cast<int64_t>(ctx_->pool->peak_bytes() + ctx_->workspace_bytes);
}

Ops::MemoryUse CudaOps::memory_use() const {
  return {weights_.defined() ? weights_.numel() : 0, static_cast<int64_t>(weights_filled_),
          static_cast<int64_t>(ctx_->pool->arena_bytes()),
          graphs_ ? static_cast<int64_t>(graphs_->planned_graphs()) : 0};
}

Tensor CudaOps::postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                                  std::pair<int, int> original_size, bool binarize) {
  // ref: modeling/sam.py postprocess_masks: upsample to img_size (only the kept corner), crop, resize.
  expect(low_res, "postprocess_masks", "masks");
  check_postprocess_masks(low_res, img_size, input_size, original_size);
  const auto [in_h, in_w] = input_size;
  const auto [orig_h, orig_w] = original_size;
  const int64_t B = low_res.dim(0), C = low_res.dim(1), planes = B * C;
  // Binary masks as bytes: a quarter of fp32's traffic on the way to the host (1500x2250, three
  // masks: 10 MB instead of 40 MB over PCIe).
  Tensor out = empty({B, C, orig_h, orig_w}, binarize ? DType::U8 : DType::F32);
  const int L = (int)low_res.dim(2);
  if (binarize)
    SAMFAST_DISPATCH(dt_, T,
                     cuda::binary_masks<T>(low_res.ptr<T>(), planes, L, img_size, in_h, in_w, orig_h, orig_w, 0.f,
                                           out.ptr<uint8_t>(), ctx_->stream));
  else
    SAMFAST_DISPATCH(dt_, T,
                     cuda::postprocess_masks<T>(low_res.ptr<T>(), planes, L, img_size, in_h, in_w, orig_h, orig_w,
                                                out.ptr<float>(), ctx_->stream));
  return out;
}

}  // namespace samfast
