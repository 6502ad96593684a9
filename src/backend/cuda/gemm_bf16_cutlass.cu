// Three of the bf16 encoder's GEMM forms by CUTLASS's Hopper ping-pong kernels (128x128x64 tiles):
// lin1 with bias and GELU (tanh form, as cuBLASLt's epilogue), qkv with bias, proj with bias and the
// residual. Alone (bench/gpu/bf16_gemm_options.cu, H100, batch 8, us a call, cuBLASLt -> CUTLASS; qkv
// and proj there at 39200 rows): vit_b lin1 253 -> 222, qkv 195 -> 197, proj 97 -> 85; vit_h 629 ->
// 609, 575 -> 542, 225 -> 213. lin2 (K = 4 N) stays on cuBLASLt, faster there (213 against 216-250,
// 616 against 667-714): hence K <= N for the residual form. In the model (BENCHMARKS.md): bf16 vit_b
// +2-4% img/s, vit_h unchanged. Small GEMMs (the decoder's token path) stay on cuBLASLt.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

#if defined(SAMFAST_WITH_CUTLASS)
#include "backend/cuda/cutlass_launch.cuh"
#endif

namespace samfast::cuda {

#if defined(SAMFAST_WITH_CUTLASS)

bool gemm_bf16_cutlass_ok(const CudaContext& ctx, int64_t M, int64_t N, int64_t K, Act act, bool residual) {
  // (16-byte rows for TMA; int extents)
  const bool form = act == Act::None || (act == Act::GELU && !residual);
  return form && (!residual || K <= N) && 2.0 * M * N * K >= 1e9 && ctx.hopper_kernels && ctx.cc_minor == 0 &&
         N % 8 == 0 && K % 8 == 0 && M < (int64_t(1) << 31) && N < (int64_t(1) << 31) && K < (int64_t(1) << 31);
}

void gemm_bf16_cutlass(CudaContext& ctx, int64_t M, int64_t N, int64_t K, const void* A, const void* W,
                       const void* bias, Act act, const void* residual, void* C) {
  if (!gemm_bf16_cutlass_ok(ctx, M, N, K, act, residual != nullptr) || !bias)
    throw Error("gemm_bf16_cutlass: not one of its forms (" + std::to_string(M) + " x " + std::to_string(N) + " x " +
                std::to_string(K) + ")");
  using namespace cutlass_gemm;
  const char* who = "gemm_bf16_cutlass";
  namespace th = cutlass::epilogue::thread;
  if (act == Act::GELU)
    launch<PingPongBf16<th::GELU_taylor, Cluster1x2>>(ctx, who, M, N, K, A, nullptr, W, nullptr, bias, nullptr, C,
                                                      nullptr);
  else if (residual)  // (clusters along the channels: the faster for proj, bench/gpu/bf16_gemm_options.cu)
    launch<PingPongBf16<th::Identity, Cluster2x1, BF16>>(ctx, who, M, N, K, A, nullptr, W, nullptr, bias, residual, C,
                                                         nullptr);
  else
    launch<PingPongBf16<th::Identity, Cluster1x2>>(ctx, who, M, N, K, A, nullptr, W, nullptr, bias, nullptr, C,
                                                   nullptr);
}

#else

bool gemm_bf16_cutlass_ok(const CudaContext&, int64_t, int64_t, int64_t, Act, bool) { return false; }
void gemm_bf16_cutlass(CudaContext&, int64_t, int64_t, int64_t, const void*, const void*, const void*, Act,
                       const void*, void*) {
  throw Error("gemm_bf16_cutlass: built without CUTLASS");
}

#endif

}  // namespace samfast::cuda
