// MaskGenerator's checks and crop accounting without a model (the bound on crop layers, crop counts
// against upstream's generate_crop_boxes), and generate() on the CPU backend with the tiny synthetic
// model: the progress callback, and images 1 pixel thin, on which upstream makes empty crops.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/rng.h"
#include "error_of.h"
#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/mask_generator.h"
#include "samfast/model.h"

namespace samfast {
namespace {

MaskGeneratorOptions with_layers(int crop_n_layers) {
  MaskGeneratorOptions o;
  o.crop_n_layers = crop_n_layers;
  return o;
}

using testing::error_of;

TEST(MaskGenerator, CropLayersAreBoundedAndTheErrorNamesTheCrops) {
  EXPECT_NO_THROW(MaskGenerator::validate(with_layers(4)));
  EXPECT_NE(error_of([] { MaskGenerator::validate(with_layers(5)); }).find("asks for 1365 crops"), std::string::npos);
  EXPECT_NE(error_of([] { MaskGenerator::validate(with_layers(8)); }).find("asks for 87381 crops"), std::string::npos);
  EXPECT_NE(error_of([] { MaskGenerator::validate(with_layers(1000)); }).find("over 10^18"), std::string::npos);
  EXPECT_THROW(MaskGenerator::validate(with_layers(-1)), Error);
}

TEST(MaskGenerator, ValidateChecksOptionsWithoutAModel) {
  MaskGeneratorOptions o;
  EXPECT_NO_THROW(MaskGenerator::validate(o));
  o.output_mode = "png";
  EXPECT_THROW(MaskGenerator::validate(o), Error);
  o = {};
  o.crop_n_layers = 2, o.points_per_side = 3, o.crop_n_points_downscale_factor = 2;  // layer 2: int(3 / 4) = 0
  EXPECT_NE(error_of([&] { MaskGenerator::validate(o); }).find("crop layer 2 would have no points"), std::string::npos);
  o.crop_n_layers = 1;
  EXPECT_NO_THROW(MaskGenerator::validate(o));
  o.points_per_side = 0, o.point_grids = {{{0.5, 0.5}}};  // one grid for two layers
  EXPECT_THROW(MaskGenerator::validate(o), Error);
}

TEST(MaskGenerator, CropCountsMatchUpstreamsCropBoxes) {
  for (int layers : {0, 1, 2, 3, 4})
    EXPECT_EQ(MaskGenerator::crop_count(with_layers(layers)), (int64_t{4} << (2 * layers)) / 3) << layers;
  // len(generate_crop_boxes((h, w), n, 512 / 1500)[0]), less its empty boxes (x0 >= x1 or y0 >= y1):
  EXPECT_EQ(MaskGenerator::crop_count(with_layers(3), 1000, 1500), 85);
  EXPECT_EQ(MaskGenerator::crop_count(with_layers(2), 48, 64), 21);
  EXPECT_EQ(MaskGenerator::crop_count(with_layers(0), 1, 1), 1);
  EXPECT_EQ(MaskGenerator::crop_count(with_layers(1), 64, 1), 5 - 2);   // [1, 0, 1, 32], [1, 32, 1, 64]
  EXPECT_EQ(MaskGenerator::crop_count(with_layers(1), 1, 64), 5 - 2);
  EXPECT_EQ(MaskGenerator::crop_count(with_layers(2), 3, 64), 21 - 4);  // [16 * i, 3, 16 * i + 16, 3]
  EXPECT_EQ(MaskGenerator::crop_count(with_layers(4), 4096, 5), 137);   // 341, some inverted as [6, 0, 5, 1024]
}

TEST(MaskGenerator, CropsUnder16PixelsAreRefusedForTheImage) {
  // 64x48: layer 2's crops are 22x18, layer 3's 12x10.
  EXPECT_EQ(MaskGenerator::crop_count(with_layers(2), 48, 64), 21);
  const std::string e = error_of([] { MaskGenerator::crop_count(with_layers(3), 48, 64); });
  EXPECT_NE(e.find("crops of 12x10 pixels (layer 3) in the 64x48 image"), std::string::npos) << e;
  EXPECT_NE(e.find("use at most 2 crop layers"), std::string::npos) << e;
  EXPECT_THROW(MaskGenerator::crop_count(with_layers(1), 1, 1), Error);
  EXPECT_THROW(MaskGenerator::crop_count(with_layers(0), 0, 5), Error);
}

Image random_image(int height, int width, uint64_t seed) {
  Image im{height, width, std::vector<uint8_t>(size_t(height) * width * 3)};
  Rng rng{seed};
  for (uint8_t& v : im.rgb) v = uint8_t(rng.uniform(0.f, 255.f));
  return im;
}

// Random weights score low: with no IoU or stability filter, masks survive from every crop.
MaskGeneratorOptions keep_all(int crop_n_layers) {
  MaskGeneratorOptions o = with_layers(crop_n_layers);
  o.points_per_side = 2, o.pred_iou_thresh = 0, o.stability_score_thresh = 0, o.output_mode = "uncompressed_rle";
  return o;
}

// Built once: the tests below only read it.
const Model& tiny_model() {
  static const Model model = Model::from_tensors(Model::synthetic_tensors(SamConfig::preset("tiny"), 3),
                                                 {.device = "cpu", .precision = Precision::FP32});
  return model;
}

TEST(MaskGeneratorTiny, ProgressIsReportedAfterEachCropAndChangesNothing) {
  const MaskGenerator gen(tiny_model(), keep_all(1));
  const Image im = random_image(48, 64, 1);
  std::vector<std::pair<int, int>> calls;
  const std::vector<MaskRecord> with =
      gen.generate(im, nullptr, nullptr, [&](int done, int total) { calls.emplace_back(done, total); });
  EXPECT_EQ(calls, (std::vector<std::pair<int, int>>{{1, 5}, {2, 5}, {3, 5}, {4, 5}, {5, 5}}));
  const std::vector<MaskRecord> without = gen.generate(im);
  ASSERT_EQ(with.size(), without.size());
  ASSERT_FALSE(with.empty());
  for (size_t i = 0; i < with.size(); ++i) {
    EXPECT_EQ(with[i].rle_counts, without[i].rle_counts);
    EXPECT_EQ(with[i].crop_box, without[i].crop_box);
  }
}

TEST(MaskGeneratorTiny, OnePixelThinImagesSkipEmptyCrops) {
  // {height, width, crop layers, crops}: upstream segments the first two; on the others its
  // generate_crop_boxes makes two empty crops (e.g. [1, 0, 1, 32]), on which it crashes.
  const std::vector<std::array<int, 4>> cases{{64, 1, 0, 1}, {1, 64, 0, 1}, {64, 1, 1, 3}, {1, 64, 1, 3}};
  for (const auto& [h, w, layers, crops] : cases) {
    SCOPED_TRACE(std::to_string(w) + "x" + std::to_string(h) + ", " + std::to_string(layers) + " crop layers");
    const MaskGenerator gen(tiny_model(), keep_all(layers));
    int total = 0;
    const std::vector<MaskRecord> records =
        gen.generate(random_image(h, w, 2), nullptr, nullptr, [&](int, int n) { total = n; });
    EXPECT_EQ(total, crops);
    EXPECT_FALSE(records.empty());
    for (const MaskRecord& r : records) {
      EXPECT_EQ(r.height, h);
      EXPECT_EQ(r.width, w);
      EXPECT_GT(r.crop_box[2], 0);  // crop boxes are x, y, w, h
      EXPECT_GT(r.crop_box[3], 0);
    }
  }
}

}  // namespace
}  // namespace samfast
