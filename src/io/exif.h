// EXIF orientation of JPEG files: cameras store the sensor's pixels and say in a tag how to turn
// them. OpenCV's imread (what upstream's scripts/amg.py and notebooks read images with) applies it;
// PIL's Image.open does not. samfast applies it by default and can ignore it (README).
#pragma once
#include <string>

#include "samfast/image.h"

namespace samfast {

// The orientation tag (1..8) of the JPEG file at `path`; 1 (as stored) when it has none, an
// unreadable one, or is not a JPEG.
int exif_orientation(const std::string& path);
// `img` turned as orientation `o` asks (PIL's ImageOps.exif_transpose, pixel for pixel).
Image apply_orientation(const Image& img, int o);

}  // namespace samfast
