// Geometry and filtering helpers of the automatic mask generator: point grids, crop boxes, the
// near-crop-edge filter, uncropping and batched NMS (the stability score is in masks/stability.h).
// Each matches upstream to the bit (same float64 / float32 arithmetic, same integer truncations,
// same tie-breaking).
// ref: segment_anything/utils/amg.py build_point_grid, build_all_layer_point_grids,
//      generate_crop_boxes, is_box_near_crop_edge, uncrop_boxes_xyxy, uncrop_points;
//      torchvision/ops/boxes.py batched_nms (CPU nms kernel)
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "samfast/amg.h"

namespace samfast {

using Point2f = std::array<float, 2>;   // (x, y)
using Point2d = std::array<double, 2>;  // (x, y), float64 as numpy holds upstream's grids
using BoxXyxyf = std::array<float, 4>;  // (x0, y0, x1, y1)
using BoxXyxyi = std::array<int, 4>;

// build_point_grid and build_all_layer_point_grids: in the public samfast/amg.h.

struct CropBoxes {
  std::vector<BoxXyxyi> boxes;  // first the whole image, then layer by layer
  std::vector<int> layer_idxs;  // the layer of each box (0 for the whole image)
};

// Layer i (1..n_layers) has (2^i)^2 overlapping crops, enumerated x0-major like upstream's
// itertools.product(x0s, y0s).
CropBoxes generate_crop_boxes(int im_h, int im_w, int n_layers, double overlap_ratio);

// Adds the crop's (x0, y0) to every box / point (float32 arithmetic, like upstream on float tensors).
std::vector<BoxXyxyf> uncrop_boxes_xyxy(const std::vector<BoxXyxyf>& boxes, const BoxXyxyi& crop_box);
std::vector<Point2f> uncrop_points(const std::vector<Point2f>& points, const BoxXyxyi& crop_box);

// Per box (given in crop coordinates): 1 if, once uncropped, some side lies within atol of the
// crop box's side but not within atol of the original image's (torch.isclose with rtol=0, float32).
std::vector<uint8_t> is_box_near_crop_edge(const std::vector<BoxXyxyf>& boxes, const BoxXyxyi& crop_box,
                                           const BoxXyxyi& orig_box, double atol = 20.0);

// torchvision.ops.batched_nms on CPU: NMS within each category (idxs), IoU > iou_threshold
// suppresses. Returns the kept indices by descending score, equal scores in index order. Follows
// torchvision's two paths (coordinate offset trick up to 1000 boxes, per-category NMS above) so that
// the float32 IoUs, and hence the decisions, are the same.
std::vector<int64_t> batched_nms(const std::vector<BoxXyxyf>& boxes, const std::vector<float>& scores,
                                 const std::vector<int>& idxs, double iou_threshold);

}  // namespace samfast
