// Two of the fp8 encoder's GEMMs by CUTLASS's Hopper ping-pong kernels: lin1 (bias, GELU and the fp8
// output scale fused) and qkv (bias, bf16 out). Two consumer warpgroups take turns, one's epilogue
// running while the other's MMAs do; cuBLASLt's fp8 kernels run each tile's epilogue after its main
// loop, where the tensor cores wait (H100, vit_b at batch 8: lin1 162 -> 142 us a call, qkv 103 -> ~93;
// BENCHMARKS.md). proj and lin2, which add the residual, stay on cuBLASLt, faster there.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

#if defined(SAMFAST_WITH_CUTLASS)
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"
#endif

namespace samfast::cuda {

#if defined(SAMFAST_WITH_CUTLASS)
namespace {
using E4M3 = cutlass::float_e4m3_t;
using BF16 = cutlass::bfloat16_t;
// The output's channels are CUTLASS's M (its A: the weight, (N, K) row-major), the tokens its N (B:
// the activations, K-major), so the column-major D is the row-major (tokens, channels) and the bias
// runs along D's rows. Out: the output's type (an fp8 D is scaled by scale_d, a bf16 one is not).
// GELU in the tanh form (hardware tanh), as cuBLASLt's epilogue has it (gemm.cu): by instruction
// count, erf's polynomial would make the epilogue (128 values a thread a tile) outlast the other
// warpgroup's main loop (bench/gpu/lin1_gemm_options.cu times both).
template <class Out, template <class> class Activation>
struct PingPong {
  using Tile = cute::Shape<cute::_128, cute::_128, cute::_128>;
  using Cluster = cute::Shape<cute::_1, cute::_2, cute::_1>;
  using Fusion =
      cutlass::epilogue::fusion::ScaledLinCombPerRowBiasEltAct<Activation, Out, float, BF16, void, float>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::ColumnMajor,
      16 / sizeof(Out), Out, cutlass::layout::ColumnMajor, 16 / sizeof(Out), cutlass::epilogue::TmaWarpSpecialized,
      Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, E4M3, cutlass::layout::RowMajor, 16, E4M3,
      cutlass::layout::ColumnMajor, 16, float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum>::CollectiveOp;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<
      cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>>;

  static void run(CudaContext& ctx, int64_t M, int64_t N, int64_t K, const void* A, const float* a_scale,
                  const void* W, const float* w_scale, const void* bias, void* D, const float* out_scale) {
    using Kernel = typename Gemm::GemmKernel;
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const auto sa = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, cute::make_shape(m, k, 1));
    const auto sb = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, cute::make_shape(n, k, 1));
    const auto sd = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, cute::make_shape(m, n, 1));
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  {m, n, k, 1},
                                  {static_cast<const E4M3*>(W), sa, static_cast<const E4M3*>(A), sb},
                                  {{}, nullptr, {}, static_cast<Out*>(D), sd}};
    args.hw_info.device_id = ctx.device;  // (else each call asks the driver)
    args.hw_info.sm_count = ctx.sm_count;
    auto& f = args.epilogue.thread;
    f.alpha = 1.f;
    f.beta = 0.f;
    f.scale_a_ptr = w_scale;
    f.scale_b_ptr = a_scale;
    f.scale_d_ptr = out_scale;
    f.bias_ptr = static_cast<const BF16*>(bias);
    const std::string shape = " (" + std::to_string(M) + " x " + std::to_string(N) + " x " + std::to_string(K) + ")";
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess)
      throw Error("gemm_fp8_cutlass: CUTLASS cannot run" + shape);
    if (Gemm::get_workspace_size(args) > ctx.workspace_bytes) throw Error("gemm_fp8_cutlass: workspace too small");
    if (gemm.initialize(args, ctx.workspace, ctx.stream) != cutlass::Status::kSuccess ||
        gemm.run(ctx.stream) != cutlass::Status::kSuccess)
      throw Error("gemm_fp8_cutlass: the CUTLASS kernel failed to launch" + shape);
    CUDA_LAUNCH_CHECK();
  }
};
}  // namespace

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
  if (act == Act::GELU)
    PingPong<E4M3, cutlass::epilogue::thread::GELU_taylor>::run(ctx, M, N, K, A, a_scale, W, w_scale, bias, C,
                                                                 out_scale);
  else
    PingPong<BF16, cutlass::epilogue::thread::Identity>::run(ctx, M, N, K, A, a_scale, W, w_scale, bias, C, nullptr);
}

#else

bool gemm_fp8_cutlass_ok(const CudaContext&, int64_t, int64_t, int64_t, Act, bool) { return false; }
void gemm_fp8_cutlass(CudaContext&, int64_t, int64_t, int64_t, const void*, const float*, const void*, const float*,
                      const void*, Act, void*, const float*) {
  throw Error("gemm_fp8_cutlass: built without CUTLASS");
}

#endif

}  // namespace samfast::cuda
