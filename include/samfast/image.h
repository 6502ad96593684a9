// Images in memory and image files in and out, for users of the public API (predictor.h and
// mask_generator.h take an Image). Images are interleaved uint8 RGB, row-major (H, W, 3).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace samfast {

struct Image {
  int height = 0, width = 0;
  std::vector<uint8_t> rgb;  // height * width * 3
};

enum class ExifOrientation { apply, ignore };
inline constexpr int64_t kMaxImagePixels = int64_t(1) << 28;

// Decodes JPEG/PNG/BMP/... into RGB. Throws samfast::Error naming the file if it is missing, not a
// regular file, not an image, corrupt, or larger than max_pixels. A JPEG's EXIF orientation is
// applied by default, as OpenCV's imread does.
Image read_image(const std::string& path, int64_t max_pixels = kMaxImagePixels,
                 ExifOrientation exif = ExifOrientation::apply);
// Writes a PNG (RGB or single-channel gray). Throws samfast::Error on failure.
void write_png_rgb(const std::string& path, const Image& img);
void write_png_gray(const std::string& path, int height, int width, const std::vector<uint8_t>& gray);
// The same PNGs as bytes, for outputs written together with others.
std::string encode_png_rgb(const Image& img);
std::string encode_png_gray(int height, int width, const std::vector<uint8_t>& gray);

}  // namespace samfast
