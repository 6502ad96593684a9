// Sam.postprocess_masks evaluated pixel by pixel (shared by the post-processing and mask-measure
// kernels): an output pixel is the bilinear mix of four pixels of the cropped (S, S) upsampling, each
// of those a mix of four low-res logits. The (S, S) intermediate is never stored. Sample positions are
// computed as torch computes them (float scale, double position, float weights).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/common.cuh"

namespace samfast::cuda {

struct Axis {
  int i0, i1;
  float l0, l1;  // l0 weighs i0, l1 weighs i1
};

__device__ __forceinline__ Axis resize_axis(int in, int out, int d) {
  const double scale = static_cast<double>(static_cast<float>(in) / static_cast<float>(out));
  const double src = fmax(scale * (d + 0.5) - 0.5, 0.0);
  const int i0 = static_cast<int>(src);
  return {i0, i0 + (i0 < in - 1 ? 1 : 0), static_cast<float>(1.0 - (src - i0)), static_cast<float>(src - i0)};
}

// Sample positions of a tile of kCols x kRows output pixels: an output column's stage-2 axis and the
// stage-1 axes of its two source columns (likewise for rows), computed once per tile. With kPx columns a
// thread (thread i: columns kPx i .. kPx i + kPx - 1), column c is stored at slot (c % kPx) (kCols /
// kPx) + c / kPx, so that a warp reading its threads' j-th columns reads consecutive entries (no bank
// conflicts: kPx = 4 in column order ran the post-processing at half speed).
template <int kCols, int kRows, int kPx = 1>
struct TileAxes {
  static constexpr int slot(int c) { return (c % kPx) * (kCols / kPx) + c / kPx; }
  Axis col2[kCols], col1[kCols][2], row2[kRows], row1[kRows][2];
  // The second resize keeps the size (an image whose longest side is S): its weights are exactly 1
  // and 0, so the pixel is the first stage's sample alone (4 logits instead of 16, the same value).
  bool stage2_identity;

  // Fills the tile whose corner is (x0, y0); every thread of the block takes part, then syncs.
  __device__ void fill(int x0, int y0, int L, int S, int in_h, int in_w, int H, int W) {
    if (threadIdx.x == 0) stage2_identity = in_h == H && in_w == W;
    for (int i = threadIdx.x; i < kCols + kRows; i += blockDim.x) {
      if (i < kCols) {
        if (x0 + i >= W) continue;
        const Axis a = resize_axis(in_w, W, x0 + i);
        const int k = slot(i);
        col2[k] = a, col1[k][0] = resize_axis(L, S, a.i0), col1[k][1] = resize_axis(L, S, a.i1);
      } else {
        const int r = i - kCols;
        if (y0 + r >= H) continue;
        const Axis a = resize_axis(in_h, H, y0 + r);
        row2[r] = a, row1[r][0] = resize_axis(L, S, a.i0), row1[r][1] = resize_axis(L, S, a.i1);
      }
    }
    __syncthreads();
  }

  // The logit at tile pixel (tx, ty) of the plane src (L, L).
  template <class T>
  __device__ __forceinline__ float sample(const T* __restrict__ src, int tx, int ty, int L) const {
    tx = slot(tx);
    if (stage2_identity) {
      const Axis& r = row1[ty][0];
      const Axis& q = col1[tx][0];
      const float top = q.l0 * to_f32(src[r.i0 * L + q.i0]) + q.l1 * to_f32(src[r.i0 * L + q.i1]);
      const float bottom = q.l0 * to_f32(src[r.i1 * L + q.i0]) + q.l1 * to_f32(src[r.i1 * L + q.i1]);
      return r.l0 * top + r.l1 * bottom;
    }
    float c[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const Axis& r = row1[ty][i];
        const Axis& q = col1[tx][j];
        const float top = q.l0 * to_f32(src[r.i0 * L + q.i0]) + q.l1 * to_f32(src[r.i0 * L + q.i1]);
        const float bottom = q.l0 * to_f32(src[r.i1 * L + q.i0]) + q.l1 * to_f32(src[r.i1 * L + q.i1]);
        c[i][j] = r.l0 * top + r.l1 * bottom;
      }
    const Axis& ay = row2[ty];
    const Axis& ax = col2[tx];
    return ay.l0 * (ax.l0 * c[0][0] + ax.l1 * c[0][1]) + ay.l1 * (ax.l0 * c[1][0] + ax.l1 * c[1][1]);
  }
};

}  // namespace samfast::cuda
