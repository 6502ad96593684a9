// ref: segment_anything/utils/amg.py calculate_stability_score
#include "masks/stability.h"

#include <algorithm>

namespace samfast {

std::array<int32_t, 2> stability_counts(const float* mask, int h, int w, float high, float low) {
  int32_t inter = 0, uni = 0;
  for (int r = 0; r < h; ++r) {
    const float* row = mask + int64_t(r) * w;
    int64_t row_inter = 0, row_uni = 0;
    for (int c = 0; c < w; ++c) {
      row_inter += row[c] > high;
      row_uni += row[c] > low;
    }
    // .sum(-1, dtype=torch.int16): a row count wraps modulo 2^16 (only past 32767 columns).
    inter += int16_t(uint16_t(row_inter));
    uni += int16_t(uint16_t(row_uni));
  }
  return {inter, uni};
}

std::vector<float> calculate_stability_score(const float* masks, int64_t n, int h, int w,
                                             double mask_threshold, double threshold_offset) {
  // Upstream compares float32 logits with Python floats: the threshold is rounded to float32.
  const float high = float(mask_threshold + threshold_offset);
  const float low = float(mask_threshold - threshold_offset);
  std::vector<float> scores(size_t(std::max<int64_t>(n, 0)));
  for (int64_t m = 0; m < n; ++m) {
    const auto [inter, uni] = stability_counts(masks + m * h * int64_t(w), h, w, high, low);
    scores[size_t(m)] = float(inter) / float(uni);
  }
  return scores;
}

}  // namespace samfast
