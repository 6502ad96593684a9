// Image decoding/encoding. JPEG files are decoded with libjpeg(-turbo) using the settings PIL uses,
// so that pixels equal np.array(PIL.Image.open(f).convert("RGB")) bit for bit (upstream SAM users
// decode with PIL; stb_image's JPEG decoder differs by a few levels on ~1-2% of pixels). WebP and
// TIFF are read by libwebp and libtiff (image_formats.cpp). Other formats are read by stb_image,
// whose implementation is compiled into this file (static linkage) rather than linked from
// Debian's libstb.so, so no other file can clash with it. PNGs are written
// by libpng: a server answers each click with full-size mask PNGs, and stb_image_write took ~50 ms
// for one 1800x1200 mask where libpng's fast mode takes ~4.
#include "samfast/image.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <system_error>
#include <utility>

#include "io/exif.h"
#include "io/image_formats.h"
#include "io/printable.h"
#include "samfast/error.h"
#include "samfast/safe_file.h"

// jpeglib.h needs size_t and FILE declared before it.
#include <jpeglib.h>
#include <jerror.h>  // message codes (JWRN_JPEG_EOF)
#include <png.h>
#include <zlib.h>    // crc32, to check PNG chunks

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_JPEG  // JPEGs are decoded by libjpeg below
#include <stb_image.h>
#pragma GCC diagnostic pop

namespace samfast {

namespace fs = std::filesystem;

namespace {

uint32_t be16(const unsigned char* p) { return uint32_t(p[0]) << 8 | p[1]; }
uint32_t be32(const unsigned char* p) { return be16(p) << 16 | be16(p + 2); }

// (width, height) from a PNG or JPEG header. stb_image refuses headers of images that would need
// more than 2^30 bytes without saying how large they are; reading the size here lets the error
// name it. Other formats, or a header that cannot be parsed, give nullopt.
std::optional<std::pair<int64_t, int64_t>> sniff_size(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::array<unsigned char, 24> h{};
  if (!f.read(reinterpret_cast<char*>(h.data()), 2)) return std::nullopt;
  if (h[0] == 0x89 && h[1] == 'P') {  // PNG: signature, then the IHDR chunk with width, height
    if (!f.read(reinterpret_cast<char*>(h.data()) + 2, 22)) return std::nullopt;
    const uint32_t width = be32(&h[16]), height = be32(&h[20]);
    // Past the PNG limit of 2^31 - 1, so not a PNG; the limit also keeps width * height in int64.
    if (width > 0x7FFFFFFFu || height > 0x7FFFFFFFu) return std::nullopt;
    return std::make_pair(int64_t(width), int64_t(height));
  }
  if (h[0] != 0xFF || h[1] != 0xD8) return std::nullopt;
  // JPEG: walk the marker segments up to a start-of-frame, which holds height and width.
  while (f) {
    int c = f.get();
    if (c != 0xFF) return std::nullopt;
    while (c == 0xFF) c = f.get();
    if (c == EOF || c == 0xDA || c == 0xD9) return std::nullopt;
    if (c == 0x01 || (c >= 0xD0 && c <= 0xD7)) continue;  // markers without a length
    unsigned char len[2];
    if (!f.read(reinterpret_cast<char*>(len), 2) || be16(len) < 2) return std::nullopt;
    const bool sof = c >= 0xC0 && c <= 0xCF && c != 0xC4 && c != 0xC8 && c != 0xCC;
    if (sof) {
      if (!f.read(reinterpret_cast<char*>(h.data()), 5)) return std::nullopt;
      return std::make_pair(int64_t(be16(&h[3])), int64_t(be16(&h[1])));
    }
    f.seekg(be16(len) - 2, std::ios::cur);
  }
  return std::nullopt;
}


// stb_image ignores chunk CRCs, so a damaged PNG would decode to whatever its bytes now say; PIL
// and libpng (OpenCV) refuse it. Checks the CRC of every chunk up to IEND. A file that is not a
// PNG, or ends early, is left to the decoder, which names its own reason.
void check_png_crcs(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  unsigned char chunk[8];  // the signature, then each chunk's length and type
  if (!f.read(reinterpret_cast<char*>(chunk), 8) || std::memcmp(chunk, "\x89PNG\r\n\x1a\n", 8) != 0) return;
  std::vector<unsigned char> buffer(size_t{1} << 16);
  while (f.read(reinterpret_cast<char*>(chunk), 8)) {
    uint32_t left = be32(chunk);
    if (left > 0x7FFFFFFFu) return;  // not a PNG chunk length
    uLong crc = crc32(0, chunk + 4, 4);  // the CRC covers the type and the data
    while (left > 0) {
      const uint32_t n = std::min<uint32_t>(left, uint32_t(buffer.size()));
      if (!f.read(reinterpret_cast<char*>(buffer.data()), n)) return;
      crc = crc32(crc, buffer.data(), n);
      left -= n;
    }
    unsigned char stored[4];
    if (!f.read(reinterpret_cast<char*>(stored), 4)) return;
    const std::string type(reinterpret_cast<const char*>(chunk) + 4, 4);
    if (be32(stored) != crc)
      throw Error(path + " is not a readable image: PNG chunk " + printable(type) + " has a bad CRC (the file is damaged)");
    if (type == "IEND") return;
  }
}

// stb_image's PNM reader (P5, P6) accumulates the header's numbers in an int without a bound, so
// that "P5 99999999999 ..." overflows (undefined behaviour, found by the image fuzzer). Refuses a
// header number of more than 9 digits before stb reads it. And a maximum value other than 255:
// stb reads 16-bit samples (maximum past 255) in the wrong byte order, and writes past its buffer
// converting a 16-bit P5 to RGB (a heap overflow, found by the image fuzzer); below 255 it does not
// scale the samples, where PIL does. Anything else is left to the decoder.
void check_pnm_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[2];
  if (!f.read(magic, 2) || magic[0] != 'P' || (magic[1] != '5' && magic[1] != '6')) return;
  const auto space = [](int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
  int c = f.get(), digits = 0, value = 0;
  for (const char* what : {"width", "height", "maximum value"}) {
    for (;;) {  // whitespace and # comments, as stb skips them
      while (c != EOF && space(c)) c = f.get();
      if (c != '#') break;
      while (c != EOF && c != '\n' && c != '\r') c = f.get();
    }
    for (digits = 0, value = 0; c >= '0' && c <= '9'; c = f.get()) {
      if (++digits > 9) throw Error(path + " is not a readable image: its PNM header's " + what + " has more than 9 digits");
      value = value * 10 + (c - '0');
    }
  }
  if (digits > 0 && value != 255)  // (the last number read: the maximum value)
    throw Error(path + " is not a readable image: PNM with a maximum value of " + std::to_string(value) +
                " is not supported, only 8-bit samples (255): save it as 8-bit PNM, PNG or JPEG");
}

// ---- JPEG through libjpeg ------------------------------------------------------------------------
// libjpeg reports fatal errors through error_exit, which must not return; it is C code, so a C++
// exception must not cross it: error_exit longjmps back into decode_jpeg, whose locals are all
// trivially destructible (the setjmp/longjmp rules of [csetjmp.syn]).

struct JpegErrorMgr {
  jpeg_error_mgr pub;  // first member: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
  err->pub.format_message(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_output_nothing(j_common_ptr) {}

// Warnings (msg_level -1) are corrupt-data conditions libjpeg recovers from; PIL ignores them too,
// except that PIL fails on a file that ends early, where libjpeg warns JWRN_JPEG_EOF and pads the
// rest of the image with grey. Make that one fatal. Trace messages (level >= 0) are dropped.
void jpeg_emit(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) {
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
    cinfo->err->num_warnings++;
  }
}

// PIL's CMYK -> RGB (Convert.c cmyk2rgb): MULDIV255 is its rounded a*b/255.
inline uint8_t pil_cmyk_channel(int c, int nk) {
  const int t = c * nk + 128;
  const int v = nk - (((t >> 8) + t) >> 8);
  return static_cast<uint8_t>(v < 0 ? 0 : v);
}

enum class JpegResult { ok, too_many_pixels, failed };

// Decodes `file` into img as PIL does for Image.open(f).convert("RGB"): PIL picks the mode from the
// number of components (1: L, 3: RGB, 4: CMYK) and leaves libjpeg's defaults alone (JDCT_ISLOW,
// fancy upsampling, block smoothing, libjpeg's guess of the JPEG colour space). Gray -> RGB
// replicates the value, as libjpeg's JCS_GRAYSCALE -> JCS_RGB does. For 4 components PIL reads
// libjpeg's JCS_CMYK output as "CMYK;I" (inverted, Adobe convention, whether or not an Adobe
// marker is present) and converts with cmyk2rgb. On failure err.message holds libjpeg's message;
// width/height are set once the header has been read.
JpegResult decode_jpeg(std::FILE* file, int64_t max_pixels, Image& img, JpegErrorMgr& err, int64_t& width,
                       int64_t& height) {
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_fail;
  err.pub.output_message = jpeg_output_nothing;
  err.pub.emit_message = jpeg_emit;
  err.message[0] = '\0';
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return JpegResult::failed;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, file);
  jpeg_read_header(&cinfo, TRUE);
  width = cinfo.image_width;
  height = cinfo.image_height;
  if (width * height > max_pixels) {
    jpeg_destroy_decompress(&cinfo);
    return JpegResult::too_many_pixels;
  }
  const bool cmyk = cinfo.num_components == 4;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  // libjpeg's defaults, which PIL keeps; spelled out because the result depends on them.
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  cinfo.scale_num = cinfo.scale_denom = 1;
  jpeg_start_decompress(&cinfo);
  const size_t w = cinfo.output_width;
  JSAMPARRAY cmyk_row = cmyk ? (*cinfo.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&cinfo), JPOOL_IMAGE,
                                                          JDIMENSION(w * 4), 1)
                             : nullptr;
  try {
    img.height = int(cinfo.output_height);
    img.width = int(w);
    img.rgb.resize(size_t(cinfo.output_height) * w * 3);
  } catch (...) {  // bad_alloc: free libjpeg's memory on the way out
    jpeg_destroy_decompress(&cinfo);
    throw;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* out = img.rgb.data() + size_t(cinfo.output_scanline) * w * 3;
    JSAMPROW row = cmyk ? cmyk_row[0] : out;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (cmyk) {
      for (size_t x = 0; x < w; ++x) {
        const JSAMPLE* p = row + 4 * x;  // libjpeg's inverted CMYK: PIL's C is 255 - p[0], ...
        const int nk = p[3];             // ... and 255 - K is p[3]
        for (int c = 0; c < 3; ++c) out[3 * x + c] = pil_cmyk_channel(255 - p[c], nk);
      }
    }
  }
  jpeg_finish_decompress(&cinfo);  // reads up to EOI: a file cut after the last row still fails
  jpeg_destroy_decompress(&cinfo);
  return JpegResult::ok;
}

}  // namespace

Image read_image(const std::string& path, int64_t max_pixels, ExifOrientation exif) {
  require_regular_file(path, "image file");  // a FIFO would block the read below forever

  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw Error("cannot open image file " + path + ": " + std::strerror(errno));
  unsigned char magic[12] = {};
  const size_t head = std::fread(magic, 1, sizeof magic, file.get());
  const bool is_jpeg = head >= 2 && magic[0] == 0xFF && magic[1] == 0xD8;
  if (is_jpeg) {
    std::rewind(file.get());
    Image img;
    JpegErrorMgr err;
    int64_t w = -1, h = -1;
    switch (decode_jpeg(file.get(), max_pixels, img, err, w, h)) {
      case JpegResult::ok:
        return exif == ExifOrientation::apply ? apply_orientation(img, exif_orientation(path)) : img;
      case JpegResult::too_many_pixels:
        throw ImageTooLarge(detail::too_many_pixels(path, w, h, max_pixels));
      case JpegResult::failed:
        // A header without a scan (or cut before it) still names its size when that is too large.
        if (w < 0)
          if (const auto size = sniff_size(path); size && size->first * size->second > max_pixels)
            throw ImageTooLarge(detail::too_many_pixels(path, size->first, size->second, max_pixels));
        throw Error(path + " is not a readable image: " + err.message);
    }
  }
  file.reset();
  switch (detail::sniff_format(magic, head)) {
    case detail::ImageFormat::webp:
      return detail::read_webp(path, max_pixels);
    case detail::ImageFormat::tiff:
      return detail::read_tiff(path, max_pixels);
    case detail::ImageFormat::other:
      break;
  }
  check_png_crcs(path);
  check_pnm_header(path);

  // Other formats: check the header first so that a huge image is rejected before any allocation.
  int w = 0, h = 0, channels = 0;
  if (!stbi_info(path.c_str(), &w, &h, &channels)) {
    const std::string reason = stbi_failure_reason();
    if (const auto size = sniff_size(path); size && size->first * size->second > max_pixels)
      throw ImageTooLarge(detail::too_many_pixels(path, size->first, size->second, max_pixels));
    throw Error(path + " is not a readable image: " + reason);
  }
  // stb's header parse gives a top-down BMP's height with its stored sign (negative); its decoder
  // gives the size.
  if (h < 0 && h != std::numeric_limits<int>::min()) h = -h;
  detail::check_image_size(path, w, h, max_pixels);
  const int64_t pixels = int64_t(w) * h;

  // Always ask for 3 channels: stb converts gray, gray+alpha and RGBA to RGB (alpha dropped).
  const int header_w = w, header_h = h;
  std::unique_ptr<stbi_uc, void (*)(void*)> data(stbi_load(path.c_str(), &w, &h, &channels, 3), &stbi_image_free);
  if (!data) throw Error("image " + path + " is corrupt or truncated: " + stbi_failure_reason());
  // The pixels copied below are the decoder's, so their size must be the one checked above.
  if (w != header_w || h != header_h)
    throw Error(path + " is not a readable image: its header says " + std::to_string(header_w) + "x" +
                std::to_string(header_h) + " and its pixels are " + std::to_string(w) + "x" + std::to_string(h));
  Image img;
  img.height = h;
  img.width = w;
  img.rgb.assign(data.get(), data.get() + size_t(pixels) * 3);
  return img;
}

namespace detail {

std::string too_many_pixels(const std::string& path, int64_t w, int64_t h, int64_t max_pixels) {
  return "image " + path + " is " + std::to_string(w) + "x" + std::to_string(h) + " = " +
         std::to_string(w * h) + " pixels, more than the limit of " + std::to_string(max_pixels);
}

void check_image_size(const std::string& path, int64_t w, int64_t h, int64_t max_pixels) {
  if (w <= 0 || h <= 0)
    throw Error(path + " is not a readable image: its header gives a size of " + std::to_string(w) + "x" + std::to_string(h));
  if (w * h > max_pixels) throw ImageTooLarge(too_many_pixels(path, w, h, max_pixels));
}

}  // namespace detail

namespace {

std::string encode_png(int height, int width, int channels, const uint8_t* pixels, size_t size) {
  if (height <= 0 || width <= 0)
    throw Error("empty image (" + std::to_string(height) + "x" + std::to_string(width) + ")");
  if (size != size_t(height) * width * channels)
    throw Error(std::to_string(size) + " bytes for a " + std::to_string(height) + "x" + std::to_string(width) + "x" +
                std::to_string(channels) + " image");
  // libpng's simplified API (no setjmp here); FAST: no row filters and zlib level 3, 10x faster
  // than the defaults for masks at about twice the bytes.
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = png_uint_32(width), image.height = png_uint_32(height);
  image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  image.flags = PNG_IMAGE_FLAG_FAST;
  // One pass into a buffer of the largest size the image can take (uncompressed zlib blocks).
  png_alloc_size_t bytes = PNG_IMAGE_PNG_SIZE_MAX(image);
  std::unique_ptr<uint8_t[]> buffer(new uint8_t[bytes]);
  if (!png_image_write_to_memory(&image, buffer.get(), &bytes, 0, pixels, width * channels, nullptr)) {
    const std::string message = image.message;
    png_image_free(&image);
    throw Error("PNG encoding failed: " + message);
  }
  return std::string(reinterpret_cast<const char*>(buffer.get()), bytes);
}

// Encoded in memory, then written atomically (io/safe_file.h): a reader never sees a half-written
// PNG, and a full disk is an error, not a truncated file.
void write_png(const std::string& path, int height, int width, int channels, const uint8_t* pixels, size_t size) {
  std::string png;
  try {
    png = encode_png(height, width, channels, pixels, size);
  } catch (const Error& e) {
    throw Error("cannot write " + path + ": " + e.what());
  }
  write_file_atomically(path, png);
}

}  // namespace

std::string encode_png_rgb(const Image& img) { return encode_png(img.height, img.width, 3, img.rgb.data(), img.rgb.size()); }

std::string encode_png_gray(int height, int width, const std::vector<uint8_t>& gray) {
  return encode_png(height, width, 1, gray.data(), gray.size());
}

void write_png_rgb(const std::string& path, const Image& img) {
  write_png(path, img.height, img.width, 3, img.rgb.data(), img.rgb.size());
}

void write_png_gray(const std::string& path, int height, int width, const std::vector<uint8_t>& gray) {
  write_png(path, height, width, 1, gray.data(), gray.size());
}

}  // namespace samfast
