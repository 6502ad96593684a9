// Unit tests of the RLE utilities (the comparisons with pycocotools and upstream amg.py on many
// masks are in tests/parity/test_rle_parity.py).
#include <gtest/gtest.h>

#include <random>

#include "samfast/error.h"
#include "samfast/rle.h"

namespace samfast {
namespace {

// The definition, pixel by pixel: runs over the column-major scan, starting outside.
std::vector<uint32_t> naive_counts(const std::vector<uint8_t>& mask, int h, int w) {
  std::vector<uint32_t> counts;
  uint8_t cur = 0;
  uint32_t run = 0;
  for (int c = 0; c < w; ++c)
    for (int r = 0; r < h; ++r) {
      const uint8_t v = mask[size_t(r) * w + c] != 0;
      if (v != cur) {
        counts.push_back(run);
        run = 0;
        cur = v;
      }
      ++run;
    }
  counts.push_back(run);
  return counts;
}

std::array<int, 4> naive_bbox(const std::vector<uint8_t>& mask, int h, int w) {
  int x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c)
      if (mask[size_t(r) * w + c]) {
        x0 = std::min(x0, c), x1 = std::max(x1, c), y0 = std::min(y0, r), y1 = std::max(y1, r);
      }
  if (x1 < 0) return {0, 0, 0, 0};
  return {x0, y0, x1 - x0, y1 - y0};
}

// Random rectangles on an h x w mask: long runs with edges at every alignment.
std::vector<uint8_t> random_mask(std::mt19937& rng, int h, int w, double noise) {
  std::vector<uint8_t> m(size_t(h) * w, 0);
  std::uniform_int_distribution<int> n_rects(0, 4);
  for (int k = n_rects(rng); k > 0; --k) {
    const int y0 = int(rng() % h), x0 = int(rng() % w);
    const int y1 = y0 + int(rng() % (h - y0)), x1 = x0 + int(rng() % (w - x0));
    for (int r = y0; r <= y1; ++r)
      for (int c = x0; c <= x1; ++c) m[size_t(r) * w + c] = 1;
  }
  std::bernoulli_distribution flip(noise);
  for (uint8_t& v : m)
    if (flip(rng)) v ^= 1;
  return m;
}

TEST(RleEncode, SmallMaskColumnMajorStartingOutside) {
  // Column-major scan: 0 0 | 1 1 | 0 1  -> runs 2 zeros, 2 ones, 1 zero, 1 one.
  const std::vector<uint8_t> m = {0, 1, 0,
                                  0, 1, 1};
  const Rle rle = mask_to_rle(m.data(), 2, 3);
  EXPECT_EQ(rle.height, 2);
  EXPECT_EQ(rle.width, 3);
  EXPECT_EQ(rle.counts, (std::vector<uint32_t>{2, 2, 1, 1}));
  EXPECT_EQ(rle_area(rle), 3);
}

TEST(RleEncode, FirstCountIsZeroWhenFirstPixelInside) {
  const std::vector<uint8_t> m = {255, 0, 0, 0};
  EXPECT_EQ(mask_to_rle(m.data(), 2, 2).counts, (std::vector<uint32_t>{0, 1, 3}));
}

TEST(RleEncode, EmptyFullAndZeroSized) {
  std::vector<uint8_t> m(600 * 800, 0);
  EXPECT_EQ(mask_to_rle(m.data(), 600, 800).counts, (std::vector<uint32_t>{480000}));
  std::fill(m.begin(), m.end(), 1);
  EXPECT_EQ(mask_to_rle(m.data(), 600, 800).counts, (std::vector<uint32_t>{0, 480000}));
  EXPECT_EQ(mask_to_rle(nullptr, 0, 5).counts, (std::vector<uint32_t>{0}));
  EXPECT_THROW(mask_to_rle(m.data(), -1, 5), Error);
  EXPECT_THROW(mask_to_rle(nullptr, 2, 2), Error);
}

TEST(RleEncode, MatchesNaiveScanAtEveryStripAndWordAlignment) {
  std::mt19937 rng(7);
  const int sizes[][2] = {{1, 1}, {1, 9}, {9, 1}, {3, 64}, {5, 65}, {7, 129}, {8, 8}, {13, 200}, {64, 63}, {123, 77}};
  for (auto [h, w] : sizes)
    for (double noise : {0.0, 0.01, 0.5}) {
      const std::vector<uint8_t> m = random_mask(rng, h, w, noise);
      const Rle rle = mask_to_rle(m.data(), h, w);
      ASSERT_EQ(rle.counts, naive_counts(m, h, w)) << h << "x" << w << " noise " << noise;
      EXPECT_EQ(rle_to_mask(rle), m) << h << "x" << w;
      EXPECT_EQ(mask_bbox_xywh(m.data(), h, w), naive_bbox(m, h, w)) << h << "x" << w;
    }
}

TEST(RleDecode, RejectsCountsNotCoveringTheMask) {
  EXPECT_EQ(rle_to_mask(Rle{2, 2, {1, 2, 1}}), (std::vector<uint8_t>{0, 1, 1, 0}));
  EXPECT_THROW(rle_to_mask(Rle{2, 2, {1, 2}}), Error);
  EXPECT_THROW(rle_to_mask(Rle{2, 2, {1, 2, 2}}), Error);
}

TEST(RleDecode, EmptyMasksDecodeWithEmptyRuns) {
  // As upstream's rle_to_mask: a 0-row mask takes zero-length runs of either value (mask_to_rle
  // writes {0} for it); a run of 1s of length 0 must not place its first pixel (idx % 0).
  for (auto [h, w] : {std::pair{0, 5}, std::pair{5, 0}, std::pair{0, 0}}) {
    EXPECT_TRUE(rle_to_mask(Rle{h, w, {0, 0}}).empty()) << h << "x" << w;
    EXPECT_TRUE(rle_to_mask(Rle{h, w, {0, 0, 0}}).empty()) << h << "x" << w;
    EXPECT_TRUE(rle_to_mask(mask_to_rle(nullptr, h, w)).empty()) << h << "x" << w;
  }
  EXPECT_EQ(rle_to_mask(Rle{1, 3, {0, 0, 1, 2}}), (std::vector<uint8_t>{0, 1, 1}));
}

TEST(RleCoco, KnownStringsFromPycocotools) {
  // Expected strings: pycocotools.mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)["counts"].
  struct Case { int h, w; std::vector<uint32_t> counts; const char* s; };
  const Case cases[] = {
      {600, 800, {0, 480000}, "0Phd>"},
      {600, 800, {480000}, "Phd>"},
      {4, 4, {3, 1, 1, 5, 2, 4}, "31141O"},
      {6, 9, {20, 1, 32, 1}, "d01P10"},
      {20, 20, {100, 50, 10, 200, 5, 35}, "T3b1:f4KkJ"},  // negative deltas
  };
  for (const Case& c : cases) {
    const Rle rle{c.h, c.w, c.counts};
    EXPECT_EQ(rle_to_coco_string(rle), c.s);
    EXPECT_EQ(coco_string_to_rle(c.s, c.h, c.w).counts, c.counts) << c.s;
  }
}

TEST(RleCoco, RoundTripsLargeAndAlternatingCounts) {
  // Counts up to 2^32-1 (3 x 1431655765 pixels) and deltas of either sign at the extremes.
  const uint32_t big = 4294967295u;
  const Rle rle{3, 1431655765, {big - 3, 1, 0, 1, 1}};
  EXPECT_EQ(coco_string_to_rle(rle_to_coco_string(rle), 3, 1431655765).counts, rle.counts);
  std::mt19937 rng(3);
  for (int t = 0; t < 50; ++t) {
    const int h = 1 + int(rng() % 90), w = 1 + int(rng() % 90);
    const std::vector<uint8_t> m = random_mask(rng, h, w, t % 2 ? 0.3 : 0.0);
    const Rle r = mask_to_rle(m.data(), h, w);
    EXPECT_EQ(coco_string_to_rle(rle_to_coco_string(r), h, w).counts, r.counts);
  }
}

TEST(RleCoco, MalformedStringsThrowWithTheReason) {
  auto message = [](const std::string& s, int h, int w) -> std::string {
    try {
      coco_string_to_rle(s, h, w);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message("3 1", 2, 2).find("outside '0'..'o'"), std::string::npos);
  EXPECT_NE(message("3p", 2, 2).find("outside '0'..'o'"), std::string::npos);
  EXPECT_NE(message("3P", 2, 2).find("cut off"), std::string::npos);       // 'P' has the "more" bit
  EXPECT_NE(message("PPPPPPPP0", 2, 2).find("longer than"), std::string::npos);
  EXPECT_NE(message("@", 2, 2).find("outside 0..2^32-1"), std::string::npos);  // decodes to -16
  EXPECT_NE(message("32", 2, 2).find("sum to 5 but"), std::string::npos);
  EXPECT_NE(message("31", 3, 2).find("sum to 4 but"), std::string::npos);
  EXPECT_EQ(message("", 0, 3), "no error");
}

TEST(RleBbox, UpstreamXywhConvention) {
  std::vector<uint8_t> m(6 * 9, 0);
  EXPECT_EQ(mask_bbox_xywh(m.data(), 6, 9), (std::array<int, 4>{0, 0, 0, 0}));
  m[5 * 9 + 8] = 1;  // a single pixel: w = h = 0, as box_xyxy_to_xywh gives
  EXPECT_EQ(mask_bbox_xywh(m.data(), 6, 9), (std::array<int, 4>{8, 5, 0, 0}));
  m[2 * 9 + 3] = 7;
  EXPECT_EQ(mask_bbox_xywh(m.data(), 6, 9), (std::array<int, 4>{3, 2, 5, 3}));
  m[4 * 9 + 0] = 1;  // a row inside the box that widens it only on the left
  EXPECT_EQ(mask_bbox_xywh(m.data(), 6, 9), (std::array<int, 4>{0, 2, 8, 3}));
  EXPECT_EQ(mask_bbox_xywh(nullptr, 0, 0), (std::array<int, 4>{0, 0, 0, 0}));
}

}  // namespace
}  // namespace samfast
