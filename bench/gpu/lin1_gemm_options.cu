// What the fp8 encoder's lin1 costs with each way of fusing its epilogue (bias, GELU, the fp8 output
// scale), on vit_b's shapes at batch 8 (32768 tokens): cuBLASLt's fp8 kernels with each epilogue (the
// fastest of the heuristic's candidates), qkv and lin2 beside them for the rate without a GELU; then
// CUTLASS's Hopper kernels with the fused epilogue samfast's gemm_fp8_cutlass.cu uses (ping-pong and
// cooperative schedules), checked against a reference on 256 tokens, and CUTLASS on qkv, lin2 and proj
// (bf16 out; lin2 and proj with and without the residual). Prints one line per option: mean us of
// 20-30 runs and TFLOP/s. Built by bench/gpu/prepare.sh into .devbin/tests/ where CUTLASS's headers are
// found; `bench/gpu/run.sh lin1` runs it on the GPU machine. (There, 2026-12-07, cuBLASLt refused
// every candidate of its heuristic here, CUBLAS_STATUS_NOT_SUPPORTED, and says so in its lines;
// samfast's kernel traces give cuBLASLt's times in the model.)
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda/cutlass_gemm.cuh"
#include "gemm_timing.cuh"

namespace {

using gemm_bench::check;
using gemm_bench::time_ms;

// Random fp8 values of either sign below 2 in magnitude (0xBF: exponent field at most 7, no NaN).
__global__ void fill_fp8(unsigned char* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed;
    h ^= h >> 13, h *= 0x5bd1e995, h ^= h >> 15;
    p[i] = static_cast<unsigned char>(h & 0xBF);
  }
}

__global__ void fill_bias(__nv_bfloat16* b, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) b[i] = __float2bfloat16(0.05f * float(i % 17 - 8));
}

void report(const char* shape, const char* option, int64_t M, int64_t N, int64_t K, float ms) {
  std::printf("%-5s %-40s %7.1f us  %5.0f TFLOP/s\n", shape, option, ms * 1e3f, 2.0 * M * N * K / (ms * 1e-3) / 1e12);
}

struct Buffers {
  void *x, *w, *d, *c, *bias, *workspace;
  float* scales;  // activations, weight, output
  size_t workspace_bytes = size_t(32) << 20;
};

// cuBLASLt as samfast's gemm_fp8 calls it: the weight first (transposed), the activations second,
// per-tensor scales, fast accumulation.
void cublaslt_options(cudaStream_t s, const Buffers& b) {
  cublasLtHandle_t lt;
  check(cublasLtCreate(&lt), "cublasLtCreate");
  struct Shape { const char* name; int64_t M, N, K; };
  struct Option { const char* name; cublasLtEpilogue_t epilogue; bool fp8_out, residual; };
  const Shape shapes[] = {{"lin1", 32768, 3072, 768}, {"qkv", 32768, 2304, 768}, {"lin2", 32768, 768, 3072}};
  const Option options[] = {{"cuBLASLt bias+GELU, fp8 out", CUBLASLT_EPILOGUE_GELU_BIAS, true, false},
                            {"cuBLASLt bias, fp8 out", CUBLASLT_EPILOGUE_BIAS, true, false},
                            {"cuBLASLt no epilogue, fp8 out", CUBLASLT_EPILOGUE_DEFAULT, true, false},
                            {"cuBLASLt bias+GELU, bf16 out", CUBLASLT_EPILOGUE_GELU_BIAS, false, false},
                            {"cuBLASLt bias, bf16 out", CUBLASLT_EPILOGUE_BIAS, false, false},
                            {"cuBLASLt bias+residual, bf16 out", CUBLASLT_EPILOGUE_BIAS, false, true}};
  auto layout = [](cudaDataType_t t, int64_t rows, int64_t cols) {
    cublasLtMatrixLayout_t l;
    check(cublasLtMatrixLayoutCreate(&l, t, rows, cols, rows), "layout");
    return l;
  };
  for (const Shape& sh : shapes)
    for (const Option& o : options) {
      cublasLtMatmulDesc_t desc;
      check(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
      const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
      const cudaDataType_t bias_type = CUDA_R_16BF;
      const int8_t fast = 1;
      const float *ws = b.scales + 1, *xs = b.scales, *ds = b.scales + 2;
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &o.epilogue, sizeof o.epilogue);
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type);
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast);
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ws, sizeof ws);
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &xs, sizeof xs);
      if (o.fp8_out) cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, &ds, sizeof ds);
      if (o.epilogue != CUBLASLT_EPILOGUE_DEFAULT)
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b.bias, sizeof b.bias);
      const cublasLtMatrixLayout_t la = layout(CUDA_R_8F_E4M3, sh.K, sh.N), lb = layout(CUDA_R_8F_E4M3, sh.K, sh.M);
      const cublasLtMatrixLayout_t lc = layout(CUDA_R_16BF, sh.N, sh.M);
      const cublasLtMatrixLayout_t ld = o.fp8_out ? layout(CUDA_R_8F_E4M3, sh.N, sh.M) : lc;
      cublasLtMatmulPreference_t pref;
      cublasLtMatmulPreferenceCreate(&pref);
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &b.workspace_bytes,
                                           sizeof b.workspace_bytes);
      cublasLtMatmulHeuristicResult_t found[16];
      int count = 0;
      const cublasStatus_t heuristic =
          cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, ld, pref, 16, found, &count);
      const float alpha = 1.f, beta = o.residual ? 1.f : 0.f;
      void* c = o.residual ? b.c : o.fp8_out ? nullptr : b.d;
      float best = -1.f;
      cublasStatus_t failed = CUBLAS_STATUS_SUCCESS;
      for (int i = 0; i < count; ++i) {
        auto run = [&] {
          return cublasLtMatmul(lt, desc, &alpha, b.w, la, b.x, lb, &beta, c, lc, b.d, ld, &found[i].algo, b.workspace,
                                b.workspace_bytes, s);
        };
        if ((failed = run()) != CUBLAS_STATUS_SUCCESS) continue;
        const float ms = time_ms(s, run, 1, 20);
        if (best < 0.f || ms < best) best = ms;
      }
      if (best > 0.f)
        report(sh.name, o.name, sh.M, sh.N, sh.K, best);
      else  // (said, not skipped: a missing line would read as an option not tried)
        std::printf("%-5s %-40s no kernel ran (heuristic status %d, %d candidates, matmul status %d)\n", sh.name,
                    o.name, static_cast<int>(heuristic), count, static_cast<int>(failed));
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatmulDescDestroy(desc);
    }
  cublasLtDestroy(lt);
}

// CUTLASS's configurations, defined as samfast's (src/backend/cuda/cutlass_gemm.cuh).
using samfast::cuda::cutlass_gemm::BF16;
using samfast::cuda::cutlass_gemm::E4M3;
template <class Tile, class Cluster, class Schedule, class EpilogueSchedule, template <class> class Act,
          class Out = E4M3, class Source = void>
using Cutlass = samfast::cuda::cutlass_gemm::Gemm<Tile, Cluster, Schedule, EpilogueSchedule, Act, Out, Source>;
using samfast::cuda::cutlass_gemm::PingPong128;  // (samfast's own configuration)

template <class C>
void cutlass_option(cudaStream_t s, const Buffers& b, const char* shape, const char* name, int channels, int tokens,
                    int K) {
  using Gemm = typename C::Adapter;
  const typename Gemm::Arguments args = C::arguments(channels, tokens, K, b.w, b.scales + 1, b.x, b.scales, b.bias,
                                                     C::residual ? b.c : nullptr, b.d, b.scales + 2);
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess || Gemm::get_workspace_size(args) > b.workspace_bytes ||
      gemm.initialize(args, b.workspace, s) != cutlass::Status::kSuccess) {
    std::printf("%s %s: CUTLASS cannot run it\n", shape, name);
    return;
  }
  report(shape, name, tokens, channels, K, time_ms(s, [&] { gemm.run(s); }, 5, 30));
}

// The reference for tokens [0, T): d[t][c] = GELU(sx sw x[t] . w[c] + bias[c]) sd, erf or tanh form.
__global__ void reference(int T, int channels, int K, const __nv_fp8_e4m3* x, const __nv_fp8_e4m3* w,
                          const __nv_bfloat16* bias, const float* scales, bool erf_form, float* out) {
  const int t = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
  if (t >= T || c >= channels) return;
  float acc = 0.f;
  for (int k = 0; k < K; ++k) acc += float(x[size_t(t) * K + k]) * float(w[size_t(c) * K + k]);
  const float z = scales[0] * scales[1] * acc + __bfloat162float(bias[c]);
  const float g = erf_form ? 0.5f * z * (1.f + erff(z * 0.70710678f))
                           : 0.5f * z * (1.f + tanhf(0.7978845608f * (z + 0.044715f * z * z * z)));
  out[size_t(t) * channels + c] = g * scales[2];
}

// stats: the largest error against the reference rounded to fp8 (relative, floor 1e-3), and the
// sums of |error| and |reference|.
__global__ void compare(int n, const __nv_fp8_e4m3* got, const float* want, float* stats) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = float(got[i]), r = want[i], q = float(__nv_fp8_e4m3(r));
  atomicMax(reinterpret_cast<int*>(stats), __float_as_int(fabsf(g - q) / fmaxf(fabsf(q), 1e-3f)));
  atomicAdd(stats + 1, fabsf(g - r));
  atomicAdd(stats + 2, fabsf(r));
}

void check_output(const Buffers& b, int channels, int K, bool erf_form, float* ref, float* stats) {
  const int T = 256;
  reference<<<dim3(T, (channels + 127) / 128), 128>>>(T, channels, K, static_cast<const __nv_fp8_e4m3*>(b.x),
                                                     static_cast<const __nv_fp8_e4m3*>(b.w),
                                                     static_cast<const __nv_bfloat16*>(b.bias), b.scales, erf_form,
                                                     ref);
  cudaMemset(stats, 0, 3 * sizeof(float));
  compare<<<(T * channels + 255) / 256, 256>>>(T * channels, static_cast<const __nv_fp8_e4m3*>(b.d), ref, stats);
  float h[3];
  check(cudaMemcpy(h, stats, sizeof h, cudaMemcpyDeviceToHost), "the check");
  std::printf("      against the %s GELU on 256 tokens: largest error %.3g of the rounded value, mean |error| %.3g "
              "of the mean |value|\n", erf_form ? "erf" : "tanh", h[0], h[1] / h[2]);
}

}  // namespace

int main() {
  namespace ep = cutlass::epilogue;
  namespace gm = cutlass::gemm;
  using cute::_64, cute::_128, cute::_256;
  const int channels = 3072, tokens = 32768, K = 768;
  Buffers b;
  float *ref, *stats;
  check(cudaMalloc(&b.x, size_t(128) << 20), "cudaMalloc");  // (lin2: 32768 x 3072)
  check(cudaMalloc(&b.w, size_t(16) << 20), "cudaMalloc");
  check(cudaMalloc(&b.d, size_t(256) << 20), "cudaMalloc");
  check(cudaMalloc(&b.c, size_t(256) << 20), "cudaMalloc");
  check(cudaMalloc(&b.bias, size_t(1) << 16), "cudaMalloc");
  check(cudaMalloc(&b.workspace, b.workspace_bytes), "cudaMalloc");
  check(cudaMalloc(&b.scales, 4 * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&ref, size_t(256) * channels * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&stats, 4 * sizeof(float)), "cudaMalloc");
  fill_fp8<<<1024, 256>>>(static_cast<unsigned char*>(b.x), size_t(128) << 20, 1);
  fill_fp8<<<1024, 256>>>(static_cast<unsigned char*>(b.w), size_t(16) << 20, 2);
  fill_bias<<<(channels + 255) / 256, 256>>>(static_cast<__nv_bfloat16*>(b.bias), channels);
  cudaMemset(b.c, 0, size_t(256) << 20);
  // activations, weight, output: products of order 1 (GELU's whole shape), outputs up to ~320 of E4M3's 448
  const float scales[4] = {0.3f, 0.3f, 64.f, 0.f};
  check(cudaMemcpy(b.scales, scales, sizeof scales, cudaMemcpyHostToDevice), "cudaMemcpy");
  cudaStream_t s;
  check(cudaStreamCreate(&s), "cudaStreamCreate");

  cublaslt_options(s, b);
  using T128 = cute::Shape<_128, _128, _128>;
  using C12 = samfast::cuda::cutlass_gemm::Cluster1x2;
  using C21 = samfast::cuda::cutlass_gemm::Cluster2x1;
  using PingPong = gm::KernelTmaWarpSpecializedPingpongFP8FastAccum;
  using Cooperative = gm::KernelTmaWarpSpecializedCooperativeFP8FastAccum;
  namespace th = cutlass::epilogue::thread;
  cutlass_option<PingPong128<th::Identity, E4M3>>(
      s, b, "lin1", "CUTLASS ping-pong 128x128, bias, fp8 out", channels, tokens, K);
  cutlass_option<PingPong128<th::GELU_taylor, E4M3>>(
      s, b, "lin1", "CUTLASS ping-pong 128x128, bias+GELU (tanh)", channels, tokens, K);
  check_output(b, channels, K, false, ref, stats);
  cutlass_option<Cutlass<T128, C21, PingPong, ep::TmaWarpSpecialized, th::GELU_taylor>>(
      s, b, "lin1", "CUTLASS ping-pong 128x128 (2x1), GELU (tanh)", channels, tokens, K);
  cutlass_option<PingPong128<th::GELU, E4M3>>(
      s, b, "lin1", "CUTLASS ping-pong 128x128, bias+GELU (erf)", channels, tokens, K);
  check_output(b, channels, K, true, ref, stats);
  cutlass_option<Cutlass<cute::Shape<_256, _128, _128>, C12, Cooperative, ep::TmaWarpSpecializedCooperative,
                         th::GELU_taylor>>(
      s, b, "lin1", "CUTLASS cooperative 256x128, GELU (tanh)", channels, tokens, K);
  check_output(b, channels, K, false, ref, stats);
  cutlass_option<Cutlass<cute::Shape<_128, _256, _128>, C21, Cooperative,
                         ep::TmaWarpSpecializedCooperative, th::GELU_taylor>>(
      s, b, "lin1", "CUTLASS cooperative 128x256, GELU (tanh)", channels, tokens, K);
  cutlass_option<Cutlass<cute::Shape<_64, _128, _128>, C12, PingPong, ep::TmaWarpSpecialized, th::GELU_taylor>>(
      s, b, "lin1", "CUTLASS ping-pong 64x128, GELU (tanh)", channels, tokens, K);
  // qkv (bf16 out, bias) and lin2 (bf16 out, bias, the residual), to set against cuBLASLt's above
  cutlass_option<PingPong128<th::Identity, BF16>>(
      s, b, "qkv", "CUTLASS ping-pong 128x128, bias, bf16 out", 2304, tokens, K);
  cutlass_option<Cutlass<cute::Shape<_256, _128, _128>, C12, Cooperative, ep::TmaWarpSpecializedCooperative,
                         th::Identity, BF16>>(s, b, "qkv", "CUTLASS cooperative 256x128, bias, bf16 out", 2304,
                                              tokens, K);
  using T256 = cute::Shape<_256, _128, _128>;
  for (const auto& [shape, k] : {std::pair<const char*, int>{"lin2", 3072}, {"proj", 768}}) {
    cutlass_option<PingPong128<th::Identity, BF16>>(
        s, b, shape, "CUTLASS ping-pong 128x128, bias, bf16", 768, tokens, k);
    cutlass_option<PingPong128<th::Identity, BF16, BF16>>(
        s, b, shape, "CUTLASS ping-pong 128x128, bias+residual, bf16", 768, tokens, k);
    cutlass_option<Cutlass<T128, C21, PingPong, ep::TmaWarpSpecialized, th::Identity, BF16, BF16>>(
        s, b, shape, "CUTLASS ping-pong 128x128 (2x1), bias+residual", 768, tokens, k);
    cutlass_option<Cutlass<T256, C12, Cooperative, ep::TmaWarpSpecializedCooperative, th::Identity, BF16, BF16>>(
        s, b, shape, "CUTLASS cooperative 256x128, bias+residual", 768, tokens, k);
    cutlass_option<Cutlass<cute::Shape<_128, _256, _128>, C21, Cooperative, ep::TmaWarpSpecializedCooperative,
                           th::Identity, BF16, BF16>>(s, b, shape, "CUTLASS cooperative 128x256, bias+residual", 768,
                                                      tokens, k);
  }
  return 0;
}
