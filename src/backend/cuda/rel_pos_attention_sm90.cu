// rel_pos_attention (bf16 or fp16: H) on Hopper: the flash-attention kernel of rel_pos_attention.cu with
// both products on warpgroup MMAs (wgmma, sm_90a). Same algorithm, tile geometry and relative-position
// terms; what changes is where the operands come from. With mma.sync each warp reads every K and V
// fragment of a 64-key block from shared memory for its own 32 query rows (ldmatrix); a wgmma reads its
// B operand (K, V, or a table chunk) once for a warpgroup's 64 query rows, on Hopper's full-rate
// tensor-core path. Q and P stay in registers as the A operand (the m16n8k16 A layout per warp, as in
// rel_pos_attention.cu), and the accumulators have the m16n8 layout per warp: the softmax code is the
// same.
//   Windowed attention (tiles at most 16 x 16) runs in the persistent rel_pos_window_kernel further
// down, built from the same pieces; what follows describes the per-block kernel (global attention).
//   Block: 2 warpgroups x 64 queries; 64 key slots per step (key row ky at slots [ky 2^KWL,
//   ky 2^KWL + tw), KWL a template parameter). K and V sit in shared memory in a swizzled layout,
//   the relative-position table chunks as 8 x 16-byte core matrices (layouts below), all filled by
//   cp.async; the queries go straight to registers.
//   The kernel is latency-bound; the other structures tried (FA3's overlap and warp specialisation
//   among them) are listed in BENCHMARKS.md, "Tried and not kept".
#include <cuda_fp8.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/rel_pos_tile.cuh"

namespace samfast::cuda {
namespace {

constexpr int kQ = 128;  // queries per block: 2 warpgroups x 64
constexpr int kWindowQ = 256;  // the windowed kernel's: 4 warpgroups x 64, a whole 14 x 14 window
constexpr int kWindowStages = 3;  // its stages of K and V tiles
constexpr int kK = 64;   // key slots per step
constexpr int kThreads = 256;
template <int QB>
constexpr int rel_stride() {  // floats per relative-position column in shared memory, QB queries a block
  return QB + 4;
}
constexpr int kRelStride = rel_stride<kQ>();  // the per-block kernel's

// Bytes before the relative-position terms: four 64-row tiles T0..T3 (K of even and odd steps, V of
// even and odd steps; first the relative-position table chunks).
template <int HD>
constexpr size_t region0_bytes() {  // (16-bit elements)
  return sizeof(uint16_t) * 4 * kK * HD;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // (the helpers below serve only the sm_90a kernel body)
// Shared-memory layouts of a 64-row tile of HD values (16-byte chunks c of rows r).
//   The relative-position table chunks, the K-major B operand of the terms' Q Rh^T and Q Rw^T: 8 x
//   16-byte core matrices (no swizzle), each wgmma k-step's contiguous (2 KiB): chunk c of row r at
//   byte (((c / 2) 8 + r / 8) 2 + c % 2) 128 + (r % 8) 16; descriptor start kk 2048 bytes, 128 bytes
//   between the k-step's two chunk columns (leading), 256 between 8-row groups (stride). Loaded once
//   a block.
//   K and V of the key steps (K the K-major B operand of Q K^T, V the N-major one of P V, one layout
//   for both), swizzled so that a cp.async of 8 lanes reads whole 32-byte sectors of 2 or 4 token rows
//   and fills 128 bytes of shared memory without bank conflicts (the core-matrix layout, filled 512
//   contiguous bytes a warp, took 16 bytes of 8 token rows each: 32 shared-memory wavefronts a
//   cp.async instead of 4):
//   head dim 64, the 128-byte swizzle: slot r's 128 bytes one row, chunk c at 128 r + 16 (c ^ r % 8);
//   other head dims, the 32-byte swizzle: column blocks of 16 values (32 bytes) x 64 slots, 2048
//   bytes each, chunk c of slot r at 2048 (c / 2) + 32 r + 16 (c % 2 ^ (r / 4) % 2).
// Element offset (H) of chunk c of row r in the core-matrix layout:
__device__ __forceinline__ int k_layout_offset(int r, int c) {
  return (((((c >> 1) << 3) + (r >> 3)) * 2 + (c & 1)) << 6) + ((r & 7) << 3);
}
template <int HD>
constexpr int kSwizzle = HD == 64 ? 128 : 32;
template <int SW>
__device__ __forceinline__ uint32_t sw_offset(int r, int c) {
  if constexpr (SW == 128)
    return (r << 7) + ((c ^ (r & 7)) << 4);
  else
    return ((c >> 1) << 11) + (r << 5) + (((c & 1) ^ ((r >> 2) & 1)) << 4);
}
// The i-th 16-byte chunk of a core-matrix tile in fill order: the chunk that layout puts at byte 16 i, so
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

// This thread's share of every step's K and V tiles, set up once: one key slot r of the step and,
// pass j, its chunk c0 + 4 j (128-byte swizzle, T = 256 threads: two passes) or c0 + (T / 64) j
// (32-byte swizzle, 8 HD / T passes rounded up; T 256, or 512 for the windowed kernel's QB = 256).
// A step then costs one row address and a pair of cp.async (K, V) a pass instead of the index
// arithmetic of a generic loop per chunk.
// Destinations are shared-memory addresses, sources pointers kept from the set-up: the loop computes
// no generic-to-shared conversion and no index of the set-up again.
template <class H, int HD, int KWL, int QB = kQ>
struct SlotLoader {
  static constexpr int T = 2 * QB;  // threads
  const H* row;      // slot r's token row at key row 0 of the tile: its K part at the head's offset
  const H* bias;     // the K part of the padding row (q, k, v = bias) at the head's offset
  int64_t row_step;  // elements from one key row of the tile to the next
  int ky_off;        // slot r's key row within a step
  int ky_img;        // key rows below ky_img are image rows (the others: padding, k = v = bias)
  int ky_end;        // key rows below ky_end are keys (slot r's column is a key column of the tile)
  uint32_t dst;      // byte offset of chunk (r, c0) in a K or V tile
  int csrc;          // element offset of column chunk c0

  __device__ __forceinline__ SlotLoader(const TileGeometry<H>& g, int off) {
    int r, c0;  // this thread's key slot, and its first chunk
    if constexpr (kSwizzle<HD> == 128) {  // lanes 8p .. 8p + 3: slot r, chunks 0-3; 8p + 4 .. 8p + 7: slot r + 4
      const int i = threadIdx.x % 256;
      r = ((i >> 3) & 3) + ((i >> 2) & 1) * 4 + (i >> 5) * 8;
      c0 = (i & 3) + 4 * (threadIdx.x / 256);
    } else {  // lanes 8p .. 8p + 7: slots 4p .. 4p + 3 (mod 64), two chunks each
      r = (threadIdx.x % 128) / 2;
      c0 = (threadIdx.x / 128) * 2 + (threadIdx.x & 1);
    }
    const int kx = r & ((1 << KWL) - 1), gx = g.wx * g.tw + kx;
    ky_off = r >> KWL;
    ky_end = kx < g.tw ? g.th : 0;
    ky_img = gx < g.W ? min(g.H - g.wy * g.th, g.th) : 0;
    row_step = (int64_t)g.W * 3 * g.C;
    row = g.qkv + ((g.bi * g.H + g.wy * g.th) * g.W + min(gx, g.W - 1)) * (int64_t)(3 * g.C) + g.C + off;
    bias = g.bias + g.C + off;
    dst = sw_offset<kSwizzle<HD>>(r, c0);
    csrc = c0 * 8;
  }
  // K and V of step b's key slots into the tiles at shared addresses kt and vt; slots holding no key
  // are zero-filled. C: channels (the V part follows the K part by C).
  __device__ __forceinline__ void load(uint32_t kt, uint32_t vt, int b, int C) const {
    const int ky = (b << (6 - KWL)) + ky_off;
    const bool ok = ky < ky_end;
    const H* src = (ky < ky_img ? row + ky * row_step : bias) + csrc;
    if constexpr (kSwizzle<HD> == 128) {  // (T = 256: a second pass, chunks c0 + 4)
#pragma unroll
      for (int j = 0; j < 512 / T; ++j) {
        cp_async16_sa(kt + (dst ^ (j << 6)), src + 32 * j, ok);
        cp_async16_sa(vt + (dst ^ (j << 6)), src + C + 32 * j, ok);
      }
    } else {  // (pass j: chunks c0 + T / 64 j, T / 128 column blocks further)
#pragma unroll
      for (int j = 0; j < (8 * HD + T - 1) / T; ++j)
        if (8 * HD % T == 0 || threadIdx.x + T * j < 8 * HD) {
          cp_async16_sa(kt + dst + 16 * T * j, src + T / 8 * j, ok);
          cp_async16_sa(vt + dst + 16 * T * j, src + C + T / 8 * j, ok);
        }
    }
  }
};

// Rows [j0, j0 + 64) of a relative-position table (rows past hi: zeros) into a tile of the K layout.
template <class H, int HD, int QB = kQ>
__device__ __forceinline__ void load_table_chunk(H* dst, const H* tab, int j0, int hi) {
  for (int i = threadIdx.x; i < kK * (HD / 8); i += 2 * QB) {
    int r, c;
    k_chunk_of(i, r, c);
    const int j = j0 + r;
    cp_async16(dst + k_layout_offset(r, c), tab + (int64_t)min(j, hi) * HD + c * 8, j <= hi);
  }
}
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The relative-position table chunks a block needs: rel_h[q, r] = q . Rh[qy + th - 1 - r] (r < th) takes
// table rows [y_lo, y_hi + th - 1], rel_w alike; at most 2 chunks of 64 rows a table (tiles are at most
// 64 wide: tables of at most 127 rows). Chunk i: part (0 rel_h, 1 rel_w) and first row.
struct ChunkPlan {
  int nchunk0, nchunks, hi_h, hi_w, y_lo, x_lo;
  __device__ __forceinline__ ChunkPlan(const QueryRange& qr, int th, int tw)
      : hi_h(qr.y_hi + th - 1), hi_w(qr.x_hi + tw - 1), y_lo(qr.y_lo), x_lo(qr.x_lo) {
    nchunk0 = (hi_h - y_lo) / kK + 1;
    nchunks = nchunk0 + (hi_w - x_lo) / kK + 1;
  }
  __device__ __forceinline__ int part(int i) const { return i >= nchunk0 ? 1 : 0; }
  __device__ __forceinline__ int j0(int i) const { return i >= nchunk0 ? x_lo + (i - nchunk0) * kK : y_lo + i * kK; }
  // cp.async of every chunk, chunk i into tile chunk_tile(i) of tiles (kK x HD each)
  template <class H, int HD, int QB = kQ, class TileOf>
  __device__ __forceinline__ void load(const RelPosArgs& a, H* tiles, TileOf chunk_tile) const {
    for (int i = 0; i < nchunks; ++i)
      load_table_chunk<H, HD, QB>(tiles + chunk_tile(i) * kK * HD, static_cast<const H*>(part(i) ? a.rel_w : a.rel_h),
                              j0(i), part(i) ? hi_w : hi_h);
  }
};

// The queries of rows t0 and t0 + 8 of the tile (rows past the tile: zeros) as A fragments.
template <class H, int HD>
__device__ __forceinline__ void load_queries(uint32_t (&qf)[HD / 16][4], const TileGeometry<H>& g, int t0, int tq,
                                             int off) {
  const int t1 = t0 + 8;
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

// S (64 x 64 per warpgroup) = Q K^T with K (or a table chunk) in the tile at shared address kt:
// issued, not waited for. SW 0: the tile in the core-matrix layout (table chunks); 128 or 32:
// swizzled (sw_offset: K). (N = 32: the first 32 rows of the tile only.)
template <class H, int HD, int N = kK, int SW = 0>
__device__ __forceinline__ void issue_qk(float (&s)[N / 2], const uint32_t (&qf)[HD / 16][4], uint32_t kt) {
  const uint64_t desc =
      SW == 128 ? wgmma_desc_sw128(kt) : SW == 32 ? wgmma_desc_sw32(kt, 16, 256) : wgmma_desc_sa(kt, 128, 256);
  constexpr uint32_t kstep = SW == 128 ? 32 : 2048;  // bytes from one k-step to the next
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) wgmma16<H, N, 0>(s, qf[kk], desc + kk * (kstep >> 4), kk > 0);
}
// O += P V with V in the tile at shared address vt, swizzled as SW says (sw_offset; NS = 32: its
// first 32 rows only): issued, not waited for. (The 32-byte swizzle: 2048 bytes between column blocks
// along N, 256 between 8-slot groups along K.)
template <class H, int HD, int NS, int SW>
__device__ __forceinline__ void issue_pv(float (&o)[HD / 2], const uint32_t (&pa)[NS / 16][4], uint32_t vt) {
  static_assert(SW == 128 || SW == 32, "issue_pv: V tiles are swizzled");
  const uint64_t desc = SW == 128 ? wgmma_desc_sw128(vt) : wgmma_desc_sw32(vt, 2048, 256);
  constexpr uint32_t kstep = SW == 128 ? 2048 : 512;  // bytes from one 16-slot k-step to the next
#pragma unroll
  for (int ks = 0; ks < NS / 16; ++ks) wgmma16<H, HD, 1>(o, pa[ks], desc + ks * (kstep >> 4), 1);
}
template <class H, int HD, int N = kK, int SW = 0>
__device__ __forceinline__ void qk_sync(float (&s)[N / 2], const uint32_t (&qf)[HD / 16][4], uint32_t kt) {
  wgmma_fence();
  issue_qk<H, HD, N, SW>(s, qf, kt);
  wgmma_commit();
  wgmma_wait<0>();
  fence_operands(s);
}

// -inf as the relative-position term of key slots that hold no key (rows [th, thp), columns [tw, kw)).
template <int QB = kQ>
__device__ __forceinline__ void fill_empty_slots(float* sRel, int th, int tw, int thp, int kw) {
  for (int i = threadIdx.x; i < QB * (thp - th + kw - tw); i += 2 * QB) {
    const int row = i / QB, q = i % QB;
    sRel[(row < thp - th ? th + row : thp + tw + row - (thp - th)) * rel_stride<QB>() + q] = -INFINITY;
  }
}

// Tile positions of this thread's query rows t0 and t0 + 8 (rows past the tile, not stored: the last
// token, whose terms are computed on zero queries). Found once: a division by the tile width costs
// ~25 instructions.
struct QueryRows {
  int y[2], x[2];
  bool in[2];  // the row is a token of the tile
  template <class H>
  __device__ __forceinline__ QueryRows(const TileGeometry<H>& g, int t0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int t = min(t0 + 8 * i, g.ntok - 1);
      y[i] = t / g.tw, x[i] = t % g.tw, in[i] = t0 + 8 * i < g.ntok;
    }
  }
};

// The relative-position terms of the block's queries (unscaled q, fp32 accumulation), x log2(e), into
// sRel: rel_h of key rows [0, th), then rel_w of columns [0, tw) at row thp; every block's full QB
// query rows, each thread its own rows (the -inf of rows [th, thp) and columns [tw, kw) come from
// fill_empty_slots). The table chunks must be in tile chunk_tile(i) of the tiles at shared address
// tiles, and visible; the caller syncs the block before the terms are read.
template <class H, int HD, class TileOf, int QB = kQ>
__device__ __forceinline__ void rel_terms(float* sRel, const ChunkPlan& plan, uint32_t tiles, TileOf chunk_tile,
                                          const uint32_t (&qf)[HD / 16][4], const QueryRows& qr, int wr0,
                                          int tq, int th, int tw, int thp, int kw) {
  constexpr int kRelStride = rel_stride<QB>();
  const int (&qy)[2] = qr.y, (&qx)[2] = qr.x;
#pragma unroll 1
  for (int i = 0; i < plan.nchunks; ++i) {
    const int part = plan.part(i), j0 = plan.j0(i), lim = part ? tw : th;
    float* dst = sRel + (part ? thp : 0) * kRelStride + wr0;
    const int base0 = (part ? qx[0] : qy[0]) + lim - 1, base1 = (part ? qx[1] : qy[1]) + lim - 1;
    // The chunk's first N table rows (rows past the table's last needed one are zeros).
    auto terms = [&](auto n_rows) {
      constexpr int N = decltype(n_rows)::value;
      float gq[N / 2];
      qk_sync<H, HD, N>(gq, qf, tiles + chunk_tile(i) * kK * HD * sizeof(H));
#pragma unroll
      for (int n = 0; n < N / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = j0 + n * 8 + tq * 2 + e, r0 = base0 - j, r1 = base1 - j;
          if (r0 >= 0 && r0 < lim) dst[r0 * kRelStride] = gq[4 * n + e] * kLog2e;
          if (r1 >= 0 && r1 < lim) dst[r1 * kRelStride + 8] = gq[4 * n + 2 + e] * kLog2e;
        }
    };
    // Windowed attention needs at most 27 rows of a table (14 x 14 windows): half the product (a
    // condition of the block, the same for all its threads).
    if ((part ? plan.hi_w : plan.hi_h) - j0 < 32)
      terms(std::integral_constant<int, 32>{});
    else
      terms(std::integral_constant<int, kK>{});
  }
}

// Maximum and sum of values [I, I + N) of v (N a power of two) as a tree of depth log2(N).
template <int I, int N, int M>
__device__ __forceinline__ float tree_max(const float (&v)[M]) {
  if constexpr (N == 1)
    return v[I];
  else
    return fmaxf(tree_max<I, N / 2>(v), tree_max<I + N / 2, N / 2>(v));
}
template <int I, int N, int M>
__device__ __forceinline__ float tree_sum(const float (&v)[M]) {
  if constexpr (N == 1)
    return v[I];
  else
    return tree_sum<I, N / 2>(v) + tree_sum<I + N / 2, N / 2>(v);
}

// The online softmax of one step (s: Q K^T of the step's NS key slots, 64, or 32 for a tile's last half
// step; 2^KWL slots a key row, so a step holds NS / 2^KWL whole key rows). Scores in log2 units:
// scale log2(e) q.k + (rel_h + rel_w) log2(e), -inf for an empty slot. rel_h is one value per key row:
// s keeps q.k scale + rel_w (rw(n, e, i): the term of n-tile n, element e, row gr + 8 i), and rel_h
// (relh: this thread's row of the step's first key row) joins the row maximum per key row and then the
// exponent (rel_h - m, once per key row).
//   Updates the running maximum m and this thread's part of the row sums l, writes P (A fragments) to
// pa, and returns whether O must be scaled by (c0, c1) (rows gr and gr + 8); l is already scaled.
// Lazy rescaling (kLazy): m (and with it O and l) moves only when a score exceeds it by more than 2^8,
// so P stays below 256 (well inside bf16 / fp16, l inside fp32) and the final O / l is the same
// softmax; most steps then skip the O rescale. The first step always sets m (m = -inf, and every step's
// first slot is a key: the maximum is finite; c = 0 then).
template <class H, int KWL, bool kLazy, int NS, class RelW, int QB = kQ>
__device__ __forceinline__ bool softmax_step(float (&s)[NS / 2], RelW rw, const float* relh, float sc, float& m0,
                                             float& m1, float& l0, float& l1, uint32_t (&pa)[NS / 16][4], float& c0,
                                             float& c1) {
  constexpr int kRelStride = rel_stride<QB>();
  constexpr int kGroups = NS >> KWL, kPerGroup = (1 << KWL) / 4;  // values a thread holds a row and key row
  float rh0[kGroups], rh1[kGroups];
#pragma unroll
  for (int gi = 0; gi < kGroups; ++gi) rh0[gi] = relh[gi * kRelStride], rh1[gi] = relh[gi * kRelStride + 8];
#pragma unroll
  for (int n = 0; n < NS / 8; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      s[4 * n + e] = fmaf(s[4 * n + e], sc, rw(n, e, 0));
      s[4 * n + 2 + e] = fmaf(s[4 * n + 2 + e], sc, rw(n, e, 1));
    }
  // Row maxima as trees (a chain of 16 dependent max instructions a row left the warps waiting on
  // each other's latency): per key row, then rel_h, then across the step's key rows.
  float g0[kGroups], g1[kGroups];
#pragma unroll
  for (int gi = 0; gi < kGroups; ++gi) {
    float t0[kPerGroup], t1[kPerGroup];
#pragma unroll
    for (int j = 0; j < kPerGroup; ++j) {
      const int n = gi * (kPerGroup / 2) + j / 2, e = j % 2;
      t0[j] = s[4 * n + e], t1[j] = s[4 * n + 2 + e];
    }
    g0[gi] = tree_max<0, kPerGroup>(t0) + rh0[gi];
    g1[gi] = tree_max<0, kPerGroup>(t1) + rh1[gi];
  }
  float mx0 = tree_max<0, kGroups>(g0), mx1 = tree_max<0, kGroups>(g1);
#pragma unroll
  for (int sh = 1; sh <= 2; sh *= 2) {
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, sh));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, sh));
  }
  bool rescale = true;
  float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
  if (kLazy) {
    rescale = __any_sync(0xffffffffu, mx0 > m0 + 8.f || mx1 > m1 + 8.f);
    n0 = mx0 > m0 + 8.f ? mx0 : m0, n1 = mx1 > m1 + 8.f ? mx1 : m1;
  }
  c0 = c1 = 1.f;
  if (rescale) {
    c0 = ex2(m0 - n0), c1 = ex2(m1 - n1);
    m0 = n0, m1 = n1;
    l0 *= c0, l1 *= c1;
  }
  float d0[kGroups], d1[kGroups];  // rel_h - m per key row of the step
#pragma unroll
  for (int gi = 0; gi < kGroups; ++gi) d0[gi] = rh0[gi] - m0, d1[gi] = rh1[gi] - m1;
  // P's accumulator layout is the A layout (two n-tiles per 16-key step)
  float p0[NS / 4], p1[NS / 4];  // the step's P of rows gr and gr + 8
#pragma unroll
  for (int ks = 0; ks < NS / 16; ++ks) {
    float p[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int gi = (16 * ks + (e / 4) * 8) >> KWL;  // key row of the element's n-tile (constant)
      p[e] = ex2(s[8 * ks + e] + ((e & 2) ? d1[gi] : d0[gi]));
    }
    p0[4 * ks] = p[0], p0[4 * ks + 1] = p[1], p0[4 * ks + 2] = p[4], p0[4 * ks + 3] = p[5];
    p1[4 * ks] = p[2], p1[4 * ks + 1] = p[3], p1[4 * ks + 2] = p[6], p1[4 * ks + 3] = p[7];
    pa[ks][0] = pack16<H>(p[0], p[1]);
    pa[ks][1] = pack16<H>(p[2], p[3]);
    pa[ks][2] = pack16<H>(p[4], p[5]);
    pa[ks][3] = pack16<H>(p[6], p[7]);
  }
  l0 += tree_sum<0, NS / 4>(p0);
  l1 += tree_sum<0, NS / 4>(p1);
  return rescale;
}

template <int HD>
__device__ __forceinline__ void scale_rows(float (&o)[HD / 2], float c0, float c1) {
#pragma unroll
  for (int n = 0; n < HD / 8; ++n) o[4 * n] *= c0, o[4 * n + 1] *= c0, o[4 * n + 2] *= c1, o[4 * n + 3] *= c1;
}

// Key step b of NS slots (64, or 32 for a half step), its K and V in the tiles at shared addresses kt
// and vt: S = Q K^T, the online softmax (rel0: this thread's rows of the relative-position terms),
// then O += P V, waited for.
template <class H, int HD, int KWL, bool kLazy, int NS, int QB = kQ, class RelW>
__device__ __forceinline__ void key_step(float (&o)[HD / 2], const uint32_t (&qf)[HD / 16][4], uint32_t kt, uint32_t vt,
                                         RelW rw, const float* rel0, int b, float sc, float& m0, float& m1, float& l0,
                                         float& l1) {
  float s[NS / 2];
  qk_sync<H, HD, NS, kSwizzle<HD>>(s, qf, kt);
  uint32_t pa[NS / 16][4];
  float c0, c1;
  if (softmax_step<H, KWL, kLazy, NS, RelW, QB>(s, rw, rel0 + ((b * kK) >> KWL) * rel_stride<QB>(), sc, m0, m1, l0, l1,
                                                pa, c0, c1))
    scale_rows<HD>(o, c0, c1);
  wgmma_fence();
  issue_pv<H, HD, NS, kSwizzle<HD>>(o, pa, vt);
  wgmma_commit();
  wgmma_wait<0>();
  fence_operands(o);
}

// O / l of rows wr0 and wr0 + 8 (l: this thread's parts) to the output (rows of padded tokens: not stored).
template <class H, int HD, bool kFp8>
__device__ __forceinline__ void store_rows(const float (&o)[HD / 2], float l0, float l1, const TileGeometry<H>& g,
                                           const QueryRows& qr, const RelPosArgs& a, int tq, int off) {
#pragma unroll
  for (int sh = 1; sh <= 2; sh *= 2) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, sh);
    l1 += __shfl_xor_sync(0xffffffffu, l1, sh);
  }
  float inv0 = 1.f / l0, inv1 = 1.f / l1;
  const int64_t row0 = qr.in[0] ? g.out_row_yx(qr.y[0], qr.x[0]) : -1;
  const int64_t row1 = qr.in[1] ? g.out_row_yx(qr.y[1], qr.x[1]) : -1;
  if constexpr (kFp8) {  // proj's fp8 input: two E4M3 values where two 16-bit ones would go
    // (a template argument, so that the 16-bit kernels carry no trace of it)
    const float s = *a.fp8_scale;
    inv0 *= s, inv1 *= s;
    auto* out8 = static_cast<uint8_t*>(a.out);
    // The first 64 columns as one 16-byte store a thread and row: a quad holds 2 bytes of each 8-byte
    // n-tile, so its four threads swap 4-byte words (two n-tiles' pieces each) until thread tq holds
    // n-tiles 2 tq and 2 tq + 1 whole; a warp's store then fills whole 32-byte sectors.
    constexpr int kWide = HD >= 64 ? 8 : 0;  // n-tiles stored so
    if constexpr (kWide > 0) {
      // (selects, not v[i]: a register array indexed at run time goes to local memory)
      auto pick = [](const uint32_t (&v)[4], int i) { return i == 0 ? v[0] : i == 1 ? v[1] : i == 2 ? v[2] : v[3]; };
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t row = r ? row1 : row0;
        const float inv = r ? inv1 : inv0;
        uint32_t w[4];  // w[j]: this thread's pieces of n-tiles 2 j and 2 j + 1
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint32_t lo = __nv_fp8x2_e4m3(make_float2(o[8 * j + 2 * r] * inv, o[8 * j + 2 * r + 1] * inv)).__x;
          const uint32_t hi = __nv_fp8x2_e4m3(make_float2(o[8 * j + 4 + 2 * r] * inv, o[8 * j + 5 + 2 * r] * inv)).__x;
          w[j] = lo | hi << 16;
        }
        uint32_t u[4];  // u[x]: word tq of thread tq ^ x
#pragma unroll
        for (int x = 0; x < 4; ++x) u[x] = x ? __shfl_xor_sync(0xffffffffu, pick(w, tq ^ x), x) : pick(w, tq);
        uint32_t v[4];  // v[t]: word tq of thread t
#pragma unroll
        for (int t = 0; t < 4; ++t) v[t] = pick(u, t ^ tq);
        if (row >= 0)
          *reinterpret_cast<uint4*>(out8 + row * a.C + off + tq * 16) =
              make_uint4(__byte_perm(v[0], v[1], 0x5410), __byte_perm(v[2], v[3], 0x5410),
                         __byte_perm(v[0], v[1], 0x7632), __byte_perm(v[2], v[3], 0x7632));
      }
    }
#pragma unroll
    for (int n = kWide; n < HD / 8; ++n) {
      const int d = off + n * 8 + tq * 2;
      if (row0 >= 0)
        *reinterpret_cast<__nv_fp8x2_storage_t*>(out8 + row0 * a.C + d) =
            __nv_fp8x2_e4m3(make_float2(o[4 * n] * inv0, o[4 * n + 1] * inv0)).__x;
      if (row1 >= 0)
        *reinterpret_cast<__nv_fp8x2_storage_t*>(out8 + row1 * a.C + d) =
            __nv_fp8x2_e4m3(make_float2(o[4 * n + 2] * inv1, o[4 * n + 3] * inv1)).__x;
    }
  } else {
    auto* out = static_cast<H*>(a.out);
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      const int d = off + n * 8 + tq * 2;
      if (row0 >= 0)
        *reinterpret_cast<uint32_t*>(out + row0 * a.C + d) = pack16<H>(o[4 * n] * inv0, o[4 * n + 1] * inv0);
      if (row1 >= 0)
        *reinterpret_cast<uint32_t*>(out + row1 * a.C + d) = pack16<H>(o[4 * n + 2] * inv1, o[4 * n + 3] * inv1);
    }
  }
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Key slots: a tile's key row ky occupies slots [ky 2^KWL, ky 2^KWL + tw) (KWL: tw rounded up to a
// power of two, at least 8), so a 64-slot step covers 2^(6 - KWL) whole key rows and n-tile n of a step
// (8 slots) starts at a column and row offset known at compile time.
// The steps: (th 2^KWL) / 64 of 64 slots, and for the rest one of 64 slots or, where at most 32 slots
// remain, a half step of 32 (N = 32 products: a 14 x 14 window's 224 slots take 3.5 steps, not 4).
// They cover th_pad(th) key rows.
template <int KWL>
__host__ __device__ constexpr bool half_step(int th) {
  return (th << KWL) % kK != 0 && (th << KWL) % kK <= kK / 2;
}
template <int KWL>
__host__ __device__ constexpr int th_pad(int th) {
  return (half_step<KWL>(th) ? (th << KWL) / kK * kK + kK / 2 : ((th << KWL) + kK - 1) / kK * kK) >> KWL;
}

// No wgmma sits in a divergent path (a warpgroup without queries computes on zero rows and stores
// nothing; the last step's P V covers all its slots, P and V being zero past the keys): otherwise ptxas
// waits for every wgmma before issuing the next (its C7520 "wgmma serialization" warning). The
// relative-position terms of slots that hold no key (columns tw ..
// 2^KWL - 1, rows th .. th_pad - 1) are -inf in shared memory, so a score is q.k scale + rel_h + rel_w
// with no bounds test, and all its shared-memory offsets but the step's key row are compile-time
// constants.
//   Pipeline: two blocks an SM, every load a cp.async issued one step before its use, one block
// barrier a step. Prologue: the block's relative-position table chunks go to tiles T1, T3, T0, T2 in
// that order, and the queries straight to registers; with at most 2 chunks (windowed attention) K(0)
// and V(0) go to T0 and T2 in the same round trip. Step b: K(b) in T(b % 2), V(b) in T(2 + b % 2);
// after the step's barrier (K(b), V(b) landed and visible; every warpgroup done with step b - 1)
// K(b + 1) and V(b + 1) are issued into the other pair. (Before: queries and table chunks loaded one
// after the other, V(b) issued at step b: vit_h's windowed blocks, 4 key steps each, waited on ~8
// round trips to memory.)
template <class H, int HD, int KWL, bool kFp8>
__global__ void __launch_bounds__(kThreads, 2) rel_pos_attention_wgmma_kernel(RelPosArgs a, int nwin) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kw = 1 << KWL;
  // Lazy rescaling (softmax_step) saves time at head dim 80 (vit_h) and costs time at 64 (vit_b): only
  // for head dims above 64.
  constexpr bool kLazyRescale = HD > 64;
  extern __shared__ __align__(1024) unsigned char smem_raw[];  // (1024: the swizzled tiles')
  H* const tiles = reinterpret_cast<H*>(smem_raw);  // T0..T3, kK x HD each
  const uint32_t sbase = smem_addr(smem_raw);
  auto tile = [&](int i) { return sbase + i * uint32_t(kK * HD * sizeof(H)); };  // (shared address)
  // (th_pad + kw) x kRelStride floats, x log2(e): rel_h of key rows [0, th_pad), then rel_w of columns [0, kw)
  float* sRel = reinterpret_cast<float*>(smem_raw + region0_bytes<HD>());
  const TileGeometry<H> g = tile_of<H>(a, nwin);
  const int h = blockIdx.y, off = h * HD, q0 = blockIdx.x * kQ, thp = th_pad<KWL>(a.th);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gr = lane / 4, tq = lane % 4;
  const int wr0 = warp * 16 + gr;  // this thread's query rows in the block: wr0 and wr0 + 8
  const int nsteps = ((thp << KWL) + kK - 1) / kK;  // (the last one may be a half step)
  const SlotLoader<H, HD, KWL> loader(g, off);
  auto load_kv = [&](int b, int buf) { loader.load(tile(buf), tile(2 + buf), b, a.C); };

  const ChunkPlan plan(query_range(q0, kQ, g.ntok, a.tw), a.th, a.tw);
  auto chunk_tile = [](int i) { return (i & 1) * 2 + 1 - (i >> 1); };  // T1, T3, T0, T2
  plan.load<H, HD>(a, tiles, chunk_tile);
  const bool kv0_early = plan.nchunks <= 2;
  if (kv0_early) load_kv(0, 0);
  cp_async_commit();
  uint32_t qf[HD / 16][4];  // A fragments: rows gr and gr + 8 of this warp's 16 (rows past the tile: 0)
  load_queries<H, HD>(qf, g, q0 + wr0, tq, off);
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();  // the table chunks (and K(0), V(0) if early) visible to all
  fill_empty_slots(sRel, a.th, a.tw, thp, kw);
  const QueryRows qr(g, q0 + wr0);
  rel_terms<H, HD>(sRel, plan, sbase, chunk_tile, qf, qr, wr0, tq, a.th, a.tw, thp, kw);
  if (!kv0_early) {
    __syncthreads();  // every warp done with the table chunks in T0 and T2
    load_kv(0, 0);
    cp_async_commit();
  }
  const float* rel0 = sRel + wr0;  // this thread's rows
  const float* relw0 = rel0 + (thp + tq * 2) * kRelStride;
  const float sc = a.scale * kLog2e;  // softmax in base 2
  auto rw = [&](int n, int e, int i) { return relw0[((n * 8) % kw + e) * kRelStride + 8 * i]; };

  float o[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i) o[i] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows gr and gr + 8 (l: this thread's part)

  // Step b of NS slots (64, or 32 for a half step).
  auto step = [&](int b, auto ns) {
    constexpr int NS = decltype(ns)::value;
    const int buf = b % 2;  // step b's K and V: T(buf), T(2 + buf)
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();  // K(b), V(b) visible to all; every warpgroup is done with step b - 1's tiles
    if (b + 1 < nsteps) {
      load_kv(b + 1, 1 - buf);
      cp_async_commit();
    }
    key_step<H, HD, KWL, kLazyRescale, NS>(o, qf, tile(buf), tile(2 + buf), rw, rel0, b, sc, m0, m1, l0, l1);
  };
  const bool half = KWL < 6 && half_step<KWL>(a.th);  // (the block's: the same for all its threads)
  for (int b = 0; b < nsteps - half; ++b) step(b, std::integral_constant<int, kK>{});
  if constexpr (KWL < 6)
    if (half) step(nsteps - 1, std::integral_constant<int, kK / 2>{});
  store_rows<H, HD, kFp8>(o, l0, l1, g, qr, a, tq, off);
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// Windowed attention (tiles at most 16 tokens on a side: a table has at most 31 rows, one chunk),
// where a block's set-up costs about as much as its 3.5 key steps. A persistent kernel: one block an SM of QB
// = 256 queries (4 warpgroups: a whole 14 x 14 window, so each K and V tile serves 4 warpgroups
// instead of 2), each block taking a contiguous run of work items (window, head), and
// what does not depend on the item done once a block: both tables loaded into their tiles for
// good, the -inf terms of the empty key slots written once (each warp rewrites only its own rows'
// terms, so the relative-position terms need no block barrier).
//   The key steps of successive items form one stream through kWindowStages stages of K and V tiles,
// kept by mbarriers rather than block barriers: every thread issues its share of step g + stages - 1's
// cp.async at the end of step g, into the stage of step g - 1 once every thread has arrived there
// (empty), and arrives on the stage's full barrier when its copies land (cp.async.mbarrier.arrive);
// a step waits for its stage to be full. A warpgroup may so run up to a step ahead of another, and
// the warpgroups' phases (Q K^T, softmax, P V) drift apart instead of meeting at a block barrier
// every step, so one's softmax overlaps another's products. An item's queries come by cp.async too
// (each warp its own 16 rows, issued once the warp has read the previous item's, its own mbarrier).
//   Faster than the kernel above on windowed attention (other block sizes, stage counts and orders
// of the warpgroups' products: BENCHMARKS.md, "Tried and not kept").
template <class H, int HD, int KWL, bool kFp8, int QB>
__global__ void __launch_bounds__(2 * QB, 256 / QB) rel_pos_window_kernel(RelPosArgs a, int nwin, int nitems) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  // (query rows padded by 8 elements: conflict-free 4-byte reads of the A fragments)
  constexpr int kw = 1 << KWL, kLdQ = HD + 8, kRelStride = rel_stride<QB>();
  constexpr int kThreadsW = 2 * QB, kWarpsW = kThreadsW / 32;
  constexpr bool kLazyRescale = HD > 64;
  extern __shared__ __align__(1024) unsigned char smem_raw[];  // (1024: the swizzled tiles')
  __shared__ uint64_t full[kWindowStages], empty[kWindowStages], q_ready[kWarpsW];
  // Tiles of kK x HD: K of stage s T(s), V T(kWindowStages + s), then rel_h and rel_w.
  H* const tiles = reinterpret_cast<H*>(smem_raw);
  const uint32_t sbase = smem_addr(smem_raw);
  auto tile = [&](int i) { return sbase + i * uint32_t(kK * HD * sizeof(H)); };
  H* const sQ = tiles + (2 * kWindowStages + 2) * kK * HD;  // QB x kLdQ: the item's queries
  float* const sRel = reinterpret_cast<float*>(sQ + QB * kLdQ);  // as in the kernel above
  const int thp = th_pad<KWL>(a.th), nsteps = ((thp << KWL) + kK - 1) / kK, ntok = a.th * a.tw;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gr = lane / 4, tq = lane % 4;
  const int wr0 = warp * 16 + gr;
  const int i0 = (int)((int64_t)blockIdx.x * nitems / gridDim.x);
  const int i1 = (int)((int64_t)(blockIdx.x + 1) * nitems / gridDim.x);
  if (i0 >= i1) return;  // (the whole block)
  // Item i: head i % heads of window i / heads (a window's ntok <= QB queries: one item). Items are
  // walked in order (next_item), so the loop divides by nothing.
  struct Item {
    int bi, wy, wx, head;
  };
  auto next_item = [&](Item it) {
    if (++it.head == a.heads) {
      it.head = 0;
      if (++it.wx == a.nww) {
        it.wx = 0;
        if (++it.wy == nwin / a.nww) it.wy = 0, ++it.bi;
      }
    }
    return it;
  };
  auto geom = [&](const Item& it) { return tile_yx<H>(a, it.bi, it.wy, it.wx); };
  // This warp's 16 query rows of an item into sQ (rows past the tile: zeros); a lane takes half a row.
  const int lq = warp * 16 + lane / 2, lqy = lq / a.tw, lqx = lq % a.tw;  // (the lane's row)
  auto load_q = [&](const Item& it) {
    const int c0 = (lane % 2) * (HD / 16);
    const H* src = lq < ntok ? geom(it).token_yx(lqy, lqx, 0, it.head * HD) : static_cast<const H*>(a.bias);
#pragma unroll
    for (int c = c0; c < c0 + HD / 16; ++c) cp_async16(sQ + lq * kLdQ + c * 8, src + c * 8, lq < ntok);
    cp_async_mbar_arrive(&q_ready[warp]);
  };

  if (tid == 0) {
    for (int s = 0; s < kWindowStages; ++s) mbar_init(&full[s], kThreadsW), mbar_init(&empty[s], kThreadsW);
    for (int w = 0; w < kWarpsW; ++w) mbar_init(&q_ready[w], 32);
  }
  fill_empty_slots<QB>(sRel, a.th, a.tw, thp, kw);
  const ChunkPlan plan(QueryRange{0, a.th - 1, 0, a.tw - 1}, a.th, a.tw);  // whole tables: chunks 0 and 1
  auto chunk_tile = [](int i) { return 2 * kWindowStages + i; };
  __syncthreads();  // the barriers initialised before anything arrives on them
  plan.load<H, HD, QB>(a, tiles, chunk_tile);

  // The producer's side: step pg of the block (step pstep of item pit), issued into stage pg % kWindowStages.
  const int total = (i1 - i0) * nsteps;
  const Item first{i0 / (nwin * a.heads), i0 / a.heads % nwin / a.nww, i0 / a.heads % a.nww, i0 % a.heads};
  Item pit = first;
  int pstep = 0, pg = 0;
  SlotLoader<H, HD, KWL, QB> ploader(geom(pit), pit.head * HD);
  auto produce = [&] {
    const int s = pg % kWindowStages;
    if (pg >= kWindowStages) mbar_wait(&empty[s], (pg / kWindowStages - 1) & 1);  // all done with step pg - stages
    ploader.load(tile(s), tile(kWindowStages + s), pstep, a.C);
    cp_async_mbar_arrive(&full[s]);
    ++pg;
    if (++pstep == nsteps) {
      pstep = 0;
      pit = next_item(pit);
      ploader = SlotLoader<H, HD, KWL, QB>(geom(pit), pit.head * HD);
    }
  };
  Item cur = first;
  const QueryRows qr(geom(cur), wr0);
  load_q(cur);
  for (int k = 0; k < kWindowStages - 1 && pg < total; ++k) produce();
  cp_async_wait_all();  // the tables (and what else is in flight)
  fence_proxy_async();
  __syncthreads();  // the tables and the -inf terms visible to all

  const float* rel0 = sRel + wr0;
  const float* relw0 = rel0 + (thp + tq * 2) * kRelStride;
  const float sc = a.scale * kLog2e;
  auto rw = [&](int n, int e, int i) { return relw0[((n * 8) % kw + e) * kRelStride + 8 * i]; };
  const bool half = half_step<KWL>(a.th);
  int g = 0;  // the block's key step
  for (int it = i0; it < i1; ++it) {
    const int off = cur.head * HD;
    const Item nxt = next_item(cur);  // (past the block's last item: unused)
    mbar_wait(&q_ready[warp], (it - i0) & 1);  // this warp's query rows landed
    uint32_t qf[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      const H* r0 = sQ + wr0 * kLdQ + kk * 16 + tq * 2;
      qf[kk][0] = *reinterpret_cast<const uint32_t*>(r0);
      qf[kk][1] = *reinterpret_cast<const uint32_t*>(r0 + 8 * kLdQ);
      qf[kk][2] = *reinterpret_cast<const uint32_t*>(r0 + 8);
      qf[kk][3] = *reinterpret_cast<const uint32_t*>(r0 + 8 * kLdQ + 8);
    }
    rel_terms<H, HD, decltype(chunk_tile), QB>(sRel, plan, sbase, chunk_tile, qf, qr, wr0, tq, a.th, a.tw, thp, kw);
    __syncwarp();  // the warp's rows of sQ read, and its rel_w terms (other lanes wrote some) visible
    if (it + 1 < i1) load_q(nxt);

    float o[HD / 2];
#pragma unroll
    for (int i = 0; i < HD / 2; ++i) o[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    auto step = [&](int b, auto ns) {
      constexpr int NS = decltype(ns)::value;
      const int s = g % kWindowStages;
      mbar_wait(&full[s], (g / kWindowStages) & 1);  // K(g), V(g): every thread's copies landed
      fence_proxy_async();  // (their writes before this warpgroup's wgmma reads)
      key_step<H, HD, KWL, kLazyRescale, NS, QB>(o, qf, tile(s), tile(kWindowStages + s), rw, rel0, b, sc, m0, m1, l0,
                                                 l1);
      mbar_arrive(&empty[s]);  // (key_step waited for its products: this thread is done with stage s)
      ++g;
      if (pg < total) produce();
    };
    for (int b = 0; b < nsteps - half; ++b) step(b, std::integral_constant<int, kK>{});
    if (half) step(nsteps - 1, std::integral_constant<int, kK / 2>{});
    store_rows<H, HD, kFp8>(o, l0, l1, geom(cur), qr, a, tq, off);
    cur = nxt;
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

template <class H, int HD, int KWL, bool kFp8>
void launch(const CudaContext& ctx, const RelPosArgs& a, int64_t windows, int nwin) {
  auto kernel = rel_pos_attention_wgmma_kernel<H, HD, KWL, kFp8>;
  const size_t smem = region0_bytes<HD>() + sizeof(float) * kRelStride * (th_pad<KWL>(a.th) + (1 << KWL));
  if (smem > ctx.max_smem_per_block)
    throw Error("rel_pos_attention: attention tile needs " + std::to_string(smem) +
                " bytes of shared memory, the GPU has " + std::to_string(ctx.max_smem_per_block));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const dim3 grid((a.th * a.tw + kQ - 1) / kQ, a.heads, (unsigned)windows);
  kernel<<<grid, kThreads, smem, ctx.stream>>>(a, nwin);
  CUDA_LAUNCH_CHECK();
}

template <class H, int HD, int KWL, bool kFp8, int QB = kWindowQ>
void launch_windowed(const CudaContext& ctx, const RelPosArgs& a, int64_t windows, int nwin) {
  auto kernel = rel_pos_window_kernel<H, HD, KWL, kFp8, QB>;
  const size_t smem = sizeof(H) * ((2 * kWindowStages + 2) * kK * HD + QB * (HD + 8)) +
                      sizeof(float) * rel_stride<QB>() * (th_pad<KWL>(a.th) + (1 << KWL));
  const size_t static_smem = sizeof(uint64_t) * (2 * kWindowStages + 2 * QB / 32);  // (the mbarriers)
  if (smem + static_smem > ctx.max_smem_per_block)
    throw Error("rel_pos_attention: window tile needs " + std::to_string(smem) +
                " bytes of shared memory, the GPU has " + std::to_string(ctx.max_smem_per_block));
  static_assert(QB >= 256, "rel_pos_window_kernel: a window of up to 16 x 16 tokens is one item");
  const int64_t nitems = windows * a.heads;
  if (nitems >= (int64_t(1) << 31))
    throw Error("rel_pos_attention: " + std::to_string(nitems) + " window tiles are too many");
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const int64_t blocks = std::min<int64_t>(nitems, 256 / QB * int64_t(ctx.sm_count));  // (as many as fit at once)
  kernel<<<(unsigned)blocks, 2 * QB, smem, ctx.stream>>>(a, nwin, (int)nitems);
  CUDA_LAUNCH_CHECK();
}

template <class H, int HD, bool kFp8>
void launch_tiles(const CudaContext& ctx, const RelPosArgs& a, int64_t windows, int nwin) {
  if (a.th <= 16 && a.tw <= 16) {  // windowed attention (tables of at most 31 rows)
    if (a.tw <= 8)
      launch_windowed<H, HD, 3, kFp8>(ctx, a, windows, nwin);
    else
      launch_windowed<H, HD, 4, kFp8>(ctx, a, windows, nwin);
    return;
  }
  if (a.th > 64 || a.tw > 64)  // (at most 2 table chunks of 64 rows a table: the prologue's 4 tiles)
    throw Error("rel_pos_attention: the Hopper kernel takes tiles at most 64 tokens on a side, not " +
                std::to_string(a.th) + "x" + std::to_string(a.tw));
  if (a.tw <= 8)
    launch<H, HD, 3, kFp8>(ctx, a, windows, nwin);
  else if (a.tw <= 16)
    launch<H, HD, 4, kFp8>(ctx, a, windows, nwin);
  else if (a.tw <= 32)
    launch<H, HD, 5, kFp8>(ctx, a, windows, nwin);
  else
    launch<H, HD, 6, kFp8>(ctx, a, windows, nwin);
}

// The fp8 output (RelPosArgs::fp8_scale) is made for bf16 activations only, the fp8 path's.
template <class H, int HD>
void launch(const CudaContext& ctx, const RelPosArgs& a, int64_t windows, int nwin) {
  if constexpr (std::is_same_v<H, __nv_bfloat16>)
    if (a.fp8_scale) return launch_tiles<H, HD, true>(ctx, a, windows, nwin);
  if (a.fp8_scale) throw Error("rel_pos_attention: an fp8 output takes bf16 activations");
  launch_tiles<H, HD, false>(ctx, a, windows, nwin);
}

}  // namespace

void rel_pos_attention_wgmma(const CudaContext& ctx, DType dt, const RelPosArgs& a, int head_dim, int64_t windows,
                             int nwin) {
  auto run = [&](auto tag) {
    using H = decltype(tag);
    with_head_dim<32, 64, 80>(head_dim, "rel_pos_attention",
                              [&](auto hd) { launch<H, decltype(hd)::value>(ctx, a, windows, nwin); });
  };
  if (dt == DType::BF16)
    run(__nv_bfloat16{});
  else
    run(__half{});
}

}  // namespace samfast::cuda
