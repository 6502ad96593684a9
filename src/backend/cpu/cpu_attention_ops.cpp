// Attention ops of the CPU backend. Work items (batch x window x head) run on OpenMP threads, each
// with a single-threaded GEMM, so that the many small windows of the image encoder keep both
// cores busy; the S matrix of one item lives in that thread's scratch.
#include <cblas.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "samfast/error.h"

namespace samfast {
namespace {

// Runs fn(item) for item in [0, n) on OpenMP threads with OpenBLAS pinned to one thread meanwhile.
template <class Fn>
void parallel_items(int64_t n, Fn&& fn) {
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) fn(i);
  openblas_set_num_threads(blas_threads);
}

}  // namespace

Tensor CpuOps::rel_pos_attention(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                                 const Tensor& rel_pos_w, int heads, int window) {
  // ref: modeling/image_encoder.py Attention.forward, add_decomposed_rel_pos, window_partition
  const int64_t B = qkv.dim(0), H = qkv.dim(1), W = qkv.dim(2), C = qkv.dim(3) / 3, hd = C / heads;
  const int64_t th = window > 0 ? window : H, tw = window > 0 ? window : W;  // tile (window) size
  const int64_t nwh = (H + th - 1) / th, nww = (W + tw - 1) / tw, T = th * tw;
  if (qkv.dim(3) != 3 * C || C % heads != 0 || qkv_bias.numel() != 3 * C)
    throw Error("rel_pos_attention: qkv " + shape_str(qkv.shape) + " with " + std::to_string(heads) + " heads");
  if (rel_pos_h.dim(0) != 2 * th - 1 || rel_pos_w.dim(0) != 2 * tw - 1 || rel_pos_h.dim(1) != hd)
    throw Error("rel_pos_attention: relative-position tables " + shape_str(rel_pos_h.shape) + ", " +
                shape_str(rel_pos_w.shape) + " do not fit a " + std::to_string(th) + "x" + std::to_string(tw) +
                " attention tile with head dim " + std::to_string(hd));
  const float scale = 1.0f / std::sqrt((float)hd);
  Tensor out = Tensor::empty({B, H, W, C});

  parallel_items(B * nwh * nww * heads, [&](int64_t item) {
    const int64_t h = item % heads, win = item / heads;
    const int64_t bi = win / (nwh * nww), wy = (win / nww) % nwh, wx = win % nww;
    std::vector<float> q(T * hd), qs(T * hd), k(T * hd), v(T * hd), s(T * T), o(T * hd);
    std::vector<float> rel_h(T * th), rel_w(T * tw);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t gy = wy * th + t / tw, gx = wx * tw + t % tw;
      // Tokens of the zero padding: norm1 output is 0 there, so q = k = v = the qkv bias.
      const float* src = (gy < H && gx < W) ? qkv.data + ((bi * H + gy) * W + gx) * 3 * C : qkv_bias.data;
      for (int64_t d = 0; d < hd; ++d) {
        q[t * hd + d] = src[h * hd + d];
        qs[t * hd + d] = src[h * hd + d] * scale;
        k[t * hd + d] = src[C + h * hd + d];
        v[t * hd + d] = src[2 * C + h * hd + d];
      }
    }
    cpu::gemm(true, T, T, hd, 1.f, qs.data(), hd, k.data(), hd, 0.f, s.data(), T);
    // Decomposed relative position with the unscaled q: rel_h[t, ky] = q[t] . Rh[qy - ky + th - 1].
    for (int64_t t = 0; t < T; ++t) {
      const int64_t qy = t / tw, qx = t % tw;
      const float* qt = q.data() + t * hd;
      for (int64_t ky = 0; ky < th; ++ky) {
        const float* r = rel_pos_h.data + (qy - ky + th - 1) * hd;
        float acc = 0.f;
        for (int64_t d = 0; d < hd; ++d) acc += qt[d] * r[d];
        rel_h[t * th + ky] = acc;
      }
      for (int64_t kx = 0; kx < tw; ++kx) {
        const float* r = rel_pos_w.data + (qx - kx + tw - 1) * hd;
        float acc = 0.f;
        for (int64_t d = 0; d < hd; ++d) acc += qt[d] * r[d];
        rel_w[t * tw + kx] = acc;
      }
      float* row = s.data() + t * T;
      for (int64_t key = 0; key < T; ++key) row[key] += rel_h[t * th + key / tw] + rel_w[t * tw + key % tw];
    }
    cpu::softmax_rows(s.data(), T, T);
    cpu::gemm(false, T, hd, T, 1.f, s.data(), T, v.data(), hd, 0.f, o.data(), hd);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t gy = wy * th + t / tw, gx = wx * tw + t % tw;
      if (gy < H && gx < W) std::memcpy(out.data + ((bi * H + gy) * W + gx) * C + h * hd, o.data() + t * hd, sizeof(float) * hd);
    }
  });
  return out;
}

Tensor CpuOps::attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) {
  // ref: modeling/transformer.py Attention.forward (after the projections)
  const int64_t B = q.dim(0), Nq = q.dim(1), D = q.dim(2), Nk = k.dim(1), hd = D / heads;
  if (k.dim(0) != B || v.dim(0) != B || k.dim(2) != D || v.dim(2) != D || v.dim(1) != Nk || D % heads)
    throw Error("attention: q " + shape_str(q.shape) + ", k " + shape_str(k.shape) + ", v " + shape_str(v.shape));
  const float inv_sqrt = std::sqrt((float)hd);
  Tensor out = Tensor::empty({B, Nq, D});
  parallel_items(B * heads, [&](int64_t item) {
    const int64_t bi = item / heads, h = item % heads;
    const float* qb = q.data + bi * Nq * D + h * hd;
    const float* kb = k.data + bi * Nk * D + h * hd;
    const float* vb = v.data + bi * Nk * D + h * hd;
    std::vector<float> s(Nq * Nk);
    cpu::gemm(true, Nq, Nk, hd, 1.f, qb, D, kb, D, 0.f, s.data(), Nk);
    for (float& x : s) x /= inv_sqrt;
    cpu::softmax_rows(s.data(), Nq, Nk);
    cpu::gemm(false, Nq, hd, Nk, 1.f, s.data(), Nk, vb, D, 0.f, out.data + bi * Nq * D + h * hd, D);
  });
  return out;
}

}  // namespace samfast
