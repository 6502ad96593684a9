// Removal of small islands and holes from a binary mask (the automatic mask generator's
// min_mask_region_area). ref: segment_anything/utils/amg.py remove_small_regions, which labels
// 8-connected components with cv2.connectedComponentsWithStats.
#pragma once
#include <cstdint>
#include <vector>

namespace samfast {

// mask: row-major (h, w) 0/1 bytes, changed in place. holes: fill connected background regions
// smaller than area_thresh; otherwise drop foreground islands smaller than it (keeping the largest
// when all are smaller, the first by OpenCV's label order on a tie). Returns whether anything changed.
bool remove_small_regions(std::vector<uint8_t>& mask, int h, int w, double area_thresh, bool holes);

}  // namespace samfast
