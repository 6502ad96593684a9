// ops.upscale_masks on the CPU: MaskDecoder.predict_masks' output upscaling (ConvTranspose2d 2x2
// D -> C1, LayerNorm2d, GELU, ConvTranspose2d 2x2 C1 -> C2, GELU) and the hypernetwork product, one
// row of image tokens at a time. Composed of whole-batch ops, each prompt's 4x and 16x larger
// intermediates (~30 MB in fp32 for SAM's G 64, D 256, C1 64, C2 32) go out to memory and back,
// and through a scatter each; a row's (~200 KB) stay in the core's cache. vit_b's shapes, 16
// prompts, two cores: 5.7 against 7.1 ms a prompt.
#include <vector>

#include "backend/cpu/cpu_ops.h"

namespace samfast {

Tensor CpuOps::upscale_masks(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w,
                             const Tensor& ln_b, float eps, const Tensor& w2, const Tensor& b2, const Tensor& hyper) {
  check_upscale(keys, w1, b1, ln_w, ln_b, w2, b2, hyper);
  const int64_t B = keys.dim(0), G = keys.dim(1), Gw = keys.dim(2), D = keys.dim(3);
  const int64_t C1 = w1.dim(1), C2 = w2.dim(1), M = hyper.dim(1), H = 4 * G, W = 4 * Gw;
  const Tensor w1r = cpu::convt2x2_weight_rows(w1), w2r = cpu::convt2x2_weight_rows(w2);
  Tensor out = Tensor::empty({B, M, H, W});
  // One work item: prompt b, token row iy (Gw tokens). Inside the parallel region each GEMM runs on
  // its calling thread alone (cpu::gemm), so a prompt's sums do not depend on the thread count or on
  // the other prompts of the batch.
#pragma omp parallel num_threads(cpu::threads())
  {
    std::vector<float> t1(Gw * 4 * C1), t2(Gw * 4 * 4 * C2), t3(Gw * 16 * M);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < B * G; ++item) {
      const int64_t b = item / G, iy = item % G;
      // (1) ConvTranspose #1: row (ix), column (s1, c1).
      cpu::gemm(false, Gw, 4 * C1, D, 1.f, keys.data + (b * G + iy) * Gw * D, D, w1r.data, 4 * C1, 0.f, t1.data(), 4 * C1);
      // + bias, LayerNorm2d over C1, GELU: rows (ix, s1) of C1.
      for (int64_t r = 0; r < Gw * 4; ++r) {
        float* v = t1.data() + r * C1;
#pragma omp simd
        for (int64_t c = 0; c < C1; ++c) v[c] += b1.data[c];
        cpu::layer_norm_row(v, v, C1, ln_w.data, ln_b.data, eps);
      }
      cpu::apply_act(t1.data(), (int64_t)t1.size(), Act::GELU);
      // (2) ConvTranspose #2: rows (ix, s1), columns (s2, c2); + bias, GELU.
      cpu::gemm(false, Gw * 4, 4 * C2, C1, 1.f, t1.data(), C1, w2r.data, 4 * C2, 0.f, t2.data(), 4 * C2);
      for (int64_t r = 0; r < Gw * 16; ++r) {
        float* v = t2.data() + r * C2;
#pragma omp simd
        for (int64_t c = 0; c < C2; ++c) v[c] += b2.data[c];
      }
      cpu::apply_act(t2.data(), (int64_t)t2.size(), Act::GELU);
      // (3) Hypernetwork product: rows (ix, s1, s2) of C2 against the prompt's M rows of C2.
      cpu::gemm(true, Gw * 16, M, C2, 1.f, t2.data(), C2, hyper.data + b * M * C2, C2, 0.f, t3.data(), M);
      // Pixel (4 iy + 2 dy1 + dy2, 4 ix + 2 dx1 + dx2) of each mask, s = 2 dy + dx.
      for (int64_t ix = 0; ix < Gw; ++ix)
        for (int64_t s1 = 0; s1 < 4; ++s1)
          for (int64_t s2 = 0; s2 < 4; ++s2) {
            const float* v = t3.data() + ((ix * 4 + s1) * 4 + s2) * M;
            const int64_t py = 4 * iy + 2 * (s1 / 2) + s2 / 2, px = 4 * ix + 2 * (s1 % 2) + s2 % 2;
            for (int64_t m = 0; m < M; ++m) out.data[((b * M + m) * H + py) * W + px] = v[m];
          }
    }
  }
  return out;
}

}  // namespace samfast
