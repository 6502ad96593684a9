// Bilinear resizing of mask logits, bit-exact with upstream's torch interpolate: Sam.postprocess_masks
// on the CPU. Below both the CPU backend (its postprocess_masks and mask-measure ops) and the pipeline.
// ref: modeling/sam.py Sam.postprocess_masks
#pragma once
#include <utility>

#include "samfast/tensor.h"

namespace samfast {

// torch.nn.functional.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=False)
// on a (N, C, H, W) tensor.
Tensor interpolate_bilinear(const Tensor& x, int out_h, int out_w);

// Sam.postprocess_masks: upsample low-res logits (N, C, h, w) to (S, S), crop to input_size,
// upsample to original_size. Returns logits (N, C, H0, W0).
Tensor postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                         std::pair<int, int> original_size);

}  // namespace samfast
