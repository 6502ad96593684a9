// ops.upscale_masks on the GPU: MaskDecoder.predict_masks' output upscaling (ConvTranspose2d 2x2
// D -> C1, LayerNorm2d, GELU, ConvTranspose2d 2x2 C1 -> C2, GELU) and the hypernetwork product, as
// one kernel. Unfused, these pass ~1.5 GB through memory per 64 prompts (two 2x2 scatters, a
// LayerNorm and a GELU over 4 and 16 times the image tokens' size); fused, each image token is
// read once and only the masks are written.
//
// Every image token expands independently: 4 sub-pixels s1 = (dy1, dx1) of C1 channels, each 4
// sub-pixels s2 = (dy2, dx2) of C2 channels, each one value per mask. A block takes one s1 of a
// run of 128-token tiles of one prompt; its 8 warps take 16 tokens each through three tensor-core
// GEMMs chained in registers (accumulator layout = next A operand, as P in flash attention):
//   (16 x D) x W1[s1] (D x C1) + b1 -> LayerNorm over C1 -> GELU  -> A (16 x C1)
//   (16 x C1) x W2 (C1 x 4 C2) + b2 -> GELU                      -> A (16 x 4 C2)
//   (16 x 4 C2) x Hyper (4 C2 x 4 M, block diagonal per s2)      -> 16 x (s2, m) mask values,
// the product's 16 columns in the order (dy2, m, dx2): a thread's two accumulator columns are one
// mask at two neighbouring pixels (one 4-byte store), and its quad's lane tq holds mask tq.
// bf16 or fp16 (H) with D 256, C1 64, C2 32 (every SAM) and up to 4 masks (the decoder asks for
// the ones it returns: 3 of SAM's 4 with multimask output, else 1); the product always has 4 mask
// columns, those past hyper's rows zero and not stored, so that no slice of the output follows.
// Other shapes and fp32 compose the unfused ops. The GELUs are the tanh form on the hardware tanh
// (gelu_tanh_fast, within about an fp16 step of erf GELU): in the erf form they were most of the
// kernel's instructions.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"

namespace samfast {
namespace {

using cuda::acc_to_a;
using cuda::cp_async16;
using cuda::cp_async_commit;
using cuda::cp_async_wait;
using cuda::from_f32;
using cuda::gelu_tanh_fast;
using cuda::ldmatrix_x4;
using cuda::mma16;
using cuda::pack16;
using cuda::quad_row_stats;
using cuda::to_f32;

// Occupancy decides this kernel's speed (its GEMM chain waits on each step): each warp streams its
// rows' D values through a ring of kStages chunks of kChunk columns (cp.async, the next chunks in
// flight while one is multiplied) rather than staging whole rows, so that a block's shared memory is
// its sub-pixel's weights and small rings and two blocks (16 warps) fit an SM; the second GEMM, taken
// in two halves of its columns, keeps a thread within the 128 registers that allows.
constexpr int kD = 256, kC1 = 64, kC2 = 32, kM = 4, kWarps = 8, kThreads = 32 * kWarps, kRows = 16 * kWarps;
constexpr int kChunk = 64, kChunks = kD / kChunk, kStages = 3;
static_assert(kChunk == 64, "load_chunk: 8 lanes of 16 bytes a row");
// padded smem rows (ldmatrix without bank conflicts)
constexpr int kLd1 = kD + 8, kLd2 = kC1 + 8, kLd3 = 4 * kC2 + 8, kLdX = kChunk + 8;

// wt[(s * Cout + co) * Cin + ci] = w[ci, co, dy, dx] with s = 2 dy + dx: per sub-pixel, rows of Cin.
template <class H>
__global__ void transpose_convt_weight(const H* __restrict w, H* __restrict wt, int Cin, int Cout) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < Cin * Cout * 4; i += gridDim.x * blockDim.x) {
    const int ci = i / (Cout * 4), co = i / 4 % Cout, s = i % 4;
    wt[(s * Cout + co) * Cin + ci] = w[i];
  }
}

template <class H>
struct UpscaleArgs {
  const H *keys, *w1t, *b1, *ln_w, *ln_b, *w2t, *b2, *hyper;
  H* out;
  int G;   // image tokens G x G; masks 4G x 4G
  int Mh;  // masks asked for (hyper's rows, at most kM)
  float eps;
};

constexpr size_t kSmemBytes = sizeof(uint16_t) * (kC1 * kLd1 + 4 * kC2 * kLd2 + 4 * kM * kLd3 + kWarps * kStages * 16 * kLdX) +
                              sizeof(float) * (3 * kC1 + kC2);

template <class H>
__global__ void __launch_bounds__(kThreads, 2) upscale_masks_kernel(UpscaleArgs<H> a, int tiles_per_block) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  H* sW1 = reinterpret_cast<H*>(smem_raw);  // (C1 rows, D) of sub-pixel s1
  H* sW2 = sW1 + kC1 * kLd1;                 // (4 C2 rows = (s2, c2), C1)
  H* sH = sW2 + 4 * kC2 * kLd2;              // (4 M rows = (s2, m), 4 C2): hyper block diagonal
  H* sX = sH + 4 * kM * kLd3;                // per warp: kStages chunks of (16 token rows, kChunk)
  float* sB1 = reinterpret_cast<float*>(sX + kWarps * kStages * 16 * kLdX);
  float *sLw = sB1 + kC1, *sLb = sLw + kC1, *sB2 = sLb + kC1;
  const int s1 = blockIdx.x, b = blockIdx.z, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int gr = lane / 4, tq = lane % 4, G = a.G, T = G * G;

  for (int i = tid; i < kC1 * (kD / 8); i += kThreads) {
    const int r = i / (kD / 8), c = i % (kD / 8);
    cp_async16(sW1 + r * kLd1 + c * 8, a.w1t + (int64_t(s1) * kC1 + r) * kD + c * 8, true);
  }
  for (int i = tid; i < 4 * kC2 * (kC1 / 8); i += kThreads) {
    const int r = i / (kC1 / 8), c = i % (kC1 / 8);
    cp_async16(sW2 + r * kLd2 + c * 8, a.w2t + r * kC1 + c * 8, true);
  }
  cp_async_commit();
  for (int i = tid; i < 4 * kM * 4 * kC2; i += kThreads) {
    const int n = i / (4 * kC2), k = i % (4 * kC2);  // n = (dy2, m, dx2), k = (s2', c)
    const int m = n / 2 % kM, s2 = n / (2 * kM) * 2 + n % 2;
    const bool diag = s2 == k / kC2;
    sH[n * kLd3 + k] = diag && m < a.Mh ? a.hyper[(int64_t(b) * a.Mh + m) * kC2 + k % kC2] : from_f32<H>(0.f);
  }
  for (int i = tid; i < kC1; i += kThreads) sB1[i] = to_f32(a.b1[i]), sLw[i] = to_f32(a.ln_w[i]), sLb[i] = to_f32(a.ln_b[i]);
  for (int i = tid; i < kC2; i += kThreads) sB2[i] = to_f32(a.b2[i]);

  const H* xg = a.keys + int64_t(b) * T * kD;
  H* sXw = sX + warp * kStages * 16 * kLdX;
  const int L = 4 * G, dy1 = s1 / 2, dx1 = s1 % 2;
  H* outm = a.out + (int64_t(b) * a.Mh + tq) * L * L;  // this thread's mask: tq (stored where tq < Mh)
  const H* w1base = sW1 + ((lane / 16) * 8 + lane % 8) * kLd1 + ((lane / 8) & 1) * 8;
  const H* w2base = sW2 + ((lane / 16) * 8 + lane % 8) * kLd2 + ((lane / 8) & 1) * 8;
  const H* hbase = sH + ((lane / 16) * 8 + lane % 8) * kLd3 + ((lane / 8) & 1) * 8;
  const int ntiles = (T + kRows - 1) / kRows, tile_begin = blockIdx.y * tiles_per_block;
  const int tile_end = min(ntiles, tile_begin + tiles_per_block), nchunks = max(0, tile_end - tile_begin) * kChunks;
  // Chunk i of this warp's rows (tile i / kChunks, columns (i % kChunks) kChunk..) into ring slot
  // i % kStages, zeros past the last token; one cp.async group a chunk, empty past the last chunk.
  auto load_chunk = [&](int i) {
    if (i < nchunks) {
      const int r0 = (tile_begin + i / kChunks) * kRows + warp * 16, c0 = (i % kChunks) * kChunk;
      H* dst = sXw + (i % kStages) * 16 * kLdX + (lane % 8) * 8;  // a lane: 16 bytes of rows lane / 8 + 4 q
#pragma unroll
      for (int r = lane / 8; r < 16; r += 4) {
        const bool ok = r0 + r < T;
        cp_async16(dst + r * kLdX, xg + (ok ? int64_t(r0 + r) * kD + c0 + (lane % 8) * 8 : 0), ok);
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) load_chunk(i);
  cp_async_wait<kStages - 1>();  // the weights' group (the oldest) has landed
  __syncthreads();                // weights visible; from here on each warp works alone

  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int r0 = tile * kRows + warp * 16;
    // (1) ConvTranspose #1 for sub-pixel s1: 16 x C1, chunk by chunk of D.
    float c1[kC1 / 8][4];
#pragma unroll
    for (int n = 0; n < kC1 / 8; ++n) c1[n][0] = c1[n][1] = c1[n][2] = c1[n][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < kChunks; ++kc) {
      const int i = (tile - tile_begin) * kChunks + kc;
      cp_async_wait<kStages - 2>();  // chunk i has landed (this lane's part) ...
      __syncwarp();                  // ... every lane's, and every lane is done with chunk i - 1
      load_chunk(i + kStages - 1);   // into chunk i - 1's slot
      const H* xs = sXw + (i % kStages) * 16 * kLdX + (lane % 16) * kLdX + (lane / 16) * 8;
#pragma unroll
      for (int kk = 0; kk < kChunk / 16; ++kk) {
        uint32_t af[4];
        ldmatrix_x4(af, xs + kk * 16);
#pragma unroll
        for (int np = 0; np < kC1 / 16; ++np) {
          uint32_t bf[4];
          ldmatrix_x4(bf, w1base + np * 16 * kLd1 + kc * kChunk + kk * 16);
          mma16<H>(c1[2 * np], af, bf[0], bf[1]);
          mma16<H>(c1[2 * np + 1], af, bf[2], bf[3]);
        }
      }
    }
    if (r0 >= T) continue;
    // + bias, LayerNorm2d over C1 (a quad holds a row), GELU, as the A operand of (2).
    float sum[2] = {0.f, 0.f}, sq[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < kC1 / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float v = c1[n][e] + sB1[n * 8 + tq * 2 + (e & 1)];
        c1[n][e] = v, sum[e / 2] += v, sq[e / 2] += v * v;
      }
    float mean[2], rstd[2];
    quad_row_stats(sum, sq, kC1, a.eps, mean, rstd);
#pragma unroll
    for (int n = 0; n < kC1 / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n * 8 + tq * 2 + (e & 1);
        c1[n][e] = gelu_tanh_fast((c1[n][e] - mean[e / 2]) * rstd[e / 2] * sLw[col] + sLb[col]);
      }
    uint32_t a2[kC1 / 16][4];
#pragma unroll
    for (int ks = 0; ks < kC1 / 16; ++ks) acc_to_a<H>(a2[ks], c1[2 * ks], c1[2 * ks + 1]);
    // (2) ConvTranspose #2 and (3) the hypernetwork product, in two halves h of the sub-pixels s2
    // (2h and 2h + 1, dy2 = h): 16 x (s2, c2) + bias, GELU, as the A operand of (3), whose product
    // with the block diagonal is the 8 (m, dx2) columns of n-tile h (the other half's rows of it are
    // zeros).
    float c3[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float c2[2 * kC2 / 8][4];
#pragma unroll
      for (int n = 0; n < 2 * kC2 / 8; ++n) c2[n][0] = c2[n][1] = c2[n][2] = c2[n][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kC1 / 16; ++ks)
#pragma unroll
        for (int np = 0; np < 2 * kC2 / 16; ++np) {
          uint32_t bf[4];
          ldmatrix_x4(bf, w2base + (h * (2 * kC2 / 16) + np) * 16 * kLd2 + ks * 16);
          mma16<H>(c2[2 * np], a2[ks], bf[0], bf[1]);
          mma16<H>(c2[2 * np + 1], a2[ks], bf[2], bf[3]);
        }
#pragma unroll
      for (int ks = 0; ks < 2 * kC2 / 16; ++ks) {
        float g[2][4];
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) g[j][e] = gelu_tanh_fast(c2[2 * ks + j][e] + sB2[((2 * ks + j) * 8 + tq * 2 + (e & 1)) % kC2]);
        uint32_t a3[4], bf[4];
        acc_to_a<H>(a3, g[0], g[1]);
        ldmatrix_x4(bf, hbase + (h * (2 * kC2 / 16) + ks) * 16);
        mma16<H>(c3[h], a3, bf[2 * h], bf[2 * h + 1]);
      }
    }
    // c3[dy2][2 i + dx2]: mask tq at token row gr + 8 i, sub-pixel (dy2, dx2)
    if (tq < a.Mh)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int t = r0 + gr + 8 * i;
        if (t >= T) continue;
        const int ty = t / G, px = 4 * (t - ty * G) + 2 * dx1;  // (even: 4-byte aligned)
        H* dst = outm + int64_t(4 * ty + 2 * dy1) * L + px;
#pragma unroll
        for (int dy2 = 0; dy2 < 2; ++dy2)
          *reinterpret_cast<uint32_t*>(dst + dy2 * L) = pack16<H>(c3[dy2][2 * i], c3[dy2][2 * i + 1]);
      }
  }
  cp_async_wait<0>();  // (only empty groups can be left)
}

template <class H>
void launch_upscale(const CudaContext& ctx, const Tensor& keys, const Tensor& w1t, const Tensor& b1,
                    const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w2t, const Tensor& b2,
                    const Tensor& hyper, const Tensor& out) {
  const int64_t B = keys.dim(0), G = keys.dim(1);
  const UpscaleArgs<H> a{keys.ptr<H>(), w1t.ptr<H>(), b1.ptr<H>(), ln_w.ptr<H>(), ln_b.ptr<H>(),
                         w2t.ptr<H>(),  b2.ptr<H>(),  hyper.ptr<H>(), out.ptr<H>(), (int)G, (int)hyper.dim(1), eps};
  CUDA_CHECK(cudaFuncSetAttribute(upscale_masks_kernel<H>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmemBytes));
  const int64_t ntiles = (G * G + kRows - 1) / kRows;
  // About two waves of blocks (two resident an SM); each loads its sub-pixel's weights once for
  // tiles_per_block tiles.
  const int64_t waves = int64_t(ctx.sm_count) * 2 * 2;
  const int64_t per = std::max<int64_t>(1, std::min<int64_t>(ntiles, (ntiles * 4 * B + waves - 1) / waves));
  const dim3 grid(4, (unsigned)((ntiles + per - 1) / per), (unsigned)B);
  upscale_masks_kernel<H><<<grid, kThreads, kSmemBytes, ctx.stream>>>(a, (int)per);
  CUDA_LAUNCH_CHECK();
}

bool fits(const Tensor& keys, const Tensor& w1, const Tensor& w2, const Tensor& hyper) {
  return keys.dim(3) == kD && w1.dim(1) == kC1 && w2.dim(1) == kC2 && hyper.dim(1) <= kM;
}

}  // namespace

Tensor CudaOps::upscale_masks(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w,
                              const Tensor& ln_b, float eps, const Tensor& w2, const Tensor& b2, const Tensor& hyper) {
  for (const Tensor* t : {&keys, &w1, &b1, &ln_w, &ln_b, &w2, &b2, &hyper}) expect(*t, "upscale_masks", "input");
  check_upscale(keys, w1, b1, ln_w, ln_b, w2, b2, hyper);
  // (the fused kernel's 112 KB of shared memory a block: not on Ampere and Ada workstation GPUs)
  if (dt_ == DType::F32 || !fits(keys, w1, w2, hyper) || kSmemBytes > ctx_->max_smem_per_block)
    return Ops::upscale_masks(keys, w1, b1, ln_w, ln_b, eps, w2, b2, hyper);
  const int64_t B = keys.dim(0), G = keys.dim(1);
  if (B > 65535 || G > 4096) return Ops::upscale_masks(keys, w1, b1, ln_w, ln_b, eps, w2, b2, hyper);
  Tensor out = empty({B, hyper.dim(1), 4 * G, 4 * G});
  if (out.numel() == 0) return out;
  Tensor w1t = empty({4 * kC1, kD}), w2t = empty({4 * kC2, kC1});
  auto go = [&](auto tag) {
    using H = decltype(tag);
    transpose_convt_weight<H><<<cuda::blocks_for(w1.numel(), 256), 256, 0, ctx_->stream>>>(w1.ptr<H>(), w1t.ptr<H>(), kD, kC1);
    transpose_convt_weight<H><<<cuda::blocks_for(w2.numel(), 256), 256, 0, ctx_->stream>>>(w2.ptr<H>(), w2t.ptr<H>(), kC1, kC2);
    CUDA_LAUNCH_CHECK();
    launch_upscale<H>(*ctx_, keys, w1t, b1, ln_w, ln_b, eps, w2t, b2, hyper, out);
  };
  if (dt_ == DType::BF16)
    go(__nv_bfloat16{});
  else
    go(__half{});
  return out;
}

}  // namespace samfast
