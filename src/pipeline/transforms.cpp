// ref: segment_anything/utils/transforms.py ResizeLongestSide, modeling/sam.py Sam.preprocess /
// Sam.postprocess_masks. Upstream resizes the image with PIL (through torchvision) and the masks
// with torch.nn.functional.interpolate; each function here reproduces one of those exactly.
#include "pipeline/transforms.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "samfast/error.h"

namespace samfast {

namespace {

std::string size_str(int h, int w) { return std::to_string(h) + "x" + std::to_string(w); }

}  // namespace

std::pair<int, int> preprocess_shape(int oldh, int oldw, int long_side) {
  if (oldh <= 0 || oldw <= 0 || long_side <= 0)
    throw Error("preprocess_shape: image size " + size_str(oldh, oldw) + " and long side " +
                std::to_string(long_side) + " must be positive");
  // Same float64 arithmetic and int(x + 0.5) rounding as ResizeLongestSide.get_preprocess_shape.
  const double scale = long_side * 1.0 / std::max(oldh, oldw);
  const double newh = oldh * scale, neww = oldw * scale;
  return {static_cast<int>(newh + 0.5), static_cast<int>(neww + 0.5)};
}

// ---------------------------------------------------------------------------------------------
// PIL bilinear resize. Pillow resamples 8-bit images with a separable, antialiased triangle filter
// whose weights are rounded to fixed point; to get the same bytes as upstream we reproduce its
// weight computation in double and its integer accumulation exactly.

namespace {

constexpr int kPrecisionBits = 22;  // Pillow's 8-bit path: 32 - 8 bits of data - 2 bits of headroom

// Filter taps of one axis: output index o reads in[first[o] .. first[o] + count[o]) with
// fixed-point weights k[o * ksize + j].
struct PilTaps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> k;
};

PilTaps pil_bilinear_taps(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  // Downscaling widens the triangle to cover every input pixel (antialiasing).
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;
  const double inv_filterscale = 1.0 / filterscale;
  PilTaps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.k.assign(size_t(out_size) * t.ksize, 0);
  std::vector<double> w(t.ksize);
  for (int o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;
    // Truncating casts, then clamping, as Pillow rounds the window ends.
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = hi - lo;
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
      const double d = std::fabs((j + lo - center + 0.5) * inv_filterscale);
      w[j] = d < 1.0 ? 1.0 - d : 0.0;
      sum += w[j];
    }
    for (int j = 0; j < n; ++j) {
      const double v = sum != 0.0 ? w[j] / sum : w[j];
      // Round half away from zero to fixed point.
      const double scaled = v * (1 << kPrecisionBits);
      t.k[size_t(o) * t.ksize + j] = static_cast<int32_t>(v < 0 ? scaled - 0.5 : scaled + 0.5);
    }
    t.first[o] = lo;
    t.count[o] = n;
  }
  return t;
}

inline uint8_t pil_clip8(int32_t acc) {
  if (acc >= (255 << kPrecisionBits)) return 255;
  if (acc <= 0) return 0;
  return static_cast<uint8_t>(acc >> kPrecisionBits);
}

// Resamples rows [row0, row0 + rows) of `in` horizontally to taps.first.size() columns.
std::vector<uint8_t> pil_horizontal(const Image& in, int row0, int rows, const PilTaps& taps) {
  const int out_w = static_cast<int>(taps.first.size());
  std::vector<uint8_t> out(size_t(rows) * out_w * 3);
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    const uint8_t* src = in.rgb.data() + size_t(row0 + r) * in.width * 3;
    uint8_t* dst = out.data() + size_t(r) * out_w * 3;
    for (int o = 0; o < out_w; ++o) {
      const int32_t* k = taps.k.data() + size_t(o) * taps.ksize;
      const uint8_t* s = src + size_t(taps.first[o]) * 3;
      int32_t a0 = 1 << (kPrecisionBits - 1), a1 = a0, a2 = a0;  // +0.5 so that >> rounds
      for (int j = 0; j < taps.count[o]; ++j) {
        a0 += s[3 * j + 0] * k[j];
        a1 += s[3 * j + 1] * k[j];
        a2 += s[3 * j + 2] * k[j];
      }
      dst[3 * o + 0] = pil_clip8(a0);
      dst[3 * o + 1] = pil_clip8(a1);
      dst[3 * o + 2] = pil_clip8(a2);
    }
  }
  return out;
}

// Resamples `in` (whose row 0 is source row row0) vertically; taps index source rows.
std::vector<uint8_t> pil_vertical(const uint8_t* in, int width, int row0, const PilTaps& taps) {
  const int out_h = static_cast<int>(taps.first.size());
  const size_t stride = size_t(width) * 3;
  std::vector<uint8_t> out(size_t(out_h) * stride);
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out_h; ++o) {
    const int32_t* k = taps.k.data() + size_t(o) * taps.ksize;
    const uint8_t* src = in + size_t(taps.first[o] - row0) * stride;
    uint8_t* dst = out.data() + size_t(o) * stride;
    for (size_t x = 0; x < stride; ++x) {
      int32_t acc = 1 << (kPrecisionBits - 1);
      for (int j = 0; j < taps.count[o]; ++j) acc += src[j * stride + x] * k[j];
      dst[x] = pil_clip8(acc);
    }
  }
  return out;
}

}  // namespace

Image resize_pil_bilinear(const Image& in, int out_h, int out_w) {
  if (in.height <= 0 || in.width <= 0 || in.rgb.size() != size_t(in.height) * in.width * 3)
    throw Error("resize_pil_bilinear: input image " + size_str(in.height, in.width) + " has " +
                std::to_string(in.rgb.size()) + " bytes, expected height*width*3 > 0");
  if (out_h <= 0 || out_w <= 0)
    throw Error("resize_pil_bilinear: output size " + size_str(out_h, out_w) + " must be positive");
  Image out;
  out.height = out_h;
  out.width = out_w;
  // Pillow skips the pass of an axis whose size is unchanged (a copy when both are).
  if (out_h == in.height && out_w == in.width) {
    out.rgb = in.rgb;
    return out;
  }
  if (out_h == in.height) {
    out.rgb = pil_horizontal(in, 0, in.height, pil_bilinear_taps(in.width, out_w));
    return out;
  }
  const PilTaps vert = pil_bilinear_taps(in.height, out_h);
  if (out_w == in.width) {
    out.rgb = pil_vertical(in.rgb.data(), in.width, 0, vert);
    return out;
  }
  // Horizontal first, over only the source rows the vertical pass reads.
  const int row0 = vert.first.front();
  const int row_end = vert.first.back() + vert.count.back();
  const std::vector<uint8_t> tmp = pil_horizontal(in, row0, row_end - row0, pil_bilinear_taps(in.width, out_w));
  out.rgb = pil_vertical(tmp.data(), out_w, row0, vert);
  return out;
}

// ---------------------------------------------------------------------------------------------

Tensor normalize_and_pad(const Image& img, int size) {
  if (img.height <= 0 || img.width <= 0 || img.height > size || img.width > size ||
      img.rgb.size() != size_t(img.height) * img.width * 3)
    throw Error("normalize_and_pad: image " + size_str(img.height, img.width) + " (" +
                std::to_string(img.rgb.size()) + " bytes) does not fit in " + size_str(size, size));
  // ref: modeling/sam.py Sam.pixel_mean / pixel_std (float32 buffers).
  constexpr float kMean[3] = {123.675f, 116.28f, 103.53f};
  constexpr float kStd[3] = {58.395f, 57.12f, 57.375f};
  Tensor t = Tensor::zeros({1, 3, size, size});
#pragma omp parallel for collapse(2) schedule(static)
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < img.height; ++y) {
      const uint8_t* src = img.rgb.data() + size_t(y) * img.width * 3 + c;
      float* dst = t.data + (size_t(c) * size + y) * size;
      // Subtract, then divide, in float32: the same two roundings as torch.
      for (int x = 0; x < img.width; ++x) dst[x] = (static_cast<float>(src[3 * x]) - kMean[c]) / kStd[c];
    }
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
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

void apply_coords(float* xy, int64_t n_points, std::pair<int, int> original_size, int long_side) {
  const auto [old_h, old_w] = original_size;
  const auto [new_h, new_w] = preprocess_shape(old_h, old_w, long_side);
  // Upstream scales in float64 (numpy) and the predictor then casts to float32.
  const double sx = static_cast<double>(new_w) / old_w, sy = static_cast<double>(new_h) / old_h;
  for (int64_t i = 0; i < n_points; ++i) {
    xy[2 * i] = static_cast<float>(xy[2 * i] * sx);
    xy[2 * i + 1] = static_cast<float>(xy[2 * i + 1] * sy);
  }
}

}  // namespace samfast
