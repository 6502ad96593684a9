// ref: segment_anything/utils/amg.py; torchvision/ops/boxes.py batched_nms and
//      torchvision/csrc/ops/cpu/nms_kernel.cpp
#include "pipeline/amg_utils.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "samfast/error.h"

// Exactness needs every multiply and add rounded on its own, as numpy and torch do them: no fused
// multiply-add (the Release flags target x86-64-v3, which has FMA).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace samfast {

namespace {

// np.linspace(start, stop, num) with endpoint: start + i * ((stop - start) / (num - 1)), the last
// value set to stop exactly.
std::vector<double> linspace(double start, double stop, int num) {
  std::vector<double> v(size_t(std::max(num, 0)));
  if (num == 1) v[0] = start;
  if (num <= 1) return v;
  const double step = (stop - start) / double(num - 1);
  for (int i = 0; i < num; ++i) v[size_t(i)] = double(i) * step + start;
  v.back() = stop;
  return v;
}

// Greedy NMS of torchvision's CPU kernel: visit by descending score (stable), keep a box unless
// suppressed, suppress later boxes whose float32 IoU with it is above the threshold (a NaN IoU, from
// two empty boxes, suppresses nothing). Returns the kept indices in visiting order.
std::vector<size_t> nms(const std::vector<BoxXyxyf>& boxes, const std::vector<float>& scores,
                        double iou_threshold) {
  const size_t n = boxes.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  std::vector<float> areas(n);
  for (size_t i = 0; i < n; ++i)
    areas[i] = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]);
  std::vector<uint8_t> suppressed(n, 0);
  std::vector<size_t> keep;
  for (size_t oi = 0; oi < n; ++oi) {
    const size_t i = order[oi];
    if (suppressed[i]) continue;
    keep.push_back(i);
    const BoxXyxyf& a = boxes[i];
    for (size_t oj = oi + 1; oj < n; ++oj) {
      const size_t j = order[oj];
      if (suppressed[j]) continue;
      const BoxXyxyf& b = boxes[j];
      const float w = std::max(0.0f, std::min(a[2], b[2]) - std::max(a[0], b[0]));
      const float h = std::max(0.0f, std::min(a[3], b[3]) - std::max(a[1], b[1]));
      const float inter = w * h;
      const float ovr = inter / (areas[i] + areas[j] - inter);
      if (double(ovr) > iou_threshold) suppressed[j] = 1;
    }
  }
  return keep;
}

}  // namespace

std::vector<Point2d> build_point_grid(int n_per_side) {
  // (upstream divides by zero at 0; 4096 a side is 16M points, past any crop's use)
  if (n_per_side < 1 || n_per_side > 4096)
    throw InvalidArgument("build_point_grid: n_per_side must be 1..4096, not " + std::to_string(n_per_side));
  const double offset = 1.0 / (2.0 * n_per_side);
  const std::vector<double> side = linspace(offset, 1.0 - offset, n_per_side);
  std::vector<Point2d> points;
  points.reserve(side.size() * side.size());
  for (double y : side)
    for (double x : side) points.push_back({x, y});
  return points;
}

std::vector<std::vector<Point2d>> build_all_layer_point_grids(int n_per_side, int n_layers,
                                                              int scale_per_layer) {
  if (n_layers < 0 || n_layers > 16 || (n_layers > 0 && scale_per_layer < 1))
    throw InvalidArgument("build_all_layer_point_grids: n_layers must be 0..16 and scale_per_layer at least 1, not " +
                          std::to_string(n_layers) + " and " + std::to_string(scale_per_layer));
  std::vector<std::vector<Point2d>> grids;
  int64_t scale = 1;  // scale_per_layer ** i, an exact integer as in Python
  for (int i = 0; i <= n_layers; ++i, scale *= scale_per_layer)
    grids.push_back(build_point_grid(int(double(n_per_side) / double(scale))));
  return grids;
}

CropBoxes generate_crop_boxes(int im_h, int im_w, int n_layers, double overlap_ratio) {
  CropBoxes out;
  const int short_side = std::min(im_h, im_w);
  out.boxes.push_back({0, 0, im_w, im_h});
  out.layer_idxs.push_back(0);
  // int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops)), "/" being float division.
  auto crop_len = [](int orig_len, int n_crops, int overlap) {
    return int(std::ceil(double(int64_t(overlap) * (n_crops - 1) + orig_len) / double(n_crops)));
  };
  for (int layer = 0; layer < n_layers; ++layer) {
    const int n_crops = 1 << (layer + 1);
    const int overlap = int(overlap_ratio * short_side * (2.0 / n_crops));
    const int crop_w = crop_len(im_w, n_crops, overlap);
    const int crop_h = crop_len(im_h, n_crops, overlap);
    for (int ix = 0; ix < n_crops; ++ix)
      for (int iy = 0; iy < n_crops; ++iy) {
        const int x0 = (crop_w - overlap) * ix, y0 = (crop_h - overlap) * iy;
        out.boxes.push_back({x0, y0, std::min(x0 + crop_w, im_w), std::min(y0 + crop_h, im_h)});
        out.layer_idxs.push_back(layer + 1);
      }
  }
  return out;
}

std::vector<BoxXyxyf> uncrop_boxes_xyxy(const std::vector<BoxXyxyf>& boxes, const BoxXyxyi& crop_box) {
  const float x0 = float(crop_box[0]), y0 = float(crop_box[1]);
  std::vector<BoxXyxyf> out(boxes);
  for (BoxXyxyf& b : out) b = {b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0};
  return out;
}

std::vector<Point2f> uncrop_points(const std::vector<Point2f>& points, const BoxXyxyi& crop_box) {
  const float x0 = float(crop_box[0]), y0 = float(crop_box[1]);
  std::vector<Point2f> out(points);
  for (Point2f& p : out) p = {p[0] + x0, p[1] + y0};
  return out;
}

std::vector<uint8_t> is_box_near_crop_edge(const std::vector<BoxXyxyf>& boxes, const BoxXyxyi& crop_box,
                                           const BoxXyxyi& orig_box, double atol) {
  const float tol = float(atol);
  // torch.isclose(a, b, atol, rtol=0) on float32: equal, or |a - b| <= atol.
  auto close = [tol](float a, float b) { return a == b || std::fabs(a - b) <= tol; };
  const std::vector<BoxXyxyf> uncropped = uncrop_boxes_xyxy(boxes, crop_box);
  std::vector<uint8_t> near(boxes.size(), 0);
  for (size_t i = 0; i < boxes.size(); ++i)
    for (int k = 0; k < 4; ++k)
      if (close(uncropped[i][k], float(crop_box[k])) && !close(uncropped[i][k], float(orig_box[k])))
        near[i] = 1;
  return near;
}

std::vector<int64_t> batched_nms(const std::vector<BoxXyxyf>& boxes, const std::vector<float>& scores,
                                 const std::vector<int>& idxs, double iou_threshold) {
  const size_t n = boxes.size();
  if (scores.size() != n || idxs.size() != n)
    throw Error("batched_nms: " + std::to_string(n) + " boxes but " + std::to_string(scores.size()) +
                " scores and " + std::to_string(idxs.size()) + " category ids");
  std::vector<int64_t> kept;
  if (n == 0) return kept;
  // Both torchvision paths return the kept boxes by descending score, ties in index order (its CPU
  // sorts are stable); they differ in the coordinates the IoUs are computed from.
  if (n * 4 <= 4000) {
    // Coordinate trick: shift each category by idx * (max coordinate + 1), all in float32.
    float max_coord = boxes[0][0];
    for (const BoxXyxyf& b : boxes)
      for (float v : b) max_coord = std::max(max_coord, v);
    std::vector<BoxXyxyf> shifted(boxes);
    for (size_t i = 0; i < n; ++i) {
      const float off = float(idxs[i]) * (max_coord + 1.0f);
      for (float& v : shifted[i]) v += off;
    }
    for (size_t i : nms(shifted, scores, iou_threshold)) kept.push_back(int64_t(i));
    return kept;
  }
  std::vector<int> categories(idxs);
  std::sort(categories.begin(), categories.end());
  categories.erase(std::unique(categories.begin(), categories.end()), categories.end());
  for (int cat : categories) {
    std::vector<size_t> members;
    std::vector<BoxXyxyf> cat_boxes;
    std::vector<float> cat_scores;
    for (size_t i = 0; i < n; ++i)
      if (idxs[i] == cat) {
        members.push_back(i);
        cat_boxes.push_back(boxes[i]);
        cat_scores.push_back(scores[i]);
      }
    for (size_t k : nms(cat_boxes, cat_scores, iou_threshold)) kept.push_back(int64_t(members[k]));
  }
  std::sort(kept.begin(), kept.end());
  std::stable_sort(kept.begin(), kept.end(),
                   [&](int64_t a, int64_t b) { return scores[size_t(a)] > scores[size_t(b)]; });
  return kept;
}

}  // namespace samfast
