// The ops that backends may fuse, composed of the others.
#include "backend/ops.h"

#include "backend/op_checks.h"

namespace samfast {

Tensor Ops::upscale_masks(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w,
                          const Tensor& ln_b, float eps, const Tensor& w2, const Tensor& b2, const Tensor& hyper) {
  check_upscale(keys, w1, b1, ln_w, ln_b, w2, b2, hyper);
  Tensor x = conv_transpose2x2(keys, w1, b1, Act::None);
  x = layer_norm(x, ln_w, ln_b, eps, Act::GELU);
  x = conv_transpose2x2(x, w2, b2, Act::GELU);  // (B, 4G, 4G, C2)
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2);
  return bmm_nt(hyper, x.view({B, H * W, x.dim(3)})).view({B, hyper.dim(1), H, W});
}

Tensor Ops::token_self_attention(const Tensor& x, const Tensor& x_v, const Tensor& wq, const Tensor& bq,
                                 const Tensor& wk, const Tensor& bk, const Tensor& wv, const Tensor& bv, int heads) {
  check_token_self_attention(x, x_v, wq, bq, wk, bk, wv, bv, heads);
  return attention(linear(x, wq, &bq), linear(x, wk, &bk), linear(x_v, wv, &bv), heads);
}

std::pair<Tensor, Tensor> Ops::image_to_token_attention_pe(const Tensor& x, const Tensor& k, const Tensor& kb,
                                                           const Tensor& v, const Tensor& bias, const Tensor& residual,
                                                           const Tensor& ln_w, const Tensor& ln_b, float eps, int heads,
                                                           const Tensor& key_pe) {
  Tensor out = image_to_token_attention(x, k, kb, v, bias, residual, ln_w, ln_b, eps, heads);
  Tensor out_pe = add(out, key_pe);
  return {out, out_pe};
}

std::pair<Tensor, Tensor> Ops::layer_norm_pe(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                                             const Tensor& pe) {
  Tensor y = layer_norm(x, w, b, eps);
  Tensor y_pe = add(y, pe);
  return {y, y_pe};
}

Tensor Ops::patch_embed(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor* pos) {
  check_patch_embed(x, w, pos);
  Tensor y = conv2d(nchw_to_nhwc(x), w, b, static_cast<int>(w.dim(2)), 0);
  return pos ? add(y, *pos) : y;
}

Tensor Ops::layer_norm_linear(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w,
                              const Tensor* b, Act act) {
  return linear(layer_norm(x, ln_w, ln_b, eps), w, b, act);
}

Tensor Ops::layer_norm_attention(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps,
                                 const Tensor& qkv_w, const Tensor& qkv_b, const Tensor& rel_pos_h,
                                 const Tensor& rel_pos_w, int heads, int window, const Tensor& proj_w,
                                 const Tensor& proj_b) {
  const Tensor qkv = layer_norm_linear(x, ln_w, ln_b, eps, qkv_w, &qkv_b);
  return linear(rel_pos_attention(qkv, qkv_b, rel_pos_h, rel_pos_w, heads, window), proj_w, &proj_b, Act::None, &x);
}

Tensor Ops::layer_norm_mlp(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w1,
                           const Tensor& b1, const Tensor& w2, const Tensor& b2) {
  return linear(layer_norm_linear(x, ln_w, ln_b, eps, w1, &b1, Act::GELU), w2, &b2, Act::None, &x);
}

}  // namespace samfast
