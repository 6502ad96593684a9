// ref: segment_anything/utils/transforms.py ResizeLongestSide, modeling/sam.py Sam.preprocess.
// Upstream resizes the image with PIL (through torchvision); the functions here reproduce it exactly.
#include "samfast/transforms.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "samfast/config.h"
#include "samfast/error.h"

namespace samfast {

namespace {

std::string size_str(int h, int w) { return std::to_string(h) + "x" + std::to_string(w); }

}  // namespace

std::pair<int, int> preprocess_shape(int oldh, int oldw, int long_side) {
  if (oldh <= 0 || oldw <= 0 || long_side <= 0)
    throw InvalidArgument("preprocess_shape: image size " + size_str(oldh, oldw) + " and long side " +
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

// Pillow's clip8: 0 at or below 0, 255 at or above 255 << kPrecisionBits, else acc >> kPrecisionBits;
// as a clamp of the shifted value (the same bytes), which vectorizes.
inline uint8_t pil_clip8(int32_t acc) {
  return static_cast<uint8_t>(std::min(std::max(acc >> kPrecisionBits, 0), 255));
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

// Resamples `in` (whose row 0 is source row row0) vertically; taps index source rows. A row of
// accumulators a thread, one source row at a time added in (the same integer sums, in the same
// order, as a tap loop per byte; the loops over the row vectorize).
std::vector<uint8_t> pil_vertical(const uint8_t* in, int width, int row0, const PilTaps& taps) {
  const int out_h = static_cast<int>(taps.first.size());
  const size_t stride = size_t(width) * 3;
  std::vector<uint8_t> out(size_t(out_h) * stride);
#pragma omp parallel
  {
    std::vector<int32_t> acc_row(stride);
#pragma omp for schedule(static)
    for (int o = 0; o < out_h; ++o) {
      const int32_t* k = taps.k.data() + size_t(o) * taps.ksize;
      const uint8_t* src = in + size_t(taps.first[o] - row0) * stride;
      uint8_t* __restrict dst = out.data() + size_t(o) * stride;
      int32_t* __restrict acc = acc_row.data();
      std::fill(acc, acc + stride, 1 << (kPrecisionBits - 1));  // +0.5 so that >> rounds
      for (int j = 0; j < taps.count[o]; ++j) {
        const uint8_t* __restrict s = src + size_t(j) * stride;
        const int32_t kj = k[j];
        for (size_t x = 0; x < stride; ++x) acc[x] += s[x] * kj;
      }
      for (size_t x = 0; x < stride; ++x) dst[x] = pil_clip8(acc[x]);
    }
  }
  return out;
}

}  // namespace

Image resize_pil_bilinear(const Image& in, int out_h, int out_w) {
  if (in.height <= 0 || in.width <= 0 || in.rgb.size() != size_t(in.height) * in.width * 3)
    throw InvalidArgument("resize_pil_bilinear: input image " + size_str(in.height, in.width) + " has " +
                std::to_string(in.rgb.size()) + " bytes, expected height*width*3 > 0");
  if (out_h <= 0 || out_w <= 0)
    throw InvalidArgument("resize_pil_bilinear: output size " + size_str(out_h, out_w) + " must be positive");
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
    throw InvalidArgument("normalize_and_pad: image " + size_str(img.height, img.width) + " (" +
                std::to_string(img.rgb.size()) + " bytes) does not fit in " + size_str(size, size));
  Tensor t = Tensor::zeros({1, 3, size, size});
#pragma omp parallel for collapse(2) schedule(static)
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < img.height; ++y) {
      const uint8_t* src = img.rgb.data() + size_t(y) * img.width * 3 + c;
      float* dst = t.data + (size_t(c) * size + y) * size;
      // Subtract, then divide, in float32: the same two roundings as torch.
      for (int x = 0; x < img.width; ++x) dst[x] = (static_cast<float>(src[3 * x]) - kPixelMean[c]) / kPixelStd[c];
    }
  }
  return t;
}

Tensor normalize_and_pad(const Tensor& image, int size) {
  const bool chw = image.ndim() == 3, nchw = image.ndim() == 4 && image.dim(0) == 1;
  if (!(chw || nchw) || image.dim(-3) != 3 || image.dim(-2) <= 0 || image.dim(-1) <= 0 || image.dim(-2) > size ||
      image.dim(-1) > size || !image.on_host() || image.dtype != DType::F32)
    throw InvalidArgument("normalize_and_pad: expected a host fp32 (1, 3, H, W) image with H, W <= " +
                          std::to_string(size) + ", got " + shape_str(image.shape));
  const int64_t h = image.dim(-2), w = image.dim(-1);
  Tensor t = Tensor::zeros({1, 3, size, size});
  for (int c = 0; c < 3; ++c)
    for (int64_t y = 0; y < h; ++y) {
      const float* src = image.data + (c * h + y) * w;
      float* dst = t.data + (int64_t(c) * size + y) * size;
      for (int64_t x = 0; x < w; ++x) dst[x] = (src[x] - kPixelMean[c]) / kPixelStd[c];
    }
  return t;
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
