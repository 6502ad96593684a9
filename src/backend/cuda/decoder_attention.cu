// The mask decoder's attention on the image tokens, in the folded form of mask_decoder.cpp (the
// projections multiplied into per-prompt queries, keys and values, so that the G*G image tokens of
// every prompt are only read, scored and averaged, never projected).
//
// wide_head_attention (ops.attention with one head wider than 64: the folded token-to-image
// attention, heads x tokens queries of width 256 per prompt against the 4096 image tokens): two
// cuBLASLt GEMMs around a row softmax, the scores held in fp32. With 56 query rows per prompt the
// score matrix is smaller than the keys it comes from, so this runs at the speed of reading K and V.
//
// image_to_token_attention (the image tokens attending to the prompt's few tokens): one kernel that
// reads each image token once and writes it once: scores against the heads x N folded keys, a
// softmax per head, the weighted sum of the folded values, bias, residual and LayerNorm.
//   bf16 or fp16, D 256, 8 heads, N <= 16: tensor cores (mma.sync m16n8k16). A block holds one prompt's
//   keys and values in shared memory, each head's keys in its own 8- or 16-column slab of the score
//   tile (padding slots score -inf), so the per-head softmax is a quad shuffle; each warp takes 16
//   tokens at a time, its x rows staged by cp.async and then reused for the pre-norm output rows.
//   Otherwise (fp32, the exact path; other shapes): one warp per token on the CUDA cores.
#include <algorithm>
#include <cmath>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"

namespace samfast {
namespace {

using cuda::acc_to_a;
using cuda::cp_async16;
using cuda::cp_async_commit;
using cuda::cp_async_wait;
using cuda::cp_async_wait_all;
using cuda::from_f32;
using cuda::ldmatrix_x4_trans;
using cuda::mma16;
using cuda::pack16;
using cuda::quad_row_stats;
using cuda::unpack16;
using cuda::to_f32;
using cuda::block_max;
using cuda::block_sum;
using cuda::warp_sum;
using cuda::warp_tile_abt;

void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

// exp for the softmax: bf16 / fp16 outputs take the fast one, its error far below their rounding.
template <class T>
__device__ __forceinline__ float softmax_exp(float v) {
  return sizeof(T) == 2 ? __expf(v) : expf(v);
}

// p (rows, cols) = softmax(s * scale) per row; s fp32. One block of 256 threads per row, the row held
// in registers (kPer values a thread, cols <= 256 kPer): the scores are read once, not once per pass
// (max, sum, output) as in softmax_rows_long_kernel.
template <class T, int kPer>
__global__ void __launch_bounds__(256) softmax_rows_kernel(const float* __restrict s, T* __restrict p, int cols,
                                                           float scale) {
  __shared__ float red[8];
  const float* row = s + int64_t(blockIdx.x) * cols;
  T* out = p + int64_t(blockIdx.x) * cols;
  float v[kPer];
  float mx = -INFINITY;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int c = threadIdx.x + 256 * j;
    v[j] = c < cols ? row[c] : -INFINITY;
    mx = fmaxf(mx, v[j]);
  }
  mx = block_max(mx, red);
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    v[j] = threadIdx.x + 256 * j < cols ? softmax_exp<T>((v[j] - mx) * scale) : 0.f;
    sum += v[j];
  }
  const float inv = 1.f / block_sum(sum, red);
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int c = threadIdx.x + 256 * j;
    if (c < cols) out[c] = from_f32<T>(v[j] * inv);
  }
}

// The same for rows of any length, three passes over global memory.
template <class T>
__global__ void __launch_bounds__(256) softmax_rows_long_kernel(const float* __restrict s, T* __restrict p, int cols,
                                                                float scale) {
  __shared__ float red[8];
  const float* row = s + int64_t(blockIdx.x) * cols;
  T* out = p + int64_t(blockIdx.x) * cols;
  float mx = -INFINITY;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, row[c]);
  mx = block_max(mx, red);
  float sum = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += softmax_exp<T>((row[c] - mx) * scale);
  const float inv = 1.f / block_sum(sum, red);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) out[c] = from_f32<T>(softmax_exp<T>((row[c] - mx) * scale) * inv);
}

struct I2tArgs {
  const void *x, *k, *kb, *v, *bias, *residual, *ln_w, *ln_b;
  void* out;
  int T, N, D, heads, x_step, r_step;  // x_step / r_step: 0 when x / residual are shared (batch 1)
  float eps;
  const void* pe = nullptr;  // (T, D): with out_pe, out + pe written too (tensor-core kernel only)
  void* out_pe = nullptr;
};

// The CUDA-core version: one warp per (prompt, token). Shared memory per warp: heads*N scores, D outputs.
constexpr int kWarpKernelWarps = 8;

template <class T>
__global__ void __launch_bounds__(kWarpKernelWarps * 32) i2t_warp_kernel(I2tArgs a) {
  extern __shared__ float smem_f[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, b = blockIdx.y, HN = a.heads * a.N, D = a.D;
  const int64_t t = int64_t(blockIdx.x) * kWarpKernelWarps + warp;
  if (t >= a.T) return;  // whole warps only; no block-wide synchronisation below
  float* sc = smem_f + warp * (HN + D);
  float* o = sc + HN;
  const T* x = static_cast<const T*>(a.x) + (int64_t(b) * a.x_step * a.T + t) * D;
  const T* k = static_cast<const T*>(a.k) + int64_t(b) * HN * D;
  const T* v = static_cast<const T*>(a.v) + int64_t(b) * HN * D;
  const T* kb = static_cast<const T*>(a.kb) + int64_t(b) * HN;
  for (int j = 0; j < HN; ++j) {  // j = n * heads + h
    float acc = 0.f;
    for (int c = lane; c < D; c += 32) acc += to_f32(x[c]) * to_f32(k[int64_t(j) * D + c]);
    acc = warp_sum(acc);
    if (lane == 0) sc[j] = acc + to_f32(kb[j]);
  }
  __syncwarp();
  for (int h = lane; h < a.heads; h += 32) {
    float mx = -INFINITY, sum = 0.f;
    for (int n = 0; n < a.N; ++n) mx = fmaxf(mx, sc[n * a.heads + h]);
    for (int n = 0; n < a.N; ++n) sum += (sc[n * a.heads + h] = expf(sc[n * a.heads + h] - mx));
    for (int n = 0; n < a.N; ++n) sc[n * a.heads + h] /= sum;
  }
  __syncwarp();
  const T* res = static_cast<const T*>(a.residual) + (int64_t(b) * a.r_step * a.T + t) * D;
  const T* bias = static_cast<const T*>(a.bias);
  float sum = 0.f;
  for (int c = lane; c < D; c += 32) {
    float acc = 0.f;
    for (int j = 0; j < HN; ++j) acc += sc[j] * to_f32(v[int64_t(j) * D + c]);
    o[c] = to_f32(from_f32<T>((acc + to_f32(bias[c])) + to_f32(res[c])));  // as a separate op would store it
    sum += o[c];
  }
  const float mean = warp_sum(sum) / D;
  float q = 0.f;
  for (int c = lane; c < D; c += 32) q += (o[c] - mean) * (o[c] - mean);
  const float rstd = rsqrtf(warp_sum(q) / D + a.eps);
  T* y = static_cast<T*>(a.out) + (int64_t(b) * a.T + t) * D;
  const T *lw = static_cast<const T*>(a.ln_w), *lb = static_cast<const T*>(a.ln_b);
  for (int c = lane; c < D; c += 32) y[c] = from_f32<T>((o[c] - mean) * rstd * to_f32(lw[c]) + to_f32(lb[c]));
}

// The tensor-core version (H = bf16 or fp16, D 256, 8 heads, N <= KP key slots per head).
// The block's W warps share the prompt's keys and values; each warp double-buffers its 16 token rows
// (the next rows load while the current ones are computed). W: as many as shared memory allows
// (i2t_mma_warps).
constexpr int kMmaD = 256, kMmaHeads = 8, kMmaLds = kMmaD + 8;

template <int KP, int W>
constexpr size_t i2t_mma_smem() {
  return sizeof(uint16_t) * (2 * kMmaHeads * KP + 2 * 16 * W) * kMmaLds + sizeof(float) * (kMmaHeads * KP + 2 * kMmaD);
}

// The warps a block of the tensor-core kernel gets: 8 for 8 key slots a head and 4 for 16 where
// shared memory allows (Hopper's 227 KB a block), 4 for 8 slots in an A100's 163 KB; 0 where neither
// fits (Ampere and Ada workstation GPUs' 99 KB): the CUDA-core kernel runs.
int i2t_mma_warps(int64_t N, size_t max_smem) {
  if (N <= 8) return i2t_mma_smem<8, 8>() <= max_smem ? 8 : i2t_mma_smem<8, 4>() <= max_smem ? 4 : 0;
  return i2t_mma_smem<16, 4>() <= max_smem ? 4 : 0;
}

template <class H, int KP, int W>
__global__ void __launch_bounds__(32 * W) i2t_mma_kernel(I2tArgs a, int tiles_per_block) {
  constexpr int NC = kMmaHeads * KP, D = kMmaD, LDS = kMmaLds, NT = NC / 8;  // score columns, n-tiles
  constexpr int kRows = 16 * W, kThreads = 32 * W;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  H* sK = reinterpret_cast<H*>(smem_raw);  // slot (h, n) at row h KP + n
  H* sV = sK + NC * LDS;
  H* sX = sV + NC * LDS;  // 2 x 16 rows per warp: x, then the pre-norm outputs
  float* sKb = reinterpret_cast<float*>(sX + 2 * kRows * LDS);
  float* sLn = sKb + NC;  // 2 x D
  const int b = blockIdx.y, tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gr = lane / 4, tq = lane % 4;
  const int N = a.N, T = a.T;
  {
    const H* kg = static_cast<const H*>(a.k) + int64_t(b) * N * kMmaHeads * D;
    const H* vg = static_cast<const H*>(a.v) + int64_t(b) * N * kMmaHeads * D;
    for (int i = tid; i < NC * (D / 8); i += kThreads) {
      const int slot = i / (D / 8), c = i % (D / 8), h = slot / KP, n = slot % KP;
      const bool ok = n < N;
      const int64_t off = ok ? (int64_t(n) * kMmaHeads + h) * D + c * 8 : 0;
      cp_async16(sK + slot * LDS + c * 8, kg + off, ok);
      cp_async16(sV + slot * LDS + c * 8, vg + off, ok);
    }
    const H* kbg = static_cast<const H*>(a.kb) + int64_t(b) * N * kMmaHeads;
    for (int i = tid; i < NC; i += kThreads) {
      const int h = i / KP, n = i % KP;
      sKb[i] = n < N ? to_f32(kbg[n * kMmaHeads + h]) : -INFINITY;
    }
  }
  for (int i = tid; i < D; i += kThreads) {  // LayerNorm weight, then bias
    sLn[i] = to_f32(static_cast<const H*>(a.ln_w)[i]);
    sLn[D + i] = to_f32(static_cast<const H*>(a.ln_b)[i]);
  }
  cp_async_wait_all();
  __syncthreads();  // keys, values, key biases visible; from here on each warp works alone

  const H* xg = static_cast<const H*>(a.x) + int64_t(b) * a.x_step * T * D;
  const H* rg = static_cast<const H*>(a.residual) + int64_t(b) * a.r_step * T * D;
  const H* bias = static_cast<const H*>(a.bias);
  H* yg = static_cast<H*>(a.out) + int64_t(b) * T * D;
  const int ntiles = (T + kRows - 1) / kRows;
  const int tile_begin = blockIdx.x * tiles_per_block, tile_end = min(ntiles, (blockIdx.x + 1) * tiles_per_block);
  auto load_rows = [&](int tile, H* dst) {  // this warp's 16 rows of x (zeros past the last token)
    const int r0 = tile * kRows + warp * 16;
    for (int i = lane; i < 16 * (D / 8); i += 32) {
      const int r = i / (D / 8), c = i % (D / 8);
      const bool ok = r0 + r < T;
      cp_async16(dst + r * LDS + c * 8, xg + (ok ? int64_t(r0 + r) * D + c * 8 : 0), ok);
    }
  };
  if (tile_begin < tile_end) load_rows(tile_begin, sX + warp * 32 * LDS);
  cp_async_commit();
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    H* sXw = sX + (warp * 32 + (tile - tile_begin) % 2 * 16) * LDS;
    if (tile + 1 < tile_end) load_rows(tile + 1, sX + (warp * 32 + (tile + 1 - tile_begin) % 2 * 16) * LDS);
    cp_async_commit();
    cp_async_wait<1>();  // this tile's rows have arrived; the next tile's may still be in flight
    __syncwarp();
    const int r0 = tile * kRows + warp * 16;  // this warp's first token
    if (r0 >= T) continue;

    // Scores S (16 x NC) = X K^T.
    float s[NT][4];
    warp_tile_abt<H, D, NC>(s, sXw, LDS, sK, LDS, lane);
    // Softmax per head over its KP / 8 n-tiles (rows gr and gr + 8 of the warp's 16).
#pragma unroll
    for (int h = 0; h < kMmaHeads; ++h) {
      float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
      for (int n = h * KP / 8; n < (h + 1) * KP / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float kb = sKb[n * 8 + tq * 2 + e];
          s[n][e] += kb, s[n][2 + e] += kb;
          m0 = fmaxf(m0, s[n][e]), m1 = fmaxf(m1, s[n][2 + e]);
        }
#pragma unroll
      for (int sh = 1; sh <= 2; sh *= 2) {
        m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, sh));
        m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, sh));
      }
      float l0 = 0.f, l1 = 0.f;
#pragma unroll
      for (int n = h * KP / 8; n < (h + 1) * KP / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          s[n][e] = __expf(s[n][e] - m0), s[n][2 + e] = __expf(s[n][2 + e] - m1);
          l0 += s[n][e], l1 += s[n][2 + e];
        }
#pragma unroll
      for (int sh = 1; sh <= 2; sh *= 2) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, sh);
        l1 += __shfl_xor_sync(0xffffffffu, l1, sh);
      }
      const float i0 = 1.f / l0, i1 = 1.f / l1;
#pragma unroll
      for (int n = h * KP / 8; n < (h + 1) * KP / 8; ++n) s[n][0] *= i0, s[n][1] *= i0, s[n][2] *= i1, s[n][3] *= i1;
    }
    // P as the A operand of O = P V (two n-tiles per k-step).
    uint32_t pf[NT / 2][4];
#pragma unroll
    for (int ks = 0; ks < NT / 2; ++ks) acc_to_a<H>(pf[ks], s[2 * ks], s[2 * ks + 1]);
    // O = P V + bias + residual in two halves of 128 channels, rounded to H into the warp's rows
    // of sX (x is no longer needed), as the unfused GEMM would store it for the LayerNorm. The row
    // sums and sums of squares for the LayerNorm come from the same registers: a thread holds 64 of
    // each of its two rows' values, a quad holds whole rows.
    __syncwarp();  // every lane's reads of x done before any lane overwrites it (racecheck warned)
    const int mi = lane / 8;
    float sum[2] = {0.f, 0.f}, sq[2] = {0.f, 0.f};
#pragma unroll 1
    for (int half = 0; half < 2; ++half) {
      float o[16][4];
#pragma unroll
      for (int n = 0; n < 16; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < NT / 2; ++ks) {
        const int key = ks * 16 + (mi & 1) * 8 + lane % 8;
#pragma unroll
        for (int dp = 0; dp < 8; ++dp) {
          uint32_t vf[4];
          ldmatrix_x4_trans(vf, sV + key * LDS + half * 128 + dp * 16 + (mi >> 1) * 8);
          mma16<H>(o[2 * dp], pf[ks], vf[0], vf[1]);
          mma16<H>(o[2 * dp + 1], pf[ks], vf[2], vf[3]);
        }
      }
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        const int col = half * 128 + n * 8 + tq * 2;
        const float2 bc = unpack16<H>(*reinterpret_cast<const uint32_t*>(bias + col));
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int r = gr + 8 * i;
          if (r0 + r >= T) continue;
          const float2 rc = unpack16<H>(*reinterpret_cast<const uint32_t*>(rg + int64_t(r0 + r) * D + col));
          const uint32_t packed = pack16<H>((o[n][2 * i] + bc.x) + rc.x, (o[n][2 * i + 1] + bc.y) + rc.y);
          *reinterpret_cast<uint32_t*>(sXw + r * LDS + col) = packed;
          const float2 v = unpack16<H>(packed);
          sum[i] += v.x + v.y;
          sq[i] += v.x * v.x + v.y * v.y;
        }
      }
    }
    // The PE rows for out + pe, loaded now so that the LayerNorm below covers their latency.
    uint4 pe_rows[16];
    if (a.out_pe) {
      const H* pg = static_cast<const H*>(a.pe);
#pragma unroll
      for (int r = 0; r < 16; ++r)
        pe_rows[r] = r0 + r < T ? *reinterpret_cast<const uint4*>(pg + int64_t(r0 + r) * D + lane * 8) : make_uint4(0, 0, 0, 0);
    }
    float mean[2], rstd[2];
    quad_row_stats(sum, sq, D, a.eps, mean, rstd);
    __syncwarp();  // every lane's pre-norm values in sXw
    // Whole rows out, 16 bytes a lane, normalised on the way: a lane's 8 columns' LayerNorm weights
    // in registers and each row's mean and rstd from its quad by shuffles (not normalised in place in
    // sXw first: that is a shared-memory read and write more of each value pair).
    float lw[8], lb[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) lw[k] = sLn[lane * 8 + k], lb[k] = sLn[D + lane * 8 + k];
    H* ypg = static_cast<H*>(a.out_pe) + int64_t(b) * T * D;
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      const float m = __shfl_sync(0xffffffffu, mean[r / 8], (r % 8) * 4);
      const float rs = __shfl_sync(0xffffffffu, rstd[r / 8], (r % 8) * 4);
      const uint4 raw = *reinterpret_cast<const uint4*>(sXw + r * LDS + lane * 8);
      const uint32_t* in = reinterpret_cast<const uint32_t*>(&raw);
      uint4 y;
      uint32_t* o = reinterpret_cast<uint32_t*>(&y);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 v = unpack16<H>(in[k]);
        o[k] = pack16<H>((v.x - m) * rs * lw[2 * k] + lb[2 * k], (v.y - m) * rs * lw[2 * k + 1] + lb[2 * k + 1]);
      }
      if (r0 + r >= T) continue;  // (rows past the last token: computed, not stored)
      *reinterpret_cast<uint4*>(yg + int64_t(r0 + r) * D + lane * 8) = y;
      if (a.out_pe) *reinterpret_cast<uint4*>(ypg + int64_t(r0 + r) * D + lane * 8) = cuda::add_vec16<H>(y, pe_rows[r]);
    }
    __syncwarp();  // the rows are read before a later tile's x overwrites them
  }
}

template <class H, int KP, int W>
void launch_i2t_mma(const CudaContext& ctx, const I2tArgs& a, int64_t B) {
  constexpr size_t smem = i2t_mma_smem<KP, W>();
  CUDA_CHECK(cudaFuncSetAttribute(i2t_mma_kernel<H, KP, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const int64_t ntiles = (a.T + 16 * W - 1) / (16 * W);
  // One wave (shared memory allows one block an SM): each block loads its prompt's keys and values
  // once and pipelines its tiles (a block of one tile would load keys, values and its only tile one
  // after the other).
  const int64_t per = std::max<int64_t>(1, (ntiles * B + ctx.sm_count - 1) / ctx.sm_count);
  const dim3 grid((unsigned)((ntiles + per - 1) / per), (unsigned)B);
  i2t_mma_kernel<H, KP, W><<<grid, 32 * W, smem, ctx.stream>>>(a, (int)per);
  CUDA_LAUNCH_CHECK();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

namespace cuda {

void wide_head_attention(const CudaOps& ops, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  CudaContext& ctx = ops.context();
  const DType dt = ops.precision();
  int64_t B = out.dim(0), Nq = q.dim(1);
  const int64_t D = q.dim(2), Nk = k.dim(1);
  const int64_t q_step = q.dim(0) == 1 ? 0 : 1, kv_step = k.dim(0) == 1 ? 0 : 1;
  check(B * Nq < (int64_t(1) << 31) && Nk < (int64_t(1) << 31), "attention", "too many queries or keys");
  // Keys and values shared by the batch (the first layer's, before the image tokens differ by
  // prompt): the batch's queries as the rows of one GEMM each, which reads K and V once.
  if (kv_step == 0 && q_step == 1) Nq *= B, B = 1;
  Tensor s = ops.empty({B, Nq, Nk}, DType::F32);
  cuda::gemm(ctx, dt, true, Nq, Nk, D, q.data, D, k.data, D, s.data, Nk, nullptr, Act::None, nullptr, B, q_step * Nq * D,
             kv_step * Nk * D, Nq * Nk, /*f32_out=*/true);
  Tensor p = ops.empty({B, Nq, Nk});
  const float scale = 1.f / std::sqrt((float)D);
  SAMFAST_DISPATCH(dt, T, {
    const unsigned rows = (unsigned)(B * Nq);
    if (Nk <= 256 * 16)
      softmax_rows_kernel<T, 16><<<rows, 256, 0, ctx.stream>>>(s.ptr<float>(), p.ptr<T>(), (int)Nk, scale);
    else
      softmax_rows_long_kernel<T><<<rows, 256, 0, ctx.stream>>>(s.ptr<float>(), p.ptr<T>(), (int)Nk, scale);
  });
  CUDA_LAUNCH_CHECK();
  cuda::gemm(ctx, dt, false, Nq, D, Nk, p.data, Nk, v.data, D, out.data, D, nullptr, Act::None, nullptr, B, Nq * Nk,
             kv_step * Nk * D, Nq * D);
}

}  // namespace cuda

Tensor CudaOps::image_to_token_attention(const Tensor& x, const Tensor& k, const Tensor& kb, const Tensor& v,
                                         const Tensor& bias, const Tensor& residual, const Tensor& ln_w,
                                         const Tensor& ln_b, float eps, int heads) {
  return image_to_token(x, k, kb, v, bias, residual, ln_w, ln_b, eps, heads, nullptr, nullptr);
}

std::pair<Tensor, Tensor> CudaOps::image_to_token_attention_pe(const Tensor& x, const Tensor& k, const Tensor& kb,
                                                               const Tensor& v, const Tensor& bias,
                                                               const Tensor& residual, const Tensor& ln_w,
                                                               const Tensor& ln_b, float eps, int heads,
                                                               const Tensor& key_pe) {
  Tensor out_pe;
  Tensor out = image_to_token(x, k, kb, v, bias, residual, ln_w, ln_b, eps, heads, &key_pe, &out_pe);
  if (!out_pe.defined()) out_pe = add(out, key_pe);  // (other paths: the default's add)
  return {out, out_pe};
}

Tensor CudaOps::image_to_token(const Tensor& x, const Tensor& k, const Tensor& kb, const Tensor& v, const Tensor& bias,
                               const Tensor& residual, const Tensor& ln_w, const Tensor& ln_b, float eps, int heads,
                               const Tensor* key_pe, Tensor* out_pe) {
  const char* op = "image_to_token_attention";
  for (const Tensor* t : {&x, &k, &kb, &v, &bias, &residual, &ln_w, &ln_b}) expect(*t, op, "input");
  check_image_to_token_attention(x, k, kb, v, bias, residual, ln_w, ln_b, heads);
  const int64_t B = k.dim(0), N = k.dim(1), T = x.dim(1), D = x.dim(2);
  check(B <= 65535 && T < (int64_t(1) << 31) && N * heads < (1 << 20), op, "too many prompts or tokens");
  Tensor out = empty({B, T, D});
  if (out.numel() == 0) return out;
  I2tArgs a{x.data,   k.data,   kb.data, v.data,  bias.data,  residual.data, ln_w.data,
            ln_b.data, out.data, (int)T,  (int)N,  (int)D,     heads,         x.dim(0) == B && B > 1 ? 1 : 0,
            residual.dim(0) == B && B > 1 ? 1 : 0, eps};
  const int warps = i2t_mma_warps(N, ctx_->max_smem_per_block);
  const bool tensor_cores = dt_ != DType::F32 && D == kMmaD && heads == kMmaHeads && N <= 16 && warps > 0 &&
                            aligned16(x.data) && aligned16(k.data) && aligned16(v.data) && aligned16(residual.data) &&
                            aligned16(ln_w.data) && aligned16(ln_b.data) && aligned16(out.data);
  if (tensor_cores) {
    if (key_pe && key_pe->shape == Shape{1, T, D} && aligned16(key_pe->data)) {
      expect(*key_pe, op, "key_pe");
      *out_pe = empty({B, T, D});
      a.pe = key_pe->data, a.out_pe = out_pe->data;
    }
    auto go = [&](auto tag) {
      using H = decltype(tag);
      if (N > 8)
        launch_i2t_mma<H, 16, 4>(*ctx_, a, B);
      else if (warps == 8)
        launch_i2t_mma<H, 8, 8>(*ctx_, a, B);
      else
        launch_i2t_mma<H, 8, 4>(*ctx_, a, B);
    };
    if (dt_ == DType::BF16)
      go(__nv_bfloat16{});
    else
      go(__half{});
  } else {
    const size_t smem = sizeof(float) * kWarpKernelWarps * (N * heads + D);
    check(smem <= ctx_->max_smem_per_block, op, std::to_string(N) + " prompt tokens do not fit in shared memory");
    auto go = [&](auto kernel) {
      CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
      const dim3 grid((unsigned)((T + kWarpKernelWarps - 1) / kWarpKernelWarps), (unsigned)B);
      kernel<<<grid, kWarpKernelWarps * 32, smem, ctx_->stream>>>(a);
    };
    SAMFAST_DISPATCH(dt_, T, go(i2t_warp_kernel<T>));
    CUDA_LAUNCH_CHECK();
  }
  return out;
}

}  // namespace samfast
