// rel_pos_attention (bf16 or fp16: H) on Hopper: the flash-attention kernel of attention.cu with both products
// on warpgroup MMAs (wgmma, sm_90a). Same algorithm, tile geometry and relative-position terms; what
// changes is where the operands come from. With mma.sync each warp reads every K and V fragment of a
// 64-key block from shared memory for its own 32 query rows (ldmatrix); a wgmma reads its B operand
// (K, V, or a table chunk) once for a warpgroup's 64 query rows, on Hopper's full-rate tensor-core
// path (vit_b global block at batch 8 on an H200: 2.47 ms, 167 TFLOP/s, against 3.0 ms for the
// 16-rows-a-warp mma.sync kernel). Q and P stay in registers as the A operand (the m16n8k16 A
// layout per warp, as in attention.cu), and the accumulators have the m16n8 layout per warp: the
// softmax code is the same.
//   Block: 2 warpgroups x 64 queries; 64 key slots per step (slots as in attention.cu: key row ky at
//   [ky KW, ky KW + tw)). K, V and the table chunks sit in shared memory as 8 x 16-byte core
//   matrices (no swizzle), each wgmma k-step's core matrices contiguous (layouts below), filled by
//   cp.async, consecutive threads writing consecutive 16 bytes; the queries go straight to registers.
//   Measured (H200, vit_b batch 1): global block 334 us (~154 TFLOP/s), windowed ~52 us a launch;
//   vit_h windowed 76 us (87 before the pipeline described above the kernel; same-call traces).
//   What does not limit it: shared-memory bank conflicts (an earlier layout with 52% excess
//   wavefronts ran as fast), nor instruction count: a variant for 64-wide tiles that added the
//   rel_w terms on the tensor cores (an identity B operand) and rel_h as a shift of the row maximum,
//   ~40% fewer instructions per score, ran at the same speed (vit_b 385 -> 390 us, vit_h -1..+4%).
//   Nor the batch-1 wave count: splitting the keys of vit_b's global attention in two (768 blocks
//   instead of 384 for 264 slots, a merge kernel) ran 332 us + 20 us of merge against 335 (a partial
//   wave's blocks run alone on their SM, faster); not kept.
//   ncu (before that pipeline): issue slots ~45% busy, warps stalled mostly on "wait"
//   (fixed-latency dependencies) and the block barriers; 2 blocks of 8 warps an SM (128 registers a
//   thread, all used: no room for a second score tile). What would: FA3's structure, one block an SM
//   with a producer warp filling a K/V ring behind mbarriers (no block barriers), consumer
//   warpgroups with more registers (setmaxnreg) issuing Q K(b + 1)^T before the softmax of block b.
#include <algorithm>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/rel_pos_tile.cuh"

namespace samfast::cuda {
namespace {


constexpr int kQ = 128;  // queries per block: 2 warpgroups x 64
constexpr int kK = 64;   // key slots per step
constexpr int kThreads = 256;
constexpr int kRelStride = kQ + 4;  // floats per relative-position column in shared memory

// Bytes before the relative-position terms: four 64-row tiles T0..T3 (K of even and odd steps, V of
// even and odd steps; first the relative-position table chunks).
template <int HD>
constexpr size_t region0_bytes() {  // (16-bit elements)
  return sizeof(uint16_t) * 4 * kK * HD;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // (the helpers below serve only the sm_90a kernel body)
// Shared-memory layouts of a 64-row tile of HD values, in 8 x 16-byte core matrices (no swizzle),
// with the core matrices of each wgmma k-step contiguous (2 KiB): a k-step's operand is read from
// one block of shared memory, not from 8 row groups HD x 16 bytes apart.
//   K (and the relative-position table chunks), the K-major B operand of Q K^T, k-step kk = chunks
//   2 kk and 2 kk + 1: chunk c of row r at byte (((c / 2) 8 + r / 8) 2 + c % 2) 128 + (r % 8) 16;
//   descriptor start kk 2048 bytes, 128 bytes between the k-step's two chunk columns (leading),
//   256 between 8-row groups (stride).
//   V, the N-major B operand of P V, k-step ks = rows [16 ks, 16 ks + 16): chunk c of row r at byte
//   (((r / 16) (HD / 8) + c) 2 + (r / 8) % 2) 128 + (r % 8) 16; descriptor start ks HD 32 bytes,
//   128 bytes between the k-step's two 8-row groups (leading), 256 between chunks (stride).
// Element offsets (H) of chunk c of row r:
__device__ __forceinline__ int k_layout_offset(int r, int c) {
  return (((((c >> 1) << 3) + (r >> 3)) * 2 + (c & 1)) << 6) + ((r & 7) << 3);
}
template <int HD>
__device__ __forceinline__ int v_layout_offset(int r, int c) {
  return ((((r >> 4) * (HD / 8) + c) * 2 + ((r >> 3) & 1)) << 6) + ((r & 7) << 3);
}
// The i-th 16-byte chunk of a tile in fill order: the chunk that layout puts at byte 16 i, so that
// consecutive threads write consecutive 16 bytes of shared memory.
__device__ __forceinline__ void k_chunk_of(int i, int& r, int& c) {
  r = ((i >> 4) & 7) * 8 + (i & 7);
  c = (i >> 7) * 2 + ((i >> 3) & 1);
}
template <int HD>
__device__ __forceinline__ void v_chunk_of(int i, int& r, int& c) {
  const int rest = i >> 4;
  r = (rest / (HD / 8)) * 16 + ((i >> 3) & 1) * 8 + (i & 7);
  c = rest % (HD / 8);
}

// Part `part` (1 k, 2 v) of key slots [sb, sb + 64) into a tile of its layout (empty slots: zeros).
template <class H, int HD>
__device__ __forceinline__ void load_slots(H* dst, const TileGeometry<H>& g, int sb, int kwl, int part, int off) {
  for (int i = threadIdx.x; i < kK * (HD / 8); i += kThreads) {
    int r, c;
    if (part == 1)
      k_chunk_of(i, r, c);
    else
      v_chunk_of<HD>(i, r, c);
    const int slot = sb + r, ky = slot >> kwl, kx = slot & ((1 << kwl) - 1);
    const bool ok = ky < g.th && kx < g.tw;
    H* to = dst + (part == 1 ? k_layout_offset(r, c) : v_layout_offset<HD>(r, c));
    cp_async16(to, ok ? g.token_yx(ky, kx, part, off) + c * 8 : g.bias, ok);
  }
}

// Rows [j0, j0 + 64) of a relative-position table (rows past hi: zeros) into a tile of the K layout.
template <class H, int HD>
__device__ __forceinline__ void load_table_chunk(H* dst, const H* tab, int j0, int hi) {
  for (int i = threadIdx.x; i < kK * (HD / 8); i += kThreads) {
    int r, c;
    k_chunk_of(i, r, c);
    const int j = j0 + r;
    cp_async16(dst + k_layout_offset(r, c), tab + (int64_t)min(j, hi) * HD + c * 8, j <= hi);
  }
}
#endif

// Pipeline: every load is a cp.async issued one step before its use, and a step has one block
// barrier. Prologue: the block's relative-position table chunks (at most 2 per table, as tiles are at
// most 64 wide: tables of at most 127 rows) go to tiles T1, T3, T0, T2 in that order, and the queries
// straight to registers; with at most 2 chunks (windowed attention) K(0) and V(0) go to T0 and T2 in
// the same round trip. Step b: K(b) in T(b % 2), V(b) in T(2 + b % 2); after the step's barrier
// (K(b), V(b) landed and visible; every warpgroup done with step b - 1) K(b + 1) and V(b + 1) are
// issued into the other pair. (Before: queries and table chunks loaded one after the other, V(b)
// issued at step b: vit_h's windowed blocks, 4 key steps each, waited on ~8 round trips to memory.)
template <class H, int HD>
__global__ void __launch_bounds__(kThreads, 2) rel_pos_attention_wgmma_kernel(RelPosArgs a, int nwin) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(128) unsigned char smem_raw[];
  H* const tiles = reinterpret_cast<H*>(smem_raw);  // T0..T3, kK x HD each
  auto tile = [&](int i) { return tiles + i * kK * HD; };
  float* sRel = reinterpret_cast<float*>(smem_raw + region0_bytes<HD>());  // (th + tw) x kRelStride, x log2(e)
  const TileGeometry<H> g = tile_of<H>(a, nwin);
  const int h = blockIdx.y, off = h * HD, q0 = blockIdx.x * kQ, th = a.th, tw = a.tw;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gr = lane / 4, tq = lane % 4, wg = warp / 4;
  const int wr0 = warp * 16 + gr;  // this thread's query rows in the block: wr0 and wr0 + 8
  int kwl = 3;
  while ((1 << kwl) < tw) ++kwl;
  const int kwm = (1 << kwl) - 1, nslots = th << kwl;

  const QueryRange qr = query_range(q0, kQ, g.ntok, tw);
  // rel_h[q, r] = q . Rh[qy + th - 1 - r], r < th: table rows [y_lo, y_hi + th - 1] (rel_w alike)
  const int lo[2] = {qr.y_lo, qr.x_lo}, hi[2] = {qr.y_hi + th - 1, qr.x_hi + tw - 1};
  const int nchunk0 = (hi[0] - lo[0]) / kK + 1, nchunks = nchunk0 + (hi[1] - lo[1]) / kK + 1;
  auto chunk_tile = [](int i) { return (i & 1) * 2 + 1 - (i >> 1); };  // T1, T3, T0, T2
  for (int i = 0; i < nchunks; ++i) {
    const int part = i >= nchunk0, j0 = lo[part] + (i - (part ? nchunk0 : 0)) * kK;
    load_table_chunk<H, HD>(tile(chunk_tile(i)), static_cast<const H*>(part ? a.rel_w : a.rel_h), j0, hi[part]);
  }
  const bool kv0_early = nchunks <= 2;
  if (kv0_early) {
    load_slots<H, HD>(tile(0), g, 0, kwl, 1, off);
    load_slots<H, HD>(tile(2), g, 0, kwl, 2, off);
  }
  cp_async_commit();
  uint32_t qf[HD / 16][4];  // A fragments: rows gr and gr + 8 of this warp's 16 (rows past the tile: 0)
  {
    const int t0 = q0 + wr0, t1 = t0 + 8;
    const H* r0 = t0 < g.ntok ? g.token(t0, 0, off) + tq * 2 : nullptr;
    const H* r1 = t1 < g.ntok ? g.token(t1, 0, off) + tq * 2 : nullptr;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      qf[kk][0] = r0 ? *reinterpret_cast<const uint32_t*>(r0 + kk * 16) : 0u;
      qf[kk][1] = r1 ? *reinterpret_cast<const uint32_t*>(r1 + kk * 16) : 0u;
      qf[kk][2] = r0 ? *reinterpret_cast<const uint32_t*>(r0 + kk * 16 + 8) : 0u;
      qf[kk][3] = r1 ? *reinterpret_cast<const uint32_t*>(r1 + kk * 16 + 8) : 0u;
    }
  }
  // S (64 x 64 per warpgroup) = Q K^T with K (or a table chunk) in kt (K layout).
  auto qk = [&](float (&s)[kK / 2], const H* kt) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk)
      wgmma16<H, kK, 0>(s, qf[kk], wgmma_desc(kt + kk * 1024, 128, 256), kk > 0);
    wgmma_commit();
    wgmma_wait_all();
  };
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();  // the table chunks (and K(0), V(0) if early) visible to all

  {  // relative-position terms of this block's queries (unscaled q, fp32 accumulation), x log2(e)
    int qy[2], qx[2];  // of rows wr0, wr0 + 8 (past the tile: the last token; their q rows are 0)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int t = min(q0 + wr0 + 8 * i, g.ntok - 1);
      qy[i] = t / tw, qx[i] = t % tw;
    }
#pragma unroll 1
    for (int i = 0; i < nchunks; ++i) {
      const int part = i >= nchunk0, j0 = lo[part] + (i - (part ? nchunk0 : 0)) * kK, lim = part ? tw : th;
      float* dst = sRel + (part ? th : 0) * kRelStride + wr0;
      const int base0 = (part ? qx[0] : qy[0]) + lim - 1, base1 = (part ? qx[1] : qy[1]) + lim - 1;
      float gq[kK / 2];
      qk(gq, tile(chunk_tile(i)));
#pragma unroll
      for (int n = 0; n < kK / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = j0 + n * 8 + tq * 2 + e, r0 = base0 - j, r1 = base1 - j;
          if (r0 >= 0 && r0 < lim) dst[r0 * kRelStride] = gq[4 * n + e] * kLog2e;
          if (r1 >= 0 && r1 < lim) dst[r1 * kRelStride + 8] = gq[4 * n + 2 + e] * kLog2e;
        }
    }
  }
  if (!kv0_early) {
    __syncthreads();  // every warp done with the table chunks in T0 and T2
    load_slots<H, HD>(tile(0), g, 0, kwl, 1, off);
    load_slots<H, HD>(tile(2), g, 0, kwl, 2, off);
    cp_async_commit();
  }
  const bool wg_active = q0 + wg * 64 < g.ntok;  // uniform in the warpgroup, as wgmma needs
  const float* rel0 = sRel + wr0;               // this thread's rows (written by this warp only)
  const float* relw0 = rel0 + (th + tq * 2) * kRelStride;
  const float sc = a.scale * kLog2e;  // softmax in base 2

  float o[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i) o[i] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows gr and gr + 8 (l: this thread's part)

  for (int sb = 0; sb < nslots; sb += kK) {
    const int ks_end = min(kK / 16, (nslots - sb + 15) / 16);  // 16-slot groups holding any key
    const int buf = (sb / kK) % 2;                               // step b's K and V: T(buf), T(2 + buf)
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();  // K(b), V(b) visible to all; every warpgroup is done with step b - 1's tiles
    if (sb + kK < nslots) {
      load_slots<H, HD>(tile(1 - buf), g, sb + kK, kwl, 1, off);
      load_slots<H, HD>(tile(3 - buf), g, sb + kK, kwl, 2, off);
      cp_async_commit();
    }
    if (!wg_active) continue;
    float s[kK / 2];
    qk(s, tile(buf));
    // scores (log2 units) = scale log2(e) q.k + (rel_h + rel_w) log2(e); empty slots -> -inf
    float mx0 = m0, mx1 = m1;
    int ky = sb >> kwl, kx = sb & kwm;  // of n-tile n's first slot
#pragma unroll
    for (int n = 0; n < kK / 8; ++n) {
      score_tile(s + 4 * n, ky, kx, th, tw, tq, rel0, relw0, kRelStride, sc, mx0, mx1);
      kx += 8;
      if (kx > kwm) kx = 0, ++ky;
    }
#pragma unroll
    for (int sh = 1; sh <= 2; sh *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, sh));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, sh));
    }
    // Every step's first slot is a key (see attention.cu): mx is finite; c = 0 on the first step.
    const float c0 = ex2(m0 - mx0), c1 = ex2(m1 - mx1);
    m0 = mx0, m1 = mx1;
    l0 *= c0, l1 *= c1;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) o[4 * n] *= c0, o[4 * n + 1] *= c0, o[4 * n + 2] *= c1, o[4 * n + 3] *= c1;
    // O += P V: P's accumulator layout is the A layout (two n-tiles per 16-key step); V is an
    // N-major B operand (K rows of HD values) in the V layout.
    uint32_t pa[kK / 16][4];
#pragma unroll
    for (int ks = 0; ks < kK / 16; ++ks) {
      float p[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) p[e] = ex2(s[8 * ks + e] - ((e & 2) ? m1 : m0));
      l0 += p[0] + p[1] + p[4] + p[5];
      l1 += p[2] + p[3] + p[6] + p[7];
      pa[ks][0] = pack16<H>(p[0], p[1]);
      pa[ks][1] = pack16<H>(p[2], p[3]);
      pa[ks][2] = pack16<H>(p[4], p[5]);
      pa[ks][3] = pack16<H>(p[6], p[7]);
    }
    const H* sV = tile(2 + buf);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kK / 16; ++ks)
      if (ks < ks_end) wgmma16<H, HD, 1>(o, pa[ks], wgmma_desc(sV + ks * 16 * HD, 128, 256), 1);
    wgmma_commit();
    wgmma_wait_all();
  }
  if (!wg_active) return;
#pragma unroll
  for (int sh = 1; sh <= 2; sh *= 2) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, sh);
    l1 += __shfl_xor_sync(0xffffffffu, l1, sh);
  }
  const float inv0 = 1.f / l0, inv1 = 1.f / l1;
  const int t0 = q0 + wr0, t1 = t0 + 8;
  const int64_t row0 = t0 < g.ntok ? g.out_row(t0) : -1, row1 = t1 < g.ntok ? g.out_row(t1) : -1;
  auto* out = static_cast<H*>(a.out);
#pragma unroll
  for (int n = 0; n < HD / 8; ++n) {
    const int d = off + n * 8 + tq * 2;
    if (row0 >= 0) *reinterpret_cast<uint32_t*>(out + row0 * a.C + d) = pack16<H>(o[4 * n] * inv0, o[4 * n + 1] * inv0);
    if (row1 >= 0)
      *reinterpret_cast<uint32_t*>(out + row1 * a.C + d) = pack16<H>(o[4 * n + 2] * inv1, o[4 * n + 3] * inv1);
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

template <class H, int HD>
void launch(const CudaContext& ctx, const RelPosArgs& a, int64_t windows, int nwin) {
  if (a.th > 64 || a.tw > 64)  // (at most 2 table chunks of 64 rows a table: the prologue's 4 tiles)
    throw Error("rel_pos_attention: the Hopper kernel takes tiles at most 64 tokens on a side, not " +
                std::to_string(a.th) + "x" + std::to_string(a.tw));
  const size_t smem = region0_bytes<HD>() + sizeof(float) * kRelStride * (a.th + a.tw);
  if (smem > ctx.max_smem_per_block)
    throw Error("rel_pos_attention: attention tile needs " + std::to_string(smem) +
                " bytes of shared memory, the GPU has " + std::to_string(ctx.max_smem_per_block));
  CUDA_CHECK(cudaFuncSetAttribute(rel_pos_attention_wgmma_kernel<H, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)smem));
  const dim3 grid((a.th * a.tw + kQ - 1) / kQ, a.heads, (unsigned)windows);
  rel_pos_attention_wgmma_kernel<H, HD><<<grid, kThreads, smem, ctx.stream>>>(a, nwin);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void rel_pos_attention_wgmma(const CudaContext& ctx, DType dt, const RelPosArgs& a, int head_dim, int64_t windows,
                             int nwin) {
  auto run = [&](auto tag) {
    using H = decltype(tag);
    switch (head_dim) {
      case 32: launch<H, 32>(ctx, a, windows, nwin); break;
      case 64: launch<H, 64>(ctx, a, windows, nwin); break;
      case 80: launch<H, 80>(ctx, a, windows, nwin); break;
      default:
        throw Error("rel_pos_attention: head dim " + std::to_string(head_dim) + " is not built (32, 64 and 80 are)");
    }
  };
  if (dt == DType::BF16)
    run(__nv_bfloat16{});
  else
    run(__half{});
}

}  // namespace samfast::cuda
