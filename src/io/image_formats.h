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

// image.cpp's messages for a size that is not an image's, or past max_pixels (ImageTooLarge).
std::string too_many_pixels(const std::string& path, int64_t w, int64_t h, int64_t max_pixels);
void check_image_size(const std::string& path, int64_t w, int64_t h, int64_t max_pixels);

// RGB, the size checked against max_pixels (ImageTooLarge) before any pixel is decoded; Error naming
// the file when it does not decode. A TIFF's first page, turned by its Orientation tag.
Image read_webp(const std::string& path, int64_t max_pixels);
Image read_tiff(const std::string& path, int64_t max_pixels);

}  // namespace samfast::detail
