// Mask post-processing on the GPU (ref: modeling/sam.py Sam.postprocess_masks) so that only final
// masks cross to the host, and the measures the automatic mask generator takes of full-resolution
// masks (ref: utils/amg.py calculate_stability_score, batched_mask_to_box, mask_to_rle_pytorch).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace samfast::cuda {

// low: planes x (L, L) logits (T = float, __nv_bfloat16 or __half). Writes planes x (H, W) fp32:
// bilinear (align_corners=False) L -> S, crop to (in_h, in_w), bilinear -> (H, W).
template <class T>
void postprocess_masks(const T* low, int64_t planes, int L, int S, int in_h, int in_w, int H, int W, float* out,
                       cudaStream_t stream);

// Per plane of the same upsampling to (H, W): counts[2p] = #(logit > hi), counts[2p + 1] = #(> lo);
// box[4p..4p+3] = inclusive (x0, y0, x1, y1) of logit > thr, or (INT_MAX, INT_MAX, -1, -1) if empty.
template <class T>
void mask_stats(const T* low, int64_t planes, int L, int S, int in_h, int in_w, int H, int W, float thr, float hi,
                float lo, int* counts, int* box, cudaStream_t stream);

// planes x (h, w) bytes, 1 where the upsampled logit > thr.
template <class T>
void binary_masks(const T* low, int64_t planes, int L, int S, int in_h, int in_w, int h, int w, float thr,
                  uint8_t* out, cudaStream_t stream);

// RLE run starts of binary masks (planes x (h, w)) placed at (x0, y0) of an (H, W) frame of zeros,
// in column-major order. count_run_starts fills per_column (planes x w, scratch) with each column's
// offset among its plane's run starts and totals[p] with plane p's number of run starts;
// write_run_starts then writes plane p's starts, ascending, at starts + base[p].
void count_run_starts(const uint8_t* masks, int64_t planes, int h, int w, int x0, int y0, int H, int W,
                      int* per_column, int64_t* totals, cudaStream_t stream);
void write_run_starts(const uint8_t* masks, int64_t planes, int h, int w, int x0, int y0, int H, int W,
                      int* per_column, const int64_t* base, uint32_t* starts, cudaStream_t stream);

}  // namespace samfast::cuda
