// ops.rel_pos_attention (image encoder) on the generic path: tensor cores by mma.sync (bf16, fp16;
// sm_80 and later) and CUDA cores (fp32). On Hopper, bf16 and fp16 tiles of at most 64 tokens a side
// run the wgmma kernels of rel_pos_attention_sm90.cu instead (the same algorithm).
//
// A flash-attention-style kernel. One block computes a block of queries of one attention tile (a
// window, or the whole grid for global attention) for one head of one image, streaming the tile's
// keys through shared memory with an online softmax: the score matrix never reaches global memory.
// Windows are found by index arithmetic on the (B, H, W, 3C) qkv tensor (no partition copies); a
// token of the zero-padded grid outside the image reads the qkv bias, which is what the qkv Linear
// gives a zero token. The decomposed relative-position terms rel_h[q, ky] = q . Rh[qy - ky + th - 1]
// and rel_w[q, kx] (unscaled q, as upstream) are computed once per query block into shared memory
// (BQ x (th + tw) floats) before the key loop.
//   bf16 / fp16: tensor cores (mma.sync m16n8k16, fp32 accumulation); 4 warps x 32 queries, 64-key
//         blocks, P kept in registers as the A operand of P V (V fragments by ldmatrix.trans).
//   fp32: CUDA cores, one thread per query (q and o in registers), keys broadcast from shared memory.
#include <cfloat>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/rel_pos_tile.cuh"

namespace samfast {
namespace {

using cuda::acc_to_a;
using cuda::cp_async16;
using cuda::cp_async_wait_all;
using cuda::ex2;
using cuda::from_f32;
using cuda::kLog2e;
using cuda::ldmatrix_x4;
using cuda::ldmatrix_x4_trans;
using cuda::mma16;
using cuda::pack16;
using cuda::query_range;
using cuda::QueryRange;
using cuda::RelPosArgs;
using cuda::score_tile;
using cuda::tile_of;
using cuda::TileGeometry;
using cuda::to_f32;

// ---------------------------------------------------------------------------------------------
// fp32 (or any storage type) on CUDA cores.

constexpr int kSimtQ = 64;  // queries per block = threads per block
constexpr int kSimtK = 32;  // keys per shared-memory block

template <class T, int HD>
__global__ void __launch_bounds__(kSimtQ) rel_pos_attention_simt(RelPosArgs a, int nwin) {
  extern __shared__ float smem[];
  float* sK = smem;                      // kSimtK x HD
  float* sV = sK + kSimtK * HD;          // kSimtK x HD
  int* sPos = (int*)(sV + kSimtK * HD);  // kSimtK: ky << 16 | kx, or -1 past the tile
  float* sRel = (float*)(sPos + kSimtK); // (th + tw) x kSimtQ, transposed: no bank conflicts
  const TileGeometry<T> g = tile_of<T>(a, nwin);
  const int h = blockIdx.y, off = h * HD, tid = threadIdx.x, nrel = a.th + a.tw;
  const int t = blockIdx.x * kSimtQ + tid;  // this thread's query
  const bool active = t < g.ntok;
  const int qy = active ? t / g.tw : 0, qx = active ? t % g.tw : 0;

  float q[HD], o[HD];
  {
    const T* src = g.token(active ? t : 0, 0, off);
#pragma unroll
    for (int d = 0; d < HD; ++d) q[d] = to_f32(src[d]), o[d] = 0.f;
  }
  const T* Rh = static_cast<const T*>(a.rel_h);
  const T* Rw = static_cast<const T*>(a.rel_w);
  for (int r = 0; r < nrel; ++r) {
    const T* tab = r < a.th ? Rh + (int64_t)(qy - r + a.th - 1) * HD : Rw + (int64_t)(qx - (r - a.th) + a.tw - 1) * HD;
    float acc = 0.f;
#pragma unroll
    for (int d = 0; d < HD; ++d) acc += q[d] * to_f32(tab[d]);
    sRel[r * kSimtQ + tid] = acc;
  }

  float m = -INFINITY, l = 0.f;
  for (int k0 = 0; k0 < g.ntok; k0 += kSimtK) {
    __syncthreads();
    for (int i = tid; i < kSimtK * HD; i += kSimtQ) {
      const int j = i / HD, d = i % HD, kt = k0 + j;
      const bool ok = kt < g.ntok;
      sK[i] = ok ? to_f32(g.token(kt, 1, off)[d]) : 0.f;
      sV[i] = ok ? to_f32(g.token(kt, 2, off)[d]) : 0.f;
    }
    for (int j = tid; j < kSimtK; j += kSimtQ) {
      const int kt = k0 + j;
      sPos[j] = kt < g.ntok ? ((kt / g.tw) << 16) | (kt % g.tw) : -1;
    }
    __syncthreads();
    constexpr int kChunk = HD > 64 ? 4 : 8;  // scores in registers per softmax update (no spills at 80)
    for (int j0 = 0; j0 < kSimtK; j0 += kChunk) {
      float s[kChunk];
      float mx = m;
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) {
        const int pos = sPos[j0 + jj];
        float acc = 0.f;
#pragma unroll
        for (int d = 0; d < HD; ++d) acc += q[d] * sK[(j0 + jj) * HD + d];
        s[jj] = pos < 0 ? -INFINITY
                        : acc * a.scale + sRel[(pos >> 16) * kSimtQ + tid] + sRel[(a.th + (pos & 0xffff)) * kSimtQ + tid];
        mx = fmaxf(mx, s[jj]);
      }
      const float corr = expf(m - mx);  // m = -inf at the start: corr = 0 and o, l are 0
      l *= corr;
#pragma unroll
      for (int d = 0; d < HD; ++d) o[d] *= corr;
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) {
        const float p = expf(s[jj] - mx);
        l += p;
#pragma unroll
        for (int d = 0; d < HD; ++d) o[d] += p * sV[(j0 + jj) * HD + d];
      }
      m = mx;
    }
  }
  const int64_t row = active ? g.out_row(t) : -1;
  if (row < 0) return;
  T* dst = static_cast<T*>(a.out) + row * a.C + off;
  const float inv = 1.f / l;
#pragma unroll
  for (int d = 0; d < HD; ++d) dst[d] = from_f32<T>(o[d] * inv);
}

// ---------------------------------------------------------------------------------------------
// bf16 on tensor cores.
//
// Keys are streamed in "slots": key row ky of the tile occupies slots [ky KW, ky KW + tw) with KW
// the smallest power of two >= max(tw, 8); the slots [tw, KW) of a row are empty (zero K and V,
// score -inf). An 8-key n-tile of the MMA so never crosses a key row: rel_h is read once per n-tile
// and row, and the slot -> (ky, kx) map is a shift and a mask (no per-key table, no divisions).
// For window 14 (KW 16) that is 224 slots in 4 blocks of 64, the last block's empty rows 14 and 15
// skipped by every warp (no MMA on them); for global 64x64, KW = tw = 64: one key row per block.
// Each warp owns 32 query rows (two m16 tiles, as FlashAttention-2 does): every K and V fragment it
// reads from shared memory feeds two MMAs, half the shared-memory reads per FLOP of 16 rows a warp.
// The relative-position terms are GEMMs too: G[q, j] = q . R[j] for the table rows j this block
// needs, on the tensor cores, each warp scattering rel[r][q] = G[q, qy + th - 1 - r] (or the qx
// twin) from its accumulators into shared memory, pre-multiplied by log2(e).

constexpr int kMmaMT = 2;  // m16 tiles (of queries) per warp
constexpr int kMmaWarps = 4;
constexpr int kMmaQ = kMmaWarps * 16 * kMmaMT;  // 128 queries per block
constexpr int kMmaK = 64;                        // key slots per block
constexpr int kMmaThreads = 32 * kMmaWarps;
constexpr int kRelStride = kMmaQ + 4;  // floats per relative-position column in shared memory

// H: the 16-bit storage type (__nv_bfloat16 or __half); the kernels are the same for both.

// Rows [row0, row0 + rows) of the tile, part `part`, into smem rows of `lds` H; zeros past the tile.
template <class H, int HD>
__device__ __forceinline__ void load_rows(H* dst, int lds, const TileGeometry<H>& g, int row0, int rows,
                                          int part, int off) {
  constexpr int kChunks = HD / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < rows * kChunks; i += kMmaThreads) {
    const int r = i / kChunks, c = i % kChunks, t = row0 + r;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (t < g.ntok) v = *reinterpret_cast<const uint4*>(g.token(t, part, off) + c * 8);
    *reinterpret_cast<uint4*>(dst + r * lds + c * 8) = v;
  }
}

// Part `part` (1 k, 2 v) of the tokens in key slots [sb, sb + 64) into smem rows of HD + 8 H (empty
// slots: zeros), by cp.async; complete after cp_async_wait_all.
template <class H, int HD>
__device__ __forceinline__ void load_slots_async(H* dst, const TileGeometry<H>& g, int sb, int kwl, int part,
                                                 int off) {
  constexpr int kChunks = HD / 8;
  for (int i = threadIdx.x; i < kMmaK * kChunks; i += kMmaThreads) {
    const int r = i / kChunks, c = i % kChunks, slot = sb + r, ky = slot >> kwl, kx = slot & ((1 << kwl) - 1);
    const bool ok = ky < g.th && kx < g.tw;
    cp_async16(dst + r * (HD + 8) + c * 8, ok ? g.token_yx(ky, kx, part, off) + c * 8 : g.bias, ok);
  }
}

// s[mt][n] = this warp's MT x 16 query rows (qf) x the 64 rows of sK (B operand by ldmatrix, two
// n-tiles per ldmatrix.x4: lanes 0-7 / 8-15 address the two d halves of n-tile 2 np, lanes 16-31
// those of 2 np + 1). Only the first np_end groups of 16 rows are multiplied (the rest: 0).
template <class H, int HD, int MT>
__device__ __forceinline__ void qk_tile(float s[MT][kMmaK / 8][4], const uint32_t qf[MT][HD / 16][4], const H* sK,
                                        int lane, int np_end) {
  constexpr int LDS = HD + 8;
  const H* base = sK + ((lane / 16) * 8 + lane % 8) * LDS + ((lane / 8) & 1) * 8;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int n = 0; n < kMmaK / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
  for (int np = 0; np < kMmaK / 16; ++np) {
    if (np >= np_end) break;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t kb[4];
      ldmatrix_x4(kb, base + np * 16 * LDS + kk * 16);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma16<H>(s[mt][2 * np], qf[mt][kk], kb[0], kb[1]);
        mma16<H>(s[mt][2 * np + 1], qf[mt][kk], kb[2], kb[3]);
      }
    }
  }
}

template <class H, int HD>
__global__ void __launch_bounds__(kMmaThreads, 2) rel_pos_attention_mma(RelPosArgs a, int nwin) {
  constexpr int LDS = HD + 8;      // padded rows: ldmatrix without bank conflicts
  constexpr int kChunks = HD / 8;  // 16-byte chunks per row
  constexpr int MT = kMmaMT, Q = kMmaQ, RS = kRelStride;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  H* sK = reinterpret_cast<H*>(smem_raw);  // sK, then sV: first the block's Q queries
  H* sV = sK + kMmaK * LDS;
  // (th + tw) x RS: transposed and padded so that the 8 query rows x 4 key columns a warp
  // reads per score land in 32 different banks. Times log2(e).
  float* sRel = reinterpret_cast<float*>(sV + kMmaK * LDS);
  const TileGeometry<H> g = tile_of<H>(a, nwin);
  const int h = blockIdx.y, off = h * HD, q0 = blockIdx.x * Q, th = a.th, tw = a.tw;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gr = lane / 4, tq = lane % 4;
  const int wr0 = warp * 16 * MT + gr;  // this thread's query rows in the block: wr0 + 16 mt + {0, 8}

  static_assert(Q == 2 * kMmaK, "the queries are staged in sK and sV");
  load_rows<H, HD>(sK, LDS, g, q0, Q, 0, off);
  __syncthreads();
  // This warp's query rows as A fragments (rows gr and gr + 8 of each of its m16 tiles).
  uint32_t qf[MT][HD / 16][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const H* r0 = sK + (wr0 + 16 * mt) * LDS + tq * 2;
    const H* r1 = r0 + 8 * LDS;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      qf[mt][kk][0] = *reinterpret_cast<const uint32_t*>(r0 + kk * 16);
      qf[mt][kk][1] = *reinterpret_cast<const uint32_t*>(r1 + kk * 16);
      qf[mt][kk][2] = *reinterpret_cast<const uint32_t*>(r0 + kk * 16 + 8);
      qf[mt][kk][3] = *reinterpret_cast<const uint32_t*>(r1 + kk * 16 + 8);
    }
  }

  {  // relative-position terms of this block's queries (unscaled q, fp32 accumulation), x log2(e)
    int qy[MT][2], qx[MT][2];  // of rows wr0 + 16 mt + 8 i (past the tile: the last token; their q rows are 0)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int t = min(q0 + wr0 + 16 * mt + 8 * i, g.ntok - 1);
        qy[mt][i] = t / tw, qx[mt][i] = t % tw;
      }
    const QueryRange qr = query_range(q0, Q, g.ntok, tw);
#pragma unroll 1
    for (int part = 0; part < 2; ++part) {
      // rel_h[q, r] = q . Rh[qy + th - 1 - r], r < th: table rows [y_lo, y_hi + th - 1] (rel_w alike)
      const int lim = part ? tw : th;
      const int lo = part ? qr.x_lo : qr.y_lo, hi = (part ? qr.x_hi : qr.y_hi) + lim - 1;
      const auto* tab = static_cast<const H*>(part ? a.rel_w : a.rel_h);
      float* dst = sRel + (part ? th : 0) * RS + wr0;
#pragma unroll 1
      for (int j0 = lo; j0 <= hi; j0 += kMmaK) {
        __syncthreads();  // sK free (the q fragments, the previous chunk read)
        for (int i = tid; i < kMmaK * kChunks; i += kMmaThreads) {
          const int r = i / kChunks, c = i % kChunks, j = j0 + r;
          uint4 v = make_uint4(0, 0, 0, 0);
          if (j <= hi) v = *reinterpret_cast<const uint4*>(tab + (int64_t)j * HD + c * 8);
          *reinterpret_cast<uint4*>(sK + r * LDS + c * 8) = v;
        }
        __syncthreads();
        float gq[MT][kMmaK / 8][4];
        qk_tile<H, HD, MT>(gq, qf, sK, lane, kMmaK / 16);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const int base0 = (part ? qx[mt][0] : qy[mt][0]) + lim - 1, base1 = (part ? qx[mt][1] : qy[mt][1]) + lim - 1;
#pragma unroll
          for (int n = 0; n < kMmaK / 8; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int j = j0 + n * 8 + tq * 2 + e, r0 = base0 - j, r1 = base1 - j;
              if (r0 >= 0 && r0 < lim) dst[r0 * RS + 16 * mt] = gq[mt][n][e] * kLog2e;
              if (r1 >= 0 && r1 < lim) dst[r1 * RS + 16 * mt + 8] = gq[mt][n][2 + e] * kLog2e;
            }
        }
      }
    }
  }
  const bool warp_active = q0 + warp * 16 * MT < g.ntok;  // the last block of a window may be mostly padding
  const float sc = a.scale * kLog2e;                      // softmax in base 2
  int kwl = 3;
  while ((1 << kwl) < tw) ++kwl;
  const int kwm = (1 << kwl) - 1, nslots = th << kwl;

  float o[MT][HD / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
  float m[MT][2], l[MT][2];  // rows gr and gr + 8 of each m-tile (l: this thread's part)
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;

  // K and V of a block arrive by cp.async (FA2 order, single buffers): V(b) loads during S = Q K(b)^T
  // and the softmax, K(b + 1) during O += P V(b).
  __syncthreads();  // the relative-position GEMMs are done with sK
  load_slots_async<H, HD>(sK, g, 0, kwl, 1, off);
  for (int sb = 0; sb < nslots; sb += kMmaK) {
    // Groups of 16 slots holding any key (the rest are empty rows past the tile: skipped).
    const int np_end = min(kMmaK / 16, (nslots - sb + 15) / 16);
    cp_async_wait_all();
    __syncthreads();  // K(b) visible to all; every warp is done with V(b - 1)
    load_slots_async<H, HD>(sV, g, sb, kwl, 2, off);
    float s[MT][kMmaK / 8][4];
    if (warp_active) {
      qk_tile<H, HD, MT>(s, qf, sK, lane, np_end);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        // scores (log2 units) = scale log2(e) q.k + (rel_h + rel_w) log2(e); empty slots -> -inf
        const float* rel0 = sRel + wr0 + 16 * mt;  // this thread's rows (written by this warp only)
        const float* relw0 = rel0 + (th + tq * 2) * RS;
        float mx0 = m[mt][0], mx1 = m[mt][1];
        int ky = sb >> kwl, kx = sb & kwm;  // of n-tile n's first slot
#pragma unroll
        for (int n = 0; n < kMmaK / 8; ++n) {
          score_tile(s[mt][n], ky, kx, th, tw, tq, rel0, relw0, RS, sc, mx0, mx1);
          kx += 8;
          if (kx > kwm) kx = 0, ++ky;
        }
#pragma unroll
        for (int sh = 1; sh <= 2; sh *= 2) {
          mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, sh));
          mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, sh));
        }
        // The first block's first slot is key 0, and every block's first slot is a key (its kx is a
        // multiple of 8 below KW, so below tw): mx is finite, and c = 0 on the first block (m = -inf).
        const float c0 = ex2(m[mt][0] - mx0), c1 = ex2(m[mt][1] - mx1);
        m[mt][0] = mx0, m[mt][1] = mx1;
        l[mt][0] *= c0, l[mt][1] *= c1;
#pragma unroll
        for (int n = 0; n < HD / 8; ++n) o[mt][n][0] *= c0, o[mt][n][1] *= c0, o[mt][n][2] *= c1, o[mt][n][3] *= c1;
#pragma unroll
        for (int n = 0; n < kMmaK / 8; ++n) {
          s[mt][n][0] = ex2(s[mt][n][0] - mx0), s[mt][n][1] = ex2(s[mt][n][1] - mx0);
          s[mt][n][2] = ex2(s[mt][n][2] - mx1), s[mt][n][3] = ex2(s[mt][n][3] - mx1);
          l[mt][0] += s[mt][n][0] + s[mt][n][1];
          l[mt][1] += s[mt][n][2] + s[mt][n][3];
        }
      }
    }
    cp_async_wait_all();
    __syncthreads();  // V(b) visible to all; every warp is done with K(b)
    if (sb + kMmaK < nslots) load_slots_async<H, HD>(sK, g, sb + kMmaK, kwl, 1, off);
    if (!warp_active) continue;
    // o += P V: P's accumulator layout is the A layout of the next MMA (two n-tiles per k-step).
#pragma unroll
    for (int ks = 0; ks < kMmaK / 16; ++ks) {
      if (ks >= np_end) break;  // empty slots: P is 0 there
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) acc_to_a<H>(pa[mt], s[mt][2 * ks], s[mt][2 * ks + 1]);
      const int mi = lane / 8, key = ks * 16 + (mi & 1) * 8 + lane % 8;
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, sV + key * LDS + dp * 16 + (mi >> 1) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma16<H>(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          mma16<H>(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
  }
  if (!warp_active) return;
  auto* out = static_cast<H*>(a.out);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float l0 = l[mt][0], l1 = l[mt][1];
#pragma unroll
    for (int sh = 1; sh <= 2; sh *= 2) {
      l0 += __shfl_xor_sync(0xffffffffu, l0, sh);
      l1 += __shfl_xor_sync(0xffffffffu, l1, sh);
    }
    const float inv0 = 1.f / l0, inv1 = 1.f / l1;
    const int t0 = q0 + wr0 + 16 * mt, t1 = t0 + 8;
    const int64_t row0 = t0 < g.ntok ? g.out_row(t0) : -1, row1 = t1 < g.ntok ? g.out_row(t1) : -1;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      const int d = off + n * 8 + tq * 2;
      if (row0 >= 0)
        *reinterpret_cast<uint32_t*>(out + row0 * a.C + d) = pack16<H>(o[mt][n][0] * inv0, o[mt][n][1] * inv0);
      if (row1 >= 0)
        *reinterpret_cast<uint32_t*>(out + row1 * a.C + d) = pack16<H>(o[mt][n][2] * inv1, o[mt][n][3] * inv1);
    }
  }
}

void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

template <class Kernel>
void set_smem(Kernel kernel, size_t bytes, const CudaContext& ctx, const char* op) {
  if (bytes > ctx.max_smem_per_block)
    throw Error(std::string(op) + ": attention tile needs " + std::to_string(bytes) + " bytes of shared memory, the GPU has " +
                std::to_string(ctx.max_smem_per_block));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int HD>
void launch_rel_pos(const CudaContext& ctx, DType dt, const RelPosArgs& a, int64_t windows, int nwin) {
  const int T = a.th * a.tw, nrel = a.th + a.tw;
  // Hopper: the wgmma kernel (rel_pos_attention_sm90.cu), for tiles at most 64 tokens on a side
  if (dt != DType::F32 && ctx.hopper_kernels && a.th <= 64 && a.tw <= 64) {
    cuda::rel_pos_attention_wgmma(ctx, dt, a, HD, windows, nwin);
    return;
  }
  if (dt != DType::F32) {
    auto run = [&](auto tag) {
      using H = decltype(tag);
      const size_t smem = sizeof(H) * 2 * kMmaK * (HD + 8) + sizeof(float) * kRelStride * nrel;
      set_smem(rel_pos_attention_mma<H, HD>, smem, ctx, "rel_pos_attention");
      const dim3 grid((T + kMmaQ - 1) / kMmaQ, a.heads, (unsigned)windows);
      rel_pos_attention_mma<H, HD><<<grid, kMmaThreads, smem, ctx.stream>>>(a, nwin);
    };
    if (dt == DType::BF16)
      run(__nv_bfloat16{});
    else
      run(__half{});
  } else {
    const size_t smem = sizeof(float) * 2 * kSimtK * HD + sizeof(int) * kSimtK + sizeof(float) * kSimtQ * nrel;
    set_smem(rel_pos_attention_simt<float, HD>, smem, ctx, "rel_pos_attention");
    const dim3 grid((T + kSimtQ - 1) / kSimtQ, a.heads, (unsigned)windows);
    rel_pos_attention_simt<float, HD><<<grid, kSimtQ, smem, ctx.stream>>>(a, nwin);
  }
  CUDA_LAUNCH_CHECK();
}

}  // namespace

Tensor CudaOps::rel_pos_attention(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                                  const Tensor& rel_pos_w, int heads, int window) {
  return rel_pos_attention_out(qkv, qkv_bias, rel_pos_h, rel_pos_w, heads, window, nullptr);
}

Tensor CudaOps::rel_pos_attention_out(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                                      const Tensor& rel_pos_w, int heads, int window, const float* fp8_scale) {
  // ref: modeling/image_encoder.py Attention.forward, add_decomposed_rel_pos, window_partition
  expect(qkv, "rel_pos_attention", "qkv");
  expect(qkv_bias, "rel_pos_attention", "qkv bias");
  expect(rel_pos_h, "rel_pos_attention", "rel_pos_h");
  expect(rel_pos_w, "rel_pos_attention", "rel_pos_w");
  check_rel_pos_attention(qkv, qkv_bias, rel_pos_h, rel_pos_w, heads, window);
  const int64_t B = qkv.dim(0), H = qkv.dim(1), W = qkv.dim(2), C = qkv.dim(3) / 3;
  const int64_t hd = C / heads;
  const int64_t th = window > 0 ? window : H, tw = window > 0 ? window : W;
  const int64_t nwh = (H + th - 1) / th, nww = (W + tw - 1) / tw;
  check(th < 32768 && tw < 32768 && th * 2 * tw < (int64_t(1) << 30) && B * nwh * nww <= 65535 && heads <= 65535, "rel_pos_attention",
        "grid " + shape_str(qkv.shape) + " too large");
  // (fp8 straight from the kernel where Hopper's kernels run: launch_rel_pos picks them so)
  const bool fp8_in_kernel = fp8_scale && dt_ == DType::BF16 && ctx_->hopper_kernels && th <= 64 && tw <= 64;
  Tensor out = fp8_in_kernel ? empty({B, H, W, C}, DType::U8) : empty({B, H, W, C});
  if (out.numel() == 0) return out;
  RelPosArgs a{qkv.data, qkv_bias.data, rel_pos_h.data, rel_pos_w.data, out.data, (int)H, (int)W, (int)C,
               heads, (int)th, (int)tw, (int)nww, 1.0f / std::sqrt((float)hd)};
  if (fp8_in_kernel) a.fp8_scale = fp8_scale;
  const int64_t windows = B * nwh * nww;
  const int nwin = (int)(nwh * nww);
  cuda::with_head_dim<32, 64, 80>(hd, "rel_pos_attention", [&](auto HD) {
    launch_rel_pos<decltype(HD)::value>(*ctx_, dt_, a, windows, nwin);
  });
  if (!fp8_scale || fp8_in_kernel) return out;
  Tensor q = empty({B, H, W, C}, DType::U8);  // the other kernels write bf16: a pass puts it in fp8
  cuda::scale_to_fp8(*ctx_, out.ptr<__nv_bfloat16>(), out.numel(), q.data, fp8_scale);
  return q;
}

}  // namespace samfast
