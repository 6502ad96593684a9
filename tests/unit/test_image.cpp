// Image file IO: round trips, and the error messages a user sees for bad files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "samfast/error.h"
#include "samfast/image.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
// Only to make a JPEG fixture (the library writes PNG only). The samfast target keeps the stb
// include directory private, so name it from /usr/include as Debian installs it.
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace samfast {
namespace {

namespace fs = std::filesystem;

class ImageIo : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "samfast_image_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

Image noise(int h, int w) {
  Image img;
  img.height = h;
  img.width = w;
  img.rgb.resize(size_t(h) * w * 3);
  uint32_t s = 12345;
  for (auto& v : img.rgb) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<uint8_t>(s >> 24);
  }
  return img;
}

void write_bytes(const std::string& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

std::string read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Expects read_image to throw an Error whose message contains `needle`.
void expect_read_error(const std::string& p, const std::string& needle, int64_t max_pixels = int64_t(1) << 28) {
  try {
    read_image(p, max_pixels);
    FAIL() << "read_image(" << p << ") did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "message should name the file: " << e.what();
  }
}

TEST_F(ImageIo, PngRgbRoundTrip) {
  const Image img = noise(37, 53);
  write_png_rgb(path("a.png"), img);
  EXPECT_FALSE(fs::exists(path("a.png.tmp")));
  const Image back = read_image(path("a.png"));
  EXPECT_EQ(back.height, 37);
  EXPECT_EQ(back.width, 53);
  EXPECT_EQ(back.rgb, img.rgb);
}

TEST_F(ImageIo, GrayPngReadsAsRgb) {
  std::vector<uint8_t> gray(5 * 4);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i * 13);
  write_png_gray(path("g.png"), 5, 4, gray);
  const Image back = read_image(path("g.png"));
  ASSERT_EQ(back.rgb.size(), gray.size() * 3);
  for (size_t i = 0; i < gray.size(); ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(back.rgb[3 * i + c], gray[i]);
}

TEST_F(ImageIo, WriteErrors) {
  EXPECT_THROW(write_png_rgb(path("missing_dir/a.png"), noise(2, 2)), Error);
  EXPECT_THROW(write_png_gray(path("b.png"), 2, 2, std::vector<uint8_t>(3)), Error);
  EXPECT_THROW(write_png_rgb(path("c.png"), Image{}), Error);
}

TEST_F(ImageIo, MissingFile) { expect_read_error(path("nope.jpg"), "does not exist"); }

TEST_F(ImageIo, TextFileNamedJpg) {
  write_bytes(path("notes.jpg"), "these are not the pixels you are looking for\n");
  expect_read_error(path("notes.jpg"), "is not a readable image");
}

// A BMP stored top-down (negative height in its header), 2x2: stb's header parse reports the height
// as negative; read_image takes its size from the decoder and checks it against the header's.
TEST_F(ImageIo, TopDownBmp) {
  std::string bmp = "BM";
  auto u32 = [&bmp](uint32_t v) { for (int i = 0; i < 4; ++i) bmp += char(v >> (8 * i)); };
  auto u16 = [&bmp](uint16_t v) { bmp += char(v & 255), bmp += char(v >> 8); };
  u32(54 + 16), u32(0), u32(54);                     // file size, reserved, pixel offset
  u32(40), u32(2), u32(uint32_t(-2)), u16(1), u16(24);  // info header: 2 wide, -2 high (top-down), 24 bpp
  u32(0), u32(16), u32(2835), u32(2835), u32(0), u32(0);
  const std::string rows[2] = {std::string("\x00\x00\xff\x00\xff\x00\0\0", 8),   // top: red, green (BGR)
                               std::string("\xff\x00\x00\xff\xff\xff\0\0", 8)};  // bottom: blue, white
  write_bytes(path("top_down.bmp"), bmp + rows[0] + rows[1]);
  const Image img = read_image(path("top_down.bmp"));
  ASSERT_EQ(img.height, 2);
  ASSERT_EQ(img.width, 2);
  EXPECT_EQ(img.rgb, (std::vector<uint8_t>{255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255}));

  // The fuzzer's case: a top-down BMP far wider than its data. Never a read outside the decoder's
  // pixels (it used to copy a negative size's worth); read or refused, either way with the decoder's size.
  std::string wide_bmp;
  for (const char* h = "424dae000000000000003600000028000000" "79f60600fdffffff0100180000000000"
                       "780000ffc40e0000000000ff0005ff"; *h; h += 2)
    wide_bmp += char(std::stoi(std::string(h, 2), nullptr, 16));
  write_bytes(path("wide.bmp"), wide_bmp + std::string(31, '\x1e') + "\xff\xff\xff");
  try {
    const Image wide = read_image(path("wide.bmp"));
    EXPECT_EQ(wide.rgb.size(), size_t(wide.height) * wide.width * 3);
    EXPECT_EQ(wide.height, 3);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not a readable image"), std::string::npos) << e.what();
  }
}

TEST_F(ImageIo, TruncatedJpeg) {
  const Image img = noise(64, 96);
  ASSERT_TRUE(stbi_write_jpg(path("full.jpg").c_str(), img.width, img.height, 3, img.rgb.data(), 90));
  const Image ok = read_image(path("full.jpg"));
  EXPECT_EQ(ok.height, 64);
  EXPECT_EQ(ok.width, 96);
  const std::string bytes = read_bytes(path("full.jpg"));
  // libjpeg only warns at a premature end (and pads with grey); read_image must fail, as PIL does,
  // and print nothing.
  for (size_t cut : {bytes.size() / 2, bytes.size() - 10, bytes.size() - 2, size_t(200)}) {
    write_bytes(path("cut.jpg"), bytes.substr(0, cut));
    ::testing::internal::CaptureStderr();
    expect_read_error(path("cut.jpg"), "is not a readable image: Premature end of JPEG file");
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "") << "cut at " << cut;
  }
  write_bytes(path("soi.jpg"), bytes.substr(0, 2));
  expect_read_error(path("soi.jpg"), "is not a readable image");
}

TEST_F(ImageIo, CorruptJpegFailsOrDecodesQuietly) {
  const Image img = noise(48, 80);
  ASSERT_TRUE(stbi_write_jpg(path("full.jpg").c_str(), img.width, img.height, 3, img.rgb.data(), 90));
  const std::string bytes = read_bytes(path("full.jpg"));
  // A broken header is an error naming libjpeg's reason.
  std::string bad_sof = bytes;
  const size_t sof = bad_sof.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  bad_sof[sof + 4] = 12;  // 12-bit precision: not supported by the 8-bit library
  write_bytes(path("bad_sof.jpg"), bad_sof);
  expect_read_error(path("bad_sof.jpg"), "is not a readable image: Unsupported JPEG data precision 12");
  // Garbage in the entropy-coded data: libjpeg recovers (as in PIL), or fails cleanly; either way
  // nothing reaches stderr and nothing crashes.
  uint32_t s = 7;
  for (int trial = 0; trial < 50; ++trial) {
    std::string broken = bytes;
    for (int k = 0; k < 8; ++k) {
      s = s * 1664525u + 1013904223u;
      broken[bytes.size() / 3 + s % (bytes.size() / 2)] = char(s >> 24);
    }
    write_bytes(path("broken.jpg"), broken);
    ::testing::internal::CaptureStderr();
    try {
      const Image back = read_image(path("broken.jpg"));
      EXPECT_EQ(back.rgb.size(), size_t(back.height) * back.width * 3);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not a readable image: "), std::string::npos) << e.what();
    }
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  }
}

TEST_F(ImageIo, GrayJpegReadsAsRgb) {
  std::vector<uint8_t> gray(24 * 40);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i * 7);
  ASSERT_TRUE(stbi_write_jpg(path("g.jpg").c_str(), 40, 24, 1, gray.data(), 95));
  const Image back = read_image(path("g.jpg"));
  ASSERT_EQ(back.height, 24);
  ASSERT_EQ(back.width, 40);
  for (size_t i = 0; i < gray.size(); ++i) {
    ASSERT_EQ(back.rgb[3 * i], back.rgb[3 * i + 1]);
    ASSERT_EQ(back.rgb[3 * i], back.rgb[3 * i + 2]);
  }
}

// A PNG signature and IHDR chunk announcing the given size, with no pixel data: enough for the
// header check, which must reject it before trying to decode anything.
std::string png_header(uint32_t w, uint32_t h) {
  auto be32 = [](uint32_t v) {
    return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  };
  const std::string ihdr = "IHDR" + be32(w) + be32(h) + std::string{8, 2, 0, 0, 0};
  const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(ihdr.data()), uInt(ihdr.size())));
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + ihdr + be32(crc);
}

// A baseline JPEG header (SOI, an APP0 segment, SOF0) announcing the given size, with no scan.
std::string jpeg_header(uint16_t w, uint16_t h) {
  std::string app0 = "\xFF\xE0" + std::string{0, 16} + std::string("JFIF\0", 5) + std::string(9, '\0');
  std::string sof = "\xFF\xC0" + std::string{0, 11, 8, char(h >> 8), char(h), char(w >> 8), char(w), 1, 1, 0x11, 0};
  return "\xFF\xD8" + app0 + sof;
}

TEST_F(ImageIo, PixelLimit) {
  write_bytes(path("big.jpg"), jpeg_header(60000, 50000));
  expect_read_error(path("big.jpg"), "is 60000x50000 = 3000000000 pixels, more than the limit of 268435456");
  write_bytes(path("big.png"), png_header(16384, 16384));
  expect_read_error(path("big.png"), "is 16384x16384 = 268435456 pixels, more than the limit of 67108864",
                    int64_t(1) << 26);
  // Beyond what stb_image accepts at all: the message still gives the size.
  write_bytes(path("huge.png"), png_header(100000, 100000));
  expect_read_error(path("huge.png"), "is 100000x100000 = 10000000000 pixels, more than the limit of 268435456");
  // Past PNG's 2^31 - 1 (and 2^32 x 2^32 would overflow int64): not a PNG size at all.
  write_bytes(path("overflow.png"), png_header(0xFFFFFFFFu, 0xFFFFFFFFu));
  expect_read_error(path("overflow.png"), "is not a readable image");
  write_png_rgb(path("small.png"), noise(4, 4));
  expect_read_error(path("small.png"), "is 4x4 = 16 pixels, more than the limit of 15", 15);
  const Image small = noise(4, 5);
  ASSERT_TRUE(stbi_write_jpg(path("small.jpg").c_str(), 5, 4, 3, small.rgb.data(), 90));
  expect_read_error(path("small.jpg"), "is 5x4 = 20 pixels, more than the limit of 19", 19);
  EXPECT_EQ(read_image(path("small.jpg"), 20).rgb.size(), 60u);
  // Its own type (a server answers 413 for it, 415 for a file that is not an image).
  for (const char* name : {"big.jpg", "huge.png", "small.png"}) EXPECT_THROW(read_image(path(name), 15), ImageTooLarge) << name;
  try {
    read_image(path("overflow.png"));
    ADD_FAILURE() << "overflow.png was read";
  } catch (const ImageTooLarge& e) {
    ADD_FAILURE() << "not an image, but refused as too large: " << e.what();
  } catch (const Error&) {
  }
}

// stb_image ignores CRCs; read_image checks them, as PIL and libpng do.
TEST_F(ImageIo, PnmHeadersStbWouldMisreadAreRefused) {
  // (stb_image would overflow an int reading them: the image fuzzer's find)
  write_bytes(path("big.pgm"), "P55551555515\xff\xff\xff");
  expect_read_error(path("big.pgm"), "its PNM header's width has more than 9 digits");
  write_bytes(path("big.ppm"), "P6 # a comment\n4 3\n# another\n99999999999\n");
  expect_read_error(path("big.ppm"), "its PNM header's maximum value has more than 9 digits");
  // Maximum values other than 255: stb misreads 16-bit samples (byte order), overflows its buffer on
  // a 16-bit P5 (the image fuzzer's find), and does not scale below 255 as PIL does.
  write_bytes(path("g16.pgm"), std::string("P5\n7555\n2 \n7555\n2 \n\xff\xff\x00\x1f\"\xc2", 25));
  expect_read_error(path("g16.pgm"), "PNM with a maximum value of 7555 is not supported");
  write_bytes(path("c16.ppm"), std::string("P6\n1 1\n65535\n\x75\x30\x00\x64\xff\xff", 19));
  expect_read_error(path("c16.ppm"), "PNM with a maximum value of 65535 is not supported");
  write_bytes(path("m100.ppm"), std::string("P6 1 1 100\n\x32\x3c\x64", 14));
  expect_read_error(path("m100.ppm"), "PNM with a maximum value of 100 is not supported");
  const std::string ok = std::string("P6\n# 2x1\n2 1\n255\n") + std::string("\x01\x02\x03\x04\x05\x06", 6);
  write_bytes(path("ok.ppm"), ok);
  const Image img = read_image(path("ok.ppm"));
  ASSERT_EQ(img.width, 2);
  ASSERT_EQ(img.height, 1);
  EXPECT_EQ(img.rgb, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6}));
}

TEST_F(ImageIo, PngWithABadCrcIsRefused) {
  std::vector<uint8_t> gray(6 * 7);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i * 5);
  write_png_gray(path("g.png"), 6, 7, gray);
  const std::string good = read_bytes(path("g.png"));
  EXPECT_EQ(read_image(path("g.png")).rgb.size(), gray.size() * 3);
  std::string bad_ihdr = good;
  bad_ihdr[8 + 4 + 4 + 13] ^= 1;  // signature, length, type, the 13 bytes of IHDR data, then its CRC
  write_bytes(path("ihdr.png"), bad_ihdr);
  expect_read_error(path("ihdr.png"), "is not a readable image: PNG chunk IHDR has a bad CRC");
  std::string bad_data = good;
  const size_t idat = bad_data.find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  bad_data[idat + 6] ^= 0x10;  // inside the compressed pixels
  write_bytes(path("idat.png"), bad_data);
  expect_read_error(path("idat.png"), "is not a readable image: PNG chunk IDAT has a bad CRC");
}

}  // namespace
}  // namespace samfast
