// WebP and TIFF files, which stb_image does not read and OpenCV's imread does (upstream's amg.py
// reads images with it, and X-AnyLabeling sends a .webp or .tif file's bytes as they are): libwebp
// and libtiff, as OpenCV and PIL use them. Alpha is dropped, as for the other formats (libtiff's
// RGBA reader premultiplies an unassociated alpha first: transparent pixels of a TIFF read darker
// than PIL's).
#include "io/image_formats.h"

#include <webp/decode.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

#include "samfast/error.h"

// tiffio.h after the standard headers: it needs uint32_t and va_list.
#include <tiffio.h>

namespace samfast::detail {

ImageFormat sniff_format(const unsigned char* head, size_t n) {
  if (n >= 12 && std::memcmp(head, "RIFF", 4) == 0 && std::memcmp(head + 8, "WEBP", 4) == 0) return ImageFormat::webp;
  if (n >= 4 && (std::memcmp(head, "II*\0", 4) == 0 || std::memcmp(head, "MM\0*", 4) == 0 ||
                 std::memcmp(head, "II+\0", 4) == 0 || std::memcmp(head, "MM\0+", 4) == 0))  // (and BigTIFF)
    return ImageFormat::tiff;
  return ImageFormat::other;
}

Image read_webp(const std::string& path, int64_t max_pixels) {
  std::ifstream f(path, std::ios::binary);
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(data.data(), data.size(), &features) != VP8_STATUS_OK)
    throw Error(path + " is not a readable image: its WebP header is damaged");
  if (features.has_animation) throw Error(path + " is an animated WebP: samfast reads still images only");
  check_image_size(path, features.width, features.height, max_pixels);
  Image img;
  img.width = features.width, img.height = features.height;
  img.rgb.resize(size_t(img.width) * img.height * 3);
  if (!WebPDecodeRGBInto(data.data(), data.size(), img.rgb.data(), img.rgb.size(), img.width * 3))
    throw Error("image " + path + " is corrupt or truncated: its WebP data does not decode");
  return img;
}

namespace {

int tiff_error(TIFF*, void* message, const char* module, const char* fmt, va_list args) {
  char text[512];
  std::vsnprintf(text, sizeof text, fmt, args);
  auto& m = *static_cast<std::string*>(message);
  if (m.empty()) m = std::string(module ? module : "libtiff") + ": " + text;  // (the first says the most)
  return 1;
}

int tiff_warning(TIFF*, void*, const char*, const char*, va_list) { return 1; }  // (as PIL: warnings are not errors)

}  // namespace

Image read_tiff(const std::string& path, int64_t max_pixels) {
  std::string message;
  std::unique_ptr<TIFFOpenOptions, void (*)(TIFFOpenOptions*)> options(TIFFOpenOptionsAlloc(), &TIFFOpenOptionsFree);
  TIFFOpenOptionsSetErrorHandlerExtR(options.get(), &tiff_error, &message);
  TIFFOpenOptionsSetWarningHandlerExtR(options.get(), &tiff_warning, nullptr);
  // No single allocation of libtiff's past what the largest allowed image needs (a header may ask for more).
  TIFFOpenOptionsSetMaxSingleMemAlloc(options.get(), tmsize_t(std::min<int64_t>(max_pixels, kMaxImagePixels) * 4 + (1 << 20)));
  std::unique_ptr<TIFF, void (*)(TIFF*)> tif(TIFFOpenExt(path.c_str(), "r", options.get()), &TIFFClose);
  if (!tif) throw Error(path + " is not a readable image: " + (message.empty() ? "not a TIFF file" : message));
  uint32_t w = 0, h = 0;
  TIFFGetField(tif.get(), TIFFTAG_IMAGEWIDTH, &w);
  TIFFGetField(tif.get(), TIFFTAG_IMAGELENGTH, &h);
  check_image_size(path, w, h, max_pixels);
  // The first page, as OpenCV and PIL read it; RGBA in memory order R, G, B, A per pixel, rows top down.
  std::vector<uint32_t> rgba(size_t(w) * h);
  if (!TIFFReadRGBAImageOriented(tif.get(), w, h, rgba.data(), ORIENTATION_TOPLEFT, /*stop_on_error=*/1))
    throw Error("image " + path + " is corrupt or truncated: " + (message.empty() ? "its TIFF data does not decode" : message));
  Image img;
  img.width = int(w), img.height = int(h);
  img.rgb.resize(size_t(w) * h * 3);
  for (size_t i = 0; i < rgba.size(); ++i) {
    img.rgb[3 * i] = uint8_t(TIFFGetR(rgba[i]));
    img.rgb[3 * i + 1] = uint8_t(TIFFGetG(rgba[i]));
    img.rgb[3 * i + 2] = uint8_t(TIFFGetB(rgba[i]));
  }
  return img;
}

}  // namespace samfast::detail
