// A picture of a segmentation for people to look at: masks blended over the image, prompts drawn.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "samfast/image.h"

namespace samfast {

// Returns a copy of img with each mask (img.height * img.width bytes, non-zero = inside) blended in
// its own colour at 50% with a 2-pixel solid outline, points as filled discs with a white ring
// (green for label 1, red for label 0; other labels, such as upstream's -1 padding, are not drawn)
// and boxes (x0, y0, x1, y1) as 2-pixel green rectangles. Coordinates are original-image pixels.
Image make_overlay(const Image& img, const std::vector<const uint8_t*>& masks,
                   const std::vector<std::array<float, 2>>& points, const std::vector<int>& labels,
                   const std::vector<std::array<float, 4>>& boxes);

}  // namespace samfast
