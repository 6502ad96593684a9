// The argument contract of each op of backend/ops.h, checked here once for every backend: each
// throws samfast::Error naming the op and the shapes that do not fit. A backend calls the check
// first, then adds only its own limits (a GPU's grid sizes, that a tensor is in its memory).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "samfast/tensor.h"

namespace samfast {

void check_linear(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor* residual);
void check_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b);
void check_conv2d(const Tensor& x, const Tensor& w, int stride, int pad);
void check_conv_transpose2x2(const Tensor& x, const Tensor& w, const Tensor& b);
void check_add(const Tensor& a, const Tensor& b);
// nchw_to_nhwc / nhwc_to_nchw: x is 4-D; layout names it in the message, e.g. "(B, C, H, W)".
void check_4d(const Tensor& x, const char* op, const char* layout);
void check_normalize_rgb(const Tensor& rgb, const Tensor& extent);
void check_patch_embed(const Tensor& x, const Tensor& w, const Tensor* pos);
void check_rel_pos_attention(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                             const Tensor& rel_pos_w, int heads, int window);
void check_attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads);
void check_token_self_attention(const Tensor& x, const Tensor& x_v, const Tensor& wq, const Tensor& bq,
                                const Tensor& wk, const Tensor& bk, const Tensor& wv, const Tensor& bv, int heads);
void check_image_to_token_attention(const Tensor& x, const Tensor& k, const Tensor& kb, const Tensor& v,
                                    const Tensor& bias, const Tensor& residual, const Tensor& ln_w,
                                    const Tensor& ln_b, int heads);
void check_upscale(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w, const Tensor& ln_b,
                   const Tensor& w2, const Tensor& b2, const Tensor& hyper);
void check_bmm_nt(const Tensor& a, const Tensor& b);
void check_postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                             std::pair<int, int> original_size);
// mask_stats / mask_rles: (N, L, L) low-res logits.
void check_mask_planes(const Tensor& low_res, const char* op);
// mask_rles: a (h, w) mask at (x0, y0) lies inside the (H, W) frame, whose pixels 32-bit RLE counts hold.
void check_mask_frame(std::pair<int, int> size, std::pair<int, int> offset_xy, std::pair<int, int> frame);
void check_gather(const Tensor& x, const std::vector<int64_t>& select);
void check_slice(const Tensor& x, int64_t first, int64_t count);
void check_concat(const std::vector<Tensor>& xs);
void check_expand_batch(const Tensor& x, int64_t batch);

}  // namespace samfast
