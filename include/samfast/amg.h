// Helpers of the automatic mask generator that code written for upstream calls on its own.
// ref: segment_anything/utils/amg.py build_point_grid, build_all_layer_point_grids, remove_small_regions
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace samfast {

// n_per_side^2 points (x, y) evenly spaced in [0,1]x[0,1], x fastest: point (r, c) = (v[c], v[r]) with
// v = np.linspace(1/(2n), 1 - 1/(2n), n) in float64, as upstream keeps them.
std::vector<std::array<double, 2>> build_point_grid(int n_per_side);

// One grid per layer 0..n_layers; layer i has int(n_per_side / scale_per_layer^i) points a side.
std::vector<std::vector<std::array<double, 2>>> build_all_layer_point_grids(int n_per_side, int n_layers,
                                                                            int scale_per_layer);

// Removal of small islands and holes from a binary mask, as upstream labels them (8-connected
// components, cv2.connectedComponentsWithStats). mask: row-major (h, w) 0/1 bytes, changed in place.
// holes: fill connected background regions smaller than area_thresh; otherwise drop foreground
// islands smaller than it (keeping the largest when all are smaller, the first by OpenCV's label
// order on a tie). Returns whether anything changed.
bool remove_small_regions(std::vector<uint8_t>& mask, int h, int w, double area_thresh, bool holes);

}  // namespace samfast
