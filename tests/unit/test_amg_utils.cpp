// Unit tests of the automatic mask generator's geometry helpers on hand-computed cases (the
// comparisons with upstream amg.py and torchvision on random inputs are in
// tests/parity/test_amg_utils_parity.py).
#include <gtest/gtest.h>

#include <cmath>

#include "masks/stability.h"
#include "pipeline/amg_utils.h"
#include "samfast/error.h"

namespace samfast {
namespace {

TEST(AmgUtils, PointGridIsEvenlySpacedXFastest) {
  EXPECT_EQ(build_point_grid(1), (std::vector<Point2d>{{0.5, 0.5}}));
  EXPECT_EQ(build_point_grid(2), (std::vector<Point2d>{{0.25, 0.25}, {0.75, 0.25}, {0.25, 0.75}, {0.75, 0.75}}));
  const std::vector<Point2d> g = build_point_grid(4);  // 1/8, 3/8, 5/8, 7/8
  ASSERT_EQ(g.size(), 16u);
  EXPECT_EQ(g[1], (Point2d{0.375, 0.125}));
  EXPECT_EQ(g[14], (Point2d{0.625, 0.875}));
  EXPECT_THROW(build_point_grid(0), InvalidArgument);  // (upstream divides by zero)
  EXPECT_THROW(build_all_layer_point_grids(4, 3, 2), InvalidArgument);  // layer 3: int(4 / 8) = 0 points
  EXPECT_THROW(build_all_layer_point_grids(4, -1, 2), InvalidArgument);
}

TEST(AmgUtils, LayerGridsShrinkByScale) {
  const auto grids = build_all_layer_point_grids(32, 2, 2);
  ASSERT_EQ(grids.size(), 3u);
  EXPECT_EQ(grids[0].size(), 32u * 32u);
  EXPECT_EQ(grids[1].size(), 16u * 16u);
  EXPECT_EQ(grids[2].size(), 8u * 8u);
  // int(5 / 2) = 2, int(5 / 4) = 1.
  const auto odd = build_all_layer_point_grids(5, 2, 2);
  EXPECT_EQ(odd[1].size(), 4u);
  EXPECT_EQ(odd[2].size(), 1u);
}

TEST(AmgUtils, CropBoxesOneLayer) {
  // short side 100, 2 crops a side: overlap int(0.5 * 100 * 1) = 50,
  // crop_w = ceil((50 + 200) / 2) = 125, crop_h = ceil((50 + 100) / 2) = 75; x0 in {0, 75}, y0 in {0, 25}.
  const CropBoxes c = generate_crop_boxes(100, 200, 1, 0.5);
  EXPECT_EQ(c.boxes, (std::vector<BoxXyxyi>{
                         {0, 0, 200, 100}, {0, 0, 125, 75}, {0, 25, 125, 100}, {75, 0, 200, 75}, {75, 25, 200, 100}}));
  EXPECT_EQ(c.layer_idxs, (std::vector<int>{0, 1, 1, 1, 1}));
  const CropBoxes none = generate_crop_boxes(10, 20, 0, 0.3);
  EXPECT_EQ(none.boxes, (std::vector<BoxXyxyi>{{0, 0, 20, 10}}));
  // Two layers: 1 + 4 + 16 boxes; overlap of layer 2 is int(0.25 * 101 * 0.5) = 12, crop side
  // ceil((12 * 3 + 101) / 4) = 35, so the last crop starts at 3 * 23 = 69 and is clipped to 101.
  const CropBoxes two = generate_crop_boxes(101, 101, 2, 0.25);
  ASSERT_EQ(two.boxes.size(), 21u);
  EXPECT_EQ(two.boxes.back(), (BoxXyxyi{69, 69, 101, 101}));
  EXPECT_EQ(two.layer_idxs.back(), 2);
}

TEST(AmgUtils, UncropAddsCropOrigin) {
  EXPECT_EQ(uncrop_boxes_xyxy({{1, 2, 3, 4}}, {10, 20, 50, 60}), (std::vector<BoxXyxyf>{{11, 22, 13, 24}}));
  EXPECT_EQ(uncrop_points({{1.5f, 2.5f}}, {10, 20, 50, 60}), (std::vector<Point2f>{{11.5f, 22.5f}}));
}

TEST(AmgUtils, NearCropEdgeButNotImageEdge) {
  const BoxXyxyi orig{0, 0, 200, 200};
  // x1 = 95 is within 20 of the crop's 100 and far from the image's 200.
  // x0 = y0 = 5 are near the crop's 0 but that is also the image's edge.
  EXPECT_EQ(is_box_near_crop_edge({{10, 10, 50, 95}, {5, 5, 50, 50}, {30, 30, 70, 70}}, {0, 0, 100, 100}, orig),
            (std::vector<uint8_t>{1, 0, 0}));
  // Boxes are in crop coordinates: x0 = 0 becomes 100, the crop's left side.
  EXPECT_EQ(is_box_near_crop_edge({{0, 40, 50, 60}}, {100, 0, 200, 100}, orig), (std::vector<uint8_t>{1}));
  // atol is inclusive: 20 away is near, 21 is not.
  EXPECT_EQ(is_box_near_crop_edge({{40, 40, 80, 60}, {40, 40, 79, 60}}, {0, 0, 100, 100}, orig, 20.0),
            (std::vector<uint8_t>{1, 0}));
}

TEST(AmgUtils, StabilityScoreIsIoUOfThresholdedMasks) {
  // high threshold 1: {2, 3} inside; low threshold -1: {0.5, 2, 3} inside -> 2 / 3.
  // Second mask: nothing above -1 -> 0 / 0 = NaN, as upstream.
  const std::vector<float> masks{-1.0f, 0.5f, 2.0f, 3.0f, -5.0f, -5.0f, -5.0f, -5.0f};
  const std::vector<float> s = calculate_stability_score(masks.data(), 2, 2, 2, 0.0, 1.0);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0], 2.0f / 3.0f);
  EXPECT_TRUE(std::isnan(s[1]));
}

TEST(AmgUtils, NmsSuppressesOverlapsWithinACategory) {
  // IoU(A, B) = 81 / 119 ~ 0.68; C is disjoint.
  const std::vector<BoxXyxyf> boxes{{0, 0, 10, 10}, {1, 1, 11, 11}, {20, 20, 30, 30}};
  const std::vector<float> scores{0.9f, 0.8f, 0.7f};
  EXPECT_EQ(batched_nms(boxes, scores, {0, 0, 0}, 0.5), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(batched_nms(boxes, scores, {0, 0, 0}, 0.7), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(batched_nms(boxes, scores, {0, 1, 0}, 0.5), (std::vector<int64_t>{0, 1, 2}));
  // Lower score first in the input: output is by descending score.
  EXPECT_EQ(batched_nms(boxes, {0.1f, 0.8f, 0.9f}, {0, 0, 0}, 0.5), (std::vector<int64_t>{2, 1}));
  EXPECT_TRUE(batched_nms({}, {}, {}, 0.5).empty());
  EXPECT_THROW(batched_nms(boxes, scores, {0}, 0.5), Error);
}

TEST(AmgUtils, NmsTiesGoInIndexOrderAndEmptyBoxesSurvive) {
  // Equal scores: the lower index is visited first and suppresses the other.
  EXPECT_EQ(batched_nms({{0, 0, 10, 10}, {0, 0, 10, 10}}, {0.5f, 0.5f}, {0, 0}, 0.5), (std::vector<int64_t>{0}));
  EXPECT_EQ(batched_nms({{0, 0, 1, 1}, {5, 5, 6, 6}, {9, 9, 10, 10}}, {0.5f, 0.7f, 0.5f}, {0, 0, 0}, 0.5),
            (std::vector<int64_t>{1, 0, 2}));
  // Two identical zero-area boxes: IoU is 0 / 0 = NaN, which suppresses nothing.
  EXPECT_EQ(batched_nms({{3, 3, 3, 3}, {3, 3, 3, 3}}, {0.9f, 0.8f}, {0, 0}, 0.5), (std::vector<int64_t>{0, 1}));
}

TEST(AmgUtils, NmsPerCategoryPathAbove1000Boxes) {
  // 1200 boxes (torchvision's per-category path): pairs of identical boxes in alternating
  // categories, so only the categories keep the duplicates apart.
  std::vector<BoxXyxyf> boxes;
  std::vector<float> scores;
  std::vector<int> idxs;
  for (int i = 0; i < 1200; ++i) {
    const float x = float(i / 2) * 20.0f;
    boxes.push_back({x, 0, x + 10, 10});
    scores.push_back(float(i % 7));
    idxs.push_back(i % 2 == 0 ? 0 : (i % 4 == 1 ? 0 : 1));
  }
  const std::vector<int64_t> kept = batched_nms(boxes, scores, idxs, 0.5);
  // Pairs (4k, 4k+1) share category 0: one of each goes; pairs (4k+2, 4k+3) differ: both stay.
  EXPECT_EQ(kept.size(), 300u + 600u);
  for (size_t k = 1; k < kept.size(); ++k) {
    const float a = scores[size_t(kept[k - 1])], b = scores[size_t(kept[k])];
    EXPECT_TRUE(a > b || (a == b && kept[k - 1] < kept[k]));
  }
}

}  // namespace
}  // namespace samfast
