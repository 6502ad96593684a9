// The attention tile of the image encoder's rel_pos_attention, shared by its kernels (rel_pos_attention.cu,
// and the Hopper kernel in rel_pos_attention_sm90.cu): where a window's (or the global grid's) tokens
// live in the (B, H, W, 3C) qkv tensor, found by index arithmetic (no partition copies).
#pragma once
#include <cuda_bf16.h>

#include "samfast/tensor.h"

#include <cmath>
#include <cstdint>

namespace samfast {
struct CudaContext;

namespace cuda {

constexpr float kLog2e = 1.4426950408889634f;

// Where the tokens of one attention tile live.
template <class T>
struct TileGeometry {
  const T* qkv;   // (B, H, W, 3C)
  const T* bias;  // (3C): q, k, v of a padded token
  int H, W, C, th, tw, ntok;  // ntok = th * tw tokens per tile
  int64_t bi;
  int wy, wx;
  // Row of tile token t (0 <= t < T), at the start of part (0 q, 1 k, 2 v) of head offset `off`.
  __device__ __forceinline__ const T* token(int t, int part, int off) const {
    return token_yx(t / tw, t % tw, part, off);
  }
  // The same for the token at row ky, column kx of the tile.
  __device__ __forceinline__ const T* token_yx(int ky, int kx, int part, int off) const {
    const int gy = wy * th + ky, gx = wx * tw + kx;
    const T* row = (gy < H && gx < W) ? qkv + ((bi * H + gy) * W + gx) * (int64_t)(3 * C) : bias;
    return row + part * C + off;
  }
  // Output position of tile token t, or -1 for a padded token.
  __device__ __forceinline__ int64_t out_row(int t) const { return out_row_yx(t / tw, t % tw); }
  // The same for the token at row ky, column kx of the tile.
  __device__ __forceinline__ int64_t out_row_yx(int ky, int kx) const {
    const int gy = wy * th + ky, gx = wx * tw + kx;
    return (gy < H && gx < W) ? (bi * H + gy) * W + gx : -1;
  }
};

struct RelPosArgs {
  const void* qkv;
  const void* bias;
  const void* rel_h;  // (2 th - 1, hd)
  const void* rel_w;  // (2 tw - 1, hd)
  void* out;          // (B, H, W, C)
  int H, W, C, heads, th, tw, nww;
  float scale;
  // Set (Hopper's kernels only): out is fp8 E4M3, the values times *fp8_scale, the input of proj's
  // fp8 GEMM written here rather than by a pass of its own.
  const float* fp8_scale = nullptr;
};

// The tile at window row wy, column wx of image bi.
template <class T>
__device__ __forceinline__ TileGeometry<T> tile_yx(const RelPosArgs& a, int64_t bi, int wy, int wx) {
  TileGeometry<T> g;
  g.qkv = static_cast<const T*>(a.qkv);
  g.bias = static_cast<const T*>(a.bias);
  g.H = a.H, g.W = a.W, g.C = a.C, g.th = a.th, g.tw = a.tw, g.ntok = a.th * a.tw;
  g.bi = bi, g.wy = wy, g.wx = wx;
  return g;
}
// The tile of window `win` (windows numbered image by image, nwin an image, row-major).
template <class T>
__device__ __forceinline__ TileGeometry<T> tile_at(const RelPosArgs& a, int win, int nwin) {
  return tile_yx<T>(a, win / nwin, (win % nwin) / a.nww, win % a.nww);
}
// The tile of this block's window (blockIdx.z).
template <class T>
__device__ __forceinline__ TileGeometry<T> tile_of(const RelPosArgs& a, int nwin) {
  return tile_at<T>(a, blockIdx.z, nwin);
}

// The (row, column) ranges of a block's queries [q0, q0 + nq) in a tile tw wide (ntok tokens): the
// relative-position table rows they need are [y_lo, y_hi + th - 1] of rel_h and [x_lo, x_hi + tw - 1]
// of rel_w.
struct QueryRange {
  int y_lo, y_hi, x_lo, x_hi;
};
__device__ __forceinline__ QueryRange query_range(int q0, int nq, int ntok, int tw) {
  const int tlast = min(q0 + nq, ntok) - 1;
  const int y_lo = q0 / tw, y_hi = tlast / tw;
  return {y_lo, y_hi, y_hi > y_lo ? 0 : q0 % tw, y_hi > y_lo ? tw - 1 : tlast % tw};
}

// One m16n8 score tile (c[0..1]: row gr, columns tq 2 + e; c[2..3]: row gr + 8) whose first key slot
// is (ky, kx) (slot columns past tw, rows past th: no key): the scores in log2 units, scale' q.k +
// rel_h + rel_w (rel0 / relw0: this thread's rows of the terms, columns `stride` floats apart, x log2(e)),
// -inf for an empty slot; mx0 / mx1 take the rows' maxima.
__device__ __forceinline__ void score_tile(float* c, int ky, int kx, int th, int tw, int tq, const float* rel0,
                                           const float* relw0, int stride, float sc, float& mx0, float& mx1) {
  const bool row_ok = ky < th;
  const float rh0 = row_ok ? rel0[ky * stride] : 0.f, rh1 = row_ok ? rel0[ky * stride + 8] : 0.f;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    if (row_ok && kx + tq * 2 + e < tw) {
      const float* rw = relw0 + (kx + e) * stride;
      c[e] = fmaf(c[e], sc, rh0 + rw[0]);
      c[2 + e] = fmaf(c[2 + e], sc, rh1 + rw[8]);
    } else {
      c[e] = c[2 + e] = -INFINITY;
    }
    mx0 = fmaxf(mx0, c[e]);
    mx1 = fmaxf(mx1, c[2 + e]);
  }
}

// 2^x on the special-function unit, flushing denormals (-inf -> 0): the scores are rounded to bf16
// for the P V product, far coarser than its 2^-22 relative error.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The Hopper (sm_90a) bf16 / fp16 kernel; launch only on a device of compute capability 9.0. Throws for a
// head dim it is not built for (32, 64 and 80 are).
// dt: DType::BF16 or DType::F16.
void rel_pos_attention_wgmma(const CudaContext& ctx, DType dt, const RelPosArgs& a, int head_dim, int64_t windows,
                             int nwin);

}  // namespace cuda
}  // namespace samfast
