// Attention ops of the CPU backend. Work items (batch x window x head x block of queries) run on
// OpenMP threads, each with a single-threaded GEMM: the many small windows of the image encoder
// keep both cores busy, and a block of at most kQueryBlock query rows keeps the scores of global
// attention (kQueryBlock x 4096) in L2 instead of streaming a 64 MB matrix through memory.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "samfast/error.h"

namespace samfast {
namespace {

constexpr int64_t kQueryBlock = 128;

// Runs fn(item) for item in [0, n) on cpu::threads() OpenMP threads (a GEMM inside a parallel region
// runs on its calling thread alone: oneDNN does not nest).
template <class Fn>
void parallel_items(int64_t n, Fn&& fn) {
#pragma omp parallel for num_threads(cpu::threads()) schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) fn(i);
}

float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// Scores s (nq, th * tw) of queries q0.. of a tile (rows of q ld apart) + the decomposed relative
// position, then each row's softmax (ref: add_decomposed_rel_pos). rel_h, rel_w: th and tw floats.
SAMFAST_CPU_CLONES void add_rel_pos_softmax(float* s, int64_t nq, int64_t q0, const float* q, int64_t ld, int64_t hd,
                                            int64_t th, int64_t tw, const float* rel_pos_h, const float* rel_pos_w,
                                            float* __restrict rel_h, float* __restrict rel_w) {
  for (int64_t r = 0; r < nq; ++r) {
    const int64_t t = q0 + r, qy = t / tw, qx = t % tw;
    const float* qt = q + t * ld;
    // With the unscaled q: rel_h[ky] = q . Rh[qy - ky + th - 1], rel_w[kx] = q . Rw[qx - kx + tw - 1]
    for (int64_t ky = 0; ky < th; ++ky) rel_h[ky] = dot(qt, rel_pos_h + (qy - ky + th - 1) * hd, hd);
    for (int64_t kx = 0; kx < tw; ++kx) rel_w[kx] = dot(qt, rel_pos_w + (qx - kx + tw - 1) * hd, hd);
    float* row = s + r * th * tw;
    for (int64_t ky = 0; ky < th; ++ky) {
      float* __restrict seg = row + ky * tw;
#pragma omp simd
      for (int64_t x = 0; x < tw; ++x) seg[x] += rel_h[ky] + rel_w[x];
    }
    cpu::softmax_row(row, th * tw);
  }
}

}  // namespace

Tensor CpuOps::rel_pos_attention(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                                 const Tensor& rel_pos_w, int heads, int window) {
  // ref: modeling/image_encoder.py Attention.forward, add_decomposed_rel_pos, window_partition
  check_rel_pos_attention(qkv, qkv_bias, rel_pos_h, rel_pos_w, heads, window);
  const int64_t B = qkv.dim(0), H = qkv.dim(1), W = qkv.dim(2), C = qkv.dim(3) / 3, hd = C / heads;
  const int64_t th = window > 0 ? window : H, tw = window > 0 ? window : W;  // tile (window) size
  const int64_t nwh = (H + th - 1) / th, nww = (W + tw - 1) / tw, T = th * tw;
  const int64_t n_qblocks = (T + kQueryBlock - 1) / kQueryBlock;
  const float scale = 1.0f / std::sqrt((float)hd);
  const bool tiled = th != H || tw != W;  // windows (with padding) need a gather; global does not
  Tensor out = Tensor::empty({B, H, W, C});

  parallel_items(B * nwh * nww * heads * n_qblocks, [&](int64_t item) {
    const int64_t qb = item % n_qblocks, h = (item / n_qblocks) % heads, win = item / (n_qblocks * heads);
    const int64_t bi = win / (nwh * nww), wy = (win / nww) % nwh, wx = win % nww;
    const int64_t q0 = qb * kQueryBlock, nq = std::min(kQueryBlock, T - q0);
    // Row pointers of the tile's tokens: padded tokens (zero after norm1) have q = k = v = the bias.
    const float* q;
    const float* k;
    const float* v;
    int64_t ld;
    std::vector<float> gathered;
    if (tiled) {
      gathered.resize(3 * T * hd);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t gy = wy * th + t / tw, gx = wx * tw + t % tw;
        const float* src = (gy < H && gx < W) ? qkv.data + ((bi * H + gy) * W + gx) * 3 * C : qkv_bias.data;
        for (int j = 0; j < 3; ++j) std::memcpy(gathered.data() + (j * T + t) * hd, src + j * C + h * hd, sizeof(float) * hd);
      }
      q = gathered.data(), k = q + T * hd, v = k + T * hd, ld = hd;
    } else {
      q = qkv.data + bi * T * 3 * C + h * hd, k = q + C, v = q + 2 * C, ld = 3 * C;
    }
    std::vector<float> s(nq * T), o(nq * hd), rel_h(th), rel_w(tw);
    // s = (q * scale) k^T for this block of queries
    cpu::gemm(true, nq, T, hd, scale, q + q0 * ld, ld, k, ld, 0.f, s.data(), T);
    add_rel_pos_softmax(s.data(), nq, q0, q, ld, hd, th, tw, rel_pos_h.data, rel_pos_w.data, rel_h.data(), rel_w.data());
    cpu::gemm(false, nq, hd, T, 1.f, s.data(), T, v, ld, 0.f, o.data(), hd);
    for (int64_t r = 0; r < nq; ++r) {
      const int64_t t = q0 + r, gy = wy * th + t / tw, gx = wx * tw + t % tw;
      if (gy < H && gx < W) std::memcpy(out.data + ((bi * H + gy) * W + gx) * C + h * hd, o.data() + r * hd, sizeof(float) * hd);
    }
  });
  return out;
}

Tensor CpuOps::attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) {
  // ref: modeling/transformer.py Attention.forward (after the projections)
  // A batch of 1 in q, or in k and v, is shared by every item of the other's batch.
  check_attention(q, k, v, heads);
  const int64_t B = std::max(q.dim(0), k.dim(0)), Nq = q.dim(1), D = q.dim(2), Nk = k.dim(1), hd = D / heads;
  const int64_t q_step = q.dim(0) == 1 ? 0 : 1, kv_step = k.dim(0) == 1 ? 0 : 1;
  const float inv_sqrt = std::sqrt((float)hd);
  const int64_t n_qblocks = (Nq + kQueryBlock - 1) / kQueryBlock;
  Tensor out = Tensor::empty({B, Nq, D});
  parallel_items(B * heads * n_qblocks, [&](int64_t item) {
    const int64_t qb = item % n_qblocks, h = (item / n_qblocks) % heads, bi = item / (n_qblocks * heads);
    const int64_t q0 = qb * kQueryBlock, nq = std::min(kQueryBlock, Nq - q0);
    const float* qb_ptr = q.data + (bi * q_step * Nq + q0) * D + h * hd;
    const float* kb = k.data + bi * kv_step * Nk * D + h * hd;
    const float* vb = v.data + bi * kv_step * Nk * D + h * hd;
    std::vector<float> s(nq * Nk);
    cpu::gemm(true, nq, Nk, hd, 1.f, qb_ptr, D, kb, D, 0.f, s.data(), Nk);
    for (float& x : s) x /= inv_sqrt;  // upstream divides the scores by sqrt(head dim)
    cpu::softmax_rows(s.data(), nq, Nk);
    cpu::gemm(false, nq, hd, Nk, 1.f, s.data(), Nk, vb, D, 0.f, out.data + (bi * Nq + q0) * D + h * hd, D);
  });
  return out;
}

Tensor CpuOps::image_to_token_attention(const Tensor& x, const Tensor& k, const Tensor& kb, const Tensor& v,
                                        const Tensor& bias, const Tensor& residual, const Tensor& ln_w,
                                        const Tensor& ln_b, float eps, int heads) {
  check_image_to_token_attention(x, k, kb, v, bias, residual, ln_w, ln_b, heads);
  const int64_t B = k.dim(0), N = k.dim(1), T = x.dim(1), D = x.dim(2), HN = heads * N;
  const int64_t x_step = x.dim(0) == 1 ? 0 : 1, r_step = residual.dim(0) == 1 ? 0 : 1;
  const int64_t n_blocks = (T + kQueryBlock - 1) / kQueryBlock;
  Tensor out = Tensor::empty({B, T, D});
  parallel_items(B * n_blocks, [&](int64_t item) {
    const int64_t bi = item / n_blocks, t0 = item % n_blocks * kQueryBlock, nt = std::min(kQueryBlock, T - t0);
    // Scores (nt, N * heads) with columns in k's (n, h) order, softmax over n for each head.
    std::vector<float> s(nt * HN), o(nt * D), mx(heads), sum(heads);
    cpu::gemm(true, nt, HN, D, 1.f, x.data + (bi * x_step * T + t0) * D, D, k.data + bi * HN * D, D, 0.f, s.data(), HN);
    const float* kbb = kb.data + bi * HN;
    // Softmax over the few keys n of each head, the heads side by side in SIMD lanes (a row of one
    // head's N ~ 7 scores is too short to vectorize; this was a tenth of segment everything's time).
    for (int64_t r = 0; r < nt; ++r) {
      float* sr = s.data() + r * HN;
#pragma omp simd
      for (int64_t i = 0; i < HN; ++i) sr[i] += kbb[i];
      std::copy(sr, sr + heads, mx.begin());
      for (int64_t n = 1; n < N; ++n)
#pragma omp simd
        for (int64_t h = 0; h < heads; ++h) mx[h] = std::max(mx[h], sr[n * heads + h]);
      std::fill(sum.begin(), sum.end(), 0.f);
      for (int64_t n = 0; n < N; ++n)
#pragma omp simd
        for (int64_t h = 0; h < heads; ++h) {
          const float e = cpu::vexp(sr[n * heads + h] - mx[h]);
          sr[n * heads + h] = e;
          sum[h] += e;
        }
#pragma omp simd
      for (int64_t h = 0; h < heads; ++h) sum[h] = 1.f / sum[h];
      for (int64_t n = 0; n < N; ++n)
#pragma omp simd
        for (int64_t h = 0; h < heads; ++h) sr[n * heads + h] *= sum[h];
    }
    cpu::gemm(false, nt, D, HN, 1.f, s.data(), HN, v.data + bi * HN * D, D, 0.f, o.data(), D);
    const float* res = residual.data + (bi * r_step * T + t0) * D;
    for (int64_t r = 0; r < nt; ++r) {
      float* orow = o.data() + r * D;
      for (int64_t c = 0; c < D; ++c) orow[c] = (orow[c] + bias.data[c]) + res[r * D + c];  // keys + out_proj(o)
      cpu::layer_norm_row(orow, out.data + (bi * T + t0 + r) * D, D, ln_w.data, ln_b.data, eps);
    }
  });
  return out;
}

}  // namespace samfast
