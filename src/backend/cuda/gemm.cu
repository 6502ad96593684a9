// GEMM-shaped ops of the CUDA backend: Linear, Conv2d (im2col + GEMM), ConvTranspose2d 2x2
// (GEMM + scatter), batched matmul; and the context that owns the cuBLAS(Lt) handles.
// Every GEMM goes through cuda::gemm, which runs cuBLASLt with the bias (and ReLU) fused into its
// epilogue and the residual as its C operand (beta = 1). GELU: cuBLASLt's epilogue is the tanh form,
// whose largest difference from upstream's exact erf GELU is 4.7e-4 (at x = 2.7, where a bf16 value's
// rounding step is 1.6e-2 and an fp16 value's 2.0e-3): 16-bit outputs take it in the epilogue (no
// extra pass over the 4x-wide MLP activation); fp32 outputs, which must match upstream to 1e-4, get
// exact erf GELU in one small fused kernel after the GEMM.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <cuda_fp8.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace samfast {

CudaContext::CudaContext(int dev) : device(dev) {
  size_t smem_cap = SIZE_MAX;  // SAMFAST_MAX_SMEM_PER_BLOCK (see cuda_ops.h), read before anything is created
  if (const char* cap = std::getenv("SAMFAST_MAX_SMEM_PER_BLOCK")) {
    char* end = nullptr;
    smem_cap = std::strtoull(cap, &end, 10);
    if (end == cap || *end != '\0')
      throw Error(std::string("SAMFAST_MAX_SMEM_PER_BLOCK: expected a number of bytes, got '") + cap + "'");
  }
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  if (dev < 0 || dev >= count)
    throw Error("CUDA device " + std::to_string(dev) + " does not exist (" + std::to_string(count) + " devices)");
  CUDA_CHECK(cudaSetDevice(dev));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&cublas));
  CUBLAS_CHECK(cublasSetStream(cublas, stream));
  CUBLAS_CHECK(cublasSetMathMode(cublas, CUBLAS_DEFAULT_MATH));  // no TF32
  CUBLAS_CHECK(cublasLtCreate(&lt));
  CUDA_CHECK(cudaMalloc(&workspace, workspace_bytes));
  CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&cc_minor, cudaDevAttrComputeCapabilityMinor, dev));
  const char* generic = std::getenv("SAMFAST_GENERIC_KERNELS");
  hopper_kernels = cc_major == 9 && !(generic && std::string(generic) == "1");
  int smem = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  max_smem_per_block = static_cast<size_t>(smem);
  max_smem_per_block = std::min(max_smem_per_block, smem_cap);
  pool = std::make_shared<cuda::DevicePool>(dev);
}

CudaContext::~CudaContext() {
  // No throwing here: release what exists, in reverse order.
  cudaSetDevice(device);
  if (stream) cudaStreamSynchronize(stream);
  gemm_plans.clear();
  if (workspace) cudaFree(workspace);
  if (lt) cublasLtDestroy(lt);
  if (cublas) cublasDestroy(cublas);
  if (stream) cudaStreamDestroy(stream);
}

namespace cuda {

void GemmPlanCache::clear() {
  for (auto& [key, p] : plans_) {
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    if (p.d) cublasLtMatrixLayoutDestroy(p.d);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  }
  plans_.clear();
}

namespace {

cudaDataType_t cuda_type(DType t) {
  if (t == DType::F32) return CUDA_R_32F;
  if (t == DType::BF16) return CUDA_R_16BF;
  if (t == DType::F16) return CUDA_R_16F;
  throw Error("CUDA backend: unknown storage type");
}

int64_t alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  int64_t a = 256;
  while (a > 1 && v % a) a /= 2;
  return a;
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, t, rows, cols, ld));
  if (batch > 1) {
    const int32_t b32 = static_cast<int32_t>(batch);
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b32, sizeof b32));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }
  return l;
}

cublasLtEpilogue_t epilogue_of(bool bias, Act act) {
  if (act == Act::ReLU) return bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
  if (act == Act::GELU) return bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  return bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

// Up to kMaxAlgos of the heuristic's algorithms for the plan's descriptors, best guess first (none:
// cuBLASLt offers nothing for this shape); align: the operands' alignment in bytes, or 0 for
// cuBLASLt's default assumption.
constexpr int kMaxAlgos = 8;
std::vector<cublasLtMatmulAlgo_t> heuristic_algos(CudaContext& ctx, const GemmPlan& p, uint32_t align) {
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &ctx.workspace_bytes, sizeof ctx.workspace_bytes));
  if (align)
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof align));
  cublasLtMatmulHeuristicResult_t results[kMaxAlgos]{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(ctx.lt, p.desc, p.a, p.b, p.c, p.d ? p.d : p.c, pref, kMaxAlgos, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  std::vector<cublasLtMatmulAlgo_t> algos;
  if (st == CUBLAS_STATUS_SUCCESS)
    for (int i = 0; i < found; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS) algos.push_back(results[i].algo);
  return algos;
}

// Whether a new plan's candidates are timed on its first call (large products only, and never while
// the stream is being captured into a CUDA graph, which forbids the synchronisation): the heuristic's
// first choice is not the fastest for some of vit_b's shapes. SAMFAST_GEMM_TUNE=0 turns it off.
bool tune_allowed(CudaContext& ctx, double flops) {
  static const bool enabled = [] {
    const char* v = std::getenv("SAMFAST_GEMM_TUNE");
    return !(v && std::string(v) == "0");
  }();
  if (!enabled || flops < 1e9) return false;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(ctx.stream, &capture));
  return capture == cudaStreamCaptureStatusNone;
}

// The fastest of the candidates by run(algo) (3 timed runs each after a warm-up run); candidates that
// fail to run are skipped.
template <class Run>
const cublasLtMatmulAlgo_t* fastest_algo(CudaContext& ctx, const std::vector<cublasLtMatmulAlgo_t>& algos, Run run) {
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  const cublasLtMatmulAlgo_t* best = nullptr;
  float best_ms = 0.f;
  for (const auto& algo : algos) {
    if (run(algo) != CUBLAS_STATUS_SUCCESS) continue;
    CUDA_CHECK(cudaEventRecord(start, ctx.stream));
    bool ok = true;
    for (int r = 0; r < 3 && ok; ++r) ok = run(algo) == CUBLAS_STATUS_SUCCESS;
    CUDA_CHECK(cudaEventRecord(stop, ctx.stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (ok && (!best || ms < best_ms)) best = &algo, best_ms = ms;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

// A new plan's algorithm: the heuristic's first, or the fastest of its candidates where tuning is
// allowed (run(algo) runs the plan's GEMM on the call's operands; c_is_input: C is also read, so
// the timing runs would change the result).
template <class Run>
void pick_algo(CudaContext& ctx, GemmPlan& p, uint32_t align, double flops, bool c_is_input, Run run) {
  const std::vector<cublasLtMatmulAlgo_t> algos = heuristic_algos(ctx, p, align);
  if (algos.empty()) return;
  p.algo = algos.front(), p.has_algo = true;
  if (algos.size() > 1 && !c_is_input && tune_allowed(ctx, flops))
    if (const cublasLtMatmulAlgo_t* best = fastest_algo(ctx, algos, run)) p.algo = *best;
}

// A new plan (the one place plans are made, for every GEMM of the cache): a matmul descriptor with
// fp32 compute and scale, op(first operand) ta, the second not transposed, the epilogue epi; then
// configure(p) adds the layouts and the GEMM's own attributes, and pick_algo its algorithm
// (run(p, algo) runs the plan's GEMM on the call's operands).
template <class Configure, class Run>
GemmPlan new_plan(CudaContext& ctx, cublasOperation_t ta, cublasLtEpilogue_t epi, uint32_t align, double flops,
                  bool c_is_input, Configure configure, Run run) {
  GemmPlan p;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t tb = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  configure(p);
  pick_algo(ctx, p, align, flops, c_is_input, [&](const cublasLtMatmulAlgo_t& algo) { return run(p, algo); });
  return p;
}

}  // namespace

void gemm(CudaContext& ctx, DType dt, bool b_transposed, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
          const void* B, int64_t ldb, void* C, int64_t ldc, const void* bias, Act act, const void* residual,
          int64_t batch, int64_t sA, int64_t sB, int64_t sC, bool f32_out, int64_t s_residual) {
  if (M == 0 || N == 0 || batch == 0) return;
  if (s_residual < 0 || batch == 1) s_residual = sC;
  if (residual && s_residual != sC && act != Act::None)  // (the activation pass would add it densely)
    throw Error("gemm: a residual shared by the batch takes no activation");
  if (f32_out && (bias || act != Act::None || residual)) throw Error("gemm: an fp32 output takes no epilogue");
  if ((bias || act != Act::None || residual) && (ldc != N || (batch > 1 && sC != M * N)))
    throw Error("gemm: bias, activation or residual need a dense output (ldc == N)");
  if (dt == DType::BF16 && b_transposed && batch == 1 && !f32_out && bias && lda == K && ldb == K && ldc == N &&
      C != residual && std::min({alignment(A), alignment(B), alignment(C), alignment(bias),
                                 residual ? alignment(residual) : 256}) >= 16 &&
      gemm_bf16_cutlass_ok(ctx, M, N, K, act, residual != nullptr))
    return gemm_bf16_cutlass(ctx, M, N, K, A, B, bias, act, residual, C);
  // Row-major C (M, N) is column-major C^T (N, M) = op(B)^T (N, K) x A^T (K, M): cuBLAS's first
  // operand is our B, its second our A.
  const bool relu_in_epilogue = act == Act::ReLU && !residual;
  const bool gelu_in_epilogue = act == Act::GELU && !residual && dt != DType::F32;
  const Act epi_act = relu_in_epilogue ? Act::ReLU : gelu_in_epilogue ? Act::GELU : Act::None;
  const bool post = act != Act::None && epi_act == Act::None;  // exact GELU, or an activation before the residual
  const void* c_in = post ? nullptr : residual;               // residual as C with beta = 1
  const cublasLtEpilogue_t epi = epilogue_of(bias != nullptr, epi_act);
  int64_t align = std::min({alignment(A), alignment(B), alignment(C), c_in ? alignment(c_in) : 256,
                            bias ? alignment(bias) : 256});
  const GemmPlanCache::Key key{(int64_t)dt, b_transposed, M, N, K, lda, ldb, ldc, batch, sA, sB, sC,
                              (int64_t)epi, c_in != nullptr, align, f32_out, s_residual};
  const cudaDataType_t t = cuda_type(dt), tc = f32_out ? CUDA_R_32F : t;
  const float alpha = 1.f, beta = c_in ? 1.f : 0.f;
  auto matmul = [&](const GemmPlan& p, const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(ctx.lt, p.desc, &alpha, B, p.a, A, p.b, &beta, c_in ? c_in : C, p.c, C, p.d ? p.d : p.c,
                          &algo, ctx.workspace, ctx.workspace_bytes, ctx.stream);
  };
  const GemmPlan& p = ctx.gemm_plans.get(key, [&] {
    auto configure = [&](GemmPlan& plan) {
      plan.a = b_transposed ? make_layout(t, K, N, ldb, batch, sB) : make_layout(t, N, K, ldb, batch, sB);
      plan.b = make_layout(t, K, M, lda, batch, sA);
      plan.c = make_layout(tc, N, M, ldc, batch, c_in ? s_residual : sC);
      if (c_in && s_residual != sC) plan.d = make_layout(tc, N, M, ldc, batch, sC);  // the output's own
      if (bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    };
    return new_plan(ctx, b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N, epi, static_cast<uint32_t>(align),
                    2.0 * M * N * K * batch, C == c_in, configure, matmul);
  });
  if (p.has_algo) {
    if (bias)
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    CUBLAS_CHECK(matmul(p, p.algo));
  } else {  // no cuBLASLt kernel for this shape: plain cuBLAS, then bias / activation in our kernel
    const size_t problem = element_size(dt) * (size_t)(M * N);
    if (c_in && s_residual == sC)
      CUDA_CHECK(cudaMemcpyAsync(C, c_in, problem * batch, cudaMemcpyDeviceToDevice, ctx.stream));
    else if (c_in)  // a problem at a time (s_residual 0: one residual shared by all)
      for (int64_t i = 0; i < batch; ++i)
        CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(C) + element_size(dt) * i * sC,
                                   static_cast<const char*>(c_in) + element_size(dt) * i * s_residual, problem,
                                   cudaMemcpyDeviceToDevice, ctx.stream));
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(ctx.cublas, b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, (int)N,
                                            (int)M, (int)K, &alpha, B, t, (int)ldb, sB, A, t, (int)lda, sA, &beta, C,
                                            tc, (int)ldc, sC, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias || epi_act != Act::None) bias_act_residual(ctx, dt, C, M * batch, N, bias, epi_act, nullptr);
  }
  if (post) bias_act_residual(ctx, dt, C, M * batch, N, nullptr, act, residual);
}

namespace {

// One block a row, the row held in registers (kChunks 16-byte chunks a thread): its largest
// magnitude (a block reduction), then the row scaled to fp8's range (448) and rounded to nearest,
// saturating. One read of the input: the kernel is memory-bound, and a second read of each row is a
// second pass over the activations.
constexpr int kQuantThreads = 128, kQuantMaxChunks = 8;  // rows of up to 8192 values

template <int kChunks>
__global__ void __launch_bounds__(kQuantThreads) quantize_rows_fp8_kernel(const __nv_bfloat16* __restrict__ x, int K,
                                                                         __nv_fp8x4_e4m3* __restrict__ q,
                                                                         float* __restrict__ scale) {
  __shared__ float warp_max[kQuantThreads / 32];
  const int64_t row = blockIdx.x;
  const int n = K / 8;
  const uint4* src = reinterpret_cast<const uint4*>(x + row * K);
  uint4 v[kChunks];
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = threadIdx.x + j * kQuantThreads;
    v[j] = c < n ? src[c] : make_uint4(0, 0, 0, 0);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v[j]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      amax = fmaxf(amax, fmaxf(fabsf(f.x), fabsf(f.y)));
    }
  }
  for (int sh = 16; sh > 0; sh /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, sh));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = amax;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kQuantThreads / 32; ++w) amax = fmaxf(amax, warp_max[w]);
  const float inv = amax > 0.f ? 448.f / amax : 1.f;
  if (threadIdx.x == 0) scale[row] = amax > 0.f ? amax / 448.f : 1.f;
  uint2* dst = reinterpret_cast<uint2*>(q + row * (K / 4));
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = threadIdx.x + j * kQuantThreads;
    if (c >= n) break;
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v[j]);
    const float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
    const float2 cc = __bfloat1622float2(h[2]), d = __bfloat1622float2(h[3]);
    const __nv_fp8x4_e4m3 lo(make_float4(a.x * inv, a.y * inv, b.x * inv, b.y * inv));
    const __nv_fp8x4_e4m3 hi(make_float4(cc.x * inv, cc.y * inv, d.x * inv, d.y * inv));
    dst[c] = make_uint2(lo.__x, hi.__x);
  }
}

// The encoder's LayerNorm straight into the fp8 GEMM's input (norm1 -> qkv, norm2 -> lin1): a warp a
// row, kNV 16-byte chunks a lane in registers, the mean and variance as elementwise.cu's vectorised
// LayerNorm sums them, each value rounded to bf16 as that LayerNorm writes it, then the row's amax
// and its fp8 values and scale as quantize_rows_fp8_kernel makes them from those bf16 values: the
// same numbers as the two kernels, without writing the bf16 rows out and reading them back.
// With kTensorScale, every row is scaled by 1 / *tensor_scale (fp8_bounds) and no row scale written.
template <int kNV, bool kTensorScale>
__global__ void __launch_bounds__(256) layer_norm_rows_fp8_kernel(const __nv_bfloat16* __restrict__ x,
                                                                  const __nv_bfloat16* __restrict__ w,
                                                                  const __nv_bfloat16* __restrict__ b, int64_t rows,
                                                                  int C, float eps, __nv_fp8x4_e4m3* __restrict__ q,
                                                                  float* __restrict__ scale,
                                                                  const float* __restrict__ tensor_scale) {
  const int lane = threadIdx.x % 32, nvec = C / 8;
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const bool active = row < rows;  // inactive lanes still join the shuffles
  float v[kNV][8];
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < kNV; ++j) {
    const int c = lane + j * 32;
    uint4 raw = make_uint4(0, 0, 0, 0);
    if (active && c < nvec) raw = reinterpret_cast<const uint4*>(x + row * C)[c];
    const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&raw);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[j][k] = __bfloat162float(e[k]), s += v[j][k];
  }
  for (int o = 16; o; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float mean = s / C;
  float var = 0.f;
#pragma unroll
  for (int j = 0; j < kNV; ++j)
    if (lane + j * 32 < nvec)
#pragma unroll
      for (int k = 0; k < 8; ++k) var += (v[j][k] - mean) * (v[j][k] - mean);
  for (int o = 16; o; o /= 2) var += __shfl_xor_sync(0xffffffffu, var, o);
  const float rstd = rsqrtf(var / C + eps);
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < kNV; ++j) {
    const int c = lane + j * 32;
    if (!active || c >= nvec) continue;
    const uint4 rw = reinterpret_cast<const uint4*>(w)[c], rb = reinterpret_cast<const uint4*>(b)[c];
    const __nv_bfloat16* ew = reinterpret_cast<const __nv_bfloat16*>(&rw);
    const __nv_bfloat16* eb = reinterpret_cast<const __nv_bfloat16*>(&rb);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      v[j][k] = __bfloat162float(__float2bfloat16_rn((v[j][k] - mean) * rstd * __bfloat162float(ew[k]) + __bfloat162float(eb[k])));
      amax = fmaxf(amax, fabsf(v[j][k]));
    }
  }
  float inv;
  if constexpr (kTensorScale) {
    if (!active) return;
    inv = 1.f / *tensor_scale;
  } else {
    for (int o = 16; o; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (!active) return;
    inv = amax > 0.f ? 448.f / amax : 1.f;
    if (lane == 0) scale[row] = amax > 0.f ? amax / 448.f : 1.f;
  }
  uint2* dst = reinterpret_cast<uint2*>(q + row * (C / 4));
#pragma unroll
  for (int j = 0; j < kNV; ++j) {
    const int c = lane + j * 32;
    if (c >= nvec) continue;
    const float* f = v[j];
    const __nv_fp8x4_e4m3 lo(make_float4(f[0] * inv, f[1] * inv, f[2] * inv, f[3] * inv));
    const __nv_fp8x4_e4m3 hi(make_float4(f[4] * inv, f[5] * inv, f[6] * inv, f[7] * inv));
    dst[c] = make_uint2(lo.__x, hi.__x);
  }
}

}  // namespace

bool layer_norm_fp8_ok(int64_t C) { return fp8_row_length_ok(C) && C / 8 <= 32 * 6; }

void layer_norm_rows_fp8(CudaContext& ctx, const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* b,
                         int64_t rows, int64_t C, float eps, void* q, float* scale, const float* tensor_scale) {
  if (!layer_norm_fp8_ok(C)) throw Error("layer_norm_rows_fp8: row length " + std::to_string(C) + " is not supported");
  if (rows == 0) return;
  const int threads = 256;
  const unsigned grid = static_cast<unsigned>((rows * 32 + threads - 1) / threads);
  auto* qq = static_cast<__nv_fp8x4_e4m3*>(q);
  switch ((C / 8 + 31) / 32 * 2 + (tensor_scale != nullptr)) {
#define SAMFAST_LN_FP8_CASE(N)                                                                                          \
  case 2 * N:                                                                                                           \
    layer_norm_rows_fp8_kernel<N, false><<<grid, threads, 0, ctx.stream>>>(x, w, b, rows, (int)C, eps, qq, scale,      \
                                                                           nullptr);                                   \
    break;                                                                                                              \
  case 2 * N + 1:                                                                                                       \
    layer_norm_rows_fp8_kernel<N, true><<<grid, threads, 0, ctx.stream>>>(x, w, b, rows, (int)C, eps, qq, nullptr,     \
                                                                          tensor_scale);                               \
    break;
    SAMFAST_LN_FP8_CASE(1) SAMFAST_LN_FP8_CASE(2) SAMFAST_LN_FP8_CASE(3) SAMFAST_LN_FP8_CASE(4)
    SAMFAST_LN_FP8_CASE(5) SAMFAST_LN_FP8_CASE(6)
#undef SAMFAST_LN_FP8_CASE
  }
  CUDA_LAUNCH_CHECK();
}

namespace {

// atomicMax for floats >= 0, whose bit patterns order as unsigned integers do.
__device__ void atomic_max_nonneg(float* a, float v) {
  atomicMax(reinterpret_cast<unsigned*>(a), __float_as_uint(v));
}

// Load time only (a block of 256 threads): the weight's amax into stats[1] (zeroed before).
__global__ void weight_amax_kernel(const __nv_bfloat16* __restrict__ w, int64_t n, float* stats) {
  float m = 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    m = fmaxf(m, fabsf(__bfloat162float(w[i])));
  __shared__ float red[8];
  m = cuda::block_max(m, red);
  if (threadIdx.x == 0) atomic_max_nonneg(stats + 1, m);
}

// A block a row: the row quantised with the tensor's scale, its quantised norm into stats[0].
__global__ void quantize_weight_fp8_kernel(const __nv_bfloat16* __restrict__ w, int K, __nv_fp8_e4m3* __restrict__ q,
                                           float* __restrict__ scale, float* stats) {
  const int64_t row = blockIdx.x;
  const float amax = stats[1], s = amax > 0.f ? amax / 448.f : 1.f, inv = 1.f / s;
  float sq = 0.f;
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    const __nv_fp8_e4m3 v(__bfloat162float(w[row * K + k]) * inv);
    q[row * K + k] = v;
    const float d = static_cast<float>(v) * s;
    sq += d * d;
  }
  __shared__ float red[8];
  sq = cuda::block_sum(sq, red);
  if (threadIdx.x == 0) {
    scale[row] = s;
    atomic_max_nonneg(stats, sqrtf(sq));
  }
}

// The bounds (fp8_bounds). LayerNorm's output is w * n + b with n of zero mean and mean square at
// most 1 (exactly var / (var + eps)), so |n_k| <= sqrt(C - 1) and ||n|| <= sqrt(C): each output value
// is at most max_k |w_k| sqrt(C - 1) + |b_k| (+1% for its rounding to bf16), a row's norm at most
// max |w| sqrt(C) + ||b||. Quantised, a value moves by at most 1/16 of itself (E4M3 keeps 3 mantissa
// bits) or by scale / 1024 below E4M3's normal range. A value of the GEMM's product is then at most
// the row norm times the weight's largest row norm (Cauchy-Schwarz) plus the bias; GELU keeps it
// within that (or -0.17); 25% is left for the accumulation's rounding. The bounds exceed the values
// met (Cauchy-Schwarz by about sqrt(C) for vectors that do not line up), which costs little: E4M3
// keeps 3 mantissa bits over 15 octaves, so only values below 2^-6 / 448 of the bound leave its
// normal range, and they are then rounded by at most 2^-19 of the bound, far below the 1/16
// relative rounding of the values that carry the sum. Per-row scales (quantize_rows_fp8) would
// need a pass over the activations: 6% of vit_h's fp8 encoder (BENCHMARKS.md).
__global__ void fp8_bounds_kernel(const __nv_bfloat16* __restrict__ ln_w, const __nv_bfloat16* __restrict__ ln_b,
                                  int C, const __nv_bfloat16* __restrict__ bias, int N, const float* w_stats,
                                  float* out) {
  const float root = sqrtf(float(C - 1));
  float value = 0.f, wmax = 0.f, bsq = 0.f, bias_max = 0.f;
  for (int k = threadIdx.x; k < C; k += blockDim.x) {
    const float g = fabsf(__bfloat162float(ln_w[k])), be = __bfloat162float(ln_b[k]);
    value = fmaxf(value, g * root + fabsf(be));
    wmax = fmaxf(wmax, g);
    bsq += be * be;
  }
  if (bias)
    for (int j = threadIdx.x; j < N; j += blockDim.x) bias_max = fmaxf(bias_max, fabsf(__bfloat162float(bias[j])));
  __shared__ float red[8];
  value = cuda::block_max(value, red);
  wmax = cuda::block_max(wmax, red);
  bsq = cuda::block_sum(bsq, red);
  bias_max = cuda::block_max(bias_max, red);
  if (threadIdx.x != 0) return;
  const float bound = 1.01f * value, s = bound > 0.f ? bound / 448.f : 1.f;
  out[0] = s;
  if (!w_stats) return;
  const float root_c = sqrtf(float(C));
  const float row_norm = (1.f + 1.f / 16.f) * 1.01f * (wmax * root_c + sqrtf(bsq)) + root_c * s / 1024.f;
  const float z = fmaxf(1.25f * (row_norm * w_stats[0] + bias_max), 0.17f);
  out[kFp8ScaleStride] = 448.f / z;
  out[2 * kFp8ScaleStride] = z / 448.f;
}

}  // namespace

void quantize_weight_fp8(CudaContext& ctx, const __nv_bfloat16* w, int64_t rows, int64_t K, void* q, float* scale,
                         float* stats) {
  CUDA_CHECK(cudaMemsetAsync(stats, 0, 2 * sizeof(float), ctx.stream));
  if (rows == 0 || K == 0) return;
  weight_amax_kernel<<<cuda::blocks_for(rows * K, 256), 256, 0, ctx.stream>>>(w, rows * K, stats);
  CUDA_LAUNCH_CHECK();
  quantize_weight_fp8_kernel<<<static_cast<unsigned>(rows), 256, 0, ctx.stream>>>(
      w, static_cast<int>(K), static_cast<__nv_fp8_e4m3*>(q), scale, stats);
  CUDA_LAUNCH_CHECK();
}

void fp8_bounds(CudaContext& ctx, const __nv_bfloat16* ln_w, const __nv_bfloat16* ln_b, int64_t C,
                const __nv_bfloat16* bias, int64_t N, const float* w_stats, float* out) {
  fp8_bounds_kernel<<<1, 256, 0, ctx.stream>>>(ln_w, ln_b, static_cast<int>(C), bias, static_cast<int>(N), w_stats,
                                               out);
  CUDA_LAUNCH_CHECK();
}

namespace {
// 8 values a thread: 16 bytes read, 8 written.
__global__ void scale_to_fp8_kernel(const uint4* __restrict__ x, int64_t n8, uint2* __restrict__ q,
                                    const float* __restrict__ scale) {
  const float s = *scale;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8; i += int64_t(gridDim.x) * blockDim.x) {
    const uint4 v = x[i];
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
    const float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
    const float2 c = __bfloat1622float2(h[2]), d = __bfloat1622float2(h[3]);
    const __nv_fp8x4_e4m3 lo(make_float4(a.x * s, a.y * s, b.x * s, b.y * s));
    const __nv_fp8x4_e4m3 hi(make_float4(c.x * s, c.y * s, d.x * s, d.y * s));
    q[i] = make_uint2(lo.__x, hi.__x);
  }
}
}  // namespace

void scale_to_fp8(CudaContext& ctx, const __nv_bfloat16* x, int64_t n, void* q, const float* scale) {
  if (n % 8 != 0) throw Error("scale_to_fp8: " + std::to_string(n) + " values, not a multiple of 8");
  if (n == 0) return;
  scale_to_fp8_kernel<<<cuda::blocks_for(n / 8, 256), 256, 0, ctx.stream>>>(
      reinterpret_cast<const uint4*>(x), n / 8, static_cast<uint2*>(q), scale);
  CUDA_LAUNCH_CHECK();
}

bool fp8_row_length_ok(int64_t K) { return K % 16 == 0 && K <= 8 * kQuantThreads * kQuantMaxChunks; }

void quantize_rows_fp8(CudaContext& ctx, const __nv_bfloat16* x, int64_t rows, int64_t K, void* q, float* scale) {
  if (!fp8_row_length_ok(K)) throw Error("quantize_rows_fp8: row length " + std::to_string(K) + " is not supported");
  if (rows == 0) return;
  const int chunks = static_cast<int>((K / 8 + kQuantThreads - 1) / kQuantThreads);
  auto* qq = static_cast<__nv_fp8x4_e4m3*>(q);
  const unsigned grid = static_cast<unsigned>(rows);
  switch (chunks) {
#define SAMFAST_QUANT_CASE(N) \
  case N: quantize_rows_fp8_kernel<N><<<grid, kQuantThreads, 0, ctx.stream>>>(x, (int)K, qq, scale); break;
    SAMFAST_QUANT_CASE(1) SAMFAST_QUANT_CASE(2) SAMFAST_QUANT_CASE(3) SAMFAST_QUANT_CASE(4)
    SAMFAST_QUANT_CASE(5) SAMFAST_QUANT_CASE(6) SAMFAST_QUANT_CASE(7) SAMFAST_QUANT_CASE(8)
#undef SAMFAST_QUANT_CASE
  }
  CUDA_LAUNCH_CHECK();
}

void gemm_fp8(CudaContext& ctx, int64_t M, int64_t N, int64_t K, const void* A, const float* a_scale, const void* W,
              const float* w_scale, void* C, const void* bias, Act act, const void* residual, Fp8Scales scales,
              const float* out_scale) {
  if (M == 0 || N == 0) return;
  const bool fp8_out = out_scale != nullptr;
  if (fp8_out && (residual || scales != Fp8Scales::Tensor))
    throw Error("gemm_fp8: an fp8 output takes per-tensor scales and no residual");
  if (bias && !residual && scales == Fp8Scales::Tensor && gemm_fp8_cutlass_ok(ctx, M, N, K, act, fp8_out))
    return gemm_fp8_cutlass(ctx, M, N, K, A, a_scale, W, w_scale, bias, act, C, out_scale);
  // As in gemm(): cuBLAS's first operand is the weight (N x K, transposed), its second the
  // activations; its "A" scale is the weight's.
  const bool post = act != Act::None && residual;  // activation first, then the residual
  const void* c_in = post ? nullptr : residual;
  const cublasLtEpilogue_t epi = epilogue_of(bias != nullptr, post ? Act::None : act);
  // (-1 where gemm()'s keys have the storage type: the fp8 plans apart from the 16-bit ones)
  const GemmPlanCache::Key key{-1, 0, M, N, K, (int64_t)scales, fp8_out, 0, 1, 0, 0, 0, (int64_t)epi, c_in != nullptr,
                              0, 0};
  const float alpha = 1.f, beta = c_in ? 1.f : 0.f;
  // (an fp8 output reads no C: beta is 0, and C's type, bf16, is not the output's)
  const void* c_ptr = c_in ? c_in : fp8_out ? nullptr : C;
  auto matmul = [&](const GemmPlan& p, const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(ctx.lt, p.desc, &alpha, W, p.a, A, p.b, &beta, c_ptr, p.c, C, p.d ? p.d : p.c, &algo,
                          ctx.workspace, ctx.workspace_bytes, ctx.stream);
  };
  // The heuristic looks at the scale (and bias) pointers: without them it offers no fp8 kernel. They
  // are set again at each call, as they change between calls.
  auto set_pointers = [&](cublasLtMatmulDesc_t desc) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof w_scale));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a_scale, sizeof a_scale));
    if (fp8_out)
      CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, &out_scale, sizeof out_scale));
    if (bias) CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  };
  const GemmPlan& p = ctx.gemm_plans.get(key, [&] {
    auto configure = [&](GemmPlan& plan) {
      const cudaDataType_t bias_type = CUDA_R_16BF;
      CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
      if (scales == Fp8Scales::RowsAndColumns) {  // (per-tensor is cuBLASLt's default)
        const cublasLtMatmulMatrixScale_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec, sizeof vec));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec, sizeof vec));
      }
      // Fast accumulation: the tensor cores' own accumulator over all of K, without cuBLASLt's
      // periodic promotion of partial sums to fp32, which slows the GEMMs (BENCHMARKS.md). Its
      // rounding is far below E4M3's own (3 mantissa bits): vit_b's parity figures did not move.
      const int8_t fast_accum = 1;
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast_accum,
                                                  sizeof fast_accum));
      set_pointers(plan.desc);
      plan.a = make_layout(CUDA_R_8F_E4M3, K, N, K, 1, 0);
      plan.b = make_layout(CUDA_R_8F_E4M3, K, M, K, 1, 0);
      plan.c = make_layout(CUDA_R_16BF, N, M, N, 1, 0);
      if (fp8_out) plan.d = make_layout(CUDA_R_8F_E4M3, N, M, N, 1, 0);
    };
    return new_plan(ctx, CUBLAS_OP_T, epi, 0, 2.0 * M * N * K, C == c_in, configure, matmul);
  });
  if (!p.has_algo)
    throw Error("fp8 GEMM (" + std::to_string(M) + " x " + std::to_string(N) + " x " + std::to_string(K) +
                "): cuBLASLt has no kernel for it on this GPU; use --precision bf16");
  set_pointers(p.desc);
  CUBLAS_CHECK(matmul(p, p.algo));
  if (post) bias_act_residual(ctx, DType::BF16, C, M, N, nullptr, act, residual);
}

}  // namespace cuda

namespace {

using cuda::from_f32;
using cuda::gelu;
using cuda::to_f32;

void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

// col (B*Ho*Wo, Cin*kh*kw) with columns ordered (ci, ky, kx), as the PyTorch weight (Cout, Cin, kh, kw).
// A thread writes the kw consecutive columns (ci, ky, 0..kw-1) of one row: its index arithmetic (in I:
// 32-bit when the tensors allow, as 64-bit divisions cost tens of instructions) is paid once per kw
// values, not per value as when a thread moves one element.
template <class T, class I>
__global__ void im2col_kernel(const T* __restrict x, T* __restrict col, I rows, I H, I W, I Cin, I kh, I kw, I Ho,
                              I Wo, I stride, I pad) {
  const I runs = Cin * kh, n = rows * runs;
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
    const I r = i / runs, c = i - r * runs;  // c = ci kh + ky
    const I ci = c / kh, ky = c - ci * kh;
    const I ox = r % Wo, rest = r / Wo, oy = rest % Ho, b = rest / Ho;
    const I iy = oy * stride - pad + ky, ix0 = ox * stride - pad;
    T* dst = col + i * kw;  // = row r, column c kw
    if (iy < 0 || iy >= H) {
      for (I kx = 0; kx < kw; ++kx) dst[kx] = from_f32<T>(0.f);
      continue;
    }
    const T* src = x + (b * H + iy) * W * Cin + ci;
    for (I kx = 0; kx < kw; ++kx) {
      const I ix = ix0 + kx;
      dst[kx] = ix >= 0 && ix < W ? src[ix * Cin] : from_f32<T>(0.f);
    }
  }
}

// The vectorised im2col: col's columns ordered (ky, kx, ci), so that the columns of one (ky, kx) are
// Cin consecutive channels of x (NHWC), and a thread writes 16 bytes. The weight is permuted to match
// (permute_conv_weight). (The (ci, ky, kx) kernel above writes 2 bytes at a time.)
// Cin not a multiple of the vector width V: V values gathered with incremental indices.
template <class T>
__global__ void im2col_vec_kernel(const T* __restrict x, T* __restrict col, int rows, int H, int W, int Cin, int kw,
                                  int K, int Ho, int Wo, int stride, int pad) {
  constexpr int V = 16 / sizeof(T);
  const int chunks = K / V, n = rows * chunks;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int r = i / chunks, k0 = (i - r * chunks) * V;
    const int ox = r % Wo, rest = r / Wo, oy = rest % Ho, b = rest / Ho;
    int ci = k0 % Cin, t = k0 / Cin, kx = t % kw, ky = t / kw;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    T* e = reinterpret_cast<T*>(&v);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
      if (iy >= 0 && iy < H && ix >= 0 && ix < W) e[j] = x[((int64_t(b) * H + iy) * W + ix) * Cin + ci];
      if (++ci == Cin) {
        ci = 0;
        if (++kx == kw) kx = 0, ++ky;
      }
    }
    *reinterpret_cast<uint4*>(col + int64_t(i) * V) = v;
  }
}

// Cin a multiple of V (the neck's 3x3 convolution): a 16-byte chunk is V channels of one pixel. A
// thread takes one chunk column of kIm2colRows consecutive rows, so that the divisions that place a
// chunk (its ky, kx, ci) and a row (its b, oy, ox) are done once for them all, not once a chunk as in
// the kernel above, where they outnumbered the copying.
constexpr int kIm2colRows = 8;

template <class T>
__global__ void im2col_rows_kernel(const T* __restrict x, T* __restrict col, int rows, int H, int W, int Cin, int kw,
                                   int K, int Ho, int Wo, int stride, int pad) {
  constexpr int V = 16 / sizeof(T);
  const int chunks = K / V, r0 = blockIdx.x * kIm2colRows, r1 = min(rows, r0 + kIm2colRows);
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    const int ci = c * V % Cin, t = c * V / Cin, kx = t % kw, ky = t / kw;
    int ox = r0 % Wo, oy = r0 / Wo % Ho, b = r0 / Wo / Ho;
#pragma unroll 4
    for (int r = r0; r < r1; ++r) {
      const int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (iy >= 0 && iy < H && ix >= 0 && ix < W)
        v = *reinterpret_cast<const uint4*>(x + ((int64_t(b) * H + iy) * W + ix) * Cin + ci);
      *reinterpret_cast<uint4*>(col + (int64_t(r) * chunks + c) * V) = v;
      if (++ox == Wo) {
        ox = 0;
        if (++oy == Ho) oy = 0, ++b;
      }
    }
  }
}

// The patch embedding's im2col from channel-first pixels (B, C, H, W): row (b, oy, ox) holds its
// patch in the weight's own (c, ky, kx) order, and each 16 bytes of it are 16 bytes of one pixel
// row, so that every load and store is a whole 16-byte vector. (From channel-last pixels, with C =
// 3, a 16-byte chunk of a row mixes pixels and channels and was gathered element by element, after
// a transpose of the image: two passes and ~3x the time.)
template <class T>
__global__ void patchify_kernel(const T* __restrict x, T* __restrict col, int64_t chunks, int C, int H, int W, int p) {
  constexpr int V = 16 / sizeof(T);
  const int Ho = H / p, Wo = W / p, row_chunks = C * p * p / V;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < chunks; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / row_chunks;
    const int k0 = int(i - r * row_chunks) * V, c = k0 / (p * p), ky = k0 / p % p, kx = k0 % p;
    const int ox = int(r % Wo), oy = int(r / Wo % Ho);
    const int64_t b = r / (int64_t(Wo) * Ho);
    reinterpret_cast<uint4*>(col)[i] =
        *reinterpret_cast<const uint4*>(x + ((b * C + c) * H + oy * p + ky) * int64_t(W) + ox * p + kx);
  }
}

// wp (Cout, kh, kw, Cin) from the PyTorch weight w (Cout, Cin, kh, kw): the column order of im2col_vec_kernel.
template <class T>
__global__ void permute_conv_weight(const T* __restrict w, T* __restrict wp, int Cout, int Cin, int kh, int kw) {
  const int K = Cin * kh * kw;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < Cout * K; i += gridDim.x * blockDim.x) {
    const int co = i / K, k = i - co * K, ci = k % Cin, t = k / Cin, kx = t % kw, ky = t / kw;
    wp[i] = w[((co * Cin + ci) * kh + ky) * kw + kx];
  }
}

// y (B, 2H, 2W, Cout) from tmp (B*H*W, Cout*4) whose columns are (co, dy, dx), the weight's own order.
// Index arithmetic in I: 32-bit when the tensor allows (64-bit division costs tens of instructions
// per element, which made this copy the decoder's slowest kernel).
template <class T, class I>
__global__ void scatter2x2_kernel(const T* __restrict tmp, const T* __restrict bias, T* __restrict y, I n, I H, I W,
                                  I Cout, Act act) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
    const I co = i % Cout, pix = i / Cout;
    const I ox = pix % (2 * W), rest = pix / (2 * W), oy = rest % (2 * H), b = rest / (2 * H);
    const I r = (b * H + oy / 2) * W + ox / 2;
    float v = to_f32(tmp[(r * Cout + co) * 4 + (oy % 2) * 2 + ox % 2]) + to_f32(bias[co]);
    if (act == Act::ReLU) v = fmaxf(v, 0.f);
    if (act == Act::GELU) v = gelu<T>(v);
    y[i] = from_f32<T>(v);
  }
}

// The vectorised path: tmp's columns in (dy, dx, co) order (the weight permuted by
// permute_convt_weight), so each output pixel's channels are one contiguous run of tmp and every
// thread moves 16 bytes both ways (the strided gather above ran at a fifth of the memory bandwidth
// and was the segment-everything decoder's slowest kernel).
template <class T>
__global__ void permute_convt_weight(const T* __restrict w, T* __restrict wp, int64_t Cin, int64_t Cout) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < Cin * Cout * 4; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ci = i / (Cout * 4), co = i / 4 % Cout, k = i % 4;  // w (Cin, Cout, 2, 2)
    wp[(ci * 4 + k) * Cout + co] = w[i];                                // wp (Cin, 2, 2, Cout)
  }
}

template <class T, class I>
__global__ void scatter2x2_vec_kernel(const T* __restrict tmp, const T* __restrict bias, T* __restrict y, I nvec, I H,
                                      I W, I Cout, Act act) {
  constexpr int kPer = 16 / sizeof(T);
  const I groups = Cout / kPer;
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < nvec; i += (I)gridDim.x * blockDim.x) {
    const I g = i % groups, pix = i / groups;
    const I ox = pix % (2 * W), rest = pix / (2 * W), oy = rest % (2 * H), b = rest / (2 * H);
    const I r = (b * H + oy / 2) * W + ox / 2;
    uint4 raw = *reinterpret_cast<const uint4*>(tmp + (r * 4 + (oy % 2) * 2 + ox % 2) * Cout + g * kPer);
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      float v = to_f32(e[k]) + to_f32(bias[g * kPer + k]);
      if (act == Act::ReLU) v = fmaxf(v, 0.f);
      if (act == Act::GELU) v = gelu<T>(v);
      e[k] = from_f32<T>(v);
    }
    reinterpret_cast<uint4*>(y)[i] = raw;
  }
}

template <class T>
void launch_scatter2x2_vec(const T* tmp, const T* bias, T* y, int64_t n, int64_t H, int64_t W, int64_t Cout, Act act,
                           cudaStream_t stream) {
  const int threads = 256;
  const int64_t nvec = n / (16 / sizeof(T));
  const unsigned blocks = cuda::blocks_for(nvec, threads);
  if (n < (int64_t(1) << 31))
    scatter2x2_vec_kernel<T, int32_t><<<blocks, threads, 0, stream>>>(tmp, bias, y, (int32_t)nvec, (int32_t)H,
                                                                      (int32_t)W, (int32_t)Cout, act);
  else
    scatter2x2_vec_kernel<T, int64_t><<<blocks, threads, 0, stream>>>(tmp, bias, y, nvec, H, W, Cout, act);
}

template <class T>
void launch_scatter2x2(const T* tmp, const T* bias, T* y, int64_t n, int64_t H, int64_t W, int64_t Cout, Act act,
                       cudaStream_t stream) {
  const int threads = 256;
  const unsigned blocks = cuda::blocks_for(n, threads);
  if (n * 4 < (int64_t(1) << 31))
    scatter2x2_kernel<T, int32_t><<<blocks, threads, 0, stream>>>(tmp, bias, y, (int32_t)n, (int32_t)H, (int32_t)W,
                                                                  (int32_t)Cout, act);
  else
    scatter2x2_kernel<T, int64_t><<<blocks, threads, 0, stream>>>(tmp, bias, y, n, H, W, Cout, act);
}

}  // namespace

namespace {
// Where the row scales of an F8E4M3 weight (out, in) begin: after its values, 256-byte aligned.
size_t fp8_scale_offset(int64_t out, int64_t in) { return (static_cast<size_t>(out * in) + 255) / 256 * 256; }
}  // namespace

bool CudaOps::fp8_weight(const Tensor& w) const {
  return fp8_bulk_ && w.ndim() == 2 && w.dim(0) % 16 == 0 && cuda::fp8_row_length_ok(w.dim(1));
}

namespace {
// An F8E4M3 weight's allocation: values, row scales, quantize_weight_fp8's two stats, then room for
// fp8_bounds' output (prepare_layer_norm_linear; 16-byte aligned, as cuBLASLt's scale pointers).
size_t fp8_stats_offset(int64_t out, int64_t in) { return fp8_scale_offset(out, in) + sizeof(float) * out; }
size_t fp8_bounds_offset(int64_t out, int64_t in) {
  return (fp8_stats_offset(out, in) + 2 * sizeof(float) + 15) / 16 * 16;
}
size_t fp8_weight_bytes(int64_t out, int64_t in) {
  return fp8_bounds_offset(out, in) + 3 * sizeof(float) * cuda::kFp8ScaleStride;
}
// Activations' rows: values, then their scales.
size_t fp8_rows_bytes(int64_t rows, int64_t in) { return fp8_scale_offset(rows, in) + sizeof(float) * rows; }

template <class T>
T* at_offset(const Tensor& t, size_t bytes) {
  return reinterpret_cast<T*>(t.ptr<char>() + bytes);
}
}  // namespace

Tensor CudaOps::quantize_fp8(const Tensor& w, Tensor q) {
  const int64_t out = w.dim(0), in = w.dim(1);
  cuda::quantize_weight_fp8(*ctx_, w.ptr<__nv_bfloat16>(), out, in, q.data,
                            at_offset<float>(q, fp8_scale_offset(out, in)),
                            at_offset<float>(q, fp8_stats_offset(out, in)));
  q.shape = w.shape;
  q.dtype = DType::F8E4M3;
  return q;
}

Tensor CudaOps::prepare_bulk_linear(const Tensor& w) {
  expect(w, "prepare_bulk_linear", "weight");
  check(w.ndim() == 2, "prepare_bulk_linear", "expected an (out, in) weight, got " + shape_str(w.shape));
  if (!fp8_weight(w)) return w;
  return quantize_fp8(w, empty({static_cast<int64_t>(fp8_weight_bytes(w.dim(0), w.dim(1)))}, DType::U8));
}

size_t CudaOps::weight_bytes(const Tensor& host, bool bulk) const {
  const size_t bytes = bulk && fp8_weight(host) ? fp8_weight_bytes(host.dim(0), host.dim(1))
                                                : element_size(dt_) * static_cast<size_t>(host.numel());
  return cuda::DevicePool::rounded(bytes);
}

void CudaOps::reserve_weights(size_t bytes) {
  weights_ = empty({static_cast<int64_t>(bytes)}, DType::U8);
  weights_filled_ = 0;
}

Tensor CudaOps::weight_slot(Shape shape, DType dtype, size_t bytes) {
  bytes = cuda::DevicePool::rounded(bytes);
  if (!weights_.defined() || weights_filled_ + bytes > static_cast<size_t>(weights_.numel()))
    return empty(std::move(shape), dtype);
  Tensor t = weights_;
  t.data = reinterpret_cast<float*>(weights_.ptr<char>() + weights_filled_);
  t.shape = std::move(shape);
  t.dtype = dtype;
  weights_filled_ += bytes;
  return t;
}

Tensor CudaOps::upload_weight(const Tensor& host, bool bulk) {
  if (bulk && fp8_weight(host)) {
    const Tensor staged = upload(host);  // bf16, then fp8 into the allocation
    const size_t bytes = fp8_weight_bytes(host.dim(0), host.dim(1));
    return quantize_fp8(staged, weight_slot({static_cast<int64_t>(bytes)}, DType::U8, bytes));
  }
  Tensor y = weight_slot(host.shape, dt_, element_size(dt_) * static_cast<size_t>(host.numel()));
  upload_into(host, y);
  return y;
}

Tensor CudaOps::linear(const Tensor& x, const Tensor& w, const Tensor* b, Act act, const Tensor* residual) {
  expect(x, "linear", "input");
  if (w.dtype != DType::F8E4M3) expect(w, "linear", "weight");
  if (b) expect(*b, "linear", "bias");
  if (residual) expect(*residual, "linear", "residual");
  check_linear(x, w, b, residual);
  const int64_t in = w.dim(1), out = w.dim(0), rows = in ? x.numel() / in : 0;
  Shape ys = x.shape;
  ys.back() = out;
  Tensor y = empty(ys);
  if (w.dtype == DType::F8E4M3) {  // the activations quantised per row, into a scratch buffer
    Tensor xq = empty({static_cast<int64_t>(fp8_rows_bytes(rows, in))}, DType::U8);
    float* xs = at_offset<float>(xq, fp8_scale_offset(rows, in));
    cuda::quantize_rows_fp8(*ctx_, x.ptr<__nv_bfloat16>(), rows, in, xq.data, xs);
    cuda::gemm_fp8(*ctx_, rows, out, in, xq.data, xs, w.data, at_offset<float>(w, fp8_scale_offset(out, in)), y.data,
                   b ? b->data : nullptr, act, residual ? residual->data : nullptr);
    return y;
  }
  cuda::gemm(*ctx_, dt_, true, rows, out, in, x.data, in, w.data, in, y.data, out, b ? b->data : nullptr, act,
             residual ? residual->data : nullptr);
  return y;
}

bool CudaOps::fp8_layer_norm_ok(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, const Tensor& w) const {
  const int64_t C = x.ndim() ? x.dim(-1) : 0;
  auto aligned = [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data) % 16 == 0; };
  return w.dtype == DType::F8E4M3 && cuda::layer_norm_fp8_ok(C) && aligned(x) && aligned(ln_w) && aligned(ln_b);
}

// fp8: the LayerNorm writes the GEMM's input, quantised with one scale from fp8_bounds (no pass over
// the activations), and the GEMM runs cuBLASLt's per-tensor fp8 kernels.
Tensor CudaOps::layer_norm_linear(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w,
                                  const Tensor* b, Act act) {
  if (!fp8_layer_norm_ok(x, ln_w, ln_b, w)) return Ops::layer_norm_linear(x, ln_w, ln_b, eps, w, b, act);
  check_fp8_layer_norm("layer_norm_linear", x, ln_w, ln_b, w, b);
  const Tensor scales = fp8_layer_scales(ln_w, ln_b, w, b);
  return fp8_layer_norm_gemm(x, ln_w, ln_b, eps, w, b, act, scales.data, nullptr);
}

void CudaOps::prepare_layer_norm_linear(const Tensor& ln_w, const Tensor& ln_b, const Tensor& w, const Tensor& b) {
  if (w.dtype != DType::F8E4M3 || !cuda::layer_norm_fp8_ok(ln_w.numel())) return;
  const char* op = "prepare_layer_norm_linear";
  expect(ln_w, op, "LayerNorm weight");
  expect(ln_b, op, "LayerNorm bias");
  expect(b, op, "bias");
  const int64_t C = ln_w.numel(), out = w.dim(0);
  check(ln_b.numel() == C && w.ndim() == 2 && w.dim(1) == C && b.numel() == out, op,
        "LayerNorm (" + std::to_string(C) + "), weight " + shape_str(w.shape) + " and bias " + shape_str(b.shape) +
            " do not fit");
  cuda::fp8_bounds(*ctx_, ln_w.ptr<__nv_bfloat16>(), ln_b.ptr<__nv_bfloat16>(), C, b.ptr<__nv_bfloat16>(), out,
                   at_offset<float>(w, fp8_stats_offset(out, C)), at_offset<float>(w, fp8_bounds_offset(out, C)));
  fp8_scales_stored_.insert({ln_w.data, ln_b.data, w.data, b.data});
}

Tensor CudaOps::fp8_layer_scales(const Tensor& ln_w, const Tensor& ln_b, const Tensor& w, const Tensor* b) {
  const int64_t C = w.dim(1), out = w.dim(0);
  if (b && fp8_scales_stored_.count({ln_w.data, ln_b.data, w.data, b->data})) {
    Tensor stored = w;
    stored.data = at_offset<float>(w, fp8_bounds_offset(out, C));
    stored.shape = {3 * cuda::kFp8ScaleStride};
    stored.dtype = DType::F32;
    return stored;
  }
  Tensor scales = empty({3 * cuda::kFp8ScaleStride}, DType::F32);
  const __nv_bfloat16* bias = b ? b->ptr<__nv_bfloat16>() : nullptr;
  const float* w_stats = b ? at_offset<float>(w, fp8_stats_offset(out, C)) : nullptr;
  cuda::fp8_bounds(*ctx_, ln_w.ptr<__nv_bfloat16>(), ln_b.ptr<__nv_bfloat16>(), C, bias, out, w_stats, scales.data);
  return scales;
}

// fp8: the attention's output in fp8 for proj, with one scale: each of its values is a weighted mean
// of v values, so fp8_bounds' bound on the qkv GEMM's values holds for it too. Hopper's attention
// kernels write it so themselves: no pass over it.
Tensor CudaOps::layer_norm_attention(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps,
                                     const Tensor& qkv_w, const Tensor& qkv_b, const Tensor& rel_pos_h,
                                     const Tensor& rel_pos_w, int heads, int window, const Tensor& proj_w,
                                     const Tensor& proj_b) {
  if (!fp8_layer_norm_ok(x, ln_w, ln_b, qkv_w) || proj_w.dtype != DType::F8E4M3)
    return Ops::layer_norm_attention(x, ln_w, ln_b, eps, qkv_w, qkv_b, rel_pos_h, rel_pos_w, heads, window, proj_w,
                                     proj_b);
  check_fp8_layer_norm("layer_norm_attention", x, ln_w, ln_b, qkv_w, &qkv_b);
  expect(proj_b, "layer_norm_attention", "proj bias");
  const int64_t C = x.dim(-1), rows = x.numel() / C;
  check(proj_w.ndim() == 2 && proj_w.dim(0) == C && proj_w.dim(1) == C, "layer_norm_attention",
        "proj weight " + shape_str(proj_w.shape) + " is not (" + std::to_string(C) + ", " + std::to_string(C) + ")");
  check(proj_b.ndim() == 1 && proj_b.dim(0) == C, "layer_norm_attention",
        "proj bias " + shape_str(proj_b.shape) + " is not (" + std::to_string(C) + ")");
  const Tensor scales = fp8_layer_scales(ln_w, ln_b, qkv_w, &qkv_b);
  const Tensor qkv = fp8_layer_norm_gemm(x, ln_w, ln_b, eps, qkv_w, &qkv_b, Act::None, scales.data, nullptr);
  const Tensor aq = rel_pos_attention_out(qkv, qkv_b, rel_pos_h, rel_pos_w, heads, window,
                                          scales.data + cuda::kFp8ScaleStride);
  check(aq.numel() == rows * C, "layer_norm_attention",
        "the attention's output is not (..., " + std::to_string(C) + ")");
  Tensor y = empty(x.shape);
  cuda::gemm_fp8(*ctx_, rows, C, C, aq.data, scales.data + 2 * cuda::kFp8ScaleStride, proj_w.data,
                 at_offset<float>(proj_w, fp8_scale_offset(C, C)), y.data, proj_b.data, Act::None, x.data,
                 cuda::Fp8Scales::Tensor);
  return y;
}

// fp8: as layer_norm_linear, with lin1's GELU output written in fp8 by its GEMM (scaled by
// fp8_bounds' bound on it), which lin2 reads as it is: no pass over the (rows, 4C) hidden layer.
Tensor CudaOps::layer_norm_mlp(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w1,
                               const Tensor& b1, const Tensor& w2, const Tensor& b2) {
  if (!fp8_layer_norm_ok(x, ln_w, ln_b, w1) || w2.dtype != DType::F8E4M3)
    return Ops::layer_norm_mlp(x, ln_w, ln_b, eps, w1, b1, w2, b2);
  check_fp8_layer_norm("layer_norm_mlp", x, ln_w, ln_b, w1, &b1);
  const int64_t C = x.dim(-1), rows = x.numel() / C, hidden = w1.dim(0);
  check(w2.ndim() == 2 && w2.dim(1) == hidden && w2.dim(0) == C, "layer_norm_mlp",
        "lin2 weight " + shape_str(w2.shape) + " does not map lin1's " + std::to_string(hidden) + " outputs back to " +
            std::to_string(C));
  expect(b2, "layer_norm_mlp", "lin2 bias");
  check(b2.ndim() == 1 && b2.dim(0) == C, "layer_norm_mlp", "lin2 bias " + shape_str(b2.shape) + " is not (" +
                                                                std::to_string(C) + ")");
  const Tensor scales = fp8_layer_scales(ln_w, ln_b, w1, &b1);
  const Tensor h = fp8_layer_norm_gemm(x, ln_w, ln_b, eps, w1, &b1, Act::GELU, scales.data,
                                       scales.data + cuda::kFp8ScaleStride);
  Tensor y = empty(x.shape);
  cuda::gemm_fp8(*ctx_, rows, C, hidden, h.data, scales.data + 2 * cuda::kFp8ScaleStride, w2.data,
                 at_offset<float>(w2, fp8_scale_offset(C, hidden)), y.data, b2.data, Act::None, x.data,
                 cuda::Fp8Scales::Tensor);
  return y;
}

void CudaOps::check_fp8_layer_norm(const char* op, const Tensor& x, const Tensor& ln_w, const Tensor& ln_b,
                                   const Tensor& w, const Tensor* b) const {
  expect(x, op, "input");
  expect(ln_w, op, "LayerNorm weight");
  expect(ln_b, op, "LayerNorm bias");
  if (b) expect(*b, op, "bias");
  check_layer_norm(x, ln_w, ln_b);
  check_linear(x, w, b, nullptr);
}

Tensor CudaOps::fp8_layer_norm_gemm(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w,
                                    const Tensor* b, Act act, const float* ln_scale, const float* out_scale) {
  const int64_t C = x.dim(-1), rows = x.numel() / C, out = w.dim(0);
  Tensor xq = empty({rows * C}, DType::U8);
  cuda::layer_norm_rows_fp8(*ctx_, x.ptr<__nv_bfloat16>(), ln_w.ptr<__nv_bfloat16>(), ln_b.ptr<__nv_bfloat16>(), rows, C,
                            eps, xq.data, nullptr, ln_scale);
  Shape ys = x.shape;
  ys.back() = out;
  Tensor y = out_scale ? empty({rows * out}, DType::U8) : empty(ys);
  cuda::gemm_fp8(*ctx_, rows, out, C, xq.data, ln_scale, w.data, at_offset<float>(w, fp8_scale_offset(out, C)), y.data,
                 b ? b->data : nullptr, act, nullptr, cuda::Fp8Scales::Tensor, out_scale);
  return y;
}

Tensor CudaOps::conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad) {
  expect(x, "conv2d", "input");
  expect(w, "conv2d", "weight");
  check_conv2d(x, w, stride, pad);
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Cin = x.dim(3);
  const int64_t Cout = w.dim(0), kh = w.dim(2), kw = w.dim(3), K = Cin * kh * kw;
  const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  const Tensor w2 = w.view({Cout, K});
  if (kh == 1 && kw == 1 && stride == 1 && pad == 0) return linear(x, w2, b, Act::None, nullptr);
  const int64_t rows = B * Ho * Wo;
  Tensor col = empty({B, Ho, Wo, K});
  const int64_t V = 16 / element_size(dt_);
  if (K % V == 0 && rows * K < (int64_t(1) << 31) && x.numel() < (int64_t(1) << 31) && w.numel() < (int64_t(1) << 31) &&
      reinterpret_cast<uintptr_t>(x.data) % 16 == 0) {  // 16 bytes a thread, the weight permuted to match
    Tensor wp = empty({Cout, K});
    SAMFAST_DISPATCH(dt_, T, {
      permute_conv_weight<T><<<cuda::blocks_for(w.numel(), 256), 256, 0, ctx_->stream>>>(
          w.ptr<T>(), wp.ptr<T>(), (int)Cout, (int)Cin, (int)kh, (int)kw);
      if (Cin % V == 0) {  // whole warps over a row's chunks (the neck's 288: 9 warps)
        const int threads = (int)std::min<int64_t>(512, (K / V + 31) / 32 * 32);
        im2col_rows_kernel<T><<<(unsigned)((rows + kIm2colRows - 1) / kIm2colRows), threads, 0, ctx_->stream>>>(
            x.ptr<T>(), col.ptr<T>(), (int)rows, (int)H, (int)W, (int)Cin, (int)kw, (int)K, (int)Ho, (int)Wo, stride,
            pad);
      } else {
        im2col_vec_kernel<T><<<cuda::blocks_for(rows * K / V, 256), 256, 0, ctx_->stream>>>(
            x.ptr<T>(), col.ptr<T>(), (int)rows, (int)H, (int)W, (int)Cin, (int)kw, (int)K, (int)Ho, (int)Wo, stride,
            pad);
      }
    });
    CUDA_LAUNCH_CHECK();
    return linear(col, wp, b, Act::None, nullptr);
  }
  const int threads = 256;
  const unsigned blocks = cuda::blocks_for(rows * Cin * kh, threads);  // (a thread per kw columns)
  const bool small = rows * K < (int64_t(1) << 31) && x.numel() < (int64_t(1) << 31);
  SAMFAST_DISPATCH(dt_, T, {
    if (small)
      im2col_kernel<T, int32_t><<<blocks, threads, 0, ctx_->stream>>>(x.ptr<T>(), col.ptr<T>(), (int32_t)rows, (int32_t)H,
                                                                      (int32_t)W, (int32_t)Cin, (int32_t)kh, (int32_t)kw,
                                                                      (int32_t)Ho, (int32_t)Wo, stride, pad);
    else
      im2col_kernel<T, int64_t><<<blocks, threads, 0, ctx_->stream>>>(x.ptr<T>(), col.ptr<T>(), rows, H, W, Cin, kh, kw,
                                                                      Ho, Wo, (int64_t)stride, (int64_t)pad);
  });
  CUDA_LAUNCH_CHECK();
  return linear(col, w2, b, Act::None, nullptr);
}

Tensor CudaOps::patch_embed(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor* pos) {
  expect(x, "patch_embed", "input");
  expect(w, "patch_embed", "weight");
  if (pos) expect(*pos, "patch_embed", "position embedding");
  check_patch_embed(x, w, pos);
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), p = w.dim(2), Cout = w.dim(0);
  const int64_t V = 16 / element_size(dt_), K = C * p * p;
  if (p % V != 0 || H % p != 0 || W % p != 0 || reinterpret_cast<uintptr_t>(x.data) % 16 != 0)
    return Ops::patch_embed(x, w, b, pos);
  Tensor col = empty({B, H / p, W / p, K});
  const int64_t chunks = col.numel() / V;
  if (chunks > 0)
    SAMFAST_DISPATCH(dt_, T,
                     patchify_kernel<T><<<cuda::blocks_for(chunks, 256), 256, 0, ctx_->stream>>>(
                         x.ptr<T>(), col.ptr<T>(), chunks, (int)C, (int)H, (int)W, (int)p));
  CUDA_LAUNCH_CHECK();
  if (!pos) return linear(col, w.view({Cout, K}), b, Act::None, nullptr);
  // One problem an image, the position embedding its C operand: no pass of its own to add it.
  Tensor y = empty({B, H / p, W / p, Cout});
  const int64_t M = (H / p) * (W / p);
  cuda::gemm(*ctx_, dt_, true, M, Cout, K, col.data, K, w.data, K, y.data, Cout, b ? b->data : nullptr, Act::None,
             pos->data, B, M * K, 0, M * Cout, false, /*s_residual=*/0);
  return y;
}

Tensor CudaOps::conv_transpose2x2(const Tensor& x, const Tensor& w, const Tensor& b, Act act) {
  // Kernel 2 / stride 2 never overlaps: one GEMM (BHW, Cin) @ w as stored, a (Cin, Cout*2*2) matrix,
  // then a scatter of each row's 4 pixels with the bias and the activation.
  expect(x, "conv_transpose2x2", "input");
  expect(w, "conv_transpose2x2", "weight");
  expect(b, "conv_transpose2x2", "bias");
  check_conv_transpose2x2(x, w, b);
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Cin = x.dim(3), Cout = w.dim(1);
  Tensor tmp = empty({B * H * W, 4 * Cout});
  Tensor y = empty({B, 2 * H, 2 * W, Cout});
  if (Cout % (16 / element_size(dt_)) == 0) {  // channels in whole 16-byte vectors: the fast path
    Tensor wp = empty({Cin, 4 * Cout});
    auto run = [&](auto tag) {
      using T = decltype(tag);
      permute_convt_weight<T><<<cuda::blocks_for(w.numel(), 256), 256, 0, ctx_->stream>>>(w.ptr<T>(), wp.ptr<T>(), Cin, Cout);
      CUDA_LAUNCH_CHECK();
      cuda::gemm(*ctx_, dt_, false, B * H * W, 4 * Cout, Cin, x.data, Cin, wp.data, 4 * Cout, tmp.data, 4 * Cout);
      launch_scatter2x2_vec<T>(tmp.ptr<T>(), b.ptr<T>(), y.ptr<T>(), y.numel(), H, W, Cout, act, ctx_->stream);
      CUDA_LAUNCH_CHECK();
    };
    SAMFAST_DISPATCH(dt_, T, run(T{}));
    return y;
  }
  cuda::gemm(*ctx_, dt_, false, B * H * W, 4 * Cout, Cin, x.data, Cin, w.data, 4 * Cout, tmp.data, 4 * Cout);
  SAMFAST_DISPATCH(dt_, T,
                   launch_scatter2x2<T>(tmp.ptr<T>(), b.ptr<T>(), y.ptr<T>(), y.numel(), H, W, Cout, act, ctx_->stream));
  CUDA_LAUNCH_CHECK();
  return y;
}

Tensor CudaOps::bmm_nt(const Tensor& a, const Tensor& b) {
  expect(a, "bmm_nt", "a");
  expect(b, "bmm_nt", "b");
  check_bmm_nt(a, b);
  const int64_t B = a.dim(0), M = a.dim(1), K = a.dim(2), N = b.dim(1);
  Tensor y = empty({B, M, N});
  cuda::gemm(*ctx_, dt_, true, M, N, K, a.data, K, b.data, K, y.data, N, nullptr, Act::None, nullptr, B, M * K, N * K,
             M * N);
  return y;
}

}  // namespace samfast
