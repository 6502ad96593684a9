// Mask post-processing on the GPU (ref: modeling/sam.py Sam.postprocess_masks), so that only final
// masks cross to the host.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace samfast::cuda {

// low: planes x (L, L) logits (T = float, __nv_bfloat16 or __half). Writes planes x (H, W) fp32:
// bilinear (align_corners=False) L -> S, crop to (in_h, in_w), bilinear -> (H, W); 0/1 when binarize.
template <class T>
void postprocess_masks(const T* low, int64_t planes, int L, int S, int in_h, int in_w, int H, int W, bool binarize,
                       float* out, cudaStream_t stream);

}  // namespace samfast::cuda
