// Whether CUTLASS's Hopper kernels would beat cuBLASLt on the bf16 encoder's GEMMs: each Linear layer
// of vit_b and vit_h at batch 8 (32768 tokens: samfast's windowed attention reads its windows from the
// unpadded qkv, so no layer runs on padded rows) with its epilogue (lin1: bias and GELU in the tanh
// form; qkv: bias; proj and lin2: bias and the residual), first through samfast's own cuda::gemm
// (cuBLASLt, the plan and algorithm the model gets), then through CUTLASS configurations defined as
// samfast's are (cutlass_gemm.cuh, bf16 operands), each checked against cuBLASLt's output. Prints one
// line per option: mean us of 30 runs, TFLOP/s and the largest difference from cuBLASLt's output
// relative to its largest value. Built by bench/gpu/prepare.sh where CUTLASS's headers are found;
// `bench/gpu/run.sh gemm_bf16` runs it.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cutlass_gemm.cuh"
#include "gemm_timing.cuh"

namespace {

using samfast::Act;

using gemm_bench::check;
using gemm_bench::time_ms;

// Uniform values in [-r, r): a hash of the index.
__global__ void fill(__nv_bfloat16* p, size_t n, unsigned seed, float r) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed;
    h ^= h >> 13, h *= 0x5bd1e995, h ^= h >> 15;
    p[i] = __float2bfloat16(r * (float(h & 0xFFFF) / 32768.f - 1.f));
  }
}

// stats[0] = max |got - want|, stats[1] = max |want| (as ints: both non-negative)
__global__ void compare(size_t n, const __nv_bfloat16* got, const __nv_bfloat16* want, float* stats) {
  float d = 0.f, m = 0.f;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float w = __bfloat162float(want[i]);
    d = fmaxf(d, fabsf(__bfloat162float(got[i]) - w));
    m = fmaxf(m, fabsf(w));
  }
  atomicMax(reinterpret_cast<int*>(stats), __float_as_int(d));
  atomicMax(reinterpret_cast<int*>(stats + 1), __float_as_int(m));
}

struct Layer {
  const char* name;
  int tokens, channels, K;
  Act act;
  bool residual;
};

struct Buffers {
  __nv_bfloat16 *x, *w, *bias, *c, *want, *got;
  float* stats;
  void* workspace;
  size_t workspace_bytes;
};

void report(const char* model, const Layer& l, const char* option, float ms, float rel_diff) {
  std::printf("%-5s %-4s %-44s %7.1f us  %4.0f TFLOP/s", model, l.name, option, ms * 1e3f,
              2.0 * l.tokens * l.channels * l.K / (ms * 1e-3) / 1e12);
  if (rel_diff >= 0.f) std::printf("  max diff %.2g of max |value|", rel_diff);
  std::printf("\n");
}

float difference(cudaStream_t s, const Buffers& b, size_t n) {
  check(cudaMemsetAsync(b.stats, 0, 2 * sizeof(float), s), "cudaMemset");
  compare<<<1024, 256, 0, s>>>(n, b.got, b.want, b.stats);
  float h[2];
  check(cudaMemcpyAsync(h, b.stats, sizeof h, cudaMemcpyDeviceToHost, s), "cudaMemcpy");
  check(cudaStreamSynchronize(s), "the comparison");
  return h[0] / h[1];
}

namespace th = cutlass::epilogue::thread;
using samfast::cuda::cutlass_gemm::BF16;
using samfast::cuda::cutlass_gemm::Cluster1x2;
using samfast::cuda::cutlass_gemm::Cluster2x1;
template <class Tile, class Cluster, class Schedule, class EpilogueSchedule, template <class> class Act_,
          class Source>
using Bf16Gemm = samfast::cuda::cutlass_gemm::Gemm<Tile, Cluster, Schedule, EpilogueSchedule, Act_, BF16, Source, BF16>;

// One CUTLASS configuration (tile, cluster, schedules) in the layer's epilogue form.
template <class Tile, class Cluster, class Schedule, class EpilogueSchedule>
void cutlass_option(cudaStream_t s, const Buffers& b, const char* model, const Layer& l, const char* name) {
  auto go = [&](auto tag) {
    using C = typename decltype(tag)::type;
    using Gemm = typename C::Adapter;
    const typename Gemm::Arguments args =
        C::arguments(l.channels, l.tokens, l.K, b.w, nullptr, b.x, nullptr, b.bias, l.residual ? b.c : nullptr, b.got,
                     nullptr);
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess || Gemm::get_workspace_size(args) > b.workspace_bytes ||
        gemm.initialize(args, b.workspace, s) != cutlass::Status::kSuccess) {
      std::printf("%-5s %-4s %-44s CUTLASS cannot run it\n", model, l.name, name);
      return;
    }
    const float ms = time_ms(s, [&] { gemm.run(s); }, 5, 30);
    report(model, l, name, ms, difference(s, b, size_t(l.tokens) * l.channels));
  };
  struct Gelu { using type = Bf16Gemm<Tile, Cluster, Schedule, EpilogueSchedule, th::GELU_taylor, void>; };
  struct Bias { using type = Bf16Gemm<Tile, Cluster, Schedule, EpilogueSchedule, th::Identity, void>; };
  struct Residual { using type = Bf16Gemm<Tile, Cluster, Schedule, EpilogueSchedule, th::Identity, BF16>; };
  if (l.act == Act::GELU)
    go(Gelu{});
  else if (l.residual)
    go(Residual{});
  else
    go(Bias{});
}

}  // namespace

int main() {
  using cute::_64, cute::_128, cute::_256;
  namespace gm = cutlass::gemm;
  namespace ep = cutlass::epilogue;
  samfast::CudaContext ctx(0);
  cudaStream_t s = ctx.stream;
  Buffers b;
  const size_t most = size_t(32768) * 5120;  // (elements of the largest operand or output)
  for (auto** p : {&b.x, &b.c, &b.want, &b.got}) check(cudaMalloc(p, most * 2), "cudaMalloc");
  check(cudaMalloc(&b.w, size_t(5120) * 1280 * 2), "cudaMalloc");
  check(cudaMalloc(&b.bias, 5120 * 2), "cudaMalloc");
  check(cudaMalloc(&b.stats, 2 * sizeof(float)), "cudaMalloc");
  b.workspace = ctx.workspace, b.workspace_bytes = ctx.workspace_bytes;
  const struct {
    const char* model;
    int dim;
  } models[] = {{"vit_b", 768}, {"vit_h", 1280}};
  for (const auto& m : models) {
    const int C = m.dim;
    const Layer layers[] = {{"qkv", 32768, 3 * C, C, Act::None, false},
                            {"proj", 32768, C, C, Act::None, true},
                            {"lin1", 32768, 4 * C, C, Act::GELU, false},
                            {"lin2", 32768, C, 4 * C, Act::None, true}};
    for (const Layer& l : layers) {
      // activations and residual of order 1, weights of a trained layer's scale (1 / sqrt(K))
      fill<<<1024, 256, 0, s>>>(b.x, size_t(l.tokens) * l.K, 1, 1.f);
      fill<<<1024, 256, 0, s>>>(b.w, size_t(l.channels) * l.K, 2, 1.7f / std::sqrt(float(l.K)));
      fill<<<64, 256, 0, s>>>(b.bias, l.channels, 3, 0.5f);
      fill<<<1024, 256, 0, s>>>(b.c, size_t(l.tokens) * l.channels, 4, 1.f);
      auto library = [&] {
        samfast::cuda::gemm(ctx, samfast::DType::BF16, true, l.tokens, l.channels, l.K, b.x, l.K, b.w, l.K, b.want,
                            l.channels, b.bias, l.act, l.residual ? b.c : nullptr);
      };
      report(m.model, l, "samfast's cuda::gemm (cuBLASLt)", time_ms(s, library, 5, 30), -1.f);
      using T128 = cute::Shape<_128, _128, _64>;
      cutlass_option<T128, Cluster1x2, gm::KernelTmaWarpSpecializedPingpong, ep::TmaWarpSpecialized>(
          s, b, m.model, l, "CUTLASS ping-pong 128x128x64, cluster 1x2");
      cutlass_option<T128, Cluster2x1, gm::KernelTmaWarpSpecializedPingpong, ep::TmaWarpSpecialized>(
          s, b, m.model, l, "CUTLASS ping-pong 128x128x64, cluster 2x1");
      cutlass_option<cute::Shape<_256, _128, _64>, Cluster1x2, gm::KernelTmaWarpSpecializedCooperative,
                     ep::TmaWarpSpecializedCooperative>(s, b, m.model, l, "CUTLASS cooperative 256x128x64, 1x2");
      cutlass_option<cute::Shape<_128, _256, _64>, Cluster2x1, gm::KernelTmaWarpSpecializedCooperative,
                     ep::TmaWarpSpecializedCooperative>(s, b, m.model, l, "CUTLASS cooperative 128x256x64, 2x1");
    }
  }
  return 0;
}
