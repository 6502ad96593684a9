// The ragged decode (prompts of several images in one pass) against one decode per image, on the CPU
// backend with the tiny config: the same masks and scores, whatever the order of the prompts; and the
// Predictor over several images against one Predictor per image.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/ops.h"
#include "core/rng.h"
#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/model.h"
#include "samfast/predictor.h"

namespace samfast {
namespace {

Tensor random_host(Shape shape, uint64_t seed, float lo, float hi) {
  Tensor t = Tensor::empty(std::move(shape));
  Rng rng{seed};
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = rng.uniform(lo, hi);
  return t;
}

// Rows `rows` of a host tensor (N, ...).
Tensor rows_of(const Tensor& x, const std::vector<int64_t>& rows) {
  Shape s = x.shape;
  s[0] = (int64_t)rows.size();
  Tensor y = Tensor::empty(s);
  const int64_t inner = x.numel() / x.dim(0);
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy(x.data + rows[i] * inner, x.data + (rows[i] + 1) * inner, y.data + i * inner);
  return y;
}

// The ragged decode of prompts image_of (any order) against each image's prompts decoded alone.
void expect_ragged_matches_per_image(const std::vector<int64_t>& image_of, uint64_t seed) {
  const SamConfig cfg = SamConfig::preset("tiny");
  const Model model = Model::from_tensors(Model::synthetic_tensors(cfg, 11), {.device = "cpu", .precision = Precision::FP32});
  const int S = cfg.img_size;
  const Tensor embeddings = model.encode_image(random_host({3, 3, S, S}, 5, -2.f, 2.f));  // 3 images
  const int64_t B = (int64_t)image_of.size();
  PromptBatch all;  // 1 foreground + 1 background point each
  all.points = random_host({B, 2, 2}, seed, 0.f, (float)S - 1);
  all.labels = Tensor::empty({B, 2});
  for (int64_t b = 0; b < B; ++b) all.labels.data[2 * b] = 1.f, all.labels.data[2 * b + 1] = 0.f;
  for (bool multimask : {true, false}) {
    const DecoderOutput ragged = model.decode_masks(embeddings, image_of, model.encode_prompts(all), multimask);
    const Tensor masks = model.download(ragged.low_res_masks), iou = model.download(ragged.iou);
    ASSERT_EQ(masks.dim(0), B);
    ASSERT_EQ(iou.dim(0), B);
    const int64_t per_mask = masks.numel() / B, per_iou = iou.numel() / B;
    for (int64_t img = 0; img < 3; ++img) {
      std::vector<int64_t> mine;
      for (int64_t b = 0; b < B; ++b)
        if (image_of[b] == img) mine.push_back(b);
      if (mine.empty()) continue;
      PromptBatch p;
      p.points = rows_of(all.points, mine);
      p.labels = rows_of(all.labels, mine);
      const Tensor one_image = model.backend().gather(embeddings, {img});
      const DecoderOutput alone = model.decode_masks(one_image, model.encode_prompts(p), multimask);
      const Tensor m1 = model.download(alone.low_res_masks), i1 = model.download(alone.iou);
      for (size_t k = 0; k < mine.size(); ++k) {
        double max_err = 0, max_ref = 0;
        for (int64_t j = 0; j < per_mask; ++j) {
          max_err = std::max(max_err, (double)std::abs(masks.data[mine[k] * per_mask + j] - m1.data[k * per_mask + j]));
          max_ref = std::max(max_ref, (double)std::abs(m1.data[k * per_mask + j]));
        }
        EXPECT_LE(max_err, 1e-5 * max_ref) << "image " << img << " prompt " << mine[k] << " multimask " << multimask;
        for (int64_t j = 0; j < per_iou; ++j)
          EXPECT_NEAR(iou.data[mine[k] * per_iou + j], i1.data[k * per_iou + j], 1e-5) << "prompt " << mine[k];
      }
    }
  }
}

// Few prompts an image: one batched decode of every prompt's image embedding. 7 prompts: 3 of image
// 2, 1 of image 0, 3 of image 1, interleaved.
TEST(RaggedDecode, MatchesOneDecodePerImage) { expect_ragged_matches_per_image({2, 0, 1, 2, 1, 1, 2}, 9); }

// Many prompts an image: a decode per image (Model::decode_per_image), the outputs put back in
// prompt order; interleaved, then grouped by image, then two images of three.
TEST(RaggedDecode, ManyPromptsAnImageDecodeByImage) {
  std::vector<int64_t> interleaved, grouped, two;
  for (int64_t k = 0; k < 39; ++k) interleaved.push_back((k * 7 + k / 5) % 3);
  for (int64_t img : {1, 0, 2})
    for (int64_t k = 0; k < 13; ++k) grouped.push_back(img);
  for (int64_t k = 0; k < 24; ++k) two.push_back(k % 3 == 0 ? 0 : 2);
  expect_ragged_matches_per_image(interleaved, 21);
  expect_ragged_matches_per_image(grouped, 22);
  expect_ragged_matches_per_image(two, 23);
}

TEST(RaggedDecode, RejectsBadImageIndices) {
  const SamConfig cfg = SamConfig::preset("tiny");
  const Model model = Model::from_tensors(Model::synthetic_tensors(cfg, 11), {.device = "cpu", .precision = Precision::FP32});
  const Tensor embeddings = model.encode_image(random_host({2, 3, cfg.img_size, cfg.img_size}, 5, -2.f, 2.f));
  PromptBatch p;
  p.points = random_host({2, 1, 2}, 9, 0.f, 10.f);
  p.labels = Tensor::empty({2, 1});
  p.labels.data[0] = p.labels.data[1] = 1.f;
  const PromptEmbeddings e = model.encode_prompts(p);
  EXPECT_THROW(model.decode_masks(embeddings, {0, 2}, e, true), Error);    // only images 0 and 1
  EXPECT_THROW(model.decode_masks(embeddings, {0}, e, true), Error);       // one index for two prompts
  EXPECT_THROW(model.decode_masks(embeddings, {-1, 0}, e, true), Error);
}

Image random_image(int h, int w, uint64_t seed) {
  Image img;
  img.height = h, img.width = w;
  img.rgb.resize(size_t(h) * w * 3);
  Rng rng{seed};
  for (uint8_t& v : img.rgb) v = (uint8_t)(rng.next() & 0xff);
  return img;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape, b.shape);
  double m = 0;
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i) m = std::max(m, (double)std::abs(a.data[i] - b.data[i]));
  return m;
}

TEST(MultiImagePredictor, MatchesOnePredictorPerImage) {
  const SamConfig cfg = SamConfig::preset("tiny");
  const Model model = Model::from_tensors(Model::synthetic_tensors(cfg, 11), {.device = "cpu", .precision = Precision::FP32});
  const std::vector<Image> images = {random_image(30, 44, 1), random_image(50, 21, 2)};  // different sizes
  Predictor many(model);
  many.set_images(images);
  ASSERT_EQ(many.image_count(), 2);
  // Points and boxes on both images, mixed in one call (same forms are decoded together).
  std::vector<Prompt> prompts(5);
  prompts[0] = {{{10.f, 12.f}}, {1}, std::nullopt, {}, 1};
  prompts[1] = {{{3.f, 4.f}}, {1}, std::nullopt, {}, 0};
  prompts[2] = {{}, {}, std::array<float, 4>{2.f, 3.f, 18.f, 40.f}, {}, 1};
  prompts[3] = {{{20.f, 20.f}, {5.f, 6.f}}, {1, 0}, std::nullopt, {}, 0};
  prompts[4] = {{{15.f, 45.f}}, {0}, std::nullopt, {}, 1};
  for (bool logits : {true, false}) {
    const std::vector<Prediction> got = many.predict_batch(prompts, true, logits);
    for (int image = 0; image < 2; ++image) {
      Predictor one(model);
      one.set_image(images[image]);
      EXPECT_EQ(one.original_size(), many.original_size(image));
      EXPECT_LE(max_abs_diff(one.image_embedding(), many.image_embedding(image)), 1e-4);
      for (size_t k = 0; k < prompts.size(); ++k) {
        if (prompts[k].image != image) continue;
        Prompt p = prompts[k];
        p.image = 0;
        const Prediction want = one.predict(p, true, logits);
        ASSERT_EQ(got[k].masks.shape, want.masks.shape) << "prompt " << k;
        EXPECT_LE(max_abs_diff(got[k].low_res_masks, want.low_res_masks), 1e-3) << "prompt " << k;
        EXPECT_LE(max_abs_diff(got[k].iou, want.iou), 1e-4) << "prompt " << k;
        if (logits) {
          EXPECT_LE(max_abs_diff(got[k].masks, want.masks), 1e-3) << "prompt " << k;
        } else {  // uint8 0/1; a pixel whose logit is within the decoders' difference of 0 may flip
          ASSERT_EQ(got[k].masks.dtype, DType::U8);
          ASSERT_EQ(want.masks.dtype, DType::U8);
          int64_t differ = 0;
          for (int64_t j = 0; j < want.masks.numel(); ++j)
            differ += got[k].masks.ptr<uint8_t>()[j] != want.masks.ptr<uint8_t>()[j];
          EXPECT_LE(differ, want.masks.numel() / 1000) << "prompt " << k;
        }
      }
    }
  }
  Prompt bad = prompts[0];
  bad.image = 2;
  EXPECT_THROW(many.predict(bad), Error);  // only images 0 and 1 were set
  bad.image = 0;
  bad.points = {{40.f, 40.f}};  // below image 0 (44 wide, 30 high)
  EXPECT_THROW(many.predict(bad), Error);
}

// More prompts of one form than one decoder batch takes: cut into batches, each prompt gets what it
// gets alone, in the order given.
TEST(MultiImagePredictor, BatchesBeyondTheDecoderBound) {
  const SamConfig cfg = SamConfig::preset("tiny");
  const Model model = Model::from_tensors(Model::synthetic_tensors(cfg, 11), {.device = "cpu", .precision = Precision::FP32});
  Predictor predictor(model);
  predictor.set_image(random_image(30, 44, 1));
  const int64_t most = predictor.max_decode_batch(), n = 2 * most + 3;
  ASSERT_GE(most, 1);
  std::vector<Prompt> prompts(n);
  for (int64_t k = 0; k < n; ++k) prompts[k] = {{{(float)(k % 44), (float)(k % 30)}}, {1}, std::nullopt, {}, 0};
  const std::vector<Prediction> got = predictor.predict_batch(prompts, true, true);
  ASSERT_EQ((int64_t)got.size(), n);
  for (int64_t k : {int64_t(0), most - 1, most, 2 * most, n - 1}) {
    const Prediction want = predictor.predict(prompts[k], true, true);
    EXPECT_LE(max_abs_diff(got[k].low_res_masks, want.low_res_masks), 1e-3) << "prompt " << k;
    EXPECT_LE(max_abs_diff(got[k].iou, want.iou), 1e-4) << "prompt " << k;
  }
}

TEST(MultiImagePredictor, RefusesMorePointsThanTheBound) {
  Prompt p;
  p.points.assign(Prompt::kMaxPoints, {1.f, 1.f});
  p.labels.assign(Prompt::kMaxPoints, 1);
  EXPECT_NO_THROW(Predictor::check_prompt(p, 10, 10));
  p.points.push_back({1.f, 1.f});
  p.labels.push_back(1);
  try {
    Predictor::check_prompt(p, 10, 10);
    ADD_FAILURE() << "no error for " << p.points.size() << " points";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("at most 256 points, got 257"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace samfast
