// Fused Sam.postprocess_masks and the mask measures of the automatic mask generator. Every kernel
// evaluates the two bilinear resizes pixel by pixel (upsample_tile.cuh): the 1024x1024 intermediate
// of upstream (and of the CPU twin) is never stored, and the measures (stability counts, boxes, RLE
// run starts) are taken without storing full-resolution logits at all.
#include <cub/block/block_scan.cuh>

#include <string>
#include <type_traits>

#include "backend/cuda/postprocess.h"
#include "backend/cuda/upsample_tile.cuh"
#include "samfast/error.h"

namespace samfast::cuda {
namespace {

constexpr int kTileX = 32, kTileY = 8;
// Planes per block of the post-processing: every plane of a batch has the same sample positions, so a
// block computes its tile's once for several planes (one block per tile and plane spends more time on
// the positions and on block starts than on the pixels; of 8, 16 and 48 planes a block, 48 is the
// fastest).
constexpr int kPlanesPerBlock = 48;

// A thread takes kPx neighbouring pixels of a row (one 4-byte store of 0/1 bytes, or 16 bytes of fp32,
// when the row width allows; with one byte a thread the kernel took several times the time of
// writing its output).
constexpr int kPx = 4;
// kFour: SAM's case (S = 4 L, the second resize the identity: an image whose longest side is S, and
// W a multiple of kPx): a thread's kPx = 4 pixels x = 4 K .. 4 K + 3 mix low-res columns K - 1 .. K + 1
// of two rows only, and a tile of kTileY rows and kTileX kPx columns a window of kWinRows x kWinCols
// logits. The block copies that window of each of its planes to shared memory first, every load in
// flight at once, and then writes the planes' pixels from there: the loop over planes is left with
// stores alone (a thread loading its own taps, plane after plane, waits on each plane's loads). A
// kernel of its own: the general path's registers would lower its occupancy.
constexpr int kWinRows = kTileY / 4 + 2, kWinCols = kTileX * kPx / 4 + 2, kWin = kWinRows * kWinCols;
// Otherwise each output pixel mixes four pixels ("cells") of the cropped (S, S) upsampling, each of
// those four logits: the block computes its tile's cells (the range of crop rows and columns its
// pixels read) for up to kCellPlanes planes at once into shared memory, at most kCellBudget of them,
// and then the pixels from there: 4 loads a cell instead of 16 a pixel (an original larger than the
// input has several pixels a cell). A tile whose cells do not fit (an original much smaller than
// the input) reads its taps pixel by pixel.
constexpr int kCellBudget = 6144, kCellPlanes = 8;

template <class T, class Out, bool kFour>
__global__ void __launch_bounds__(kTileX * kTileY) postprocess_kernel(const T* __restrict__ low, int64_t planes, int L,
                                                                     int S, int in_h, int in_w, int H, int W,
                                                                     float thr, Out* __restrict__ out) {
  __shared__ TileAxes<kTileX * kPx, kTileY, kPx> t;
  __shared__ float win[kFour ? kPlanesPerBlock * kWin : kCellBudget];  // the window, or the cells
  const int bx = blockIdx.x * kTileX * kPx;
  t.fill(bx, blockIdx.y * kTileY, L, S, in_h, in_w, H, W);
  const int tx = threadIdx.x % kTileX, ty = threadIdx.x / kTileX;
  const int x = bx + tx * kPx, y = blockIdx.y * kTileY + ty;
  const int64_t p0 = int64_t(blockIdx.z) * kPlanesPerBlock, p1 = min(planes, p0 + kPlanesPerBlock);
  const int np = static_cast<int>(p1 - p0);
  int ry0 = 0, cx0 = 0;  // the window's corner (kFour)
  if constexpr (kFour) {
    ry0 = t.row1[0][0].i0, cx0 = t.col1[t.slot(0)][0].i0;
#pragma unroll 8
    for (int i = threadIdx.x; i < np * kWin; i += blockDim.x) {
      const int p = i / kWin, rr = i % kWin / kWinCols, cc = i % kWinCols;
      win[i] = to_f32(low[(p0 + p) * L * L + min(ry0 + rr, L - 1) * L + min(cx0 + cc, L - 1)]);
    }
    __syncthreads();
  }
  const bool inside = x < W && y < H;
  if (kFour && !inside) return;
  const bool whole = W % kPx == 0;  // then x + kPx <= W, and the row's kPx outputs are one aligned vector
  auto store = [&](Out* dst, const Out (&v)[kPx]) {
    if (whole) {
      if constexpr (std::is_same_v<Out, uint8_t>)
        *reinterpret_cast<uchar4*>(dst) = make_uchar4(v[0], v[1], v[2], v[3]);
      else
        *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
      for (int j = 0; j < kPx; ++j)
        if (x + j < W) dst[j] = v[j];
    }
  };
  auto put = [&](float f) -> Out {
    if constexpr (std::is_same_v<Out, uint8_t>)
      return f > thr;
    else
      return f;
  };
  if constexpr (kFour) {
    Axis q[kPx];  // columns relative to the window
#pragma unroll
    for (int j = 0; j < kPx; ++j) q[j] = t.col1[t.slot(tx * kPx + j)][0], q[j].i0 -= cx0, q[j].i1 -= cx0;
    const Axis r = t.row1[ty][0];
    const int ra = (r.i0 - ry0) * kWinCols, rb = (r.i1 - ry0) * kWinCols;
    for (int p = 0; p < np; ++p) {
      const float* w = win + p * kWin;
      Out v[kPx];
#pragma unroll
      for (int j = 0; j < kPx; ++j) {  // as TileAxes::sample computes it
        const float top = q[j].l0 * w[ra + q[j].i0] + q[j].l1 * w[ra + q[j].i1];
        const float bottom = q[j].l0 * w[rb + q[j].i0] + q[j].l1 * w[rb + q[j].i1];
        v[j] = put(r.l0 * top + r.l1 * bottom);
      }
      store(out + ((p0 + p) * H + y) * W + x, v);
    }
  } else {
    // The tile's cells: crop rows lo_r.. and columns lo_c.. (monotonic axes: the last pixel's i1 is the
    // largest), Rc a row.
    const int y0 = blockIdx.y * kTileY;
    const int lo_r = t.row2[0].i0, hi_r = t.row2[min(kTileY, H - y0) - 1].i1;
    const int lo_c = t.col2[t.slot(0)].i0, hi_c = t.col2[t.slot(min(kTileX * kPx, W - bx) - 1)].i1;
    const int Rc = hi_c - lo_c + 1, cells = (hi_r - lo_r + 1) * Rc;
    // Planes whose cells fit at once (0: pixel by pixel).
    const int G = t.stage2_identity ? 0 : min(np, min(kCellPlanes, kCellBudget / cells));
    if (G == 0) {
      if (!inside) return;
      for (int64_t plane = p0; plane < p1; ++plane) {
        const T* src = low + plane * L * L;
        Out v[kPx];
#pragma unroll
        for (int j = 0; j < kPx; ++j) v[j] = put(whole || x + j < W ? t.sample(src, tx * kPx + j, ty, L) : 0.f);
        store(out + (plane * H + y) * W + x, v);
      }
      return;
    }
    for (int g0 = 0; g0 < np; g0 += G) {
      const int ng = min(G, np - g0);
      for (int k = threadIdx.x; k < cells; k += blockDim.x) {  // as TileAxes::sample computes a cell
        const Axis r = resize_axis(L, S, lo_r + k / Rc), q = resize_axis(L, S, lo_c + k % Rc);
#pragma unroll
        for (int g = 0; g < kCellPlanes; ++g) {
          if (g >= ng) break;
          const T* src = low + (p0 + g0 + g) * L * L;
          const float top = q.l0 * to_f32(src[r.i0 * L + q.i0]) + q.l1 * to_f32(src[r.i0 * L + q.i1]);
          const float bottom = q.l0 * to_f32(src[r.i1 * L + q.i0]) + q.l1 * to_f32(src[r.i1 * L + q.i1]);
          win[g * cells + k] = r.l0 * top + r.l1 * bottom;
        }
      }
      __syncthreads();
      if (inside) {
        const Axis& ay = t.row2[ty];
        const int ra = (ay.i0 - lo_r) * Rc - lo_c, rb = (ay.i1 - lo_r) * Rc - lo_c;
        for (int g = 0; g < ng; ++g) {
          const float* c = win + g * cells;
          Out v[kPx];
#pragma unroll
          for (int j = 0; j < kPx; ++j) {
            if (!whole && x + j >= W) {
              v[j] = put(0.f);
              continue;
            }
            const Axis& ax = t.col2[t.slot(tx * kPx + j)];
            v[j] = put(ay.l0 * (ax.l0 * c[ra + ax.i0] + ax.l1 * c[ra + ax.i1]) +
                       ay.l1 * (ax.l0 * c[rb + ax.i0] + ax.l1 * c[rb + ax.i1]));
          }
          store(out + ((p0 + g0 + g) * H + y) * W + x, v);
        }
      }
      __syncthreads();  // the cells are read before the next planes' overwrite them
    }
  }
}

// Stability counts and the box of one plane: a block covers kTileX columns and kStatRows rows (8 rows
// a step), reduces in the block and adds to the plane's totals with one atomic per quantity.
constexpr int kStatRows = 64;

template <class T>
__global__ void __launch_bounds__(kTileX * kTileY) mask_stats_kernel(const T* __restrict__ low, int L, int S, int in_h,
                                                                    int in_w, int H, int W, float thr, float hi, float lo,
                                                                    int* __restrict__ counts, int* __restrict__ box) {
  __shared__ TileAxes<kTileX, kStatRows> t;
  __shared__ int red[kTileY][6];
  const int bx = blockIdx.x * kTileX, by = blockIdx.y * kStatRows;
  t.fill(bx, by, L, S, in_h, in_w, H, W);
  const int tx = threadIdx.x % kTileX, warp = threadIdx.x / kTileX;
  const int64_t plane = blockIdx.z;
  const T* src = low + plane * L * L;
  int n_hi = 0, n_lo = 0, x0 = INT_MAX, y0 = INT_MAX, x1 = -1, y1 = -1;
  const int x = bx + tx;
  for (int ty = warp; ty < kStatRows; ty += kTileY) {
    const int y = by + ty;
    if (x >= W || y >= H) continue;
    const float v = t.sample(src, tx, ty, L);
    n_hi += v > hi, n_lo += v > lo;
    if (v > thr) x0 = min(x0, x), x1 = max(x1, x), y0 = min(y0, y), y1 = max(y1, y);
  }
  n_hi = __reduce_add_sync(0xffffffffu, n_hi), n_lo = __reduce_add_sync(0xffffffffu, n_lo);
  x0 = __reduce_min_sync(0xffffffffu, x0), y0 = __reduce_min_sync(0xffffffffu, y0);
  x1 = __reduce_max_sync(0xffffffffu, x1), y1 = __reduce_max_sync(0xffffffffu, y1);
  if (tx == 0) red[warp][0] = n_hi, red[warp][1] = n_lo, red[warp][2] = x0, red[warp][3] = y0, red[warp][4] = x1,
               red[warp][5] = y1;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kTileY; ++w) {
      n_hi += red[w][0], n_lo += red[w][1];
      x0 = min(x0, red[w][2]), y0 = min(y0, red[w][3]), x1 = max(x1, red[w][4]), y1 = max(y1, red[w][5]);
    }
    if (n_hi) atomicAdd(counts + 2 * plane, n_hi);
    if (n_lo) atomicAdd(counts + 2 * plane + 1, n_lo);
    if (x1 >= 0) {
      atomicMin(box + 4 * plane, x0), atomicMin(box + 4 * plane + 1, y0);
      atomicMax(box + 4 * plane + 2, x1), atomicMax(box + 4 * plane + 3, y1);
    }
  }
}

__global__ void init_boxes(int* box, int64_t planes) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < planes; i += int64_t(gridDim.x) * blockDim.x)
    box[4 * i] = INT_MAX, box[4 * i + 1] = INT_MAX, box[4 * i + 2] = -1, box[4 * i + 3] = -1;
}

// RLE run starts. A mask m (h, w) sits at (x0, y0) of an (H, W) frame of zeros; the frame is read in
// column-major order. A run starts wherever a pixel differs from the one before it in that order.
// One thread per mask column (adjacent threads read adjacent bytes of a row). Column c's first
// pixel follows the last pixel of column c-1 directly only when the mask spans the whole frame height.
struct RleFrame {
  int h, w, x0, y0, H, W;
};

template <bool kWrite>
__global__ void run_starts_kernel(const uint8_t* __restrict__ m, int64_t planes, RleFrame f,
                                  int* __restrict__ per_column, const int64_t* __restrict__ base,
                                  uint32_t* __restrict__ starts) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= planes * f.w) return;
  const int64_t plane = i / f.w;
  const int c = static_cast<int>(i % f.w);
  const uint8_t* mp = m + plane * f.h * f.w;
  const bool joined = f.y0 == 0 && f.h == f.H;
  uint8_t prev = joined && c > 0 ? mp[int64_t(f.h - 1) * f.w + c - 1] : 0;
  const uint32_t col0 = uint32_t(f.x0 + c) * uint32_t(f.H) + uint32_t(f.y0);
  int n = 0;
  uint32_t* out = kWrite ? starts + base[plane] + per_column[i] : nullptr;
  for (int r = 0; r < f.h; ++r) {
    const uint8_t v = mp[int64_t(r) * f.w + c];
    if (v != prev) {
      if (kWrite) out[n] = col0 + r;
      ++n;
    }
    prev = v;
  }
  // Leaving the mask inside a run: the next pixel of the frame is background unless it is the first
  // pixel of the next mask column (handled there) or there is no next pixel.
  if (prev && (f.y0 + f.h < f.H || (f.x0 + c + 1 < f.W && !(joined && c + 1 < f.w)))) {
    if (kWrite) out[n] = col0 + f.h;
    ++n;
  }
  if (!kWrite) per_column[i] = n;
}

// Exclusive scan of each plane's per-column counts (in place); totals[plane] = the plane's sum.
__global__ void __launch_bounds__(1024) scan_columns(int* __restrict__ per_column, int w, int64_t* __restrict__ totals) {
  using Scan = cub::BlockScan<int, 1024>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ int carry;
  int* p = per_column + blockIdx.x * int64_t(w);
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int start = 0; start < w; start += 1024) {
    const int c = start + threadIdx.x;
    const int v = c < w ? p[c] : 0;
    int excl, sum;
    Scan(tmp).ExclusiveSum(v, excl, sum);
    const int before = carry;
    if (c < w) p[c] = before + excl;
    __syncthreads();
    if (threadIdx.x == 0) carry = before + sum;
    __syncthreads();
  }
  if (threadIdx.x == 0) totals[blockIdx.x] = carry;
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw Error(std::string(what) + " launch failed: " + cudaGetErrorString(err));
}

void check_sizes(const char* what, int64_t planes, int L, int S, int in_h, int in_w, int H, int W) {
  if (planes <= 0 || L <= 0 || in_h <= 0 || in_w <= 0 || in_h > S || in_w > S || H <= 0 || W <= 0 || planes > 65535)
    throw Error(std::string(what) + ": bad sizes (planes " + std::to_string(planes) + ", input " +
                std::to_string(in_h) + "x" + std::to_string(in_w) + ", original " + std::to_string(H) + "x" +
                std::to_string(W) + ")");
}

}  // namespace

// Both outputs of the pixel-by-pixel post-processing: fp32 logits and 0/1 bytes.
template <class T, class Out>
void launch_postprocess(const char* what, const T* low, int64_t planes, int L, int S, int in_h, int in_w, int H, int W,
                        float thr, Out* out, cudaStream_t stream) {
  check_sizes(what, planes, L, S, in_h, in_w, H, W);
  const dim3 grid(static_cast<unsigned>((W + kTileX * kPx - 1) / (kTileX * kPx)),
                  static_cast<unsigned>((H + kTileY - 1) / kTileY),
                  static_cast<unsigned>((planes + kPlanesPerBlock - 1) / kPlanesPerBlock));
  if (W % kPx == 0 && in_h == H && in_w == W && S == 4 * L)
    postprocess_kernel<T, Out, true><<<grid, kTileX * kTileY, 0, stream>>>(low, planes, L, S, in_h, in_w, H, W, thr, out);
  else
    postprocess_kernel<T, Out, false><<<grid, kTileX * kTileY, 0, stream>>>(low, planes, L, S, in_h, in_w, H, W, thr, out);
  check_launch(what);
}

template <class T>
void postprocess_masks(const T* low, int64_t planes, int L, int S, int in_h, int in_w, int H, int W, float* out,
                       cudaStream_t stream) {
  launch_postprocess<T, float>("postprocess_masks", low, planes, L, S, in_h, in_w, H, W, 0.f, out, stream);
}

template <class T>
void mask_stats(const T* low, int64_t planes, int L, int S, int in_h, int in_w, int H, int W, float thr, float hi,
                float lo, int* counts, int* box, cudaStream_t stream) {
  check_sizes("mask_stats", planes, L, S, in_h, in_w, H, W);
  CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(int) * 2 * planes, stream));
  init_boxes<<<blocks_for(planes, 256), 256, 0, stream>>>(box, planes);
  const dim3 grid(static_cast<unsigned>((W + kTileX - 1) / kTileX),
                  static_cast<unsigned>((H + kStatRows - 1) / kStatRows), static_cast<unsigned>(planes));
  mask_stats_kernel<T><<<grid, kTileX * kTileY, 0, stream>>>(low, L, S, in_h, in_w, H, W, thr, hi, lo, counts, box);
  check_launch("mask_stats");
}

template <class T>
void binary_masks(const T* low, int64_t planes, int L, int S, int in_h, int in_w, int h, int w, float thr,
                  uint8_t* out, cudaStream_t stream) {
  launch_postprocess<T, uint8_t>("binary_masks", low, planes, L, S, in_h, in_w, h, w, thr, out, stream);
}

void count_run_starts(const uint8_t* masks, int64_t planes, int h, int w, int x0, int y0, int H, int W,
                      int* per_column, int64_t* totals, cudaStream_t stream) {
  const RleFrame f{h, w, x0, y0, H, W};
  run_starts_kernel<false><<<static_cast<unsigned>((planes * w + 255) / 256), 256, 0, stream>>>(masks, planes, f, per_column, nullptr,
                                                                             nullptr);
  check_launch("count_run_starts");
  scan_columns<<<static_cast<unsigned>(planes), 1024, 0, stream>>>(per_column, w, totals);
  check_launch("scan_columns");
}

void write_run_starts(const uint8_t* masks, int64_t planes, int h, int w, int x0, int y0, int H, int W,
                      int* per_column, const int64_t* base, uint32_t* starts, cudaStream_t stream) {
  const RleFrame f{h, w, x0, y0, H, W};
  run_starts_kernel<true><<<static_cast<unsigned>((planes * w + 255) / 256), 256, 0, stream>>>(masks, planes, f, per_column, base, starts);
  check_launch("write_run_starts");
}

#define SAMFAST_POSTPROCESS_INSTANCES(T)                                                                          \
  template void postprocess_masks<T>(const T*, int64_t, int, int, int, int, int, int, float*, cudaStream_t);       \
  template void mask_stats<T>(const T*, int64_t, int, int, int, int, int, int, float, float, float, int*, int*,     \
                              cudaStream_t);                                                                       \
  template void binary_masks<T>(const T*, int64_t, int, int, int, int, int, int, float, uint8_t*, cudaStream_t);
SAMFAST_POSTPROCESS_INSTANCES(float)
SAMFAST_POSTPROCESS_INSTANCES(__nv_bfloat16)
SAMFAST_POSTPROCESS_INSTANCES(__half)

}  // namespace samfast::cuda
