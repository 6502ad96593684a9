// Two of the fp8 encoder's GEMMs by CUTLASS's Hopper ping-pong kernels: lin1 (bias, GELU and the fp8
// output scale fused) and qkv (bias, bf16 out). Two consumer warpgroups take turns, one's epilogue
// running while the other's MMAs do; cuBLASLt's fp8 kernels run each tile's epilogue after its main
// loop, where the tensor cores wait (H100, vit_b at batch 8: lin1 162 -> 142 us a call, qkv 103 -> ~93;
// BENCHMARKS.md). proj and lin2, which add the residual, stay on cuBLASLt, faster there.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

#if defined(SAMFAST_WITH_CUTLASS)
#include "backend/cuda/cutlass_launch.cuh"
#endif

namespace samfast::cuda {

#if defined(SAMFAST_WITH_CUTLASS)

bool gemm_fp8_cutlass_ok(const CudaContext& ctx, int64_t M, int64_t N, int64_t K, Act act, bool fp8_out) {
  // (16-byte rows for TMA; int extents)
  const bool form = (act == Act::GELU && fp8_out) || (act == Act::None && !fp8_out);
  return form && ctx.hopper_kernels && ctx.cc_minor == 0 && M > 0 && N % 16 == 0 && K % 16 == 0 &&
         M < (int64_t(1) << 31) && N < (int64_t(1) << 31) && K < (int64_t(1) << 31);
}

void gemm_fp8_cutlass(CudaContext& ctx, int64_t M, int64_t N, int64_t K, const void* A, const float* a_scale,
                      const void* W, const float* w_scale, const void* bias, Act act, void* C, const float* out_scale) {
  if (!gemm_fp8_cutlass_ok(ctx, M, N, K, act, out_scale != nullptr) || !bias)
    throw Error("gemm_fp8_cutlass: not one of its forms (" + std::to_string(M) + " x " + std::to_string(N) + " x " +
                std::to_string(K) + ")");
  using namespace cutlass_gemm;
  // GELU in the tanh form (hardware tanh), as cuBLASLt's epilogue has it (gemm.cu): by instruction
  // count, erf's polynomial would make the epilogue (128 values a thread a tile) outlast the other
  // warpgroup's main loop (bench/gpu/lin1_gemm_options.cu times both).
  if (act == Act::GELU)
    launch<PingPong128<cutlass::epilogue::thread::GELU_taylor, E4M3>>(ctx, "gemm_fp8_cutlass", M, N, K, A, a_scale, W,
                                                                       w_scale, bias, nullptr, C, out_scale);
  else
    launch<PingPong128<cutlass::epilogue::thread::Identity, BF16>>(ctx, "gemm_fp8_cutlass", M, N, K, A, a_scale, W,
                                                                    w_scale, bias, nullptr, C, nullptr);
}

#else

bool gemm_fp8_cutlass_ok(const CudaContext&, int64_t, int64_t, int64_t, Act, bool) { return false; }
void gemm_fp8_cutlass(CudaContext&, int64_t, int64_t, int64_t, const void*, const float*, const void*, const float*,
                      const void*, Act, void*, const float*) {
  throw Error("gemm_fp8_cutlass: built without CUTLASS");
}

#endif

}  // namespace samfast::cuda
