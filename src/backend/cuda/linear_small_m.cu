// Linear layers of few rows on Hopper: the mask decoder's token path (~112 rows of 16 prompts
// against 256-2048 wide weights, ~27 GEMMs a decode). cuBLASLt spends 3-6 us on each, mostly in
// set-up and a K loop run by too few blocks; here a block takes 32 output columns of every row for
// 256 of K at once (all its loads in flight together, then 16 MMA k-steps), and K beyond 256 is
// split across a thread block cluster whose fp32 partials are summed through distributed shared
// memory in rank order (deterministic, no second kernel, no atomics).
#include <cooperative_groups.h>

#include <array>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"

namespace samfast::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kCols = 32;       // output columns a block
constexpr int kChunk = 256;     // K a block: one rank of the cluster
constexpr int kMaxRows = 128;   // rows: one m16 tile a warp
constexpr int kMaxRanks = 8;    // the portable cluster size: K up to 2048
constexpr int kThreads = 256;   // kMaxRows / 16 warps
constexpr int kLd = kChunk + 8;  // padded shared-memory row (elements): ldmatrix without bank conflicts

size_t smem_bytes(int64_t rows) { return size_t((rows + 15) / 16 * 16 + kCols) * kLd * 2; }

// y (M, N) = act(x (M, K) . w (N, K)^T + bias) + residual. Grid (K / kChunk, ceil(N / kCols)), clusters
// of (K / kChunk, 1, 1) (none for one): rank r of a cluster multiplies K slice r; rank r then sums
// rows [r M / ranks, (r + 1) M / ranks) of every rank's partials, in rank order, and writes them.
// A block has few warps for its latencies, so each instruction counts: addresses are a base and
// compile-time strides, loops unrolled over compile-time counts.
template <class H>
__global__ void __launch_bounds__(kThreads) linear_few_rows_kernel(const H* __restrict__ x, const H* __restrict__ w,
                                                                  const H* __restrict__ bias, const H* residual, H* y,
                                                                  int M, int N, int K, int relu) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(16) unsigned char smem[];
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank()), ranks = static_cast<int>(cluster.num_blocks());
  const int col0 = blockIdx.y * kCols, k0 = rank * kChunk;
  H* a_s = reinterpret_cast<H*>(smem);  // (M rounded up to 16) x kLd
  H* w_s = a_s + (M + 15) / 16 * 16 * kLd;  // kCols x kLd
  // The epilogue's share of this thread: one column pair, of rows first, first + kRowStep, ... below
  // row1. Its bias and residual are requested first, with the operands.
  constexpr int kPairs = kCols / 2, kRowStep = kThreads / kPairs, kSteps = kMaxRows / kRowStep;
  const int col = 2 * (threadIdx.x % kPairs), gc = col0 + col, row1 = (rank + 1) * M / ranks;
  const int first = rank * M / ranks + threadIdx.x / kPairs;
  const bool col_ok = gc < N;  // N is even: a pair is wholly in or out
  float2 b = make_float2(0.f, 0.f);
  if (bias && col_ok) b = unpack16<H>(*reinterpret_cast<const uint32_t*>(bias + gc));
  const int64_t row_step = int64_t(kRowStep) * N;  // elements between the rows of y a thread writes
  uint32_t res[kSteps];
#pragma unroll
  for (int j = 0; j < kSteps; ++j)
    res[j] = residual && col_ok && first + j * kRowStep < row1
                 ? *reinterpret_cast<const uint32_t*>(residual + int64_t(first) * N + gc + j * row_step)
                 : 0u;
  // The operands: thread t copies 16-byte vector t % kVecs of rows t / kVecs, + kLoadRows, ...
  constexpr int kVecs = kChunk / 8, kLoadRows = kThreads / kVecs;
  const int lr = threadIdx.x / kVecs, lv = threadIdx.x % kVecs;
  const int64_t step = int64_t(kLoadRows) * K;  // elements between a thread's rows
  const H* wp = w + int64_t(col0 + lr) * K + k0 + lv * 8;
  const uint32_t ws = smem_addr(w_s + lr * kLd + lv * 8);
#pragma unroll
  for (int j = 0; j < kCols / kLoadRows; ++j) {
    const bool ok = col0 + lr + j * kLoadRows < N;
    cp_async16_sa(ws + j * kLoadRows * kLd * 2, ok ? wp + j * step : w, ok);
  }
  const H* xp = x + int64_t(lr) * K + k0 + lv * 8;
  const uint32_t xs = smem_addr(a_s + lr * kLd + lv * 8);
#pragma unroll
  for (int j = 0; j < kMaxRows / kLoadRows; ++j) {
    const int r = lr + j * kLoadRows;
    if (r >= (M + 15) / 16 * 16) break;
    cp_async16_sa(xs + j * kLoadRows * kLd * 2, r < M ? xp + j * step : x, r < M);
  }
  cp_async_wait_all();
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool active = warp * 16 < M;  // warp-uniform
  float c[kCols / 8][4];
  if (active) warp_tile_abt<H, kChunk, kCols>(c, a_s + warp * 16 * kLd, kLd, w_s, kLd, lane);
  __syncthreads();  // the operands' space now holds the fp32 partials
  float* part = reinterpret_cast<float*>(smem);  // rows x kPartLd: a half-warp's stores hit 32 banks
  constexpr int kPartLd = kCols + 8;
  if (active) {
    const int gr = lane / 4, tq = lane % 4;
#pragma unroll
    for (int n = 0; n < kCols / 8; ++n)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<float2*>(part + (warp * 16 + gr + 8 * h) * kPartLd + 8 * n + 2 * tq) =
            make_float2(c[n][2 * h], c[n][2 * h + 1]);
  }
  if (ranks > 1)
    cluster.sync();  // every rank's partials written
  else
    __syncthreads();
  float2 sum[kSteps];
#pragma unroll
  for (int j = 0; j < kSteps; ++j) sum[j] = b;
  for (int q = 0; q < ranks; ++q) {  // rank order: the same sums on every run
    const float* pq = (ranks > 1 ? cluster.map_shared_rank(part, q) : part) + first * kPartLd + col;
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      if (first + j * kRowStep >= row1) break;
      const float2 p = *reinterpret_cast<const float2*>(pq + j * kRowStep * kPartLd);
      sum[j].x += p.x, sum[j].y += p.y;
    }
  }
  if (col_ok) {
    H* yp = y + int64_t(first) * N + gc;
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      if (first + j * kRowStep >= row1) break;
      float2 v = sum[j];
      if (relu) v.x = fmaxf(v.x, 0.f), v.y = fmaxf(v.y, 0.f);
      const float2 r = unpack16<H>(res[j]);  // 0 without a residual
      *reinterpret_cast<uint32_t*>(yp + j * row_step) = pack16<H>(v.x + r.x, v.y + r.y);
    }
  }
  if (ranks > 1) cluster.sync();  // no rank leaves while another still reads its partials
#endif
}

// Whether the device runs a cluster of `ranks` blocks of the largest shared-memory size (asked
// once per storage type and cluster size; a GPU partition may hold fewer blocks a cluster).
template <class H>
bool clusters_fit(int ranks) {
  static std::array<int, kMaxRanks + 1> known{};  // 0 unknown, 1 fits, 2 does not
  if (!known[ranks]) {
    const size_t smem = smem_bytes(kMaxRows);
    CUDA_CHECK(cudaFuncSetAttribute(linear_few_rows_kernel<H>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(ranks, 1, 1);
    cfg.blockDim = dim3(kThreads, 1, 1);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = ranks, attr.val.clusterDim.y = 1, attr.val.clusterDim.z = 1;
    cfg.attrs = &attr, cfg.numAttrs = 1;
    int clusters = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, linear_few_rows_kernel<H>, &cfg));
    known[ranks] = clusters >= 1 ? 1 : 2;
  }
  return known[ranks] == 1;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool linear_few_rows(CudaContext& ctx, DType dt, int64_t M, int64_t N, int64_t K, const void* x, const void* w,
                     const void* bias, Act act, const void* residual, void* y) {
  if (!ctx.hopper_kernels || (dt != DType::BF16 && dt != DType::F16)) return false;
  if (M < 1 || M > kMaxRows || K % kChunk || K > kChunk * kMaxRanks || N % 8 || N > 65535 * kCols) return false;
  if (act != Act::None && act != Act::ReLU) return false;
  if (!aligned16(x) || !aligned16(w) || !aligned16(y) || (bias && !aligned16(bias)) ||
      (residual && !aligned16(residual)))
    return false;
  const int ranks = static_cast<int>(K / kChunk);
  const bool fits = dt == DType::BF16 ? clusters_fit<__nv_bfloat16>(ranks) : clusters_fit<__half>(ranks);
  if (!fits) return false;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(ranks, static_cast<unsigned>((N + kCols - 1) / kCols), 1);
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = smem_bytes(M);
  cfg.stream = ctx.stream;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = ranks, attr.val.clusterDim.y = 1, attr.val.clusterDim.z = 1;
  cfg.attrs = &attr, cfg.numAttrs = ranks > 1 ? 1 : 0;  // one block of K: no cluster
  auto launch = [&](auto type) {
    using T = decltype(type);
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, linear_few_rows_kernel<T>, static_cast<const T*>(x), static_cast<const T*>(w),
                                  static_cast<const T*>(bias), static_cast<const T*>(residual), static_cast<T*>(y),
                                  (int)M, (int)N, (int)K, int(act == Act::ReLU)));
  };
  if (dt == DType::BF16)
    launch(__nv_bfloat16{});
  else
    launch(__half{});
  return true;
}

}  // namespace samfast::cuda
