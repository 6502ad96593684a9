// Unit tests of the pre/post-processing transforms (the bit-exact comparisons with PIL and torch
// are in tests/parity/test_transforms_parity.py).
#include <gtest/gtest.h>

#include <cmath>

#include "masks/upsample.h"
#include "samfast/error.h"
#include "samfast/overlay.h"
#include "samfast/transforms.h"

namespace samfast {
namespace {

Image solid(int h, int w, uint8_t r, uint8_t g, uint8_t b) {
  Image img;
  img.height = h;
  img.width = w;
  img.rgb.resize(size_t(h) * w * 3);
  for (size_t i = 0; i < img.rgb.size(); i += 3) {
    img.rgb[i] = r;
    img.rgb[i + 1] = g;
    img.rgb[i + 2] = b;
  }
  return img;
}

const uint8_t* pixel(const Image& img, int x, int y) { return img.rgb.data() + (size_t(y) * img.width + x) * 3; }

TEST(PreprocessShape, MatchesUpstreamFormula) {
  // Expected values from ResizeLongestSide.get_preprocess_shape.
  EXPECT_EQ(preprocess_shape(534, 800, 1024), std::make_pair(684, 1024));
  EXPECT_EQ(preprocess_shape(1200, 1800, 1024), std::make_pair(683, 1024));
  EXPECT_EQ(preprocess_shape(2000, 3000, 1024), std::make_pair(683, 1024));
  EXPECT_EQ(preprocess_shape(1500, 1000, 1024), std::make_pair(1024, 683));
  EXPECT_EQ(preprocess_shape(333, 777, 1024), std::make_pair(439, 1024));
  EXPECT_EQ(preprocess_shape(1024, 1024, 1024), std::make_pair(1024, 1024));
  EXPECT_EQ(preprocess_shape(1, 1, 1024), std::make_pair(1024, 1024));
  EXPECT_EQ(preprocess_shape(5, 7, 3), std::make_pair(2, 3));
  // Upstream rounds a very thin image's short side to 0; resizing to that then fails.
  EXPECT_EQ(preprocess_shape(1, 5000, 1024), std::make_pair(0, 1024));
  EXPECT_THROW(preprocess_shape(0, 5, 1024), Error);
}

TEST(ResizePil, ConstantImageStaysConstant) {
  const int sizes[][4] = {{1, 1, 1024, 1024}, {7, 5, 13, 29}, {3000, 2000, 1024, 683}, {1, 9, 4, 3}, {40, 40, 40, 17}};
  for (const auto& s : sizes) {
    const Image out = resize_pil_bilinear(solid(s[0], s[1], 0, 97, 255), s[2], s[3]);
    ASSERT_EQ(out.height, s[2]);
    ASSERT_EQ(out.width, s[3]);
    for (int y = 0; y < out.height; ++y)
      for (int x = 0; x < out.width; ++x) {
        const uint8_t* p = pixel(out, x, y);
        ASSERT_EQ(p[0], 0);
        ASSERT_EQ(p[1], 97);
        ASSERT_EQ(p[2], 255);
      }
  }
}

TEST(ResizePil, SameSizeIsCopyAndBadSizesThrow) {
  Image img = solid(3, 4, 1, 2, 3);
  img.rgb[5] = 200;
  EXPECT_EQ(resize_pil_bilinear(img, 3, 4).rgb, img.rgb);
  EXPECT_THROW(resize_pil_bilinear(img, 0, 4), Error);
  Image broken = img;
  broken.rgb.pop_back();
  EXPECT_THROW(resize_pil_bilinear(broken, 6, 8), Error);
}

TEST(ResizePil, HalvingAveragesPairs) {
  // 2x downscale: each output pixel has the triangle weights 1/4, 3/4, 3/4, 1/4 (then normalised)
  // over four inputs; for a 1x4 row [0, 100, 200, 40] -> [round((0*1+100*3+200*3+40*1)/8)] etc.
  Image img = solid(1, 4, 0, 0, 0);
  const uint8_t v[4] = {0, 100, 200, 40};
  for (int x = 0; x < 4; ++x) img.rgb[3 * x] = v[x];
  const Image out = resize_pil_bilinear(img, 1, 2);
  // Output 0: taps at inputs 0..2 with weights 3,3,1 (center 1.0, support 2): (0*3 + 100*3 + 200*1)/7.
  EXPECT_EQ(pixel(out, 0, 0)[0], 71);   // 500/7 = 71.4
  // Output 1: inputs 1..3 with weights 1,3,3: (100 + 600 + 120)/7 = 117.1.
  EXPECT_EQ(pixel(out, 1, 0)[0], 117);
}

TEST(NormalizeAndPad, ValuesAndPadding) {
  Image img = solid(2, 3, 0, 128, 255);
  const Tensor t = normalize_and_pad(img, 4);
  ASSERT_EQ(t.shape, (Shape{1, 3, 4, 4}));
  const float expect[3] = {(0.0f - 123.675f) / 58.395f, (128.0f - 116.28f) / 57.12f, (255.0f - 103.53f) / 57.375f};
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) {
        const float v = t.data[(c * 4 + y) * 4 + x];
        if (y < 2 && x < 3)
          EXPECT_EQ(v, expect[c]) << c << " " << y << " " << x;
        else
          EXPECT_EQ(v, 0.0f) << "padding at " << c << " " << y << " " << x;
      }
  EXPECT_THROW(normalize_and_pad(img, 2), Error);
}

TEST(Interpolate, IdentityWhenSizesEqual) {
  Tensor x = Tensor::empty({2, 3, 5, 7});
  for (int64_t i = 0; i < x.numel(); ++i) x.data[i] = std::sin(0.37f * i) * 20.0f;
  const Tensor y = interpolate_bilinear(x, 5, 7);
  ASSERT_EQ(y.shape, x.shape);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(y.data[i], x.data[i]);
}

TEST(Interpolate, UpsampleByHand) {
  // align_corners=False, 2 -> 4: source positions 0 (clamped from -0.25), 0.25, 0.75, 1.25 (i1
  // clamped to the last pixel, so it acts as 1). For x[y][x] = 2y + x the result is 2*p(y) + p(x).
  const Tensor x = Tensor::from({1, 1, 2, 2}, {0, 1, 2, 3});
  const Tensor y = interpolate_bilinear(x, 4, 4);
  const float p[4] = {0.0f, 0.25f, 0.75f, 1.0f};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(y.data[i * 4 + j], 2 * p[i] + p[j]) << i << " " << j;
}

TEST(Interpolate, DownsampleByHand) {
  // 4 -> 2 without antialiasing: positions 2*(d+0.5)-0.5 = 0.5, 2.5.
  const Tensor x = Tensor::from({1, 1, 1, 4}, {0, 10, 20, 40});
  const Tensor y = interpolate_bilinear(x, 1, 2);
  EXPECT_FLOAT_EQ(y.data[0], 5.0f);
  EXPECT_FLOAT_EQ(y.data[1], 30.0f);
  EXPECT_THROW(interpolate_bilinear(Tensor::zeros({4, 4}), 2, 2), Error);
}

TEST(PostprocessMasks, ShapeAndEqualToUncroppedComputation) {
  Tensor low = Tensor::empty({1, 3, 16, 16});
  for (int64_t i = 0; i < low.numel(); ++i) low.data[i] = std::cos(0.11f * i) * 8.0f;
  const int img_size = 64;
  const std::pair<int, int> input{43, 64}, original{67, 100};
  const Tensor out = postprocess_masks(low, img_size, input, original);
  ASSERT_EQ(out.shape, (Shape{1, 3, 67, 100}));
  // Reference: full upsample, crop, upsample, as Sam.postprocess_masks writes it.
  const Tensor full = interpolate_bilinear(low, img_size, img_size);
  Tensor crop = Tensor::empty({1, 3, input.first, input.second});
  for (int p = 0; p < 3; ++p)
    for (int y = 0; y < input.first; ++y)
      for (int x = 0; x < input.second; ++x)
        crop.data[(p * input.first + y) * input.second + x] = full.data[(p * img_size + y) * img_size + x];
  const Tensor ref = interpolate_bilinear(crop, original.first, original.second);
  for (int64_t i = 0; i < ref.numel(); ++i) ASSERT_EQ(out.data[i], ref.data[i]) << i;
  EXPECT_THROW(postprocess_masks(low, img_size, {65, 64}, original), Error);
}

TEST(ApplyCoords, ScalesToResizedImage) {
  // 534x800 -> 684x1024: x scales by 1024/800, y by 684/534 (in float64).
  float xy[4] = {100.0f, 267.0f, 0.0f, 533.5f};
  apply_coords(xy, 2, {534, 800}, 1024);
  EXPECT_EQ(xy[0], 128.0f);
  EXPECT_EQ(xy[1], static_cast<float>(267.0 * (684.0 / 534.0)));
  EXPECT_EQ(xy[2], 0.0f);
  EXPECT_EQ(xy[3], static_cast<float>(533.5 * (684.0 / 534.0)));
}

TEST(Overlay, DrawsMasksPointsAndBoxes) {
  const Image img = solid(60, 80, 10, 10, 10);
  std::vector<uint8_t> mask(60 * 80, 0);
  for (int y = 10; y < 30; ++y)
    for (int x = 10; x < 40; ++x) mask[y * 80 + x] = 1;
  const Image out = make_overlay(img, {mask.data()}, {{60.0f, 45.0f}, {70.0f, 10.0f}}, {1, 0},
                                 {{{2.0f, 2.0f, 77.0f, 57.0f}}});
  ASSERT_EQ(out.height, 60);
  ASSERT_EQ(out.width, 80);
  ASSERT_EQ(out.rgb.size(), img.rgb.size());
  // Inside the mask, away from its edge: blended, so neither the background nor the solid colour.
  const uint8_t* in = pixel(out, 25, 20);
  EXPECT_NE(in[0], 10);
  // Outside everything: untouched.
  EXPECT_EQ(pixel(out, 50, 35)[0], 10);
  // Positive point green, negative point red, ring white.
  EXPECT_EQ(pixel(out, 60, 45)[1], 220);
  EXPECT_EQ(pixel(out, 60, 45)[0], 0);
  EXPECT_EQ(pixel(out, 70, 10)[0], 230);
  EXPECT_EQ(pixel(out, 70, 10)[1], 0);
  EXPECT_EQ(pixel(out, 65, 45)[0], 255);  // radius 4 disc, ring out to 6
  // Box edge is green, 2 pixels thick.
  EXPECT_EQ(pixel(out, 40, 2)[1], 220);
  EXPECT_EQ(pixel(out, 40, 3)[1], 220);
  EXPECT_EQ(pixel(out, 40, 4)[1], 10);
  EXPECT_THROW(make_overlay(img, {}, {{1.0f, 1.0f}}, {}, {}), Error);
}

}  // namespace
}  // namespace samfast
