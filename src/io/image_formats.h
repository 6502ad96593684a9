// Image formats that stb_image does not read, decoded by their own libraries (image.cpp's
// read_image picks them by their first bytes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "samfast/image.h"

namespace samfast::detail {

enum class ImageFormat { other, webp, tiff };
ImageFormat sniff_format(const unsigned char* head, size_t n);  // from a file's first 12 bytes (or fewer)

// RGB, the size checked against max_pixels (ImageTooLarge) before any pixel is decoded; Error naming
// the file when it does not decode. A TIFF's first page, turned by its Orientation tag.
Image read_webp(const std::string& path, int64_t max_pixels);
Image read_tiff(const std::string& path, int64_t max_pixels);

}  // namespace samfast::detail
