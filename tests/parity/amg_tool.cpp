// Command-line access to src/pipeline/amg_utils.h for tests/parity/test_amg_utils_parity.py, which
// compares each function with upstream amg.py and torchvision.
// Reads one JSON request on stdin, {"fn": NAME, ...arguments}, and prints {"result": ...}:
//   point_grids        n_per_side, n_layers, scale_per_layer -> [[[x, y], ...] per layer]
//   crop_boxes         im_h, im_w, n_layers, overlap_ratio   -> {"boxes": [...], "layer_idxs": [...]}
//   uncrop_boxes       boxes, crop_box                       -> [[x0, y0, x1, y1], ...]
//   uncrop_points      points, crop_box                      -> [[x, y], ...]
//   near_crop_edge     boxes, crop_box, orig_box, atol       -> [0/1, ...]
//   stability_score    masks (flat), n, h, w, mask_threshold, threshold_offset -> [score or null]
//   batched_nms        boxes, scores, idxs, iou_threshold    -> [index, ...]
//   small_regions      mask (flat 0/1), h, w, area_thresh, mode ("holes"|"islands") -> {"mask", "changed"}
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "masks/stability.h"
#include "pipeline/amg_utils.h"
#include "pipeline/small_regions.h"
#include "samfast/error.h"

namespace {

using namespace samfast;
using nlohmann::json;

json run(const json& req) {
  const std::string fn = req.at("fn");
  if (fn == "point_grids")
    return build_all_layer_point_grids(req.at("n_per_side"), req.at("n_layers"), req.at("scale_per_layer"));
  if (fn == "crop_boxes") {
    const CropBoxes c = generate_crop_boxes(req.at("im_h"), req.at("im_w"), req.at("n_layers"),
                                            req.at("overlap_ratio").get<double>());
    return {{"boxes", c.boxes}, {"layer_idxs", c.layer_idxs}};
  }
  if (fn == "uncrop_boxes")
    return uncrop_boxes_xyxy(req.at("boxes").get<std::vector<BoxXyxyf>>(), req.at("crop_box"));
  if (fn == "uncrop_points")
    return uncrop_points(req.at("points").get<std::vector<Point2f>>(), req.at("crop_box"));
  if (fn == "near_crop_edge")
    return is_box_near_crop_edge(req.at("boxes").get<std::vector<BoxXyxyf>>(), req.at("crop_box"),
                                 req.at("orig_box"), req.at("atol").get<double>());
  if (fn == "stability_score") {
    const std::vector<float> masks = req.at("masks");
    const std::vector<float> s = calculate_stability_score(
        masks.data(), req.at("n"), req.at("h"), req.at("w"), req.at("mask_threshold").get<double>(),
        req.at("threshold_offset").get<double>());
    json out = json::array();
    for (float v : s) out.push_back(std::isnan(v) ? json(nullptr) : json(v));
    return out;
  }
  if (fn == "batched_nms")
    return batched_nms(req.at("boxes").get<std::vector<BoxXyxyf>>(), req.at("scores").get<std::vector<float>>(),
                       req.at("idxs").get<std::vector<int>>(), req.at("iou_threshold").get<double>());
  if (fn == "small_regions") {
    std::vector<uint8_t> mask = req.at("mask");
    const bool changed = remove_small_regions(mask, req.at("h"), req.at("w"), req.at("area_thresh").get<double>(),
                                              req.at("mode") == "holes");
    return {{"mask", mask}, {"changed", changed}};
  }
  throw Error("amg_tool: unknown fn \"" + fn + "\"");
}

}  // namespace

int main() {
  try {
    const json req = json::parse(std::cin);
    std::cout << json{{"result", run(req)}}.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "amg_tool: " << e.what() << "\n";
    return 1;
  }
}
