// GEMM-shaped ops of the CPU backend: Linear, convolutions (im2col + GEMM), batched matmul.
#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "samfast/error.h"

namespace samfast {
namespace cpu {

int threads() {
  static const int n = [] {
    const char* env = std::getenv("OMP_NUM_THREADS");
    const int given = env ? std::atoi(env) : 0;  // ("4,2": the outer level's count)
    return given > 0 ? given : omp_get_num_procs();
  }();
  return n;
}

namespace {

// threads() for the calling thread while it lives (inside a parallel region oneDNN runs on the
// calling thread alone, whatever the setting).
struct GemmThreads {
  const int caller = omp_get_max_threads(), n = omp_in_parallel() ? caller : threads();
  GemmThreads() {
    if (n != caller) omp_set_num_threads(n);
  }
  ~GemmThreads() {
    if (n != caller) omp_set_num_threads(caller);
  }
  GemmThreads(const GemmThreads&) = delete;
  GemmThreads& operator=(const GemmThreads&) = delete;
};

}  // namespace

void gemm(bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  // oneDNN picks its kernels from the CPU's instruction sets (AVX2, AVX-512, ...), where OpenBLAS
  // 0.3.21 picks them from a table of CPU models and falls back to SSE3 on one it does not know (a
  // new CPU or a VM's generic model: 5-7x slower); and it threads on the OpenMP pool the rest of the
  // backend uses. Row-major, like cblas.
  dnnl_status_t status;
  {
    const GemmThreads fixed;
    status = dnnl_sgemm('N', b_transposed ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  if (status != dnnl_success)
    throw Error("CPU GEMM (" + std::to_string(M) + " x " + std::to_string(N) + " x " + std::to_string(K) +
                ") failed in oneDNN: status " + std::to_string((int)status));
}

namespace {

SAMFAST_CPU_CLONES void relu_span(float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] : 0.f;
}

SAMFAST_CPU_CLONES void gelu_span(float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.f + verf(x[i] * 0.70710678118654752f));
}

}  // namespace

Tensor convt2x2_weight_rows(const Tensor& w) {
  const int64_t Cin = w.dim(0), Cout = w.dim(1);
  Tensor r = Tensor::empty({Cin, 4 * Cout});
  for (int64_t ci = 0; ci < Cin; ++ci)
    for (int64_t co = 0; co < Cout; ++co)
      for (int64_t k = 0; k < 4; ++k) r.data[(ci * 4 + k) * Cout + co] = w.data[(ci * Cout + co) * 4 + k];
  return r;
}

void apply_act(float* x, int64_t n, Act act) {
  if (act == Act::None) return;
  // Spans of 16K values, each a plain simd loop: GCC 12 compiled the erf of a combined
  // `parallel for simd` to code 3-5x slower a value than the same loop in a function of its own
  // (6.4 against 1.3 ns a GELU on one core, measured), and a small tensor is one span, no region.
  void (*span)(float*, int64_t) = act == Act::ReLU ? relu_span : gelu_span;
  constexpr int64_t kSpan = 16384;
  if (n <= kSpan) return span(x, n);
#pragma omp parallel for schedule(static) num_threads(std::min<int64_t>(threads(), (n + kSpan - 1) / kSpan))
  for (int64_t first = 0; first < n; first += kSpan) span(x + first, std::min(kSpan, n - first));
}

void quantize_rows_int8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float amax = 0.f;
#pragma omp simd reduction(max : amax)
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(xr[c]));
    const float s = amax > 0.f ? amax / 127.f : 1.f, inv = 1.f / s;
    int8_t* qr = q + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) qr[c] = static_cast<int8_t>(std::nearbyint(std::clamp(xr[c] * inv, -127.f, 127.f)));
    scale[r] = s;
  }
}

}  // namespace cpu

Tensor CpuOps::prepare_bulk_linear(const Tensor& w) {
  if (!int8_bulk_) return w;
  if (w.ndim() != 2 || w.dtype != DType::F32)
    throw Error("prepare_bulk_linear: expected an fp32 (out, in) weight, got " + shape_str(w.shape));
  const int64_t out = w.dim(0), in = w.dim(1);
  // One allocation: the int8 values (out, in), then the per-output-channel scales.
  Tensor q = Tensor::empty({int64_t(cpu::int8_scale_offset(out, in) + sizeof(float) * out)}, DType::U8);
  cpu::quantize_rows_int8(w.data, out, in, q.ptr<int8_t>(), reinterpret_cast<float*>(q.ptr<char>() + cpu::int8_scale_offset(out, in)));
  q.shape = w.shape;
  q.dtype = DType::I8;
  return q;
}

// y = act((x_q W_q^T) * s_x[row] * s_w[col] + b) (+ residual): the activations quantised per row on
// the fly, the int8 product on oneDNN's int8 kernels (VNNI where the CPU has it) with the weights'
// scales applied as its output scales, the rows' scales with the bias in the epilogue below.
Tensor CpuOps::linear_int8(const Tensor& x, const Tensor& w, const Tensor* b, Act act, const Tensor* residual) {
  const int64_t in = w.dim(1), out = w.dim(0), rows = x.numel() / in;
  std::vector<int8_t> xq(static_cast<size_t>(rows * in));
  std::vector<float> xs(static_cast<size_t>(rows));
  cpu::quantize_rows_int8(x.data, rows, in, xq.data(), xs.data());
  Shape ys = x.shape;
  ys.back() = out;
  Tensor y = Tensor::empty(ys);
  using dnnl::memory;
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::desc src({rows, in}, memory::data_type::s8, memory::format_tag::ab);
  const memory::desc wei({in, out}, memory::data_type::s8, memory::format_tag::ba);  // (out, in) as stored
  const memory::desc dst({rows, out}, memory::data_type::f32, memory::format_tag::ab);
  const memory::desc scales({out}, memory::data_type::f32, memory::format_tag::a);
  dnnl::primitive_attr attr;
  attr.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});  // one scale per output column
  try {
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), attr, engine);
    float* w_scale = reinterpret_cast<float*>(w.ptr<char>() + cpu::int8_scale_offset(out, in));
    const cpu::GemmThreads fixed;
    dnnl::matmul(pd).execute(stream, {{DNNL_ARG_SRC, memory(src, engine, xq.data())},
                                      {DNNL_ARG_WEIGHTS, memory(wei, engine, w.data)},
                                      {DNNL_ARG_DST, memory(dst, engine, y.data)},
                                      {DNNL_ARG_ATTR_OUTPUT_SCALES, memory(scales, engine, w_scale)}});
    stream.wait();
  } catch (const dnnl::error& e) {
    throw Error("CPU int8 GEMM (" + std::to_string(rows) + " x " + std::to_string(out) + " x " + std::to_string(in) +
                ") failed in oneDNN: " + e.what());
  }
  const float* bias = b ? b->data : nullptr;
  const float* res = residual ? residual->data : nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict yr = y.data + r * out;
    const float s = xs[size_t(r)];
#pragma omp simd
    for (int64_t c = 0; c < out; ++c) yr[c] = yr[c] * s + (bias ? bias[c] : 0.f);
  }
  cpu::apply_act(y.data, y.numel(), act);  // (on the whole tensor: one call, its spans shared by the threads)
  if (res) {
    const int64_t n = y.numel();
    float* __restrict py = y.data;
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) py[i] += res[i];
  }
  return y;
}

Tensor CpuOps::linear(const Tensor& x, const Tensor& w, const Tensor* b, Act act, const Tensor* residual) {
  check_linear(x, w, b, residual);
  if (w.dtype == DType::I8) return linear_int8(x, w, b, act, residual);
  const int64_t in = w.dim(1), out = w.dim(0);
  const int64_t rows = x.numel() / in;
  Shape ys = x.shape;
  ys.back() = out;
  Tensor y = Tensor::empty(ys);
  float beta = 0.f;
  if (b) {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(y.data + r * out, b->data, sizeof(float) * out);
    beta = 1.f;
  }
  cpu::gemm(true, rows, out, in, 1.f, x.data, in, w.data, in, beta, y.data, out);
  cpu::apply_act(y.data, y.numel(), act);
  if (residual) {
    const int64_t n = y.numel();
    float* __restrict py = y.data;
    const float* __restrict pr = residual->data;
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) py[i] += pr[i];
  }
  return y;
}

Tensor CpuOps::conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad) {
  // im2col with columns ordered (ci, ky, kx): the weight (Cout, Cin, kh, kw) is then a plain
  // (Cout, Cin*kh*kw) matrix, used as stored.
  check_conv2d(x, w, stride, pad);
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Cin = x.dim(3);
  const int64_t Cout = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  const int64_t K = Cin * kh * kw, rows = B * Ho * Wo;
  Tensor col = Tensor::empty({rows, K});
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t bi = r / (Ho * Wo), oy = (r / Wo) % Ho, ox = r % Wo;
    float* dst = col.data + r * K;
    for (int64_t ky = 0; ky < kh; ++ky)
      for (int64_t kx = 0; kx < kw; ++kx) {
        const int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
        const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
        const float* src = x.data + ((bi * H + iy) * W + ix) * Cin;
        for (int64_t ci = 0; ci < Cin; ++ci) dst[(ci * kh + ky) * kw + kx] = inside ? src[ci] : 0.f;
      }
  }
  Tensor w2 = w.view({Cout, K});
  return linear(col.view({B, Ho, Wo, K}), w2, b, Act::None, nullptr);
}

Tensor CpuOps::conv_transpose2x2(const Tensor& x, const Tensor& w, const Tensor& b, Act act) {
  // Kernel 2 / stride 2 never overlaps: out[2y+dy, 2x+dx, co] = b[co] + sum_ci x[y, x, ci] w[ci, co, dy, dx],
  // one GEMM (BHW, Cin) @ (Cin, 4*Cout) with the weight reordered to (ci, dy, dx, co) so that
  // each output pixel's channels come out contiguous, then a scatter of rows.
  check_conv_transpose2x2(x, w, b);
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Cin = x.dim(3), Cout = w.dim(1);
  const Tensor wr = cpu::convt2x2_weight_rows(w);
  Tensor tmp = Tensor::empty({B * H * W, 4 * Cout});
  cpu::gemm(false, B * H * W, 4 * Cout, Cin, 1.f, x.data, Cin, wr.data, 4 * Cout, 0.f, tmp.data, 4 * Cout);
  Tensor y = Tensor::empty({B, 2 * H, 2 * W, Cout});
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * H * W; ++r) {
    const int64_t bi = r / (H * W), iy = (r / W) % H, ix = r % W;
    for (int64_t k = 0; k < 4; ++k) {
      float* __restrict dst = y.data + ((bi * 2 * H + 2 * iy + k / 2) * 2 * W + 2 * ix + k % 2) * Cout;
      const float* __restrict src = tmp.data + (r * 4 + k) * Cout;
#pragma omp simd
      for (int64_t co = 0; co < Cout; ++co) dst[co] = src[co] + b.data[co];
    }
  }
  cpu::apply_act(y.data, y.numel(), act);
  return y;
}

Tensor CpuOps::bmm_nt(const Tensor& a, const Tensor& b) {
  check_bmm_nt(a, b);
  const int64_t B = a.dim(0), M = a.dim(1), K = a.dim(2), N = b.dim(1);
  Tensor y = Tensor::empty({B, M, N});
  for (int64_t i = 0; i < B; ++i)
    cpu::gemm(true, M, N, K, 1.f, a.data + i * M * K, K, b.data + i * N * K, K, 0.f, y.data + i * M * N, N);
  return y;
}

}  // namespace samfast
