// Argument checks shared by the backends' mask-measure ops (backend/ops.h mask_stats, mask_rles).
#pragma once
#include <cstdint>
#include <string>
#include <utility>

#include "samfast/error.h"
#include "samfast/tensor.h"

namespace samfast {

inline void check_mask_planes(const Tensor& low_res, const char* op) {
  if (low_res.ndim() != 3 || low_res.dim(1) != low_res.dim(2))
    throw Error(std::string(op) + ": expected (N, L, L) low-res logits, got " + shape_str(low_res.shape));
}

// A (h, w) mask at (x0, y0) must lie inside the (H, W) frame, whose pixels 32-bit RLE counts must hold.
inline void check_mask_frame(std::pair<int, int> size, std::pair<int, int> offset_xy, std::pair<int, int> frame) {
  const auto [h, w] = size;
  const auto [x0, y0] = offset_xy;
  const auto [H, W] = frame;
  if (h <= 0 || w <= 0 || x0 < 0 || y0 < 0 || int64_t(x0) + w > W || int64_t(y0) + h > H)
    throw Error("mask_rles: a " + std::to_string(w) + "x" + std::to_string(h) + " mask at (" + std::to_string(x0) +
                ", " + std::to_string(y0) + ") does not fit in the " + std::to_string(W) + "x" + std::to_string(H) +
                " frame");
  if (uint64_t(H) * uint64_t(W) > 0xffffffffull)
    throw Error("mask_rles: a " + std::to_string(W) + "x" + std::to_string(H) +
                " frame has more than 2^32-1 pixels, which 32-bit RLE counts cannot hold");
}

}  // namespace samfast
