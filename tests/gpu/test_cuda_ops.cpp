// Every op of the CUDA backend against its CPU twin, in fp32 (max abs error <= 1e-5 x max abs value)
// and bf16 (relative L2 error <= 1e-2; the CPU reference then runs on the bf16-rounded inputs, so
// that the error measured is the kernels' own). Each test prints its measured errors.
// Without a CUDA GPU every test is skipped.
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <tuple>

#include "backend/cpu/cpu_ops.h"
#include "backend/cuda/cuda_ops.h"
#include "core/rng.h"
#include "gpu_available.h"
#include "samfast/error.h"

namespace samfast {
namespace {

// B copies of a batch of 1 (x itself when it already has B): the CPU reference of an op that
// shares a batch of 1 across the other inputs' batch.
Tensor repeat_batch(const Tensor& x, int64_t B) {
  if (x.dim(0) == B) return x;
  Tensor y = Tensor::empty({B, x.dim(1), x.dim(2)});
  for (int64_t b = 0; b < B; ++b) std::copy(x.data, x.data + x.numel(), y.data + b * x.numel());
  return y;
}

float bf16_round(float x) {  // round to nearest even, as __float2bfloat16_rn
  uint32_t u = std::bit_cast<uint32_t>(x);
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::bit_cast<float>(u & 0xffff0000u);
}

class CudaOpsTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU: GPU tests skipped";
    gpu = std::make_unique<CudaOps>(0, precision_of(GetParam()));
  }
  // A 16-bit precision (bf16 or fp16): inputs rounded to it, bf16's tolerances (fp16 has more
  // mantissa, less range; the random inputs here stay far inside it).
  bool bf16() const { return GetParam() != DType::F32; }
  const char* name() const { return GetParam() == DType::F32 ? "fp32" : GetParam() == DType::BF16 ? "bf16" : "fp16"; }
  float round(float x) const {
    if (GetParam() == DType::BF16) return bf16_round(x);
    if (GetParam() == DType::F16) return (float)(_Float16)x;  // round to nearest even, as __float2half_rn
    return x;
  }

  // Random host tensor in [lo, hi), already rounded to the backend's precision.
  Tensor rand(Shape s, float lo = -1.f, float hi = 1.f) {
    Tensor t = Tensor::empty(std::move(s));
    for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = round(rng.uniform(lo, hi));
    return t;
  }
  Tensor up(const Tensor& host) { return gpu->upload(host); }

  // Compares the downloaded GPU result with the CPU reference and prints the errors.
  void expect_close(const Tensor& got_device, const Tensor& ref, const std::string& what, double f32_tol = 1e-5,
                    double bf16_tol = 1e-2) {
    ASSERT_EQ(got_device.device, Device::CUDA) << what;
    ASSERT_EQ(got_device.dtype, GetParam()) << what;
    const Tensor got = gpu->download(got_device);
    ASSERT_EQ(got.shape, ref.shape) << what;
    double max_err = 0, max_ref = 0, err2 = 0, ref2 = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) {
      const double d = (double)got.data[i] - ref.data[i];
      max_err = std::max(max_err, std::abs(d));
      max_ref = std::max(max_ref, (double)std::abs(ref.data[i]));
      err2 += d * d;
      ref2 += (double)ref.data[i] * ref.data[i];
    }
    const double max_rel = max_err / std::max(max_ref, 1e-30), rel_l2 = std::sqrt(err2 / std::max(ref2, 1e-30));
    std::printf("[ %-4s ] %-48s max_abs_err/max_abs = %.3e  rel_l2 = %.3e\n", name(), what.c_str(),
                max_rel, rel_l2);
    EXPECT_FALSE(std::isnan(err2)) << what;
    if (bf16())
      EXPECT_LE(rel_l2, bf16_tol) << what;
    else
      EXPECT_LE(max_rel, f32_tol) << what;
  }

  Rng rng{1234};
  CpuOps cpu;
  std::unique_ptr<CudaOps> gpu;
};

TEST_P(CudaOpsTest, RoundTrip) {
  Tensor x = rand({3, 5, 7});
  Tensor y = gpu->download(up(x));
  ASSERT_EQ(y.shape, x.shape);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(y.data[i], x.data[i]) << i;  // x is representable in bf16
  if (!bf16()) {
    Tensor z = Tensor::from({3}, {1e-30f, 3.14159265f, -1e30f});
    Tensor w = gpu->download(up(z));
    for (int i = 0; i < 3; ++i) ASSERT_EQ(w.data[i], z.data[i]);
  }
  std::printf("[ %-4s ] round trip exact\n", name());
}

TEST_P(CudaOpsTest, Linear) {
  for (int64_t out : {80, 768}) {
    Tensor x = rand({2, 37, 96}), w = rand({out, 96}, -0.1f, 0.1f), b = rand({out}), r = rand({2, 37, out});
    Tensor xg = up(x), wg = up(w), bg = up(b), rg = up(r);
    const std::string o = " out " + std::to_string(out);
    expect_close(gpu->linear(xg, wg, nullptr, Act::None, nullptr), cpu.linear(x, w, nullptr, Act::None, nullptr), "linear no bias" + o);
    expect_close(gpu->linear(xg, wg, &bg, Act::None, nullptr), cpu.linear(x, w, &b, Act::None, nullptr), "linear bias" + o);
    expect_close(gpu->linear(xg, wg, &bg, Act::GELU, nullptr), cpu.linear(x, w, &b, Act::GELU, nullptr), "linear bias gelu" + o);
    expect_close(gpu->linear(xg, wg, &bg, Act::ReLU, nullptr), cpu.linear(x, w, &b, Act::ReLU, nullptr), "linear bias relu" + o);
    expect_close(gpu->linear(xg, wg, nullptr, Act::ReLU, nullptr), cpu.linear(x, w, nullptr, Act::ReLU, nullptr), "linear relu" + o);
    expect_close(gpu->linear(xg, wg, &bg, Act::None, &rg), cpu.linear(x, w, &b, Act::None, &r), "linear bias residual" + o);
    expect_close(gpu->linear(xg, wg, &bg, Act::GELU, &rg), cpu.linear(x, w, &b, Act::GELU, &r), "linear bias gelu residual" + o);
  }
  // encoder-sized: 64x64 tokens, 256 -> 768
  Tensor x = rand({1, 64, 64, 256}), w = rand({768, 256}, -0.06f, 0.06f), b = rand({768});
  Tensor bg = up(b);
  expect_close(gpu->linear(up(x), up(w), &bg, Act::None, nullptr), cpu.linear(x, w, &b, Act::None, nullptr), "linear 4096x256->768");
  // Products of over 1 GFLOP with partial tiles in both dimensions: in bf16 on Hopper, CUTLASS's
  // kernels (gemm_bf16_cutlass.cu) for bias, bias + GELU and bias + residual (K <= N)
  Tensor x3 = rand({1, 4100, 256}), w3 = rand({776, 256}, -0.06f, 0.06f), b3 = rand({776}), r3 = rand({1, 4100, 776});
  Tensor x3g = up(x3), w3g = up(w3), b3g = up(b3), r3g = up(r3);
  expect_close(gpu->linear(x3g, w3g, &b3g, Act::None, nullptr), cpu.linear(x3, w3, &b3, Act::None, nullptr), "linear 4100x256->776 bias");
  expect_close(gpu->linear(x3g, w3g, &b3g, Act::GELU, nullptr), cpu.linear(x3, w3, &b3, Act::GELU, nullptr), "linear 4100x256->776 bias gelu");
  expect_close(gpu->linear(x3g, w3g, &b3g, Act::None, &r3g), cpu.linear(x3, w3, &b3, Act::None, &r3), "linear 4100x256->776 bias residual");
  // odd sizes (decoder heads: 4 outputs)
  Tensor x2 = rand({3, 1, 256}), w2 = rand({4, 256}, -0.06f, 0.06f), b2 = rand({4});
  Tensor b2g = up(b2);
  expect_close(gpu->linear(up(x2), up(w2), &b2g, Act::None, nullptr), cpu.linear(x2, w2, &b2, Act::None, nullptr), "linear 3x256->4");
}

TEST_P(CudaOpsTest, LayerNorm) {
  Tensor x = rand({3, 50, 768}, -2.f, 3.f), w = rand({768}, 0.8f, 1.2f), b = rand({768}, -0.1f, 0.1f);
  expect_close(gpu->layer_norm(up(x), up(w), up(b), 1e-6f, Act::None), cpu.layer_norm(x, w, b, 1e-6f, Act::None), "layer_norm C=768");
  Tensor x2 = rand({2, 16, 16, 32}), w2 = rand({32}, 0.8f, 1.2f), b2 = rand({32}, -0.1f, 0.1f);
  expect_close(gpu->layer_norm(up(x2), up(w2), up(b2), 1e-6f, Act::GELU), cpu.layer_norm(x2, w2, b2, 1e-6f, Act::GELU), "layer_norm C=32 gelu");
  Tensor x3 = rand({1, 7, 1280}), w3 = rand({1280}, 0.8f, 1.2f), b3 = rand({1280}, -0.1f, 0.1f);
  expect_close(gpu->layer_norm(up(x3), up(w3), up(b3), 1e-5f, Act::None), cpu.layer_norm(x3, w3, b3, 1e-5f, Act::None), "layer_norm C=1280");
  // Narrow rows share a warp (64 channels: 8 lanes a row, 37 rows leave a group partly empty); a row
  // that is no whole number of 16-byte chunks (C=20 in bf16) and a very wide one take the scalar kernel.
  for (int C : {64, 256, 20, 4000}) {
    Tensor xc = rand({37, C}, -2.f, 3.f), wc = rand({C}, 0.8f, 1.2f), bc = rand({C}, -0.1f, 0.1f);
    expect_close(gpu->layer_norm(up(xc), up(wc), up(bc), 1e-6f, Act::GELU), cpu.layer_norm(xc, wc, bc, 1e-6f, Act::GELU),
                 "layer_norm C=" + std::to_string(C) + " gelu");
  }
}

// The LayerNorm with its output + a positional term beside it (the decoder's norm1 and norm3): bit for
// bit layer_norm then add, on the vectorised kernel (256 channels, pe of x's shape or one row of
// it) and on the fallback (C=20: no whole 16-byte chunks in 16 bits).
TEST_P(CudaOpsTest, LayerNormPe) {
  for (const auto& [C, pe_rows] : {std::pair{256, 7}, std::pair{256, 1}, std::pair{20, 7}}) {
    Tensor x = rand({3, 7, C}, -2.f, 3.f), w = rand({C}, 0.8f, 1.2f), b = rand({C}, -0.1f, 0.1f);
    Tensor pe = pe_rows == 1 ? rand({C}) : rand({3, 7, C});
    const auto [y, y_pe] = gpu->layer_norm_pe(up(x), up(w), up(b), 1e-5f, up(pe));
    const Tensor ln = gpu->layer_norm(up(x), up(w), up(b), 1e-5f, Act::None);
    const Tensor want = gpu->download(ln), want_pe = gpu->download(gpu->add(ln, up(pe)));
    const Tensor got = gpu->download(y), got_pe = gpu->download(y_pe);
    const std::string what = "layer_norm_pe C=" + std::to_string(C) + " pe rows " + std::to_string(pe_rows);
    ASSERT_EQ(got.shape, want.shape) << what;
    ASSERT_EQ(got_pe.shape, want_pe.shape) << what;
    EXPECT_EQ(std::memcmp(got.data, want.data, sizeof(float) * want.numel()), 0) << what;
    EXPECT_EQ(std::memcmp(got_pe.data, want_pe.data, sizeof(float) * want_pe.numel()), 0) << what << " + pe";
  }
}

// The encoder's input from image bytes: every value the CPU's fp32 one rounded once to the backend's
// precision (the same subtraction and IEEE division), zeros outside each image's extent; from host
// bytes and from bytes already on the GPU.
TEST_P(CudaOpsTest, NormalizeRgb) {
  const int B = 2, S = 40;
  Tensor rgb = Tensor::empty({B, S, S, 3}, DType::U8), extent = Tensor::empty({B, 2, S}, DType::U8);
  for (int64_t i = 0; i < rgb.numel(); ++i) rgb.ptr<uint8_t>()[i] = uint8_t(rng.uniform(0.f, 256.f));
  const int h[B] = {40, 17}, w[B] = {23, 40};
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < S; ++i) extent.ptr<uint8_t>()[(b * 2) * S + i] = i < h[b], extent.ptr<uint8_t>()[(b * 2 + 1) * S + i] = i < w[b];
  const std::array<float, 3> mean{123.675f, 116.28f, 103.53f}, stdev{58.395f, 57.12f, 57.375f};
  const Tensor ref = cpu.normalize_rgb(rgb, extent, mean, stdev);
  for (const bool on_gpu : {false, true}) {
    const Tensor got = gpu->download(on_gpu ? gpu->normalize_rgb(gpu->upload(rgb), gpu->upload(extent), mean, stdev)
                                            : gpu->normalize_rgb(rgb, extent, mean, stdev));
    ASSERT_EQ(got.shape, ref.shape);
    int64_t differ = 0, zeros = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) differ += got.data[i] != round(ref.data[i]), zeros += ref.data[i] == 0.f;
    EXPECT_EQ(differ, 0) << (on_gpu ? "bytes on the GPU" : "host bytes");
    EXPECT_EQ(zeros, 3 * (S * S - h[0] * w[0] + S * S - h[1] * w[1])) << "the padding";  // (no pixel value is the mean)
  }
}

// The patch embedding from channel-first pixels (the gathered patches, p 16 and 8) and its
// fallback (p 6: no whole 16-byte runs), against the CPU's transpose + conv2d; with the position
// embedding (the GEMM's C operand, shared by the batch, on the gathered path) against conv2d + add.
TEST_P(CudaOpsTest, PatchEmbed) {
  for (const int p : {16, 8, 6}) {
    Tensor x = rand({3, 3, 4 * p, 3 * p}), w = rand({32, 3, p, p}, -0.1f, 0.1f), b = rand({32});
    Tensor pos = rand({1, 4, 3, 32});
    const Tensor bias = up(b), pos_d = up(pos);
    const std::string name = "patch_embed p " + std::to_string(p);
    expect_close(gpu->patch_embed(up(x), up(w), &bias, nullptr), cpu.patch_embed(x, w, &b, nullptr), name);
    expect_close(gpu->patch_embed(up(x), up(w), &bias, &pos_d), cpu.add(cpu.patch_embed(x, w, &b, nullptr), pos),
                 name + " + position embedding");
  }
}

TEST_P(CudaOpsTest, Conv2d) {
  struct Case { const char* name; Shape x, w; bool bias; int stride, pad; };
  const Case cases[] = {
      {"conv2d patch embed 16x16/16", {1, 64, 64, 3}, {32, 3, 16, 16}, true, 16, 0},
      {"conv2d 3x3 pad 1", {1, 16, 16, 64}, {32, 64, 3, 3}, false, 1, 1},
      {"conv2d 2x2 stride 2, Cin 1", {2, 32, 32, 1}, {4, 1, 2, 2}, true, 2, 0},
      {"conv2d 2x2 stride 2, Cin 4", {2, 16, 16, 4}, {16, 4, 2, 2}, true, 2, 0},
      {"conv2d 1x1", {1, 16, 16, 64}, {32, 64, 1, 1}, false, 1, 0},
      // odd sizes, stride and padding: whole 16-byte channel runs (Cin 8) and gathered ones (Cin 6)
      {"conv2d 3x3 stride 2 pad 1, Cin 8, 15x13", {2, 15, 13, 8}, {16, 8, 3, 3}, true, 2, 1},
      {"conv2d 4x4 stride 2 pad 1, Cin 6, 15x13", {2, 15, 13, 6}, {16, 6, 4, 4}, true, 2, 1},
  };
  for (const Case& c : cases) {
    Tensor x = rand(c.x), w = rand(c.w, -0.1f, 0.1f), b = rand({c.w[0]}), bg = up(b);
    expect_close(gpu->conv2d(up(x), up(w), c.bias ? &bg : nullptr, c.stride, c.pad),
                 cpu.conv2d(x, w, c.bias ? &b : nullptr, c.stride, c.pad), c.name);
  }
}

TEST_P(CudaOpsTest, ConvTranspose2x2) {
  Tensor x = rand({2, 8, 8, 64}), w = rand({64, 16, 2, 2}, -0.1f, 0.1f), b = rand({16});
  expect_close(gpu->conv_transpose2x2(up(x), up(w), up(b), Act::None), cpu.conv_transpose2x2(x, w, b, Act::None), "conv_transpose2x2");
  expect_close(gpu->conv_transpose2x2(up(x), up(w), up(b), Act::GELU), cpu.conv_transpose2x2(x, w, b, Act::GELU), "conv_transpose2x2 gelu");
  // Channel counts off the 16-byte vector width take the strided path.
  Tensor w6 = rand({64, 6, 2, 2}, -0.1f, 0.1f), b6 = rand({6});
  expect_close(gpu->conv_transpose2x2(up(x), up(w6), up(b6), Act::GELU), cpu.conv_transpose2x2(x, w6, b6, Act::GELU),
               "conv_transpose2x2 Cout 6 gelu");
}

TEST_P(CudaOpsTest, AddBroadcast) {
  Tensor a = rand({2, 8, 8, 32}), same = rand({2, 8, 8, 32}), img = rand({1, 8, 8, 32}), vec = rand({1, 1, 1, 32});
  expect_close(gpu->add(up(a), up(same)), cpu.add(a, same), "add same shape");
  expect_close(gpu->add(up(a), up(img)), cpu.add(a, img), "add (1,H,W,C) broadcast");
  expect_close(gpu->add(up(a), up(vec)), cpu.add(a, vec), "add (C) broadcast");
  Tensor odd = rand({2, 5, 7, 3}), odd_vec = rand({3});  // not a multiple of 16 bytes: the scalar kernel
  expect_close(gpu->add(up(odd), up(odd_vec)), cpu.add(odd, odd_vec), "add odd broadcast");
}

TEST_P(CudaOpsTest, Layouts) {
  Tensor x = rand({2, 3, 40, 33});
  expect_close(gpu->nchw_to_nhwc(up(x)), cpu.nchw_to_nhwc(x), "nchw_to_nhwc", 0.0, 0.0);  // few channels
  Tensor x5 = rand({2, 5, 9, 11});
  expect_close(gpu->nchw_to_nhwc(up(x5)), cpu.nchw_to_nhwc(x5), "nchw_to_nhwc 5 channels", 0.0, 0.0);  // 32x32 tiles
  Tensor y = rand({2, 40, 33, 70});
  expect_close(gpu->nhwc_to_nchw(up(y)), cpu.nhwc_to_nchw(y), "nhwc_to_nchw", 0.0, 0.0);
}

TEST_P(CudaOpsTest, SliceConcatExpand) {
  Tensor x = rand({2, 7, 5});
  expect_close(gpu->slice(up(x), 1, 3), cpu.slice(x, 1, 3), "slice", 0.0, 0.0);
  Tensor iou = rand({3, 4});
  expect_close(gpu->slice(up(iou), 1, 3), cpu.slice(iou, 1, 3), "slice 2-d", 0.0, 0.0);
  Tensor a = rand({2, 1, 32}), b = rand({2, 3, 32});
  expect_close(gpu->concat({up(a), up(b), up(a)}), cpu.concat({a, b, a}), "concat", 0.0, 0.0);
  Tensor e = rand({1, 4, 4, 8});
  expect_close(gpu->expand_batch(up(e), 3), cpu.expand_batch(e, 3), "expand_batch", 0.0, 0.0);
}

TEST_P(CudaOpsTest, BmmNt) {
  Tensor a = rand({2, 4, 32}), b = rand({2, 1000, 32});
  expect_close(gpu->bmm_nt(up(a), up(b)), cpu.bmm_nt(a, b), "bmm_nt (2,4,32)x(2,1000,32)");
}

TEST_P(CudaOpsTest, RelPosAttention) {
  struct Case { int B, H, W, heads, hd, window; };
  const Case cases[] = {
      {1, 64, 64, 2, 64, 14},  // padded to 70
      {2, 20, 27, 2, 32, 14},  // odd grid, padded to 28x28
      {1, 64, 64, 1, 80, 14},
      {1, 14, 14, 3, 32, 14},  // exactly one window
      {1, 16, 16, 2, 80, 0},   // global
      {1, 20, 27, 1, 32, 0},   // global, non-square
      {1, 64, 64, 1, 64, 0},   // global 4096 tokens
      {1, 64, 64, 1, 80, 0},   // global 4096 tokens, vit_h's head dim
      {1, 48, 64, 1, 64, 0},   // global, 64 wide (the Hopper kernel's one-key-row steps), 48 rows
      {2, 35, 64, 2, 32, 0},   // the same with an odd row count: the last block has 64 queries
      {2, 13, 11, 2, 64, 6},   // window 6: 8-slot key rows, padded grid
      {1, 9, 20, 2, 64, 0},    // global, 32-slot key rows: 9 rows end in a half step (Hopper kernel)
      {1, 10, 11, 2, 80, 3},   // window 3: 24 slots, a single half step
      // Enough window tiles for every block of the Hopper windowed kernel to take several in a row
      {3, 64, 64, 12, 64, 14},  // vit_b's windowed layers at batch 3
      {2, 64, 64, 16, 80, 14},  // vit_h's
      {4, 30, 30, 8, 32, 6},    // 8-slot key rows (window 6)
  };
  for (const Case& c : cases) {
    const int64_t C = (int64_t)c.heads * c.hd;
    const int64_t th = c.window ? c.window : c.H, tw = c.window ? c.window : c.W;
    Tensor qkv = rand({c.B, c.H, c.W, 3 * C}, -1.5f, 1.5f), bias = rand({3 * C}, -0.5f, 0.5f);
    Tensor rh = rand({2 * th - 1, c.hd}, -0.3f, 0.3f), rw = rand({2 * tw - 1, c.hd}, -0.3f, 0.3f);
    const std::string name = "rel_pos_attention " + std::to_string(c.H) + "x" + std::to_string(c.W) + " hd " +
                             std::to_string(c.hd) + (c.window ? " window " + std::to_string(c.window) : " global");
    expect_close(gpu->rel_pos_attention(up(qkv), up(bias), up(rh), up(rw), c.heads, c.window),
                 cpu.rel_pos_attention(qkv, bias, rh, rw, c.heads, c.window), name);
  }
}

TEST_P(CudaOpsTest, Attention) {
  struct Case { int B, Nq, Nk, D, heads; };
  // {3, 7, 4096, 128, 8} and {2, 8, 301, 128, 8}: the query-group kernel (head dim 16, <= 8 queries).
  const Case cases[] = {{2, 7, 4096, 256, 8}, {1, 4096, 7, 128, 8}, {2, 7, 7, 256, 8}, {1, 33, 100, 256, 4},
                        {3, 7, 4096, 128, 8},  {2, 8, 301, 128, 8},  {2, 3, 40, 128, 8}};
  for (const Case& c : cases) {
    Tensor q = rand({c.B, c.Nq, c.D}, -2.f, 2.f), k = rand({c.B, c.Nk, c.D}, -2.f, 2.f), v = rand({c.B, c.Nk, c.D});
    const std::string name = "attention Nq " + std::to_string(c.Nq) + " Nk " + std::to_string(c.Nk) + " hd " +
                             std::to_string(c.D / c.heads);
    expect_close(gpu->attention(up(q), up(k), up(v), c.heads), cpu.attention(q, k, v, c.heads), name);
  }
}

// A batch of 1 in q (or in k and v) is shared by the other's batch: the result must equal attention
// on the explicitly repeated tensor (CPU, no broadcast involved).
TEST_P(CudaOpsTest, AttentionBroadcast) {
  const int64_t B = 3;
  Tensor q1 = rand({1, 300, 128}, -2.f, 2.f), k = rand({B, 7, 128}, -2.f, 2.f), v = rand({B, 7, 128});
  expect_close(gpu->attention(up(q1), up(k), up(v), 8), cpu.attention(repeat_batch(q1, B), k, v, 8),
               "attention shared q");
  Tensor q = rand({B, 7, 256}, -2.f, 2.f), k1 = rand({1, 500, 256}, -2.f, 2.f), v1 = rand({1, 500, 256});
  expect_close(gpu->attention(up(q), up(k1), up(v1), 8), cpu.attention(q, repeat_batch(k1, B), repeat_batch(v1, B), 8),
               "attention shared k, v");
  Tensor q16 = rand({B, 7, 128}, -2.f, 2.f), k16 = rand({1, 4096, 128}, -2.f, 2.f), v16 = rand({1, 4096, 128});
  expect_close(gpu->attention(up(q16), up(k16), up(v16), 8),
               cpu.attention(q16, repeat_batch(k16, B), repeat_batch(v16, B), 8), "attention shared k, v (query group)");
}

// The decoder's token self-attention with its projections: the fused kernel (fp16 / bf16, D 256,
// head width 32, N <= 32: one and two m-tiles, v's input the same tensor as q's and k's or not) and
// the composed ops otherwise (fp32, more tokens, other widths), against the CPU's composition.
TEST_P(CudaOpsTest, TokenSelfAttention) {
  struct Case { int B, N, D, heads; bool v_is_x; };
  const Case cases[] = {{16, 7, 256, 8, true}, {16, 7, 256, 8, false}, {1, 1, 256, 8, false}, {3, 32, 256, 8, false},
                        {2, 17, 256, 8, true}, {2, 33, 256, 8, false}, {2, 7, 128, 4, false}};
  for (const Case& c : cases) {
    const int C = c.D;
    Tensor x = rand({c.B, c.N, c.D}), xv = c.v_is_x ? x : rand({c.B, c.N, c.D});
    Tensor wq = rand({C, c.D}, -0.1f, 0.1f), wk = rand({C, c.D}, -0.1f, 0.1f), wv = rand({C, c.D}, -0.1f, 0.1f);
    Tensor bq = rand({C}, -0.5f, 0.5f), bk = rand({C}, -0.5f, 0.5f), bv = rand({C}, -0.5f, 0.5f);
    const std::string name = "token_self_attention B " + std::to_string(c.B) + " N " + std::to_string(c.N) + " D " +
                             std::to_string(c.D) + (c.v_is_x ? " v from x" : "");
    const Tensor xd = up(x), xvd = c.v_is_x ? xd : up(xv);
    expect_close(gpu->token_self_attention(xd, xvd, up(wq), up(bq), up(wk), up(bk), up(wv), up(bv), c.heads),
                 cpu.token_self_attention(x, xv, wq, bq, wk, bk, wv, bv, c.heads), name);
  }
}

// One head of width 256 (the decoder's folded token-to-image attention): cuBLASLt GEMMs around a
// softmax, keys and values shared by the batch or not.
TEST_P(CudaOpsTest, AttentionWideHead) {
  Tensor q = rand({2, 56, 256}, -0.5f, 0.5f), k = rand({2, 4096, 256}, -0.5f, 0.5f), v = rand({2, 4096, 256});
  expect_close(gpu->attention(up(q), up(k), up(v), 1), cpu.attention(q, k, v, 1), "attention 1 head hd 256");
  Tensor k1 = rand({1, 1000, 256}, -0.5f, 0.5f), v1 = rand({1, 1000, 256});
  expect_close(gpu->attention(up(q), up(k1), up(v1), 1), cpu.attention(q, repeat_batch(k1, 2), repeat_batch(v1, 2), 1),
               "attention 1 head shared k, v");
}

// The folded image-to-token attention + residual + LayerNorm: the tensor-core kernel (8 heads,
// D 256, N <= 8 and N <= 16 key slots per head, partial tiles, several tiles a block, shared x /
// residual) and the warp kernel (more prompt tokens, other widths), against the CPU op on explicitly
// repeated inputs.
TEST_P(CudaOpsTest, ImageToTokenAttention) {
  struct Case { int B, T, N, D, heads; bool x_shared, res_shared; };
  // (6 x 4000: more tiles than SMs, so that a block runs several tiles, the last one partial)
  const Case cases[] = {{4, 4096, 7, 256, 8, true, true},   {6, 4000, 7, 256, 8, false, true},
                        {3, 1000, 7, 256, 8, false, false},
                        {2, 300, 12, 256, 8, false, true},  {2, 100, 20, 256, 8, true, false},
                        {2, 200, 5, 64, 4, false, false}};
  for (const Case& c : cases) {
    Tensor x = rand({c.x_shared ? 1 : c.B, c.T, c.D}), res = rand({c.res_shared ? 1 : c.B, c.T, c.D}, -2.f, 2.f);
    Tensor k = rand({c.B, c.N, c.heads * c.D}, -0.2f, 0.2f), v = rand({c.B, c.N, c.heads * c.D});
    Tensor kb = rand({c.B, c.N, c.heads}, -2.f, 2.f), bias = rand({c.D}), lw = rand({c.D}, 0.5f, 1.5f), lb = rand({c.D});
    const std::string name = "image_to_token B " + std::to_string(c.B) + " T " + std::to_string(c.T) + " N " +
                             std::to_string(c.N) + " D " + std::to_string(c.D) + (c.x_shared ? " x shared" : "") +
                             (c.res_shared ? " res shared" : "");
    const Tensor ref =
        cpu.image_to_token_attention(repeat_batch(x, c.B), k, kb, v, bias, repeat_batch(res, c.B), lw, lb, 1e-5f, c.heads);
    expect_close(gpu->image_to_token_attention(up(x), up(k), up(kb), up(v), up(bias), up(res), up(lw), up(lb), 1e-5f,
                                               c.heads),
                 ref, name);
    // With the output + PE beside it (one kernel on the tensor-core path, an add otherwise).
    Tensor pe = rand({1, c.T, c.D}, -1.f, 1.f);
    const auto [y, y_pe] = gpu->image_to_token_attention_pe(up(x), up(k), up(kb), up(v), up(bias), up(res), up(lw),
                                                           up(lb), 1e-5f, c.heads, up(pe));
    expect_close(y, ref, name + " (with PE)");
    expect_close(y_pe, cpu.add(gpu->download(y), pe), name + " + PE");
  }
}

// The fused upscaling + hypernetwork product (bf16 and fp16; fp32 composes the unfused ops) against the
// CPU's composition, on a full 64x64 grid and on a 20x20 grid that ends in a partial tile; with 3
// and 1 of the 4 masks (as the decoder asks: multimask or not), in 16 bits bit for bit those planes
// of the 4.
TEST_P(CudaOpsTest, UpscaleMasks) {
  for (const int G : {64, 20}) {
    const int B = 3, L = 4 * G;
    Tensor keys = rand({B, G, G, 256}, -2.f, 2.f), w1 = rand({256, 64, 2, 2}, -0.1f, 0.1f), b1 = rand({64}, -0.1f, 0.1f);
    Tensor lw = rand({64}, 0.5f, 1.5f), lb = rand({64}, -0.5f, 0.5f), w2 = rand({64, 32, 2, 2}, -0.2f, 0.2f);
    Tensor b2 = rand({32}, -0.1f, 0.1f), hyper = rand({B, 4, 32});
    const Tensor all = gpu->upscale_masks(up(keys), up(w1), up(b1), up(lw), up(lb), 1e-6f, up(w2), up(b2), up(hyper));
    expect_close(all, cpu.upscale_masks(keys, w1, b1, lw, lb, 1e-6f, w2, b2, hyper), "upscale_masks G " + std::to_string(G));
    const Tensor all_host = gpu->download(all);
    for (const auto& [first, count] : {std::pair{1, 3}, std::pair{0, 1}}) {
      Tensor part = Tensor::empty({B, count, 32});
      for (int b = 0; b < B; ++b)
        std::copy(hyper.data + (b * 4 + first) * 32, hyper.data + (b * 4 + first + count) * 32, part.data + b * count * 32);
      const Tensor got_device = gpu->upscale_masks(up(keys), up(w1), up(b1), up(lw), up(lb), 1e-6f, up(w2), up(b2), up(part));
      const std::string what = "upscale_masks G " + std::to_string(G) + ", masks " + std::to_string(first) + ".." +
                               std::to_string(first + count - 1);
      expect_close(got_device, cpu.upscale_masks(keys, w1, b1, lw, lb, 1e-6f, w2, b2, part), what);
      if (!bf16()) continue;  // (fp32 composes the unfused ops, whose GEMM may sum in another order)
      const Tensor got = gpu->download(got_device);
      for (int b = 0; b < B; ++b)
        EXPECT_EQ(std::memcmp(got.data + b * count * L * L, all_host.data + (b * 4 + first) * L * L,
                              sizeof(float) * count * L * L), 0) << what << ", prompt " << b;
    }
  }
}

TEST_P(CudaOpsTest, PostprocessMasks) {
  // 6 planes, and 50 (a kernel block takes 48 planes: a full block and a partial one); an original of
  // the input's size (the second resize is the identity, taken as a shortcut), also with SAM's 256x256
  // low-res masks (S = 4 L: a block stages its tiles' low-res window); originals larger than the input
  // (several pixels a staged cell, 8 planes a group) and much smaller (too many cells: pixel by pixel)
  for (const auto [B, C, orig_h, L] :
       {std::tuple<int64_t, int64_t, int, int64_t>{2, 3, 600, 64}, {10, 5, 600, 64}, {2, 3, 1024, 64},
        {2, 3, 1024, 256}, {2, 3, 2000, 64}, {10, 5, 1500, 256}, {2, 3, 40, 64}}) {
    Tensor low = rand({B, C, L, L}, -4.f, 4.f);
    const std::pair<int, int> input{1024, 768}, original{orig_h, orig_h * 3 / 4};
    const std::string planes = " (" + std::to_string(B * C) + " planes of " + std::to_string(L) + "^2, to " +
                               std::to_string(orig_h) + " rows)";
    Tensor got = gpu->postprocess_masks(up(low), 1024, input, original, false);
    ASSERT_EQ(got.dtype, DType::F32);
    Tensor ref = cpu.postprocess_masks(low, 1024, input, original, false);
    const Tensor host = gpu->download(got);
    double max_err = 0, max_ref = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) {
      max_err = std::max(max_err, (double)std::abs(host.data[i] - ref.data[i]));
      max_ref = std::max(max_ref, (double)std::abs(ref.data[i]));
    }
    std::printf("[ %-4s ] %-48s max_abs_err/max_abs = %.3e\n", name(),
                ("postprocess_masks logits" + planes).c_str(), max_err / max_ref);
    EXPECT_LE(max_err / max_ref, 1e-5) << planes;  // same (rounded) inputs, fp32 arithmetic on both sides
    Tensor bin = gpu->download(gpu->postprocess_masks(up(low), 1024, input, original, true));
    Tensor bref = cpu.postprocess_masks(low, 1024, input, original, true);
    ASSERT_EQ(bin.dtype, DType::U8);
    ASSERT_EQ(bref.dtype, DType::U8);
    int64_t differ = 0, ones = 0;
    for (int64_t i = 0; i < bref.numel(); ++i) {
      const uint8_t b = bin.ptr<uint8_t>()[i], r = bref.ptr<uint8_t>()[i];
      ASSERT_LE(b, 1);
      differ += b != r && std::abs(ref.data[i]) > 1e-4f;
      ones += r;
      ASSERT_EQ(r, ref.data[i] > 0.f);
    }
    EXPECT_GT(ones, 0);
    EXPECT_LT(ones, bref.numel());
    std::printf("[ %-4s ] %-48s pixels differing away from 0: %lld\n", name(),
                ("postprocess_masks binary" + planes).c_str(), (long long)differ);
    EXPECT_EQ(differ, 0) << planes;
  }
}

// Low-res planes for the mask measures: random logits, then an all-inside and an all-outside plane.
Tensor mask_planes(Tensor low) {
  const int64_t n = low.dim(0), plane = low.dim(1) * low.dim(2);
  for (int64_t i = 0; i < plane; ++i) low.data[(n - 2) * plane + i] = 5.f, low.data[(n - 1) * plane + i] = -5.f;
  return low;
}

TEST_P(CudaOpsTest, MaskStats) {
  const Tensor low = mask_planes(rand({6, 64, 64}, -3.f, 3.f));
  const std::pair<int, int> input{1024, 683}, size{534, 800};
  const Ops::MaskStats got = gpu->mask_stats(up(low), 1024, input, size, 0.f, 1.f, -1.f)();
  const Ops::MaskStats ref = cpu.mask_stats(low, 1024, input, size, 0.f, 1.f, -1.f)();
  int64_t worst = 0, box_off = 0;
  for (int64_t i = 0; i < 6; ++i) {
    worst = std::max<int64_t>({worst, std::abs(got.above_hi[i] - ref.above_hi[i]), std::abs(got.above_lo[i] - ref.above_lo[i])});
    for (int k = 0; k < 4; ++k) box_off = std::max<int64_t>(box_off, std::abs(got.box[i][k] - ref.box[i][k]));
  }
  std::printf("[ %-4s ] %-48s count diff %lld px, box diff %lld px\n", name(), "mask_stats",
              (long long)worst, (long long)box_off);
  EXPECT_LE(worst, 3);  // pixels within float rounding of a threshold may go either way
  EXPECT_LE(box_off, 1);
  EXPECT_EQ(got.above_lo[4], 534 * 800);
  EXPECT_EQ(got.box[4], (std::array<int, 4>{0, 0, 799, 533}));
  EXPECT_EQ(got.above_hi[5], 0);
  EXPECT_EQ(got.box[5], (std::array<int, 4>{0, 0, 0, 0}));
}

TEST_P(CudaOpsTest, MaskRles) {
  const Tensor low = mask_planes(rand({5, 64, 64}, -3.f, 3.f));
  struct Frame {
    std::pair<int, int> size, offset, frame;
  };
  // A crop inside the frame, a crop spanning the whole height (columns join), the whole frame.
  for (const Frame& f : {Frame{{300, 200}, {50, 70}, {500, 400}}, Frame{{400, 120}, {30, 0}, {400, 300}},
                         Frame{{333, 257}, {0, 0}, {333, 257}}}) {
    const std::pair<int, int> input{1024, int(1024.0 * f.size.second / f.size.first + 0.5)};
    const std::vector<Rle> got = gpu->mask_rles(up(low), 1024, input, f.size, 0.f, f.offset, f.frame);
    const std::vector<Rle> ref = cpu.mask_rles(low, 1024, input, f.size, 0.f, f.offset, f.frame);
    ASSERT_EQ(got.size(), 5u);
    int64_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const std::vector<uint8_t> a = rle_to_mask(got[i]), b = rle_to_mask(ref[i]);  // checks the counts' sum
      for (size_t p = 0; p < a.size(); ++p) differ += a[p] != b[p];
      if (i >= 3) EXPECT_EQ(got[i].counts, ref[i].counts);  // constant planes: exactly the same runs
    }
    std::printf("[ %-4s ] %-48s pixels differing: %lld\n", name(), "mask_rles", (long long)differ);
    EXPECT_LE(differ, 5);
  }
}

TEST_P(CudaOpsTest, Gather) {
  const Tensor x = rand({7, 3, 5});
  const std::vector<int64_t> sel = {6, 0, 1, 2, 4};
  const Tensor got = gpu->download(gpu->gather(up(x), sel));
  ASSERT_EQ(got.shape, (Shape{5, 3, 5}));
  for (size_t i = 0; i < sel.size(); ++i)
    for (int64_t j = 0; j < 15; ++j) EXPECT_EQ(got.data[i * 15 + j], x.data[sel[i] * 15 + j]);
  EXPECT_THROW(gpu->gather(up(x), {7}), Error);
}

TEST_P(CudaOpsTest, OutOfMemoryIsAClearError) {
  try {
    gpu->empty({int64_t(1) << 44});  // 64 TiB (fp32) or 32 TiB: more than any GPU has
    FAIL() << "no error for a 2^44-element tensor";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("out of GPU memory: could not allocate ", 0), 0u) << m;
    EXPECT_NE(m.find(std::to_string((int64_t(1) << 44) * (bf16() ? 2 : 4)) + " bytes"), std::string::npos) << m;
  }
  const Tensor x = rand({3, 5});  // the backend still works
  expect_close(gpu->add(up(x), up(x)), cpu.add(x, x), "add after an allocation failure");
}

TEST_P(CudaOpsTest, RejectsHostTensors) {
  Tensor x = rand({2, 4}), w = rand({3, 4});
  EXPECT_THROW(gpu->linear(x, up(w), nullptr, Act::None, nullptr), Error);
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaOpsTest, ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return i.param == DType::F32 ? "F32" : i.param == DType::BF16 ? "BF16" : "F16";
                         });

// The CPU twin of the fp8 path's quantisation: each row scaled to amax / 448, rounded to E4M3
// (nearest even, saturating, as the kernel's conversion), scaled back.
Tensor fp8_rows(const Tensor& x) {
  const int64_t K = x.dim(-1), rows = x.numel() / K;
  Tensor y = Tensor::empty(x.shape);
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0.f;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::abs(x.data[r * K + k]));
    const float inv = amax > 0.f ? 448.f / amax : 1.f, scale = amax > 0.f ? amax / 448.f : 1.f;
    for (int64_t k = 0; k < K; ++k)
      y.data[r * K + k] = static_cast<float>(__nv_fp8_e4m3(x.data[r * K + k] * inv)) * scale;
  }
  return y;
}

// A tensor of uniform values in [lo, hi), each rounded to bf16 (the fp8 tests' inputs, exact in bf16).
Tensor uniform_bf16(Rng& rng, Shape s, float lo, float hi) {
  Tensor t = Tensor::empty(std::move(s));
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = bf16_round(rng.uniform(lo, hi));
  return t;
}

// The twin of the per-tensor quantisation: every value scaled by 1 / scale, rounded to E4M3, back.
Tensor fp8_scaled(const Tensor& x, float scale) {
  Tensor y = Tensor::empty(x.shape);
  for (int64_t i = 0; i < x.numel(); ++i) y.data[i] = static_cast<float>(__nv_fp8_e4m3(x.data[i] / scale)) * scale;
  return y;
}

// A weight as prepare_bulk_linear quantises it: one scale, amax / 448.
Tensor fp8_tensor(const Tensor& w) {
  float amax = 0.f;
  for (int64_t i = 0; i < w.numel(); ++i) amax = std::max(amax, std::abs(w.data[i]));
  return fp8_scaled(w, amax > 0.f ? amax / 448.f : 1.f);
}

// The fp8 LayerNorm's output scale, from the bound written out again here: |w_k| sqrt(C - 1) + |b_k|.
float fp8_layer_norm_scale(const Tensor& lw, const Tensor& lb) {
  const int64_t C = lw.numel();
  float m = 0.f;
  for (int64_t k = 0; k < C; ++k)
    m = std::max(m, std::abs(lw.data[k]) * std::sqrt(float(C - 1)) + std::abs(lb.data[k]));
  return 1.01f * m / 448.f;
}

// The bound on a GEMM's values after an fp8 LayerNorm (lin1's GELU output, qkv's and the attention's):
// (largest LayerNorm row norm, quantised) x (largest row norm of the quantised weight) + largest bias,
// with the kernel's margins.
float fp8_product_bound(const Tensor& lw, const Tensor& lb, const Tensor& w1q, const Tensor& b1, float ln_scale) {
  const int64_t C = lw.numel(), N = w1q.dim(0);
  float gmax = 0.f, bsq = 0.f, wn = 0.f, bmax = 0.f;
  for (int64_t k = 0; k < C; ++k) gmax = std::max(gmax, std::abs(lw.data[k])), bsq += lb.data[k] * lb.data[k];
  for (int64_t j = 0; j < N; ++j) {
    float sq = 0.f;
    for (int64_t k = 0; k < C; ++k) sq += w1q.data[j * C + k] * w1q.data[j * C + k];
    wn = std::max(wn, std::sqrt(sq));
    bmax = std::max(bmax, std::abs(b1.data[j]));
  }
  const float row = (1.f + 1.f / 16.f) * 1.01f * (gmax * std::sqrt(float(C)) + std::sqrt(bsq)) +
                    std::sqrt(float(C)) * ln_scale / 1024.f;
  return std::max(1.25f * (row * wn + bmax), 0.17f);
}

// Whether the GPU has fp8 tensor cores (compute capability 8.9 or later).
bool fp8_tensor_cores() {
  int dev = 0, major = 0, minor = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  return major * 10 + minor >= 89;
}

TEST(CudaFp8, LinearMatchesQuantisedCpuTwin) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU: GPU tests skipped";
  if (!fp8_tensor_cores()) {
    EXPECT_THROW(CudaOps(0, Precision::FP8), Error);
    GTEST_SKIP() << "no fp8 tensor cores: fp8 test skipped (the backend refuses fp8, checked)";
  }
  CudaOps gpu(0, Precision::FP8);
  CpuOps cpu;
  Rng rng{77};
  auto rand = [&](Shape s, float lo, float hi) { return uniform_bf16(rng, std::move(s), lo, hi); };
  for (const auto [rows, in, out] : {std::tuple<int64_t, int64_t, int64_t>{300, 256, 192}, {64, 768, 2304}}) {
    Tensor x = rand({rows, in}, -2.f, 2.f), w = rand({out, in}, -0.1f, 0.1f), b = rand({out}, -1.f, 1.f);
    Tensor r = rand({rows, out}, -1.f, 1.f);
    for (int64_t i = 0; i < in; ++i) x.data[3 * in + i] = 0.f;  // a row of zeros (scale 1)
    const Tensor wq = gpu.prepare_bulk_linear(gpu.upload(w));
    ASSERT_EQ(wq.dtype, DType::F8E4M3);
    const Tensor xq = fp8_rows(x), wq_ref = fp8_tensor(w);
    for (const auto& [act, res] : {std::pair<Act, const Tensor*>{Act::None, &r}, {Act::GELU, nullptr}, {Act::GELU, &r}}) {
      const Tensor rg = gpu.upload(r), bg = gpu.upload(b);
      const Tensor got = gpu.download(gpu.linear(gpu.upload(x), wq, &bg, act, res ? &rg : nullptr));
      const Tensor twin = cpu.linear(xq, wq_ref, &b, act, res);     // the same quantisation, fp32 arithmetic
      const Tensor exact = cpu.linear(x, w, &b, act, res);           // no quantisation
      double e_twin = 0, e_exact = 0, ref2 = 0;
      for (int64_t i = 0; i < twin.numel(); ++i) {
        e_twin += std::pow((double)got.data[i] - twin.data[i], 2);
        e_exact += std::pow((double)got.data[i] - exact.data[i], 2);
        ref2 += std::pow((double)exact.data[i], 2);
      }
      const double rel_twin = std::sqrt(e_twin / ref2), rel_exact = std::sqrt(e_exact / ref2);
      std::printf("[ fp8  ] linear %lldx%lld -> %lld %s%s rel_l2 vs quantised twin %.3e, vs unquantised %.3e\n",
                  (long long)rows, (long long)in, (long long)out, act == Act::GELU ? "gelu" : "", res ? " residual" : "",
                  rel_twin, rel_exact);
      EXPECT_LE(rel_twin, 1e-2);  // bf16 output rounding (and the epilogue's tanh GELU)
      EXPECT_LE(rel_exact, 8e-2);
      EXPECT_GT(rel_exact, rel_twin);  // the quantisation is really there and is what the twin models
    }
  }
  // Shapes cuBLASLt's fp8 kernels do not take stay bf16.
  EXPECT_EQ(gpu.prepare_bulk_linear(gpu.upload(rand({40, 24}, -1.f, 1.f))).dtype, DType::BF16);
}

// rel L2 of got against twin and against exact, over the values of got - base (base: a residual
// the outputs share, or none).
std::pair<double, double> rel_errors(const Tensor& got, const Tensor& twin, const Tensor& exact, const Tensor* base) {
  double e_twin = 0, e_exact = 0, ref2 = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double b = base ? base->data[i] : 0.0;
    e_twin += std::pow((double)got.data[i] - twin.data[i], 2);
    e_exact += std::pow((double)got.data[i] - exact.data[i], 2);
    ref2 += std::pow((double)exact.data[i] - b, 2);
  }
  return {std::sqrt(e_twin / ref2), std::sqrt(e_exact / ref2)};
}

// The fp8 LayerNorm -> GEMM: the LayerNorm's bf16 output quantised with the one scale of its bound,
// against that quantisation on the CPU, at the encoders' widths (vit_b, vit_l, vit_h) and one the
// fused kernel does not take (the composition then: per-row scales).
TEST(CudaFp8, LayerNormLinearMatchesQuantisedCpuTwin) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU: GPU tests skipped";
  if (!fp8_tensor_cores()) GTEST_SKIP() << "no fp8 tensor cores: fp8 test skipped";
  CudaOps gpu(0, Precision::FP8);
  CpuOps cpu;
  Rng rng{78};
  auto rand = [&](Shape s, float lo, float hi) { return uniform_bf16(rng, std::move(s), lo, hi); };
  for (const int64_t C : {768, 1024, 1280, 1552}) {
    const int64_t out = 3 * 256;
    Tensor x = rand({2, 7, 13, C}, -3.f, 5.f), lw = rand({C}, 0.5f, 1.5f), lb = rand({C}, -0.2f, 0.2f);
    for (int64_t i = 0; i < C; ++i) x.data[5 * C + i] = 1.f;  // a constant row: all zeros after the norm
    const Tensor w = rand({out, C}, -0.1f, 0.1f), b = rand({out}, -1.f, 1.f);
    const Tensor wq = gpu.prepare_bulk_linear(gpu.upload(w)), bg = gpu.upload(b);
    ASSERT_EQ(wq.dtype, DType::F8E4M3);
    Tensor ln = cpu.layer_norm(x, lw, lb, 1e-6f, Act::None);
    for (int64_t i = 0; i < ln.numel(); ++i) ln.data[i] = bf16_round(ln.data[i]);  // as the kernel rounds it
    const bool fused = C <= 1280;  // (layer_norm_fp8_ok)
    const Tensor lnq = fused ? fp8_scaled(ln, fp8_layer_norm_scale(lw, lb)) : fp8_rows(ln);
    for (const Act act : {Act::None, Act::GELU}) {
      const Tensor got = gpu.download(gpu.layer_norm_linear(gpu.upload(x), gpu.upload(lw), gpu.upload(lb), 1e-6f, wq,
                                                            &bg, act));
      ASSERT_EQ(got.shape, (Shape{2, 7, 13, out}));
      const Tensor twin = cpu.linear(lnq, fp8_tensor(w), &b, act, nullptr), exact = cpu.linear(ln, w, &b, act, nullptr);
      const auto [rel_twin, rel_exact] = rel_errors(got, twin, exact, nullptr);
      std::printf("[ fp8  ] layer_norm_linear C %lld%s rel_l2 vs quantised twin %.3e, vs unquantised %.3e\n",
                  (long long)C, act == Act::GELU ? " gelu" : "", rel_twin, rel_exact);
      EXPECT_LE(rel_twin, 1e-2) << "C " << C;
      EXPECT_LE(rel_exact, 8e-2) << "C " << C;
      EXPECT_GT(rel_exact, rel_twin) << "C " << C;
    }
  }
}

// The fp8 attention half of a block (norm1 -> qkv -> attention -> proj + residual): the attention's
// output in fp8 for proj with the one scale of the bound on v (written by Hopper's attention kernels
// themselves, by a pass after the others', which SAMFAST_GENERIC_KERNELS=1 picks), against the same
// steps on the CPU, windowed (the grid padded) and global.
TEST(CudaFp8, LayerNormAttentionMatchesQuantisedCpuTwin) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU: GPU tests skipped";
  if (!fp8_tensor_cores()) GTEST_SKIP() << "no fp8 tensor cores: fp8 test skipped";
  CpuOps cpu;
  Rng rng{80};
  auto rand = [&](Shape s, float lo, float hi) { return uniform_bf16(rng, std::move(s), lo, hi); };
  auto bf16 = [](Tensor t) {
    for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = bf16_round(t.data[i]);
    return t;
  };
  const int64_t G = 16, C = 768, heads = 12;
  for (const bool generic : {false, true}) {
    if (generic) setenv("SAMFAST_GENERIC_KERNELS", "1", 1);
    CudaOps gpu(0, Precision::FP8);  // (the kernels are chosen when the context is made)
    unsetenv("SAMFAST_GENERIC_KERNELS");
    for (const int window : {7, 0}) {
      const int64_t span = window ? window : G;
      Tensor x = rand({1, G, G, C}, -3.f, 5.f), lw = rand({C}, 0.5f, 1.5f), lb = rand({C}, -0.2f, 0.2f);
      const Tensor qkv_w = rand({3 * C, C}, -0.1f, 0.1f), qkv_b = rand({3 * C}, -1.f, 1.f);
      const Tensor proj_w = rand({C, C}, -0.1f, 0.1f), proj_b = rand({C}, -1.f, 1.f);
      const Tensor rph = rand({2 * span - 1, C / heads}, -0.5f, 0.5f);
      const Tensor rpw = rand({2 * span - 1, C / heads}, -0.5f, 0.5f);
      const Tensor qkv_q = fp8_tensor(qkv_w);
      const Tensor ln = bf16(cpu.layer_norm(x, lw, lb, 1e-6f, Act::None));
      const float ln_scale = fp8_layer_norm_scale(lw, lb), bound = fp8_product_bound(lw, lb, qkv_q, qkv_b, ln_scale);
      const Tensor qkv = bf16(cpu.linear(fp8_scaled(ln, ln_scale), qkv_q, &qkv_b, Act::None, nullptr));
      const Tensor a = bf16(cpu.rel_pos_attention(qkv, qkv_b, rph, rpw, (int)heads, window));
      float amax = 0.f;
      for (int64_t i = 0; i < a.numel(); ++i) amax = std::max(amax, std::abs(a.data[i]));
      const Tensor twin = cpu.linear(fp8_scaled(a, bound / 448.f), fp8_tensor(proj_w), &proj_b, Act::None, &x);
      const Tensor exact = cpu.linear(
          cpu.rel_pos_attention(cpu.linear(ln, qkv_w, &qkv_b, Act::None, nullptr), qkv_b, rph, rpw, (int)heads, window),
          proj_w, &proj_b, Act::None, &x);
      const Tensor got = gpu.download(gpu.layer_norm_attention(
          gpu.upload(x), gpu.upload(lw), gpu.upload(lb), 1e-6f, gpu.prepare_bulk_linear(gpu.upload(qkv_w)),
          gpu.upload(qkv_b), gpu.upload(rph), gpu.upload(rpw), (int)heads, window,
          gpu.prepare_bulk_linear(gpu.upload(proj_w)), gpu.upload(proj_b)));
      ASSERT_EQ(got.shape, x.shape);
      const auto [rel_twin, rel_exact] = rel_errors(got, twin, exact, &x);
      std::printf("[ fp8  ] layer_norm_attention window %d%s: attention amax %.3g = bound / %.1f; rel_l2 of the "
                  "attention's part vs quantised twin %.3e, vs unquantised %.3e\n",
                  window, generic ? " (generic kernels)" : "", amax, bound / amax, rel_twin, rel_exact);
      EXPECT_LT(amax, bound) << "the bound does not hold";
      EXPECT_LE(rel_twin, 3e-2) << "window " << window << " generic " << generic;
      EXPECT_LE(rel_exact, 1.5e-1) << "window " << window << " generic " << generic;
      EXPECT_GT(rel_exact, rel_twin) << "window " << window << " generic " << generic;
    }
  }
}

// The scales prepare_layer_norm_linear stores at load are those the ops compute per call: the two
// halves of a block give the same bytes either way.
TEST(CudaFp8, PreparedScalesMatchPerCall) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU: GPU tests skipped";
  if (!fp8_tensor_cores()) GTEST_SKIP() << "no fp8 tensor cores: fp8 test skipped";
  CudaOps gpu(0, Precision::FP8);
  Rng rng{81};
  auto up = [&](Shape s, float lo, float hi) { return gpu.upload(uniform_bf16(rng, std::move(s), lo, hi)); };
  const int64_t G = 14, C = 1280, heads = 16;
  const Tensor x = up({2, G, G, C}, -3.f, 5.f);
  const Tensor lw1 = up({C}, 0.5f, 1.5f), lb1 = up({C}, -0.2f, 0.2f);
  const Tensor lw2 = up({C}, 0.5f, 1.5f), lb2 = up({C}, -0.2f, 0.2f);
  const Tensor qkv_w = gpu.prepare_bulk_linear(up({3 * C, C}, -0.1f, 0.1f)), qkv_b = up({3 * C}, -1.f, 1.f);
  const Tensor proj_w = gpu.prepare_bulk_linear(up({C, C}, -0.1f, 0.1f)), proj_b = up({C}, -1.f, 1.f);
  const int window = 7;
  const Tensor rph = up({2 * window - 1, C / heads}, -0.5f, 0.5f), rpw = up({2 * window - 1, C / heads}, -0.5f, 0.5f);
  const Tensor w1 = gpu.prepare_bulk_linear(up({4 * C, C}, -0.1f, 0.1f)), b1 = up({4 * C}, -1.f, 1.f);
  const Tensor w2 = gpu.prepare_bulk_linear(up({C, 4 * C}, -0.1f, 0.1f)), b2 = up({C}, -1.f, 1.f);
  ASSERT_EQ(qkv_w.dtype, DType::F8E4M3);
  auto block = [&] {
    const Tensor a = gpu.layer_norm_attention(x, lw1, lb1, 1e-6f, qkv_w, qkv_b, rph, rpw, (int)heads, window, proj_w,
                                              proj_b);
    return std::pair{gpu.download(a), gpu.download(gpu.layer_norm_mlp(a, lw2, lb2, 1e-6f, w1, b1, w2, b2))};
  };
  const auto [attn, mlp] = block();
  gpu.prepare_layer_norm_linear(lw1, lb1, qkv_w, qkv_b);
  gpu.prepare_layer_norm_linear(lw2, lb2, w1, b1);
  const auto [attn_prepared, mlp_prepared] = block();
  ASSERT_EQ(attn_prepared.shape, attn.shape);
  EXPECT_EQ(0, std::memcmp(attn_prepared.data, attn.data, attn.numel() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(mlp_prepared.data, mlp.data, mlp.numel() * sizeof(float)));
}

// The fp8 MLP half of a block (norm2 -> lin1 -> GELU -> lin2 + residual), its hidden layer written in
// fp8 by lin1's GEMM with the scale of its bound, against the same quantisation on the CPU. One row
// is lin1's largest weight row itself under a plain LayerNorm: the largest value the bound allows
// for, which must come through unclipped.
TEST(CudaFp8, LayerNormMlpMatchesQuantisedCpuTwin) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU: GPU tests skipped";
  if (!fp8_tensor_cores()) GTEST_SKIP() << "no fp8 tensor cores: fp8 test skipped";
  CudaOps gpu(0, Precision::FP8);
  CpuOps cpu;
  Rng rng{79};
  auto rand = [&](Shape s, float lo, float hi) { return uniform_bf16(rng, std::move(s), lo, hi); };
  for (const auto [C, plain_norm] : {std::pair<int64_t, bool>{768, false}, {1280, false}, {768, true}}) {
    const int64_t hidden = 4 * C;
    Tensor x = rand({3, 37, C}, -3.f, 5.f), lw = rand({C}, 0.5f, 1.5f), lb = rand({C}, -0.2f, 0.2f);
    const Tensor w1 = rand({hidden, C}, -0.1f, 0.1f), b1 = rand({hidden}, -1.f, 1.f);
    const Tensor w2 = rand({C, hidden}, -0.1f, 0.1f), b2 = rand({C}, -1.f, 1.f);
    const Tensor w1q = fp8_tensor(w1), w2q = fp8_tensor(w2);
    int64_t top = 0;  // lin1's row of largest norm
    if (plain_norm) {
      for (int64_t k = 0; k < C; ++k) lw.data[k] = 1.f, lb.data[k] = 0.f;
      double best = -1;
      for (int64_t j = 0; j < hidden; ++j) {
        double sq = 0;
        for (int64_t k = 0; k < C; ++k) sq += (double)w1q.data[j * C + k] * w1q.data[j * C + k];
        if (sq > best) best = sq, top = j;
      }
      for (int64_t k = 0; k < C; ++k) x.data[k] = w1.data[top * C + k];  // row 0 lines up with it
    }
    Tensor ln = cpu.layer_norm(x, lw, lb, 1e-6f, Act::None);
    for (int64_t i = 0; i < ln.numel(); ++i) ln.data[i] = bf16_round(ln.data[i]);
    const float ln_scale = fp8_layer_norm_scale(lw, lb);
    const Tensor h = cpu.linear(fp8_scaled(ln, ln_scale), w1q, &b1, Act::GELU, nullptr);
    const float bound = fp8_product_bound(lw, lb, w1q, b1, ln_scale);
    float hmax = 0.f;
    for (int64_t i = 0; i < h.numel(); ++i) hmax = std::max(hmax, std::abs(h.data[i]));
    const Tensor twin = cpu.linear(fp8_scaled(h, bound / 448.f), w2q, &b2, Act::None, &x);
    const Tensor exact = cpu.linear(cpu.linear(ln, w1, &b1, Act::GELU, nullptr), w2, &b2, Act::None, &x);
    const Tensor got = gpu.download(gpu.layer_norm_mlp(
        gpu.upload(x), gpu.upload(lw), gpu.upload(lb), 1e-6f, gpu.prepare_bulk_linear(gpu.upload(w1)), gpu.upload(b1),
        gpu.prepare_bulk_linear(gpu.upload(w2)), gpu.upload(b2)));
    ASSERT_EQ(got.shape, x.shape);
    const auto [rel_twin, rel_exact] = rel_errors(got, twin, exact, &x);
    std::printf("[ fp8  ] layer_norm_mlp C %lld%s: hidden amax %.3g = bound / %.1f; rel_l2 of the MLP's part vs "
                "quantised twin %.3e, vs unquantised %.3e\n",
                (long long)C, plain_norm ? " (a row on lin1's largest)" : "", hmax, bound / hmax, rel_twin, rel_exact);
    EXPECT_LT(hmax, bound) << "the bound does not hold";
    EXPECT_LE(rel_twin, 2e-2) << "C " << C;
    EXPECT_LE(rel_exact, 1e-1) << "C " << C;
    EXPECT_GT(rel_exact, rel_twin) << "C " << C;
    if (plain_norm) {  // the aligned row: its largest hidden value within 4x of the bound, and unclipped
      EXPECT_GT(hmax, bound / 4) << "the bound is looser than its derivation says";
      auto row0 = [&](const Tensor& t) {
        Tensor r = Tensor::empty({C});
        std::copy(t.data, t.data + C, r.data);
        return r;
      };
      const Tensor x0 = row0(x);
      EXPECT_LE(rel_errors(row0(got), row0(twin), row0(exact), &x0).first, 2e-2);
    }
  }
}

}  // namespace
}  // namespace samfast
