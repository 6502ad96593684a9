// Tensor-core building blocks of the CUDA kernels (sm_80+ instructions: mma.sync m16n8k16 bf16 or
// fp16 with fp32 accumulation, ldmatrix, cp.async; Hopper's wgmma), the warp-level tile products
// built from them, and the head-dim switch of the attention ops. The 16-bit storage type H of a
// kernel (__nv_bfloat16 or __half) picks the instruction: mma16<H>, pack16<H>, wgmma16<H, ...>.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "samfast/error.h"

namespace samfast::cuda {

__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_f16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <class H>
__device__ __forceinline__ void mma16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<H, __half>)
    mma_f16(c, a, b0, b1);
  else
    mma_bf16(c, a, b0, b1);
}

// LayerNorm statistics of the two accumulator rows (gr and gr + 8) a quad holds, n values a row:
// sum / sq are this lane's partial sums and sums of squares; after the quad reduction, the mean
// and 1 / sqrt(variance + eps) of each row.
__device__ __forceinline__ void quad_row_stats(float (&sum)[2], float (&sq)[2], int n, float eps, float (&mean)[2],
                                               float (&rstd)[2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int sh = 1; sh <= 2; sh *= 2) {
      sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], sh);
      sq[i] += __shfl_xor_sync(0xffffffffu, sq[i], sh);
    }
    mean[i] = sum[i] / n;
    rstd[i] = rsqrtf(fmaxf(sq[i] / n - mean[i] * mean[i], 0.f) + eps);
  }
}

// The shared-memory address of a pointer into shared memory (what the PTX below takes).
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem_row) {
  const uint32_t addr = smem_addr(smem_row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem_row) {
  const uint32_t addr = smem_addr(smem_row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The two H values of a 32-bit word as floats, the low half first.
template <class H>
__device__ __forceinline__ float2 unpack16(uint32_t v) {
  if constexpr (std::is_same_v<H, __half>)
    return __half22float2(*reinterpret_cast<const __half2*>(&v));
  else
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
}

// Two floats rounded to H, lo in the low half.
template <class H>
__device__ __forceinline__ uint32_t pack16(float lo, float hi) {
  if constexpr (std::is_same_v<H, __half>) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    return pack_bf16(lo, hi);
  }
}

// 16 bytes to the shared-memory address dst; zero-fills when !ok.
__device__ __forceinline__ void cp_async16_sa(uint32_t dst, const void* gmem, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(ok ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool ok) {  // zero-fills when !ok
  cp_async16_sa(smem_addr(smem), gmem, ok);
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most `pending` of this thread's committed cp.async groups are still in flight.
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
}

// ---------------------------------------------------------------------------------------------
// Warp tiles (m16n8 accumulators: c[n] holds rows gr and gr + 8, columns 8 n + 2 tq and + 1, of a
// warp's 16 x N tile, with gr = lane / 4, tq = lane % 4).

// c (16 x N) = a (16 x K) x b^T (b: N x K), both H in shared memory with row strides lda and ldb
// elements (padded rows: ldmatrix without bank conflicts); K and N multiples of 16. Each ldmatrix.x4
// of b feeds two n-tiles: lanes 0-7 / 8-15 address the two 8-column halves of a k-step of n-tile
// 2 np, lanes 16-31 those of 2 np + 1.
template <class H, int K, int N>
__device__ __forceinline__ void warp_tile_abt(float (&c)[N / 8][4], const H* a, int lda, const H* b, int ldb,
                                              int lane) {
#pragma unroll
  for (int n = 0; n < N / 8; ++n) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.f;
  const H* b_lane = b + ((lane / 16) * 8 + lane % 8) * ldb + ((lane / 8) & 1) * 8;
#pragma unroll 4
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t af[4];
    ldmatrix_x4(af, a + (lane % 16) * lda + kk * 16 + (lane / 16) * 8);
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      uint32_t bf[4];
      ldmatrix_x4(bf, b_lane + np * 16 * ldb + kk * 16);
      mma16<H>(c[2 * np], af, bf[0], bf[1]);
      mma16<H>(c[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// Two accumulator n-tiles (columns [16 ks, 16 ks + 16) of a 16 x N result) rounded to H as the A
// fragment of k-step ks of the next product: the m16n8 accumulator layout is the m16n8k16 A layout,
// so a result chains into the next MMA in registers (P in flash attention).
template <class H>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack16<H>(c0[0], c0[1]);
  a[1] = pack16<H>(c0[2], c0[3]);
  a[2] = pack16<H>(c1[0], c1[1]);
  a[3] = pack16<H>(c1[2], c1[3]);
}

// Hopper's warpgroup MMA (sm_90a only: callers compile these under __CUDA_ARCH_FEAT_SM90_ALL).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Shared-memory matrix descriptor without swizzle: the matrix is made of 8 x 16-byte core matrices,
// each 128 contiguous bytes; lbo is the byte distance between core matrices along K, sbo along M/N.
// addr: a shared-memory address (below 256 KiB: adding (bytes >> 4) to the descriptor moves its start).
__device__ __forceinline__ uint64_t wgmma_desc_sa(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32);
}
// The same for a tile stored with the 128-byte swizzle: rows of 128 bytes whose 16-byte chunks are
// permuted by the row's index mod 8 (chunk c of row r at byte 128 r + 16 (c ^ r % 8)), 8-row groups
// 1024 bytes apart (sbo), the tile starting at a 1024-byte-aligned address. As a K-major operand a
// k-step moves the start by 32 bytes; as an N-major one, by 16 rows (2048 bytes).
__device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t addr) {
  return wgmma_desc_sa(addr, 16, 1024) | (uint64_t(1) << 62);
}
// The 32-byte swizzle: 8 rows of 32 bytes (256 bytes, the chunks of rows 4-7 swapped) as the atom.
__device__ __forceinline__ uint64_t wgmma_desc_sw32(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return wgmma_desc_sa(addr, lbo, sbo) | (uint64_t(3) << 62);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most `pending` of this warpgroup's committed wgmma groups are still running.
template <int pending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(pending) : "memory");
}
// Orders this thread's generic-proxy writes of shared memory (stores, cp.async) before reads by wgmma.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// mbarriers: shared-memory arrival counters with a phase bit, for pipelines whose threads do not
// wait for one another at every stage (a block barrier would).
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared.b64 st, [%0];\n}\n" ::"r"(smem_addr(bar)) : "memory");
}
// Arrives on bar once every cp.async this thread has issued so far has landed (one of the arrivals
// bar was initialised to count).
__device__ __forceinline__ void cp_async_mbar_arrive(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// Waits until the phase of parity `parity` of bar has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, int parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\nmbarrier.try_wait.parity.shared.b64 done, [%0], %1;\n@!done bra WAIT_%=;\n}\n" ::"r"(
          smem_addr(bar)),
      "r"(parity)
      : "memory");
}

// d (64 x N, fp32, the m16n8 accumulator layout per warp and 8-column tile) (+)= a (64 x 16 bf16 (f16)
// from registers, the m16n8k16 A layout per warp) x b (16 x N bf16 (f16) in shared memory; TRANS_B 0: stored
// N-major rows of K, 1: stored K rows of N). accumulate 0 ignores d's old value.
template <int N, int TRANS_B>
__device__ __forceinline__ void wgmma_bf16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b, int accumulate);
template <int N, int TRANS_B>
__device__ __forceinline__ void wgmma_f16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b, int accumulate);

// The specialisations, one macro per tile width N: FN<N, TRANS_B> with PTX input type PT.
#define SAMFAST_WGMMA_N32(FN, PT, TRANS_B)                                                          \
  template <>                                                                                      \
  __device__ __forceinline__ void FN<32, TRANS_B>(float(&d)[16], const uint32_t(&a)[4], uint64_t b, int accumulate) { \
    asm volatile(                                                                                  \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"                                                  \
        "wgmma.mma_async.sync.aligned.m64n32k16.f32." PT "." PT " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, " #TRANS_B ";\n}\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]) \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));                     \
  }
#define SAMFAST_WGMMA_N64(FN, PT, TRANS_B)                                                          \
  template <>                                                                                      \
  __device__ __forceinline__ void FN<64, TRANS_B>(float(&d)[32], const uint32_t(&a)[4], uint64_t b, int accumulate) { \
    asm volatile(                                                                                  \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                  \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." PT "." PT " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, " #TRANS_B ";\n}\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));                     \
  }
#define SAMFAST_WGMMA_N80(FN, PT, TRANS_B)                                                          \
  template <>                                                                                      \
  __device__ __forceinline__ void FN<80, TRANS_B>(float(&d)[40], const uint32_t(&a)[4], uint64_t b, int accumulate) { \
    asm volatile(                                                                                  \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %45, 0;\n"                                                  \
        "wgmma.mma_async.sync.aligned.m64n80k16.f32." PT "." PT " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39}, {%40, %41, %42, %43}, %44, p, 1, 1, " #TRANS_B ";\n}\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]) \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));                     \
  }
#define SAMFAST_WGMMA_ALL(FN, PT) \
  SAMFAST_WGMMA_N32(FN, PT, 0)    \
  SAMFAST_WGMMA_N32(FN, PT, 1)    \
  SAMFAST_WGMMA_N64(FN, PT, 0)    \
  SAMFAST_WGMMA_N64(FN, PT, 1)    \
  SAMFAST_WGMMA_N80(FN, PT, 0)    \
  SAMFAST_WGMMA_N80(FN, PT, 1)
SAMFAST_WGMMA_ALL(wgmma_bf16, "bf16")
SAMFAST_WGMMA_ALL(wgmma_f16, "f16")
#undef SAMFAST_WGMMA_ALL
#undef SAMFAST_WGMMA_N32
#undef SAMFAST_WGMMA_N64
#undef SAMFAST_WGMMA_N80

// The one for 16-bit storage type H (__nv_bfloat16 or __half).
template <class H, int N, int TRANS_B>
__device__ __forceinline__ void wgmma16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b, int accumulate) {
  if constexpr (std::is_same_v<H, __half>)
    wgmma_f16<N, TRANS_B>(d, a, b, accumulate);
  else
    wgmma_bf16<N, TRANS_B>(d, a, b, accumulate);
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// ---------------------------------------------------------------------------------------------
// The head dims an attention op is built for (host code): f(std::integral_constant<int, HD>{}) for
// the HD of HDs equal to hd; any other hd is an Error naming op and the built ones ("rel_pos_attention:
// head dim 48 is not built (32, 64 and 80 are)"). One instantiation of the op's kernels per HD.
template <int... HDs, class F>
void with_head_dim(int64_t hd, const char* op, F&& f) {
  if (((hd == HDs && (f(std::integral_constant<int, HDs>{}), true)) || ...)) return;
  std::string built;
  int i = 0;
  ((built += (i++ == 0 ? "" : i == int(sizeof...(HDs)) ? " and " : ", ") + std::to_string(HDs)), ...);
  throw Error(std::string(op) + ": head dim " + std::to_string(hd) + " is not built (" + built + " are)");
}

}  // namespace samfast::cuda
