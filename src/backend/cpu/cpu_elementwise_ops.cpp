// Normalisation, elementwise and layout ops of the CPU backend.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_ops.h"
#include "masks/upsample.h"
#include "samfast/error.h"

namespace samfast {

namespace cpu {
SAMFAST_CPU_CLONES void softmax_row(float* __restrict row, int64_t n) {
  float mx = row[0];
#pragma omp simd reduction(max : mx)
  for (int64_t c = 0; c < n; ++c) mx = row[c] > mx ? row[c] : mx;
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) row[c] = vexp(row[c] - mx);
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < n; ++c) sum += row[c];
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) row[c] *= inv;
}

SAMFAST_CPU_CLONES void layer_norm_row(const float* in, float* out, int64_t C, const float* w, const float* b, float eps) {
  // Double accumulation (no drift over thousands of channels), in SIMD lanes: a serial double sum
  // is a chain of dependent adds, and LayerNorm's rows were 15% of segment everything's time.
  double sum = 0, var = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < C; ++c) sum += in[c];
  const double mean = sum / C;
#pragma omp simd reduction(+ : var)
  for (int64_t c = 0; c < C; ++c) {
    const double d = in[c] - mean;
    var += d * d;
  }
  var /= C;
  const float m = (float)mean, rstd = (float)(1.0 / std::sqrt(var + eps));
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) out[c] = (in[c] - m) * rstd * w[c] + b[c];
}

void softmax_rows(float* x, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) softmax_row(x + r * cols, cols);
}
}  // namespace cpu

Tensor CpuOps::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Act act) {
  check_layer_norm(x, w, b);
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  Tensor y = Tensor::empty(x.shape);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) cpu::layer_norm_row(x.data + r * C, y.data + r * C, C, w.data, b.data, eps);
  cpu::apply_act(y.data, y.numel(), act);
  return y;
}

namespace {
// y[o + i] = a[o + i] + b[i] for each whole copy o of b's m values in n.
SAMFAST_CPU_CLONES void add_repeated(const float* __restrict a, const float* __restrict b, float* __restrict y, int64_t m,
                                     int64_t n) {
  for (int64_t o = 0; o < n; o += m) {
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) y[o + i] = a[o + i] + b[i];
  }
}
}  // namespace

Tensor CpuOps::add(const Tensor& a, const Tensor& b) {
  check_add(a, b);
  const int64_t n = a.numel(), m = b.numel();
  Tensor y = Tensor::empty(a.shape);
  const int64_t chunk = m >= 4096 ? m : 4096 / m * m;  // whole copies of b, big enough to split
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t start = 0; start < n; start += chunk)
    add_repeated(a.data + start, b.data, y.data + start, m, std::min(chunk, n - start));
  return y;
}

Tensor CpuOps::nchw_to_nhwc(const Tensor& x) {
  check_4d(x, "nchw_to_nhwc", "(B, C, H, W)");
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor y = Tensor::empty({B, H, W, C});
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) y.data[((b * H + h) * W + w) * C + c] = x.data[((b * C + c) * H + h) * W + w];
  return y;
}

Tensor CpuOps::nhwc_to_nchw(const Tensor& x) {
  check_4d(x, "nhwc_to_nchw", "(B, H, W, C)");
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor y = Tensor::empty({B, C, H, W});
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) y.data[((b * C + c) * H + h) * W + w] = x.data[((b * H + h) * W + w) * C + c];
  return y;
}

Tensor CpuOps::normalize_rgb(const Tensor& rgb, const Tensor& extent, const std::array<float, 3>& mean,
                             const std::array<float, 3>& stdev) {
  check_normalize_rgb(rgb, extent);
  const int64_t B = rgb.dim(0), S = rgb.dim(1);
  Tensor y = Tensor::empty({B, 3, S, S});
  const uint8_t *px = rgb.ptr<uint8_t>(), *ex = extent.ptr<uint8_t>();
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int c = 0; c < 3; ++c)
      for (int64_t r = 0; r < S; ++r) {
        const bool row = ex[(b * 2) * S + r] != 0;
        const uint8_t* cols = ex + (b * 2 + 1) * S;
        const uint8_t* src = px + (b * S + r) * S * 3 + c;
        float* dst = y.data + ((b * 3 + c) * S + r) * S;
        for (int64_t x = 0; x < S; ++x)
          dst[x] = row && cols[x] ? (static_cast<float>(src[3 * x]) - mean[c]) / stdev[c] : 0.f;
      }
  return y;
}

Tensor CpuOps::postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                                 std::pair<int, int> original_size, bool binarize) {
  check_postprocess_masks(low_res, img_size, input_size, original_size);
  Tensor masks = samfast::postprocess_masks(low_res, img_size, input_size, original_size);
  if (!binarize) return masks;
  Tensor bits = Tensor::empty(masks.shape, DType::U8);
  const float* __restrict m = masks.data;
  uint8_t* __restrict b = bits.ptr<uint8_t>();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < masks.numel(); ++i) b[i] = m[i] > 0.f;
  return bits;
}

Tensor CpuOps::upload(const Tensor& host) {
  // The CPU ops read fp32, and normalize_rgb uint8 pixels (Model::upload refuses uint8 masks).
  if (host.dtype != DType::F32 && host.dtype != DType::U8)
    throw Error("upload: model inputs are fp32 host tensors, got " + shape_str(host.shape) + " of another type");
  return host;
}

Tensor CpuOps::slice(const Tensor& x, int64_t first, int64_t count) {
  check_slice(x, first, count);
  const int64_t B = x.dim(0), N = x.dim(1), inner = x.numel() / std::max<int64_t>(1, B * N);
  Shape s = x.shape;
  s[1] = count;
  Tensor y = Tensor::empty(s);
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(y.data + b * count * inner, x.data + (b * N + first) * inner, sizeof(float) * count * inner);
  return y;
}

Tensor CpuOps::concat(const std::vector<Tensor>& xs) {
  check_concat(xs);
  const int64_t B = xs[0].dim(0), inner = xs[0].numel() / std::max<int64_t>(1, B * xs[0].dim(1));
  int64_t N = 0;
  for (const Tensor& x : xs) N += x.dim(1);
  Shape s = xs[0].shape;
  s[1] = N;
  Tensor y = Tensor::empty(s);
  for (int64_t b = 0, at = 0; b < B; ++b)
    for (const Tensor& x : xs) {
      const int64_t n = x.dim(1) * inner;
      std::memcpy(y.data + at, x.data + b * n, sizeof(float) * n);
      at += n;
    }
  return y;
}

Tensor CpuOps::expand_batch(const Tensor& x, int64_t batch) {
  check_expand_batch(x, batch);
  Shape s = x.shape;
  s[0] = batch;
  Tensor y = Tensor::empty(s);
  for (int64_t b = 0; b < batch; ++b) std::memcpy(y.data + b * x.numel(), x.data, sizeof(float) * x.numel());
  return y;
}

}  // namespace samfast
