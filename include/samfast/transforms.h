// The image and point transforms of upstream's SamPredictor, for code that drives Model directly
// (the predictor and the mask generator apply them themselves).
// ref: segment_anything/utils/transforms.py ResizeLongestSide, modeling/sam.py preprocess
#pragma once
#include <cstdint>
#include <utility>

#include "samfast/image.h"
#include "samfast/tensor.h"

namespace samfast {

// (newh, neww) for resizing (oldh, oldw) so that the longest side is long_side (upstream's rounding).
std::pair<int, int> preprocess_shape(int oldh, int oldw, int long_side);

// PIL's Image.resize(..., BILINEAR) on a uint8 RGB image, bit-exact (Pillow's fixed-point
// two-pass antialiased resample: horizontal pass first, then vertical).
Image resize_pil_bilinear(const Image& in, int out_h, int out_w);

// Image (already resized) -> (1, 3, S, S) fp32: (x - mean) / std, zero-padded bottom/right to S.
Tensor normalize_and_pad(const Image& img, int size);
// The same for an image already resized and held as host fp32 (1, 3, H, W) or (3, H, W) values in
// 0..255, as upstream's set_torch_image takes it (Sam.preprocess).
Tensor normalize_and_pad(const Tensor& image, int size);

// Point coordinates (x, y) in the original image -> coordinates in the resized image (upstream
// computes this in float64, then casts to float32).
void apply_coords(float* xy, int64_t n_points, std::pair<int, int> original_size, int long_side);

}  // namespace samfast
