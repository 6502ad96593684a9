// Preprocessing and post-processing exactly as upstream SamPredictor does them.
// ref: segment_anything/utils/transforms.py ResizeLongestSide, modeling/sam.py preprocess/postprocess_masks
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

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

// torch.nn.functional.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=False)
// on a (N, C, H, W) tensor.
Tensor interpolate_bilinear(const Tensor& x, int out_h, int out_w);

// Sam.postprocess_masks: upsample low-res logits (N, C, h, w) to (S, S), crop to input_size,
// upsample to original_size. Returns logits (N, C, H0, W0).
Tensor postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                         std::pair<int, int> original_size);

// Point coordinates (x, y) in the original image -> coordinates in the resized image (upstream
// computes this in float64, then casts to float32).
void apply_coords(float* xy, int64_t n_points, std::pair<int, int> original_size, int long_side);

}  // namespace samfast
