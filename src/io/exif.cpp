#include "io/exif.h"

#include <libexif/exif-data.h>

#include <cstring>
#include <memory>

namespace samfast {

int exif_orientation(const std::string& path) {
  // libexif finds the APP1 Exif segment in the JPEG and parses its IFDs.
  std::unique_ptr<ExifData, void (*)(ExifData*)> data(exif_data_new_from_file(path.c_str()), &exif_data_unref);
  if (!data) return 1;
  ExifEntry* e = exif_content_get_entry(data->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
  if (!e || e->format != EXIF_FORMAT_SHORT || e->components < 1 || !e->data) return 1;
  const int o = exif_get_short(e->data, exif_data_get_byte_order(data.get()));
  return o >= 1 && o <= 8 ? o : 1;
}

Image apply_orientation(const Image& img, int o) {
  if (o < 2 || o > 8) return img;
  const int H = img.height, W = img.width;
  const bool swap = o >= 5;  // 5..8 turn by a quarter: width and height trade places
  Image out;
  out.height = swap ? W : H;
  out.width = swap ? H : W;
  out.rgb.resize(img.rgb.size());
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x) {
      int sy = y, sx = x;  // the source pixel of output (y, x)
      switch (o) {
        case 2: sx = W - 1 - x; break;                     // mirrored left-right
        case 3: sy = H - 1 - y, sx = W - 1 - x; break;     // 180 degrees
        case 4: sy = H - 1 - y; break;                     // mirrored top-bottom
        case 5: sy = x, sx = y; break;                     // transposed
        case 6: sy = H - 1 - x, sx = y; break;             // 90 degrees clockwise
        case 7: sy = H - 1 - x, sx = W - 1 - y; break;     // transverse
        case 8: sy = x, sx = W - 1 - y; break;             // 90 degrees counter-clockwise
      }
      std::memcpy(&out.rgb[(size_t(y) * out.width + x) * 3], &img.rgb[(size_t(sy) * W + sx) * 3], 3);
    }
  return out;
}

}  // namespace samfast
