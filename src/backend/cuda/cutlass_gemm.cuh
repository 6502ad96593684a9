// CUTLASS's Hopper GEMMs with a per-row bias and an activation in their epilogue, as samfast runs them
// (gemm_fp8_cutlass.cu, gemm_bf16_cutlass.cu) and as bench/gpu/lin1_gemm_options.cu and
// bf16_gemm_options.cu time their variants: one definition, so that the benchmarks' configurations
// are the library's kernels. Needs CUTLASS's headers.
#pragma once

#include <type_traits>

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

namespace samfast::cuda::cutlass_gemm {

using E4M3 = cutlass::float_e4m3_t;
using BF16 = cutlass::bfloat16_t;

// The output's channels are CUTLASS's M (its A: the weight, (channels, K) row-major), the tokens its
// N (B: the activations, K-major), so the column-major D is the row-major (tokens, channels) and the
// bias runs along D's rows. Out: the output's type (an fp8 D is scaled by scale_d, a bf16 one is
// not); Source: the residual's (void: none); In: the operands' (E4M3, or BF16 without scales).
template <class Tile, class Cluster, class Schedule, class EpilogueSchedule, template <class> class Activation,
          class Out, class Source = void, class In = E4M3>
struct Gemm {
  using Fusion = cutlass::epilogue::fusion::ScaledLinCombPerRowBiasEltAct<Activation, Out, float, BF16, Source, float>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, Source, cutlass::layout::ColumnMajor,
      16 / sizeof(std::conditional_t<std::is_void_v<Source>, Out, Source>), Out, cutlass::layout::ColumnMajor,
      16 / sizeof(Out), EpilogueSchedule, Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, In, cutlass::layout::RowMajor, 16 / sizeof(In), In,
      cutlass::layout::ColumnMajor, 16 / sizeof(In), float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      Schedule>::CollectiveOp;
  using Adapter = cutlass::gemm::device::GemmUniversalAdapter<
      cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>>;
  static constexpr bool residual = !std::is_void_v<Source>;

  // D = out_scale act(w_scale x_scale W X^T + bias) (+ C, the residual, where Source is not void).
  static typename Adapter::Arguments arguments(int channels, int tokens, int K, const void* W, const float* w_scale,
                                               const void* X, const float* x_scale, const void* bias, const void* C,
                                               void* D, const float* out_scale) {
    using Kernel = typename Adapter::GemmKernel;
    const auto mn = cute::make_shape(channels, tokens, 1);
    typename Adapter::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {channels, tokens, K, 1},
        {static_cast<const In*>(W),
         cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, cute::make_shape(channels, K, 1)),
         static_cast<const In*>(X),
         cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, cute::make_shape(tokens, K, 1))},
        {{},
         static_cast<const typename Kernel::ElementC*>(C),
         cutlass::make_cute_packed_stride(typename Kernel::StrideC{}, mn),
         static_cast<Out*>(D),
         cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, mn)}};
    auto& f = args.epilogue.thread;
    f.alpha = 1.f;
    f.beta = residual ? 1.f : 0.f;
    f.scale_a_ptr = w_scale;
    f.scale_b_ptr = x_scale;
    f.scale_d_ptr = out_scale;
    f.bias_ptr = static_cast<const BF16*>(bias);
    return args;
  }
};

using Cluster1x2 = cute::Shape<cute::_1, cute::_2, cute::_1>;  // (2 CTAs along the tokens)
using Cluster2x1 = cute::Shape<cute::_2, cute::_1, cute::_1>;  // (along the channels)

// samfast's fp8 configuration (gemm_fp8_cutlass.cu): 128x128x128 tiles, clusters of 2 along the
// tokens, the ping-pong schedule with fast accumulation.
template <template <class> class Activation, class Out, class Source = void>
using PingPong128 =
    Gemm<cute::Shape<cute::_128, cute::_128, cute::_128>, Cluster1x2,
         cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum, cutlass::epilogue::TmaWarpSpecialized,
         Activation, Out, Source>;

// samfast's bf16 configuration (gemm_bf16_cutlass.cu): 128x128x64 tiles, the ping-pong schedule.
template <template <class> class Activation, class Cluster, class Source = void>
using PingPongBf16 =
    Gemm<cute::Shape<cute::_128, cute::_128, cute::_64>, Cluster, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
         cutlass::epilogue::TmaWarpSpecialized, Activation, BF16, Source, BF16>;

}  // namespace samfast::cuda::cutlass_gemm
