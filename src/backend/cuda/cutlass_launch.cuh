// Runs one of cutlass_gemm.cuh's kernels on the context's stream, for the library's CUTLASS GEMMs
// (gemm_fp8_cutlass.cu, gemm_bf16_cutlass.cu): D = out_scale act(w_scale x_scale W X^T + bias) (+ C),
// row-major X (M, K) and W (N, K), D and C (M, N); scales null for bf16. `who` names the caller in errors.
#pragma once

#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cutlass_gemm.cuh"

namespace samfast::cuda::cutlass_gemm {

template <class G>
void launch(CudaContext& ctx, const char* who, int64_t M, int64_t N, int64_t K, const void* X, const float* x_scale,
            const void* W, const float* w_scale, const void* bias, const void* C, void* D, const float* out_scale) {
  using Adapter = typename G::Adapter;
  typename Adapter::Arguments args = G::arguments(static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), W,
                                                  w_scale, X, x_scale, bias, C, D, out_scale);
  args.hw_info.device_id = ctx.device;  // (else each call asks the driver)
  args.hw_info.sm_count = ctx.sm_count;
  auto shape = [&] { return " (" + std::to_string(M) + " x " + std::to_string(N) + " x " + std::to_string(K) + ")"; };
  Adapter gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess)
    throw Error(std::string(who) + ": CUTLASS cannot run" + shape());
  if (Adapter::get_workspace_size(args) > ctx.workspace_bytes) throw Error(std::string(who) + ": workspace too small");
  if (gemm.initialize(args, ctx.workspace, ctx.stream) != cutlass::Status::kSuccess ||
      gemm.run(ctx.stream) != cutlass::Status::kSuccess)
    throw Error(std::string(who) + ": the CUTLASS kernel failed to launch" + shape());
  CUDA_LAUNCH_CHECK();
}

}  // namespace samfast::cuda::cutlass_gemm
