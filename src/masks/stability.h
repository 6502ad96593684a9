// The stability score of a mask: how much of it stays when the logit threshold moves. Below both
// the CPU backend (its mask_stats op) and the pipeline.
// ref: segment_anything/utils/amg.py calculate_stability_score
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace samfast {

// One (h, w) mask of logits: {count(> high), count(> low)}, each row's count wrapped to int16 as
// upstream sums rows (.sum(-1, dtype=torch.int16)), the rows then summed in int32.
std::array<int32_t, 2> stability_counts(const float* mask, int h, int w, float high, float low);

// masks: (n, h, w) logits. Per mask: count(> thr + off) / count(> thr - off) in float32, the
// thresholds rounded to float32 and the per-row counts wrapped to int16 as upstream sums them.
// A mask with an empty union gives NaN, as upstream's 0/0.
std::vector<float> calculate_stability_score(const float* masks, int64_t n, int h, int w,
                                             double mask_threshold, double threshold_offset);

}  // namespace samfast
