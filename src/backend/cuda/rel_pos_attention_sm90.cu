// rel_pos_attention (bf16 or fp16: H) on Hopper: the flash-attention kernel of attention.cu with both products
// on warpgroup MMAs (wgmma, sm_90a). Same algorithm, tile geometry and relative-position terms; what
// changes is where the operands come from. With mma.sync each warp reads every K and V fragment of a
// 64-key block from shared memory for its own 32 query rows (ldmatrix); a wgmma reads its B operand
// (K, V, or a table chunk) once for a warpgroup's 64 query rows, on Hopper's full-rate tensor-core
// path (vit_b global block at batch 8 on an H200: 2.47 ms, 167 TFLOP/s, against 3.0 ms for the
// 16-rows-a-warp mma.sync kernel). Q and P stay in registers as the A operand (the m16n8k16 A
// layout per warp, as in attention.cu), and the accumulators have the m16n8 layout per warp: the
// softmax code is the same.
//   Block: 2 warpgroups x 64 queries; 64 key slots per step (key row ky at slots [ky 2^KWL,
//   ky 2^KWL + tw), KWL a template parameter). K, V and the table chunks sit in shared memory as
//   8 x 16-byte core matrices (no swizzle), each wgmma k-step's core matrices contiguous (layouts
//   below), filled by cp.async; the queries go straight to registers.
//   Measured (H200, batch 1, same-call traces, 2026-12-01): vit_b global 229 us (~225 TFLOP/s),
//   windowed 40 us a launch; vit_h global 330 us, windowed 58 us. Until then ptxas had serialized
//   every wgmma (C7520, see the kernel) and the kernel ran 337 / 52 / 465 / 75 us: what earlier
//   sessions measured about it (no gain from fewer instructions per score, nor from splitting the
//   keys of batch-1 global attention in two) was measured on that serialized kernel.
//   Tried and not kept: P V(b) left running into step b + 1 (V in three tiles): vit_b global 230 ->
//   228 us, vit_h windowed 58 -> 60 us, and a spill. ncu (vit_b global, this version): issue slots
//   37% busy, 0.7 eligible warps of 3.4 per scheduler, 128 registers a thread at 2 blocks of 8 warps
//   an SM: latency-bound. What would help: FA3's structure, one block an SM with a producer warp
//   filling a K/V ring behind mbarriers (no block barriers), consumer warpgroups with more
//   registers (setmaxnreg) issuing Q K(b + 1)^T before the softmax of step b.
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
// The i-th 16-byte chunk of a K-layout tile in fill order: the chunk that layout puts at byte 16 i, so
// that consecutive threads write consecutive 16 bytes of shared memory.
__device__ __forceinline__ void k_chunk_of(int i, int& r, int& c) {
  r = ((i >> 4) & 7) * 8 + (i & 7);
  c = (i >> 7) * 2 + ((i >> 3) & 1);
}

// Keeps the compiler from moving reads or writes of wgmma accumulators across a wgmma wait (the asm
// statements name the registers only where the wgmma is issued).
template <int N>
__device__ __forceinline__ void fence_operands(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// This thread's share of every step's K and V tiles, set up once: chunk i = tid + 256 j of the K fill
// order is key slot r of the step (the same for every j: 256 j only moves the column) and column
// chunk c0 + 4 j. A step then costs one row address and HD / 32 (rounded up) pairs of cp.async
// instead of the index arithmetic of a generic loop per chunk. V takes the same (r, c) in its own
// layout: a warp's 32 chunks still land in 512 contiguous bytes (rows r, r + 8 x columns c0, c0 + 1).
template <class H, int HD, int KWL>
struct SlotLoader {
  int64_t row0;      // element offset of slot r's token row (3C values) at key row 0 of the tile
  int64_t row_step;  // elements from one key row of the tile to the next
  int ky_off;        // slot r's key row within a step
  int y_img;         // key rows below y_img are in the image (the others: padding, k = v = bias)
  bool slot_ok;      // slot r's column is a key column of the tile
  bool x_img;        // ... and lies in the image
  int c0, koff, voff;  // chunk (r, c0) and its shared-memory offsets (elements) in the K and V layouts

  __device__ __forceinline__ SlotLoader(const TileGeometry<H>& g) {
    int r;
    k_chunk_of(threadIdx.x, r, c0);
    const int kx = r & ((1 << KWL) - 1), gx = g.wx * g.tw + kx;
    ky_off = r >> KWL;
    slot_ok = kx < g.tw;
    x_img = gx < g.W;
    y_img = g.H - g.wy * g.th;
    row_step = (int64_t)g.W * 3 * g.C;
    row0 = ((g.bi * g.H + g.wy * g.th) * g.W + gx) * (int64_t)(3 * g.C);
    koff = k_layout_offset(r, c0);
    voff = v_layout_offset<HD>(r, c0);
  }
  // K and V (head offset off) of key slots [sb, sb + 64) into tiles kt and vt; slots holding no key
  // are zero-filled.
  __device__ __forceinline__ void load(H* kt, H* vt, const TileGeometry<H>& g, int sb, int off) const {
    const int ky = (sb >> KWL) + ky_off;
    const bool ok = slot_ok && ky < g.th;
    const H* row = (x_img && ky < y_img ? g.qkv + row0 + ky * row_step : g.bias) + off;
#pragma unroll
    for (int j = 0; j < (HD + 31) / 32; ++j)
      if (8 * HD % 256 == 0 || threadIdx.x + 256 * j < 8 * HD) {
        cp_async16(kt + koff + 2048 * j, row + g.C + (c0 + 4 * j) * 8, ok);
        cp_async16(vt + voff + 512 * j, row + 2 * g.C + (c0 + 4 * j) * 8, ok);
      }
  }
};

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

// Key slots: a tile's key row ky occupies slots [ky 2^KWL, ky 2^KWL + tw) (KWL: tw rounded up to a
// power of two, at least 8), so a 64-slot step covers 2^(6 - KWL) whole key rows and n-tile n of a step
// (8 slots) starts at a column and row offset known at compile time.
// Rows of padded key slots, in units of key rows: the steps cover th_pad(th) rows.
template <int KWL>
__host__ __device__ constexpr int th_pad(int th) {
  return ((th << KWL) + kK - 1) / kK * kK >> KWL;
}

// Pipeline: every load is a cp.async issued one step before its use, and a step has one block
// barrier. Prologue: the block's relative-position table chunks (at most 2 per table, as tiles are at
// most 64 wide: tables of at most 127 rows) go to tiles T1, T3, T0, T2 in that order, and the queries
// straight to registers; with at most 2 chunks (windowed attention) K(0) and V(0) go to T0 and T2 in
// the same round trip. Step b: K(b) in T(b % 2), V(b) in T(2 + b % 2); after the step's barrier
// (K(b), V(b) landed and visible; every warpgroup done with step b - 1) K(b + 1) and V(b + 1) are
// issued into the other pair. (Before: queries and table chunks loaded one after the other, V(b)
// issued at step b: vit_h's windowed blocks, 4 key steps each, waited on ~8 round trips to memory.)
//   No wgmma sits in a divergent path (a warpgroup without queries computes on zero rows and stores
// nothing; the last step's P V covers all 64 slots, P and V being zero past the keys): otherwise ptxas
// waits for every wgmma before issuing the next (its C7520 "wgmma serialization" warning), which it
// did here until this version.
//   The relative-position terms of slots that hold no key (columns tw .. 2^KWL - 1, rows th ..
// th_pad - 1) are -inf in shared memory, so a score is q.k scale + rel_h + rel_w with no bounds test,
// and all its shared-memory offsets but the step's key row are compile-time constants.
template <class H, int HD, int KWL>
__global__ void __launch_bounds__(kThreads, 2) rel_pos_attention_wgmma_kernel(RelPosArgs a, int nwin) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kw = 1 << KWL;
  // Lazy rescaling (below) measured on an H200: vit_h (head dim 80) global 377 -> 330 us, windowed
  // 61 -> 58 us; vit_b (64) 229 -> 245 us, so only for head dims above 64.
  constexpr bool kLazyRescale = HD > 64;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  H* const tiles = reinterpret_cast<H*>(smem_raw);  // T0..T3, kK x HD each
  auto tile = [&](int i) { return tiles + i * kK * HD; };
  // (th_pad + kw) x kRelStride floats, x log2(e): rel_h of key rows [0, th_pad), then rel_w of columns [0, kw)
  float* sRel = reinterpret_cast<float*>(smem_raw + region0_bytes<HD>());
  const TileGeometry<H> g = tile_of<H>(a, nwin);
  const int h = blockIdx.y, off = h * HD, q0 = blockIdx.x * kQ, th = a.th, tw = a.tw, thp = th_pad<KWL>(th);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gr = lane / 4, tq = lane % 4;
  const int wr0 = warp * 16 + gr;  // this thread's query rows in the block: wr0 and wr0 + 8
  const int nslots = thp << KWL;   // a whole number of steps
  const SlotLoader<H, HD, KWL> loader(g);

  const QueryRange qr = query_range(q0, kQ, g.ntok, tw);
  // rel_h[q, r] = q . Rh[qy + th - 1 - r], r < th: table rows [y_lo, y_hi + th - 1] (rel_w alike)
  const int hi_h = qr.y_hi + th - 1, hi_w = qr.x_hi + tw - 1;
  const int nchunk0 = (hi_h - qr.y_lo) / kK + 1, nchunks = nchunk0 + (hi_w - qr.x_lo) / kK + 1;
  // table part (0 rel_h, 1 rel_w) of chunk i and its first row
  auto chunk_part = [&](int i) { return i >= nchunk0 ? 1 : 0; };
  auto chunk_j0 = [&](int i) { return i >= nchunk0 ? qr.x_lo + (i - nchunk0) * kK : qr.y_lo + i * kK; };
  auto chunk_tile = [](int i) { return (i & 1) * 2 + 1 - (i >> 1); };  // T1, T3, T0, T2
  for (int i = 0; i < nchunks; ++i) {
    const int part = chunk_part(i);
    load_table_chunk<H, HD>(tile(chunk_tile(i)), static_cast<const H*>(part ? a.rel_w : a.rel_h), chunk_j0(i),
                            part ? hi_w : hi_h);
  }
  const bool kv0_early = nchunks <= 2;
  if (kv0_early) loader.load(tile(0), tile(2), g, 0, off);
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
  // -inf terms of the empty key rows and columns (every block's full 128 query rows)
  for (int i = tid; i < kQ * (thp - th + kw - tw); i += kThreads) {
    const int row = i / kQ, q = i % kQ;
    sRel[(row < thp - th ? th + row : thp + tw + row - (thp - th)) * kRelStride + q] = -INFINITY;
  }
  // S (64 x 64 per warpgroup) = Q K^T with K (or a table chunk) in kt (K layout).
  auto qk = [&](float (&s)[kK / 2], const H* kt) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk)
      wgmma16<H, kK, 0>(s, qf[kk], wgmma_desc(kt + kk * 1024, 128, 256), kk > 0);
    wgmma_commit();
    wgmma_wait_all();
    fence_operands(s);
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
      const int part = chunk_part(i), j0 = chunk_j0(i), lim = part ? tw : th;
      float* dst = sRel + (part ? thp : 0) * kRelStride + wr0;
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
    loader.load(tile(0), tile(2), g, 0, off);
    cp_async_commit();
  }
  const float* rel0 = sRel + wr0;  // this thread's rows
  const float* relw0 = rel0 + (thp + tq * 2) * kRelStride;
  const float sc = a.scale * kLog2e;  // softmax in base 2

  float o[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i) o[i] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows gr and gr + 8 (l: this thread's part)

  for (int sb = 0; sb < nslots; sb += kK) {
    const int buf = (sb / kK) % 2;  // step b's K and V: T(buf), T(2 + buf)
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();  // K(b), V(b) visible to all; every warpgroup is done with step b - 1's tiles
    if (sb + kK < nslots) {
      loader.load(tile(1 - buf), tile(3 - buf), g, sb + kK, off);
      cp_async_commit();
    }
    float s[kK / 2];
    qk(s, tile(buf));
    // Scores in log2 units: scale log2(e) q.k + (rel_h + rel_w) log2(e), -inf for an empty slot. rel_h
    // is one value per key row, and a step holds kGroups whole key rows: s keeps q.k scale + rel_w, and
    // rel_h joins the row maximum per key row and then the exponent (rel_h - m, once per key row).
    constexpr int kGroups = kK >> KWL, kTilesPerGroup = kw / 8;
    const float* relh = rel0 + (sb >> KWL) * kRelStride;
    float rh0[kGroups], rh1[kGroups];
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int gi = 0; gi < kGroups; ++gi) {
      rh0[gi] = relh[gi * kRelStride], rh1[gi] = relh[gi * kRelStride + 8];
      float g0 = -INFINITY, g1 = -INFINITY;
#pragma unroll
      for (int n = gi * kTilesPerGroup; n < (gi + 1) * kTilesPerGroup; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float* rw = relw0 + ((n * 8) % kw + e) * kRelStride;  // (constant offsets)
          s[4 * n + e] = fmaf(s[4 * n + e], sc, rw[0]);
          s[4 * n + 2 + e] = fmaf(s[4 * n + 2 + e], sc, rw[8]);
          g0 = fmaxf(g0, s[4 * n + e]);
          g1 = fmaxf(g1, s[4 * n + 2 + e]);
        }
      mx0 = fmaxf(mx0, g0 + rh0[gi]);
      mx1 = fmaxf(mx1, g1 + rh1[gi]);
    }
#pragma unroll
    for (int sh = 1; sh <= 2; sh *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, sh));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, sh));
    }
    // Lazy rescaling: the running maximum m (and with it O and l) moves only when a score exceeds it by
    // more than 2^8, so P stays below 256 (well inside bf16 / fp16, l inside fp32) and the final O / l
    // is the same softmax; most steps then skip the O rescale. The first step always sets m (m = -inf,
    // and every step's first slot is a key: mx is finite; c = 0 then).
    auto rescale = [&](float n0, float n1) {
      const float c0 = ex2(m0 - n0), c1 = ex2(m1 - n1);
      m0 = n0, m1 = n1;
      l0 *= c0, l1 *= c1;
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) o[4 * n] *= c0, o[4 * n + 1] *= c0, o[4 * n + 2] *= c1, o[4 * n + 3] *= c1;
    };
    if (!kLazyRescale)
      rescale(fmaxf(m0, mx0), fmaxf(m1, mx1));
    else if (__any_sync(0xffffffffu, mx0 > m0 + 8.f || mx1 > m1 + 8.f))
      rescale(mx0 > m0 + 8.f ? mx0 : m0, mx1 > m1 + 8.f ? mx1 : m1);
    float d0[kGroups], d1[kGroups];  // rel_h - m per key row of the step
#pragma unroll
    for (int gi = 0; gi < kGroups; ++gi) d0[gi] = rh0[gi] - m0, d1[gi] = rh1[gi] - m1;
    // O += P V: P's accumulator layout is the A layout (two n-tiles per 16-key step); V is an
    // N-major B operand (K rows of HD values) in the V layout.
    uint32_t pa[kK / 16][4];
#pragma unroll
    for (int ks = 0; ks < kK / 16; ++ks) {
      float p[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int gi = (16 * ks + (e / 4) * 8) >> KWL;  // key row of the element's n-tile (constant)
        p[e] = ex2(s[8 * ks + e] + ((e & 2) ? d1[gi] : d0[gi]));
      }
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
    for (int ks = 0; ks < kK / 16; ++ks) wgmma16<H, HD, 1>(o, pa[ks], wgmma_desc(sV + ks * 16 * HD, 128, 256), 1);
    wgmma_commit();
    wgmma_wait_all();
    fence_operands(o);
  }
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

template <class H, int HD, int KWL>
void launch(const CudaContext& ctx, const RelPosArgs& a, int64_t windows, int nwin) {
  auto kernel = rel_pos_attention_wgmma_kernel<H, HD, KWL>;
  const size_t smem = region0_bytes<HD>() + sizeof(float) * kRelStride * (th_pad<KWL>(a.th) + (1 << KWL));
  if (smem > ctx.max_smem_per_block)
    throw Error("rel_pos_attention: attention tile needs " + std::to_string(smem) +
                " bytes of shared memory, the GPU has " + std::to_string(ctx.max_smem_per_block));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const dim3 grid((a.th * a.tw + kQ - 1) / kQ, a.heads, (unsigned)windows);
  kernel<<<grid, kThreads, smem, ctx.stream>>>(a, nwin);
  CUDA_LAUNCH_CHECK();
}

template <class H, int HD>
void launch(const CudaContext& ctx, const RelPosArgs& a, int64_t windows, int nwin) {
  if (a.th > 64 || a.tw > 64)  // (at most 2 table chunks of 64 rows a table: the prologue's 4 tiles)
    throw Error("rel_pos_attention: the Hopper kernel takes tiles at most 64 tokens on a side, not " +
                std::to_string(a.th) + "x" + std::to_string(a.tw));
  if (a.tw <= 8)
    launch<H, HD, 3>(ctx, a, windows, nwin);
  else if (a.tw <= 16)
    launch<H, HD, 4>(ctx, a, windows, nwin);
  else if (a.tw <= 32)
    launch<H, HD, 5>(ctx, a, windows, nwin);
  else
    launch<H, HD, 6>(ctx, a, windows, nwin);
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
