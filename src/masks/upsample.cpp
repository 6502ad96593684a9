// Bilinear resizing of mask logits exactly as upstream does it with torch's interpolate.
// ref: modeling/sam.py Sam.postprocess_masks; torch.nn.functional.interpolate (bilinear, CPU kernel)
#include "masks/upsample.h"

#include <algorithm>
#include <string>
#include <vector>

#include "samfast/error.h"

namespace samfast {

namespace {

std::string size_str(int h, int w) { return std::to_string(h) + "x" + std::to_string(w); }

}  // namespace

// Bilinear interpolation, align_corners=False, with float32 weights and values like torch's CPU kernel.

namespace {

struct LinearAxis {
  std::vector<int> i0, i1;
  std::vector<float> l0, l1;
};

// The first `keep` of `out` sample positions for resizing in -> out.
LinearAxis linear_axis(int in, int out, int keep) {
  // torch (1.13, CPU) takes the scale as float32 but the source position in float64; the weights
  // are float32. Matching both keeps us within float rounding of torch even at 1024 -> 534 where a
  // float32 position would be off by ~3e-5 pixels.
  const double scale = static_cast<float>(in) / out;
  LinearAxis a;
  a.i0.resize(keep);
  a.i1.resize(keep);
  a.l0.resize(keep);
  a.l1.resize(keep);
  for (int d = 0; d < keep; ++d) {
    const double src = std::max(scale * (d + 0.5) - 0.5, 0.0);
    const int i0 = static_cast<int>(src);
    a.i0[d] = i0;
    a.i1[d] = i0 + (i0 < in - 1 ? 1 : 0);
    a.l1[d] = static_cast<float>(src - i0);
    a.l0[d] = static_cast<float>(1.0 - (src - i0));
  }
  return a;
}

// Resizes each of `planes` (in_h, in_w) planes to (out_h, out_w) but writes only the top-left
// keep_h x keep_w corner (out is planes x keep_h x keep_w). Separable: every input row that is
// needed is interpolated horizontally once, then output rows blend two of those; this gives the
// same float expression as torch's l0h * (l0w*a + l1w*b) + l1h * (l0w*c + l1w*d).
void bilinear_planes(const float* in, int64_t planes, int in_h, int in_w, int out_h, int out_w,
                     int keep_h, int keep_w, float* out) {
  const LinearAxis ax = linear_axis(in_w, out_w, keep_w);
  const LinearAxis ay = linear_axis(in_h, out_h, keep_h);
  const int rows = ay.i1.back() + 1;  // source rows actually read
  std::vector<float> tmp(size_t(planes) * rows * keep_w);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    for (int r = 0; r < rows; ++r) {
      const float* src = in + (size_t(p) * in_h + r) * in_w;
      float* dst = tmp.data() + (size_t(p) * rows + r) * keep_w;
      for (int x = 0; x < keep_w; ++x) dst[x] = ax.l0[x] * src[ax.i0[x]] + ax.l1[x] * src[ax.i1[x]];
    }
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    for (int y = 0; y < keep_h; ++y) {
      const float* r0 = tmp.data() + (size_t(p) * rows + ay.i0[y]) * keep_w;
      const float* r1 = tmp.data() + (size_t(p) * rows + ay.i1[y]) * keep_w;
      const float l0 = ay.l0[y], l1 = ay.l1[y];
      float* dst = out + (size_t(p) * keep_h + y) * keep_w;
      for (int x = 0; x < keep_w; ++x) dst[x] = l0 * r0[x] + l1 * r1[x];
    }
  }
}

void check_nchw(const Tensor& x, const char* what) {
  if (!x.defined() || x.ndim() != 4 || x.numel() == 0)
    throw Error(std::string(what) + ": expected a non-empty (N, C, H, W) tensor, got " + shape_str(x.shape));
}

}  // namespace

Tensor interpolate_bilinear(const Tensor& x, int out_h, int out_w) {
  check_nchw(x, "interpolate_bilinear");
  if (out_h <= 0 || out_w <= 0)
    throw Error("interpolate_bilinear: output size " + size_str(out_h, out_w) + " must be positive");
  Tensor out = Tensor::empty({x.dim(0), x.dim(1), out_h, out_w});
  bilinear_planes(x.data, x.dim(0) * x.dim(1), static_cast<int>(x.dim(2)), static_cast<int>(x.dim(3)),
                  out_h, out_w, out_h, out_w, out.data);
  return out;
}

Tensor postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                         std::pair<int, int> original_size) {
  check_nchw(low_res, "postprocess_masks");
  const auto [in_h, in_w] = input_size;
  const auto [orig_h, orig_w] = original_size;
  if (img_size <= 0 || in_h <= 0 || in_w <= 0 || in_h > img_size || in_w > img_size)
    throw Error("postprocess_masks: input size " + size_str(in_h, in_w) + " must be positive and fit in " +
                size_str(img_size, img_size));
  if (orig_h <= 0 || orig_w <= 0)
    throw Error("postprocess_masks: original size " + size_str(orig_h, orig_w) + " must be positive");
  const int64_t planes = low_res.dim(0) * low_res.dim(1);
  // Upsample to (img_size, img_size) but compute only the [:in_h, :in_w] corner that the crop keeps;
  // each output value depends only on its own position, so the values are the same.
  Tensor cropped = Tensor::empty({low_res.dim(0), low_res.dim(1), in_h, in_w});
  bilinear_planes(low_res.data, planes, static_cast<int>(low_res.dim(2)), static_cast<int>(low_res.dim(3)),
                  img_size, img_size, in_h, in_w, cropped.data);
  return interpolate_bilinear(cropped, orig_h, orig_w);
}

}  // namespace samfast
