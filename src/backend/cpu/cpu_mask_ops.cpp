// Mask measures of the automatic mask generator on the CPU: each plane is upsampled to full
// resolution, then measured or encoded, a plane per OpenMP thread at a time (bounded memory whatever
// the number of masks; the upsampling's own parallel loops then run on their calling thread). Whole
// planes a thread, not rows: a plane's counts and box are serial loops, and a few thousand planes of
// segment everything keep every core busy.
#include <algorithm>
#include <cstring>
#include <string>

#include "backend/cpu/cpu_ops.h"
#include "masks/stability.h"
#include "masks/upsample.h"
#include "samfast/error.h"

namespace samfast {
namespace {

// Plane i of low_res (N, L, L) upsampled to size: (1, 1, h, w) fp32 logits.
Tensor full_plane(const Tensor& low_res, int64_t i, int img_size, std::pair<int, int> input_size,
                  std::pair<int, int> size) {
  const int64_t L = low_res.dim(1);
  return postprocess_masks(low_res.item(i).view({1, 1, L, L}), img_size, input_size, size);
}

}  // namespace

Ops::Later<Ops::MaskStats> CpuOps::mask_stats(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                                  std::pair<int, int> size, float thr, float hi, float lo) {
  check_mask_planes(low_res, "mask_stats");
  const int64_t n = low_res.dim(0);
  const auto [h, w] = size;
  MaskStats s;
  s.above_hi.resize(n), s.above_lo.resize(n), s.box.resize(n);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    const Tensor m = full_plane(low_res, i, img_size, input_size, size);
    const auto [inter, uni] = stability_counts(m.data, h, w, hi, lo);
    int x0 = w, y0 = h, x1 = -1, y1 = -1;  // ref: batched_mask_to_box of logits > thr
    for (int r = 0; r < h; ++r) {
      const float* row = m.data + int64_t(r) * w;
      for (int c = 0; c < w; ++c)
        if (row[c] > thr) x0 = std::min(x0, c), x1 = std::max(x1, c), y0 = std::min(y0, r), y1 = r;
    }
    s.above_hi[i] = inter, s.above_lo[i] = uni;
    s.box[i] = x1 < 0 ? std::array<int, 4>{0, 0, 0, 0} : std::array<int, 4>{x0, y0, x1, y1};
  }
  return [s = std::move(s)] { return s; };
}

std::vector<Rle> CpuOps::mask_rles(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                                   std::pair<int, int> size, float thr, std::pair<int, int> offset_xy,
                                   std::pair<int, int> frame_size) {
  check_mask_planes(low_res, "mask_rles");
  const auto [h, w] = size;
  const auto [x0, y0] = offset_xy;
  const auto [H, W] = frame_size;
  check_mask_frame(size, offset_xy, frame_size);  // (the planes' sizes: postprocess_masks checks them)
  std::vector<Rle> out(low_res.dim(0));
#pragma omp parallel
  {
  std::vector<uint8_t> frame(size_t(H) * W, 0);  // (zeros outside the plane's place: written only inside it)
#pragma omp for schedule(dynamic, 1)
  for (int64_t i = 0; i < low_res.dim(0); ++i) {
    const Tensor m = full_plane(low_res, i, img_size, input_size, size);
    for (int r = 0; r < h; ++r) {
      const float* src = m.data + int64_t(r) * w;
      uint8_t* dst = frame.data() + int64_t(y0 + r) * W + x0;
      for (int c = 0; c < w; ++c) dst[c] = src[c] > thr;
    }
    out[i] = mask_to_rle(frame.data(), H, W);
  }
  }
  return out;
}

Tensor CpuOps::gather(const Tensor& x, const std::vector<int64_t>& select) {
  check_gather(x, select);
  const int64_t n = x.dim(0), inner = n ? x.numel() / n : 0;
  Shape s = x.shape;
  s[0] = (int64_t)select.size();
  Tensor y = Tensor::empty(s);
  for (size_t i = 0; i < select.size(); ++i) std::memcpy(y.data + i * inner, x.data + select[i] * inner, sizeof(float) * inner);
  return y;
}

}  // namespace samfast
