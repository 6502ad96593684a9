// The mask decoder in its own precision beside the image encoder's (ModelOptions::decoder_precision):
// bf16 and fp8 models decode in fp16 by default, the embedding converted once; on one bf16 embedding
// the fp16 decoder's logits are several times closer to an fp32 decoder's than the bf16 decoder's
// (fp16 keeps 11 significant bits to bf16's 8); the precisions asked for are the ones run; and a
// mask prompt beyond fp16's range does not turn the masks into NaN.
// Without a CUDA GPU every test is skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "core/rng.h"
#include "gpu_available.h"
#include "samfast/error.h"
#include "samfast/model.h"

namespace samfast {
namespace {

class DecoderPrecision : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU: GPU tests skipped";
  }
};

double rel_l2(const Tensor& a, const Tensor& ref) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = (double)a.data[i] - ref.data[i];
    num += d * d, den += (double)ref.data[i] * ref.data[i];
  }
  return std::sqrt(num / den);
}

PromptBatch some_points(int S) {
  PromptBatch p;
  p.points = Tensor::empty({6, 2, 2});
  Rng rng{11};
  for (int64_t i = 0; i < p.points.numel(); ++i) p.points.data[i] = rng.uniform(0.f, (float)S - 1);
  p.labels = Tensor::from({6, 2}, {1, 0, 1, 1, 1, -1, 0, 1, 1, 1, 1, 0});
  return p;
}

TEST_F(DecoderPrecision, DefaultsAndChoices) {
  const auto tensors = Model::synthetic_tensors(SamConfig::preset("tiny"), 3);
  auto load = [&](Precision p, Precision d) {
    return Model::from_tensors(tensors, {.device = "cuda", .precision = p, .decoder_precision = d});
  };
  EXPECT_EQ(load(Precision::BF16, Precision::Auto).decoder_precision(), Precision::FP16);
  EXPECT_EQ(load(Precision::FP8, Precision::Auto).decoder_precision(), Precision::FP16);
  EXPECT_EQ(load(Precision::FP16, Precision::Auto).decoder_precision(), Precision::FP16);
  EXPECT_EQ(load(Precision::FP32, Precision::Auto).decoder_precision(), Precision::FP32);
  EXPECT_EQ(load(Precision::BF16, Precision::BF16).decoder_precision(), Precision::BF16);
  EXPECT_EQ(load(Precision::BF16, Precision::FP32).decoder_precision(), Precision::FP32);
  EXPECT_THROW(load(Precision::BF16, Precision::FP8), Error);
  // The weights of both backends are each in one allocation, sized exactly.
  const Model::MemoryUse mem = load(Precision::BF16, Precision::Auto).memory_use();
  EXPECT_GT(mem.weights, 0);
  EXPECT_EQ(mem.weights_filled, mem.weights);
}

TEST_F(DecoderPrecision, Fp16DecoderIsCloserToFp32) {
  const SamConfig cfg = SamConfig::preset("tiny");
  const auto tensors = Model::synthetic_tensors(cfg, 5);
  const int S = cfg.img_size;
  const Model f32 = Model::from_tensors(tensors, {.device = "cuda", .precision = Precision::FP32});
  const Model f16dec = Model::from_tensors(tensors, {.device = "cuda", .precision = Precision::BF16});
  const Model bf16dec =
      Model::from_tensors(tensors, {.device = "cuda", .precision = Precision::BF16, .decoder_precision = Precision::BF16});
  Tensor pixels = Tensor::empty({1, 3, S, S});
  Rng rng{21};
  for (int64_t i = 0; i < pixels.numel(); ++i) pixels.data[i] = rng.uniform(-2.f, 2.f);
  // One bf16 embedding for all three decoders, so that only the decoders differ.
  const Tensor embedding = bf16dec.download(bf16dec.encode_image(pixels));
  const Tensor e16 = f16dec.encode_image(pixels);
  // (exact but for values below fp16's normal range, 6e-5, which keep fewer bits)
  EXPECT_LT(rel_l2(f16dec.download(e16), embedding), 1e-8) << "the conversion to fp16";
  // An fp32 encoder's embedding converted for an fp16 decoder: fp16's rounding alone.
  const Model f32enc =
      Model::from_tensors(tensors, {.device = "cuda", .precision = Precision::FP32, .decoder_precision = Precision::FP16});
  EXPECT_LT(rel_l2(f32enc.download(f32enc.encode_image(pixels)), f32.download(f32.encode_image(pixels))), 1e-3);
  const PromptBatch p = some_points(S);
  auto logits = [&](const Model& m) {
    return m.download(m.decode_masks(m.upload(embedding), m.encode_prompts(p), true).low_res_masks);
  };
  const Tensor ref = logits(f32);
  const double err16 = rel_l2(logits(f16dec), ref), err_bf16 = rel_l2(logits(bf16dec), ref);
  EXPECT_GT(err_bf16, 0.0);
  EXPECT_LT(err16, err_bf16 / 3) << "fp16 decoder " << err16 << ", bf16 decoder " << err_bf16;
  std::printf("logits against the fp32 decoder's, rel L2: fp16 decoder %.2e, bf16 decoder %.2e\n", err16, err_bf16);
}

TEST_F(DecoderPrecision, HugeMaskLogitsStayFinite) {
  // A mask prompt of +-1e6 (beyond fp16's 65504) through the default fp16 decoder of a bf16 model.
  const SamConfig cfg = SamConfig::preset("tiny");
  const Model m = Model::from_tensors(Model::synthetic_tensors(cfg, 5), {.device = "cuda", .precision = Precision::BF16});
  ASSERT_EQ(m.decoder_precision(), Precision::FP16);
  const int S = cfg.img_size, L = 4 * cfg.grid();
  Tensor pixels = Tensor::zeros({1, 3, S, S});
  PromptBatch p = some_points(S);
  p.masks = Tensor::empty({6, 1, L, L});
  for (int64_t i = 0; i < p.masks.numel(); ++i) p.masks.data[i] = (i / 7) % 3 == 0 ? 1e6f : -1e6f;
  const Tensor masks = m.download(m.decode_masks(m.encode_image(pixels), m.encode_prompts(p), true).low_res_masks);
  int64_t bad = 0;
  for (int64_t i = 0; i < masks.numel(); ++i) bad += !std::isfinite(masks.data[i]);
  EXPECT_EQ(bad, 0);
}

}  // namespace
}  // namespace samfast
