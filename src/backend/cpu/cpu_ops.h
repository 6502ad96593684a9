// fp32 CPU backend: GEMMs through oneDNN (dnnl_sgemm), elementwise work on OpenMP threads.
// The reference path: exact against upstream in fp32 (same math, summation order aside).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

#include "backend/op_checks.h"
#include "backend/ops.h"

namespace samfast {

class CpuOps final : public Ops {
 public:
  // int8_bulk: the image encoder blocks' Linear layers in int8 (prepare_bulk_linear quantises their
  // weights; linear() then quantises activations per row and multiplies on oneDNN's int8 kernels).
  explicit CpuOps(bool int8_bulk = false) : int8_bulk_(int8_bulk) {}
  Tensor prepare_bulk_linear(const Tensor& w) override;
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b, Act act, const Tensor* residual) override;
  Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Act act) override;
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad) override;
  Tensor conv_transpose2x2(const Tensor& x, const Tensor& w, const Tensor& b, Act act) override;
  Tensor add(const Tensor& a, const Tensor& b) override;
  Tensor nchw_to_nhwc(const Tensor& x) override;
  Tensor nhwc_to_nchw(const Tensor& x) override;
  Tensor normalize_rgb(const Tensor& rgb, const Tensor& extent, const std::array<float, 3>& mean,
                       const std::array<float, 3>& stdev) override;
  Tensor rel_pos_attention(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                           const Tensor& rel_pos_w, int heads, int window) override;
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) override;
  Tensor image_to_token_attention(const Tensor& x, const Tensor& k, const Tensor& kb, const Tensor& v,
                                  const Tensor& bias, const Tensor& residual, const Tensor& ln_w, const Tensor& ln_b,
                                  float eps, int heads) override;
  Tensor upscale_masks(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w, const Tensor& ln_b,
                       float eps, const Tensor& w2, const Tensor& b2, const Tensor& hyper) override;
  Tensor bmm_nt(const Tensor& a, const Tensor& b) override;
  Tensor postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                           std::pair<int, int> original_size, bool binarize) override;
  Later<MaskStats> mask_stats(const Tensor& low_res, int img_size, std::pair<int, int> input_size, std::pair<int, int> size,
                       float thr, float hi, float lo) override;
  std::vector<Rle> mask_rles(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                             std::pair<int, int> size, float thr, std::pair<int, int> offset_xy,
                             std::pair<int, int> frame_size) override;
  Tensor gather(const Tensor& x, const std::vector<int64_t>& select) override;
  Tensor slice(const Tensor& x, int64_t first, int64_t count) override;
  Tensor concat(const std::vector<Tensor>& xs) override;
  Tensor expand_batch(const Tensor& x, int64_t batch) override;
  Tensor upload(const Tensor& host) override;  // the same tensor (after checking it is fp32, or uint8 pixels)
  Tensor download(const Tensor& x) override { return x; }

 private:
  Tensor linear_int8(const Tensor& x, const Tensor& w, const Tensor* b, Act act, const Tensor* residual);
  bool int8_bulk_;
};

// The CPU backend's own hot loops (GELU, softmax, LayerNorm, adds) are built twice, for the
// library's baseline (-march=x86-64-v3: AVX2) and for AVX-512 (x86-64-v4), and the loader picks one
// for the CPU it runs on (function multiversioning through an ifunc; oneDNN already picks its GEMM
// kernels at run time). At AVX2's width a GELU took 1.37 ns a value on one core of an AVX-512 Xeon,
// at AVX-512's 0.75. Only single-threaded leaf functions carry it: a clone is called through a
// pointer, never inlined, and OpenMP's outlined regions would not inherit its target.
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && !defined(__CUDACC__)
#define SAMFAST_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define SAMFAST_CPU_CLONES
#endif

namespace cpu {
// The backend's thread count, one for the process: OMP_NUM_THREADS as given, else every core; not the
// calling thread's OpenMP setting. oneDNN splits a GEMM's K among its threads for some shapes, so its
// sums, and then a mask's boundary pixels, would depend on which thread called: PyTorch sets the
// thread that imports it to one OpenMP thread, and such a thread and a server's worker thread gave
// different masks for one image. GEMMs outside a parallel region and the attention's parallel work
// items run on this count.
int threads();
// C (M, N) = alpha * A (M, K) @ op(B) + beta * C, row-major; B is (N, K) when b_transposed.
void gemm(bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void apply_act(float* x, int64_t n, Act act);
// A ConvTranspose2d 2x2 weight (Cin, Cout, 2, 2) as GEMM rows (Cin, 4 Cout), column (dy dx, co): a
// pixel's four output sub-pixels come out of one GEMM row, each one's channels contiguous.
Tensor convt2x2_weight_rows(const Tensor& w);
// Symmetric int8 rows: q[r, c] = round(x[r, c] / s[r]), s[r] = max_c |x[r, c]| / 127 (1 for a zero
// row). The weights' per-output-channel quantization and the activations' per-token one.
void quantize_rows_int8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale);
// Where the per-row scales of an I8 weight (out, in) begin in its allocation: after the values, 64-byte aligned.
inline size_t int8_scale_offset(int64_t out, int64_t in) { return (size_t(out * in) + 63) / 64 * 64; }

// exp and erf written so that `#pragma omp simd` loops vectorize them (libm's calls would not; GCC
// needs -fno-trapping-math for the clamp and floorf, see CMakeLists.txt):
// exp by Cody-Waite range reduction and a degree-6 polynomial (about 1 ulp); erf by Abramowitz &
// Stegun 7.1.26 (abs error < 1.5e-7), the formula PyTorch's own vectorized CPU GELU uses.
inline float vexp(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.f;
  return y * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}
inline float verf(float x) {
  const float a = x < 0.f ? -x : x, t = 1.f / (0.3275911f * a + 1.f);
  const float r = (((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f;
  const float e = 1.f - r * t * vexp(-a * a);
  return x < 0.f ? -e : e;
}
// Row-wise softmax in place on a (rows, cols) matrix.
void softmax_rows(float* x, int64_t rows, int64_t cols);
// Softmax of one row in place (single-threaded; vectorized).
void softmax_row(float* __restrict row, int64_t n);
// out = LayerNorm(in) over C channels with weight w and bias b (statistics in double).
void layer_norm_row(const float* in, float* out, int64_t C, const float* w, const float* b, float eps);
}  // namespace cpu

}  // namespace samfast
