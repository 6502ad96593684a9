// The ops that backends may fuse, composed of the others.
#include "backend/ops.h"

#include "samfast/error.h"

namespace samfast {

void Ops::check_upscale(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w,
                        const Tensor& ln_b, const Tensor& w2, const Tensor& b2, const Tensor& hyper) {
  const bool ok = keys.ndim() == 4 && w1.ndim() == 4 && w2.ndim() == 4 && hyper.ndim() == 3 &&
                  w1.dim(0) == keys.dim(3) && w1.dim(2) == 2 && w1.dim(3) == 2 && b1.numel() == w1.dim(1) &&
                  ln_w.numel() == w1.dim(1) && ln_b.numel() == w1.dim(1) && w2.dim(0) == w1.dim(1) && w2.dim(2) == 2 &&
                  w2.dim(3) == 2 && b2.numel() == w2.dim(1) && hyper.dim(0) == keys.dim(0) && hyper.dim(2) == w2.dim(1);
  if (!ok)
    throw Error("upscale_masks: keys " + shape_str(keys.shape) + ", weights " + shape_str(w1.shape) + " and " +
                shape_str(w2.shape) + ", hypernetwork outputs " + shape_str(hyper.shape) + " do not fit together");
}

Tensor Ops::upscale_masks(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w,
                          const Tensor& ln_b, float eps, const Tensor& w2, const Tensor& b2, const Tensor& hyper) {
  check_upscale(keys, w1, b1, ln_w, ln_b, w2, b2, hyper);
  Tensor x = conv_transpose2x2(keys, w1, b1, Act::None);
  x = layer_norm(x, ln_w, ln_b, eps, Act::GELU);
  x = conv_transpose2x2(x, w2, b2, Act::GELU);  // (B, 4G, 4G, C2)
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2);
  return bmm_nt(hyper, x.view({B, H * W, x.dim(3)})).view({B, hyper.dim(1), H, W});
}

}  // namespace samfast
