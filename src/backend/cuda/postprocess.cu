// Fused Sam.postprocess_masks: each thread makes one output pixel from the four pixels of the
// cropped 1024-grid around it, each of those from four low-res logits. The 1024x1024 intermediate
// of upstream (and of the CPU twin) is never stored: 16 cached reads per pixel instead of two full
// passes through device memory. Sample positions are computed as torch computes them (float scale,
// double position, float weights), so results match the CPU twin to float rounding.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "backend/cuda/postprocess.h"
#include "samfast/error.h"

namespace samfast::cuda {
namespace {

struct Axis {
  int i0, i1;
  float l0, l1;
};

__device__ __forceinline__ Axis axis(int in, int out, int d) {
  const double scale = static_cast<double>(static_cast<float>(in) / static_cast<float>(out));
  const double src = fmax(scale * (d + 0.5) - 0.5, 0.0);
  const int i0 = static_cast<int>(src);
  // l0 weighs i0, l1 weighs i1.
  return {i0, i0 + (i0 < in - 1 ? 1 : 0), static_cast<float>(1.0 - (src - i0)), static_cast<float>(src - i0)};
}

template <class T>
__device__ __forceinline__ float at(const T* p, int i) {
  return static_cast<float>(p[i]);
}

constexpr int kTileX = 32, kTileY = 8;

// One block makes a kTileY x kTileX tile of one plane. The sample positions (an output column's
// stage-2 axis and the stage-1 axes of its two source columns; likewise for rows) are computed once
// per tile in shared memory instead of six times per pixel.
template <class T>
__global__ void __launch_bounds__(kTileX * kTileY) postprocess_kernel(const T* __restrict__ low, int L, int S, int in_h,
                                                                     int in_w, int H, int W, bool binarize,
                                                                     float* __restrict__ out) {
  __shared__ Axis col2[kTileX], col1[kTileX][2], row2[kTileY], row1[kTileY][2];
  const int tx = threadIdx.x % kTileX, ty = threadIdx.x / kTileX;
  const int x = blockIdx.x * kTileX + tx, y = blockIdx.y * kTileY + ty;
  if (ty == 0 && x < W) {
    const Axis a = axis(in_w, W, x);
    col2[tx] = a, col1[tx][0] = axis(L, S, a.i0), col1[tx][1] = axis(L, S, a.i1);
  }
  if (ty == 1 && tx < kTileY && blockIdx.y * kTileY + tx < H) {
    const Axis a = axis(in_h, H, blockIdx.y * kTileY + tx);
    row2[tx] = a, row1[tx][0] = axis(L, S, a.i0), row1[tx][1] = axis(L, S, a.i1);
  }
  __syncthreads();
  if (x >= W || y >= H) return;
  const int64_t plane = blockIdx.z;
  const T* src = low + plane * L * L;
  const Axis& ay = row2[ty];
  const Axis& ax = col2[tx];
  float c[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const Axis& r = row1[ty][i];
      const Axis& q = col1[tx][j];
      const float top = q.l0 * at(src, r.i0 * L + q.i0) + q.l1 * at(src, r.i0 * L + q.i1);
      const float bottom = q.l0 * at(src, r.i1 * L + q.i0) + q.l1 * at(src, r.i1 * L + q.i1);
      c[i][j] = r.l0 * top + r.l1 * bottom;
    }
  const float v = ay.l0 * (ax.l0 * c[0][0] + ax.l1 * c[0][1]) + ay.l1 * (ax.l0 * c[1][0] + ax.l1 * c[1][1]);
  out[(plane * H + y) * W + x] = binarize ? (v > 0.f ? 1.f : 0.f) : v;
}

}  // namespace

template <class T>
void postprocess_masks(const T* low, int64_t planes, int L, int S, int in_h, int in_w, int H, int W, bool binarize,
                       float* out, cudaStream_t stream) {
  if (planes <= 0 || L <= 0 || in_h <= 0 || in_w <= 0 || in_h > S || in_w > S || H <= 0 || W <= 0 || planes > 65535)
    throw Error("postprocess_masks: bad sizes (planes " + std::to_string(planes) + ", input " + std::to_string(in_h) +
                "x" + std::to_string(in_w) + ", original " + std::to_string(H) + "x" + std::to_string(W) + ")");
  const dim3 grid(static_cast<unsigned>((W + kTileX - 1) / kTileX), static_cast<unsigned>((H + kTileY - 1) / kTileY),
                  static_cast<unsigned>(planes));
  postprocess_kernel<T><<<grid, kTileX * kTileY, 0, stream>>>(low, L, S, in_h, in_w, H, W, binarize, out);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw Error(std::string("postprocess_masks launch failed: ") + cudaGetErrorString(err));
}

template void postprocess_masks<float>(const float*, int64_t, int, int, int, int, int, int, bool, float*, cudaStream_t);
template void postprocess_masks<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int, int, int, int, int, int, bool, float*,
                                               cudaStream_t);
template void postprocess_masks<__half>(const __half*, int64_t, int, int, int, int, int, int, bool, float*, cudaStream_t);

}  // namespace samfast::cuda
