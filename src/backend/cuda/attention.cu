// ops.attention (the mask decoder's multi-head attention after the projections): q (B, Nq, D), k, v
// (B, Nk, D). The two-way transformer has two shapes: a few tokens against 4096 image positions
// (token-to-image), and 4096 positions against a few tokens (image-to-token, and the tokens'
// self-attention). Each gets its own kernel here, on the CUDA cores with an online softmax; one head
// wider than 64 (the folded token-to-image attention) runs as GEMMs (decoder_attention.cu).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"

namespace samfast {
namespace {

using cuda::cp_async16;
using cuda::cp_async_commit;
using cuda::cp_async_wait_all;
using cuda::from_f32;
using cuda::to_f32;
using cuda::warp_tile_abt;

// Loads HD consecutive values (16-byte aligned) as fp32, 16 bytes at a time.
template <class T, int HD>
__device__ __forceinline__ void load_row(const T* __restrict src, float* dst) {
  constexpr int kPer = 16 / sizeof(T);
#pragma unroll
  for (int c = 0; c < HD / kPer; ++c) {
    const uint4 raw = reinterpret_cast<const uint4*>(src)[c];
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < kPer; ++i) dst[c * kPer + i] = to_f32(e[i]);
  }
}

// Stores HD values src[d] / div as T, 16 bytes at a time (a thread's output row is contiguous; scalar
// 2-byte stores from rows 256 bytes apart made the decoder's image-to-token attention write-bound).
template <class T, int HD>
__device__ __forceinline__ void store_row(T* __restrict dst, const float* src, float div) {
  constexpr int kPer = 16 / sizeof(T);
#pragma unroll
  for (int c = 0; c < HD / kPer; ++c) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < kPer; ++i) e[i] = from_f32<T>(src[c * kPer + i] / div);
    reinterpret_cast<uint4*>(dst)[c] = raw;
  }
}

// One query's softmax over Nk keys and values held in shared memory as fp32 rows, stored as T.
template <class T, int HD>
__device__ __forceinline__ void attend_few_keys(const float (&qr)[HD], const float (*sK)[HD], const float (*sV)[HD],
                                                int Nk, float inv_sqrt_hd, T* __restrict out_row) {
  auto score = [&](int j) {  // recomputed in the second pass: cheaper than a local-memory array
    float acc = 0.f;
#pragma unroll
    for (int d = 0; d < HD; ++d) acc += qr[d] * sK[j][d];
    return acc * inv_sqrt_hd;
  };
  float m = -INFINITY, o[HD];
  for (int j = 0; j < Nk; ++j) m = fmaxf(m, score(j));
#pragma unroll
  for (int d = 0; d < HD; ++d) o[d] = 0.f;
  float l = 0.f;
  for (int j = 0; j < Nk; ++j) {
    const float p = expf(score(j) - m);
    l += p;
#pragma unroll
    for (int d = 0; d < HD; ++d) o[d] += p * sV[j][d];
  }
  store_row<T, HD>(out_row, o, l);
}

// Few keys (Nk <= kMaxFewKeys): the keys and values of one (b, head) sit in shared memory and each
// thread computes one query's whole softmax.
constexpr int kMaxFewKeys = 32;
template <class T, int HD>
__global__ void __launch_bounds__(128) mha_few_keys(const T* __restrict q, const T* __restrict k, const T* __restrict v,
                                                    T* __restrict out, int Nq, int Nk, int D, int heads,
                                                    float inv_sqrt_hd, int q_step, int kv_step) {
  __shared__ float sK[kMaxFewKeys][HD], sV[kMaxFewKeys][HD];
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z, bq = b * q_step, bkv = b * kv_step;
  for (int i = threadIdx.x; i < Nk * HD; i += blockDim.x) {
    const int j = i / HD, d = i % HD;
    sK[j][d] = to_f32(k[(bkv * Nk + j) * D + h * HD + d]);
    sV[j][d] = to_f32(v[(bkv * Nk + j) * D + h * HD + d]);
  }
  __syncthreads();
  const int qi = blockIdx.x * blockDim.x + threadIdx.x;
  if (qi >= Nq) return;
  float qr[HD];
  load_row<T, HD>(q + (bq * Nq + qi) * D + h * HD, qr);
  attend_few_keys<T, HD>(qr, sK, sV, Nk, inv_sqrt_hd, out + (b * Nq + qi) * D + h * HD);
}

// ops.token_self_attention (the decoder's self-attention of the prompt tokens with its q, k and v
// projections): one block a (head, prompt). Its 6 warps compute the head's q, k and v (16 columns
// each: warps 0-1 q, 2-3 k, 4-5 v) for the prompt's N <= 32 tokens on tensor cores, from the token
// rows and the head's 96 weight rows staged in shared memory; then a thread a query runs the
// softmax as mha_few_keys does. It stands for three cuBLASLt GEMMs and mha_few_keys, each a few
// microseconds of mostly latency at 16 prompts of 7 tokens.
constexpr int kTsaD = 256, kTsaHd = 32, kTsaRows = 32, kTsaLds = kTsaD + 8, kTsaWarps = 6;
constexpr size_t kTsaSmem =
    sizeof(uint16_t) * (2 * kTsaRows + 3 * kTsaHd) * kTsaLds + sizeof(float) * kTsaRows * (3 * kTsaHd + 1);

template <class H>
__global__ void __launch_bounds__(kTsaWarps * 32)
    token_self_attention_kernel(const H* __restrict x, const H* __restrict x_v, const H* __restrict wq,
                                const H* __restrict bq, const H* __restrict wk, const H* __restrict bk,
                                const H* __restrict wv, const H* __restrict bv, H* __restrict out, int N, int C,
                                float inv_sqrt_hd) {
  constexpr int D = kTsaD, HD = kTsaHd, LDS = kTsaLds, kThreads = kTsaWarps * 32, kChunks = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  H* sX = reinterpret_cast<H*>(smem_raw);  // (token, D), rows past N zero: the q and k input
  H* sXv = sX + kTsaRows * LDS;            // the v input (unused where it is x)
  H* sW = sXv + kTsaRows * LDS;            // the head's weight rows: q's HD, k's, v's
  auto sK = reinterpret_cast<float (*)[HD]>(sW + 3 * HD * LDS);  // k, v rounded to H, as fp32
  auto sV = sK + kTsaRows;
  float* sQ = reinterpret_cast<float*>(sV + kTsaRows);  // q rows HD + 1 apart (a thread reads its own)
  const int h = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gr = lane / 4, tq = lane % 4;
  const int64_t b = blockIdx.y;
  const bool v_is_x = x_v == x;
  const int rows = N <= 16 ? 16 : 32;  // whole m-tiles
  const H* xb = x + b * N * D;
  const H* xvb = x_v + b * N * D;
  for (int i = tid; i < rows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const bool ok = r < N;
    const int64_t at = ok ? int64_t(r) * D + c * 8 : 0;
    cp_async16(sX + r * LDS + c * 8, xb + at, ok);
    if (!v_is_x) cp_async16(sXv + r * LDS + c * 8, xvb + at, ok);
  }
  for (int i = tid; i < 3 * HD * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks, which = r / HD;
    const H* w = which == 0 ? wq : which == 1 ? wk : wv;
    cp_async16(sW + r * LDS + c * 8, w + int64_t(h * HD + r % HD) * D + c * 8, true);
  }
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();

  // This warp's 16 columns of q, k or v, plus the bias, rounded to H as a Linear's output is.
  const int col0 = warp * 16, which = col0 / HD;
  const H* a = which == 2 && !v_is_x ? sXv : sX;
  const H* bias = (which == 0 ? bq : which == 1 ? bk : bv) + h * HD;
  for (int m = 0; m < rows / 16; ++m) {
    float c[2][4];
    warp_tile_abt<H, D, 16>(c, a + m * 16 * LDS, LDS, sW + col0 * LDS, LDS, lane);
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = (col0 + n * 8 + tq * 2 + e) % HD;
        const float bc = to_f32(bias[col]);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int r = m * 16 + gr + 8 * i;
          const float y = to_f32(from_f32<H>(c[n][2 * i + e] + bc));
          if (which == 0)
            sQ[r * (HD + 1) + col] = y;
          else
            (which == 1 ? sK : sV)[r][col] = y;
        }
      }
  }
  __syncthreads();
  if (tid >= N) return;
  float qr[HD];
#pragma unroll
  for (int d = 0; d < HD; ++d) qr[d] = sQ[tid * (HD + 1) + d];
  attend_few_keys<H, HD>(qr, sK, sV, N, inv_sqrt_hd, out + (b * N + tid) * C + h * HD);
}

// Many keys: one block per (b, head, query); its 8 warps split the keys (a block per (b, head) left
// most SMs idle at 16 prompts: 128 blocks), each lane keeps an online softmax over its keys, and the
// lanes and then the warps are merged.
constexpr int kManyKeysWarps = 8;
template <class T, int HD>
__global__ void __launch_bounds__(kManyKeysWarps * 32) mha_many_keys(const T* __restrict q, const T* __restrict k,
                                                                     const T* __restrict v, T* __restrict out, int Nq,
                                                                     int Nk, int D, int heads, float inv_sqrt_hd,
                                                                     int q_step, int kv_step) {
  __shared__ float s_m[kManyKeysWarps], s_l[kManyKeysWarps], s_o[kManyKeysWarps][HD];
  const int64_t item = blockIdx.x;
  const int qi = (int)(item % Nq), h = (int)((item / Nq) % heads);
  const int64_t b = item / ((int64_t)Nq * heads), bq = b * q_step, bkv = b * kv_step;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float qr[HD], o[HD], row[HD];
  load_row<T, HD>(q + (bq * Nq + qi) * D + h * HD, qr);
#pragma unroll
  for (int d = 0; d < HD; ++d) o[d] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int j = warp * 32 + lane; j < Nk; j += kManyKeysWarps * 32) {
    load_row<T, HD>(k + (bkv * Nk + j) * D + h * HD, row);
    float s = 0.f;
#pragma unroll
    for (int d = 0; d < HD; ++d) s += qr[d] * row[d];
    s *= inv_sqrt_hd;
    const float mn = fmaxf(m, s), c = expf(m - mn), p = expf(s - mn);
    l = l * c + p;
    load_row<T, HD>(v + (bkv * Nk + j) * D + h * HD, row);
#pragma unroll
    for (int d = 0; d < HD; ++d) o[d] = o[d] * c + p * row[d];
    m = mn;
  }
  // Merge the lanes of this warp, then the warps of this block.
  float mw = m;
  for (int sh = 16; sh; sh /= 2) mw = fmaxf(mw, __shfl_xor_sync(0xffffffffu, mw, sh));
  const float c = m == -INFINITY ? 0.f : expf(m - mw);  // lanes without keys contribute nothing
  l *= c;
  for (int sh = 16; sh; sh /= 2) l += __shfl_xor_sync(0xffffffffu, l, sh);
#pragma unroll
  for (int d = 0; d < HD; ++d) {
    float x = o[d] * c;
    for (int sh = 16; sh; sh /= 2) x += __shfl_xor_sync(0xffffffffu, x, sh);
    if (lane == d % 32) s_o[warp][d] = x;
  }
  if (lane == 0) s_m[warp] = mw, s_l[warp] = l;
  __syncthreads();
  if (warp != 0) return;
  float mall = -INFINITY;
#pragma unroll
  for (int w = 0; w < kManyKeysWarps; ++w) mall = fmaxf(mall, s_m[w]);
  float lall = 0.f;
#pragma unroll
  for (int w = 0; w < kManyKeysWarps; ++w) lall += s_m[w] == -INFINITY ? 0.f : s_l[w] * expf(s_m[w] - mall);
  T* orow = out + (b * Nq + qi) * D + h * HD;
  for (int d = lane; d < HD; d += 32) {
    float x = 0.f;
#pragma unroll
    for (int w = 0; w < kManyKeysWarps; ++w) x += s_m[w] == -INFINITY ? 0.f : s_o[w][d] * expf(s_m[w] - mall);
    orow[d] = from_f32<T>(x / lall);
  }
}

// Many keys, few queries (the decoder's token-to-image attention: 7 tokens, 4096 image keys): one
// block per (b, head, group of kGroupQueries queries), so each key and value row is read once per
// group instead of once per query (mha_many_keys re-read them from L2 per query and was bound by
// it). Groups of 4 keep o in registers without spilling (8 spilled) and leave enough warps per SM.
// Each lane keeps an online softmax per query over its keys; lanes, then warps, are merged.
constexpr int kGroupQueries = 4, kGroupWarps = 4;
template <class T, int HD>
__global__ void __launch_bounds__(kGroupWarps * 32) mha_query_group(const T* __restrict q, const T* __restrict k,
                                                                    const T* __restrict v, T* __restrict out, int Nq,
                                                                    int Nk, int D, int heads, float inv_sqrt_hd,
                                                                    int q_step, int kv_step) {
  __shared__ float s_q[kGroupQueries][HD], s_m[kGroupWarps][kGroupQueries], s_l[kGroupWarps][kGroupQueries];
  __shared__ float s_o[kGroupWarps][kGroupQueries][HD];
  const int groups = (Nq + kGroupQueries - 1) / kGroupQueries;
  const int g = blockIdx.x % groups, h = (blockIdx.x / groups) % heads;
  const int64_t b = blockIdx.x / (int64_t(groups) * heads), bq = b * q_step, bkv = b * kv_step;
  const int q0 = g * kGroupQueries, nq = min(kGroupQueries, Nq - q0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int i = threadIdx.x; i < nq * HD; i += blockDim.x)
    s_q[i / HD][i % HD] = to_f32(q[(bq * Nq + q0 + i / HD) * D + h * HD + i % HD]);
  __syncthreads();
  float m[kGroupQueries], l[kGroupQueries], o[kGroupQueries][HD], kr[HD], vr[HD];
#pragma unroll
  for (int i = 0; i < kGroupQueries; ++i) {
    m[i] = -INFINITY, l[i] = 0.f;
#pragma unroll
    for (int d = 0; d < HD; ++d) o[i][d] = 0.f;
  }
  for (int j = threadIdx.x; j < Nk; j += blockDim.x) {
    load_row<T, HD>(k + (bkv * Nk + j) * D + h * HD, kr);
    load_row<T, HD>(v + (bkv * Nk + j) * D + h * HD, vr);
#pragma unroll
    for (int i = 0; i < kGroupQueries; ++i) {
      if (i >= nq) break;
      float s = 0.f;
#pragma unroll
      for (int d = 0; d < HD; ++d) s += s_q[i][d] * kr[d];
      s *= inv_sqrt_hd;
      const float mn = fmaxf(m[i], s), c = expf(m[i] - mn), p = expf(s - mn);
      l[i] = l[i] * c + p;
#pragma unroll
      for (int d = 0; d < HD; ++d) o[i][d] = o[i][d] * c + p * vr[d];
      m[i] = mn;
    }
  }
#pragma unroll
  for (int i = 0; i < kGroupQueries; ++i) {
    if (i >= nq) break;
    float mw = m[i];
    for (int sh = 16; sh; sh /= 2) mw = fmaxf(mw, __shfl_xor_sync(0xffffffffu, mw, sh));
    const float c = m[i] == -INFINITY ? 0.f : expf(m[i] - mw);
    float li = l[i] * c;
    for (int sh = 16; sh; sh /= 2) li += __shfl_xor_sync(0xffffffffu, li, sh);
#pragma unroll
    for (int d = 0; d < HD; ++d) {
      float x = o[i][d] * c;
      for (int sh = 16; sh; sh /= 2) x += __shfl_xor_sync(0xffffffffu, x, sh);
      if (lane == d % 32) s_o[warp][i][d] = x;
    }
    if (lane == 0) s_m[warp][i] = mw, s_l[warp][i] = li;
  }
  __syncthreads();
  for (int i = warp; i < nq; i += kGroupWarps) {
    float mall = -INFINITY;
#pragma unroll
    for (int w = 0; w < kGroupWarps; ++w) mall = fmaxf(mall, s_m[w][i]);
    float lall = 0.f;
#pragma unroll
    for (int w = 0; w < kGroupWarps; ++w) lall += s_m[w][i] == -INFINITY ? 0.f : s_l[w][i] * expf(s_m[w][i] - mall);
    T* orow = out + (b * Nq + q0 + i) * D + h * HD;
    for (int d = lane; d < HD; d += 32) {
      float x = 0.f;
#pragma unroll
      for (int w = 0; w < kGroupWarps; ++w) x += s_m[w][i] == -INFINITY ? 0.f : s_o[w][i][d] * expf(s_m[w][i] - mall);
      orow[d] = from_f32<T>(x / lall);
    }
  }
}

void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

template <class T, int HD>
void launch_mha(const CudaContext& ctx, const void* q, const void* k, const void* v, void* out, int64_t B, int Nq,
                int Nk, int D, int heads, int q_step, int kv_step) {
  check(B * heads < (int64_t(1) << 31) && B <= 65535 && heads <= 65535, "attention", "batch too large: " + std::to_string(B));
  check(D % (16 / sizeof(T)) == 0 && reinterpret_cast<uintptr_t>(q) % 16 == 0 && reinterpret_cast<uintptr_t>(k) % 16 == 0 &&
            reinterpret_cast<uintptr_t>(v) % 16 == 0,
        "attention", "rows must be 16-byte aligned");
  const float scale = 1.f / sqrtf((float)HD);
  const auto* qp = static_cast<const T*>(q);
  const auto* kp = static_cast<const T*>(k);
  const auto* vp = static_cast<const T*>(v);
  if (Nk <= kMaxFewKeys) {
    const dim3 grid((unsigned)((Nq + 127) / 128), (unsigned)heads, (unsigned)B);
    mha_few_keys<T, HD><<<grid, 128, 0, ctx.stream>>>(qp, kp, vp, static_cast<T*>(out), Nq, Nk, D, heads, scale, q_step,
                                                              kv_step);
  } else if (HD <= 16 && Nq <= 2 * kGroupQueries) {  // registers: o holds kGroupQueries x HD floats
    if constexpr (HD <= 16) {
      const int64_t blocks = B * heads * ((Nq + kGroupQueries - 1) / kGroupQueries);
      check(blocks < (int64_t(1) << 31), "attention", "batch too large: " + std::to_string(B));
      mha_query_group<T, HD><<<(unsigned)blocks, kGroupWarps * 32, 0, ctx.stream>>>(
          qp, kp, vp, static_cast<T*>(out), Nq, Nk, D, heads, scale, q_step, kv_step);
    }
  } else {
    check(B * heads * Nq < (int64_t(1) << 31), "attention", "too many queries");
    mha_many_keys<T, HD><<<(unsigned)(B * heads * Nq), kManyKeysWarps * 32, 0, ctx.stream>>>(
        qp, kp, vp, static_cast<T*>(out), Nq, Nk, D, heads, scale, q_step, kv_step);
  }
  CUDA_LAUNCH_CHECK();
}

}  // namespace

Tensor CudaOps::attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) {
  // ref: modeling/transformer.py Attention.forward (after the projections)
  expect(q, "attention", "q");
  expect(k, "attention", "k");
  expect(v, "attention", "v");
  check_attention(q, k, v, heads);
  // A batch of 1 in q, or in k and v, is shared by every item of the other's batch.
  const int64_t B = std::max(q.dim(0), k.dim(0)), Nq = q.dim(1), D = q.dim(2), Nk = k.dim(1), hd = D / heads;
  const int q_step = q.dim(0) == 1 ? 0 : 1, kv_step = k.dim(0) == 1 ? 0 : 1;
  Tensor out = empty({B, Nq, D});
  if (out.numel() == 0) return out;
  if (heads == 1 && hd > 64) {  // the decoder's folded token-to-image attention
    cuda::wide_head_attention(*this, q, k, v, out);
    return out;
  }
  auto run = [&](auto tag) {
    using T = decltype(tag);
    cuda::with_head_dim<16, 32, 64>(hd, "attention", [&](auto HD) {
      launch_mha<T, decltype(HD)::value>(*ctx_, q.data, k.data, v.data, out.data, B, (int)Nq, (int)Nk, (int)D, heads,
                                         q_step, kv_step);
    });
  };
  SAMFAST_DISPATCH(dt_, T, run(T{}));
  return out;
}

Tensor CudaOps::token_self_attention(const Tensor& x, const Tensor& x_v, const Tensor& wq, const Tensor& bq,
                                     const Tensor& wk, const Tensor& bk, const Tensor& wv, const Tensor& bv, int heads) {
  check_token_self_attention(x, x_v, wq, bq, wk, bk, wv, bv, heads);
  const int64_t B = x.dim(0), N = x.dim(1), D = x.dim(2), C = wq.dim(0);
  auto ours = [&](const Tensor& t) {  // (16-byte aligned: cp.async)
    return t.device == Device::CUDA && t.dtype == dt_ && reinterpret_cast<uintptr_t>(t.data) % 16 == 0;
  };
  const bool fused = dt_ != DType::F32 && D == kTsaD && C == int64_t(heads) * kTsaHd && N >= 1 && N <= kTsaRows &&
                     B >= 1 && B <= 65535 && heads <= 65535 && kTsaSmem <= ctx_->max_smem_per_block && ours(x) &&
                     ours(x_v) && ours(wq) && ours(bq) && ours(wk) && ours(bk) && ours(wv) && ours(bv);
  if (!fused) return Ops::token_self_attention(x, x_v, wq, bq, wk, bk, wv, bv, heads);
  Tensor out = empty({B, N, C});
  auto go = [&](auto tag) {
    using H = decltype(tag);
    CUDA_CHECK(cudaFuncSetAttribute(token_self_attention_kernel<H>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)kTsaSmem));
    token_self_attention_kernel<H><<<dim3((unsigned)heads, (unsigned)B), kTsaWarps * 32, kTsaSmem, ctx_->stream>>>(
        x.ptr<H>(), x_v.ptr<H>(), wq.ptr<H>(), bq.ptr<H>(), wk.ptr<H>(), bk.ptr<H>(), wv.ptr<H>(), bv.ptr<H>(),
        out.ptr<H>(), (int)N, (int)C, 1.f / std::sqrt(float(kTsaHd)));
  };
  if (dt_ == DType::BF16)
    go(__nv_bfloat16{});
  else
    go(__half{});
  CUDA_LAUNCH_CHECK();
  return out;
}

}  // namespace samfast
