// The CPU backend's fused upscale_masks (one token row at a time) against the composition of ops it
// replaces (Ops::upscale_masks), and a prompt's result independent of its batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_ops.h"
#include "core/rng.h"

namespace samfast {
namespace {

Tensor random(Shape shape, Rng& rng, float scale = 1.f) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = rng.normal(scale);
  return t;
}

struct Inputs {
  Tensor keys, w1, b1, ln_w, ln_b, w2, b2, hyper;
};

// keys (B, Gh, Gw, D) with SAM's channel ratios scaled down: C1 = D / 4, C2 = D / 8, 4 masks.
Inputs inputs(int64_t B, int64_t Gh, int64_t Gw, int64_t D, uint64_t seed) {
  Rng rng(seed);
  const int64_t C1 = D / 4, C2 = D / 8;
  return {random({B, Gh, Gw, D}, rng),       random({D, C1, 2, 2}, rng, 0.2f), random({C1}, rng, 0.1f),
          random({C1}, rng),                 random({C1}, rng, 0.1f),          random({C1, C2, 2, 2}, rng, 0.3f),
          random({C2}, rng, 0.1f),           random({B, 4, C2}, rng)};
}

Tensor fused(CpuOps& ops, const Inputs& a) {
  return ops.upscale_masks(a.keys, a.w1, a.b1, a.ln_w, a.ln_b, 1e-6f, a.w2, a.b2, a.hyper);
}

TEST(CpuUpscale, EqualsTheComposedOps) {
  CpuOps ops;
  for (const auto& [B, Gh, Gw, D] : {std::array<int64_t, 4>{3, 5, 5, 32}, {2, 3, 7, 64}, {1, 1, 1, 256}}) {
    const Inputs a = inputs(B, Gh, Gw, D, 7 + D);
    const Tensor got = fused(ops, a);
    const Tensor want = ops.Ops::upscale_masks(a.keys, a.w1, a.b1, a.ln_w, a.ln_b, 1e-6f, a.w2, a.b2, a.hyper);
    ASSERT_EQ(got.shape, want.shape);
    ASSERT_EQ(got.shape, (Shape{B, 4, 4 * Gh, 4 * Gw}));
    double err = 0, scale = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      err = std::max(err, (double)std::fabs(got.data[i] - want.data[i]));
      scale = std::max(scale, (double)std::fabs(want.data[i]));
    }
    EXPECT_GT(scale, 0.1) << "inputs too small to test anything";
    EXPECT_LE(err, 1e-5 * scale) << "B " << B << ", " << Gh << "x" << Gw << ", D " << D;
  }
}

// Bit for bit what the prompt gets alone, whichever thread took which rows.
TEST(CpuUpscale, APromptsMasksDoNotDependOnItsBatch) {
  CpuOps ops;
  const Inputs a = inputs(3, 8, 8, 64, 3);
  const Tensor all = fused(ops, a);
  for (int64_t b = 0; b < 3; ++b) {
    Inputs one = a;
    one.keys = Tensor::empty({1, 8, 8, 64});
    one.hyper = Tensor::empty({1, 4, 8});
    std::memcpy(one.keys.data, a.keys.data + b * one.keys.numel(), sizeof(float) * one.keys.numel());
    std::memcpy(one.hyper.data, a.hyper.data + b * one.hyper.numel(), sizeof(float) * one.hyper.numel());
    const Tensor alone = fused(ops, one);
    EXPECT_EQ(std::memcmp(alone.data, all.data + b * alone.numel(), sizeof(float) * alone.numel()), 0) << "prompt " << b;
  }
}

}  // namespace
}  // namespace samfast
