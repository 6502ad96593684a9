// Command-line access to the transforms for tests/parity/test_transforms_parity.py, which compares
// them with PIL and torch. Data travels as raw files: uint8 RGB (H, W, 3) or float32 NCHW.
//   transforms_tool decode IMAGE OUT.rgb                      -> prints "H W"
//   transforms_tool resize IN.rgb H W OUT_H OUT_W OUT.rgb
//   transforms_tool normalize IN.rgb H W SIZE OUT.f32
//   transforms_tool interpolate IN.f32 N C H W OUT_H OUT_W OUT.f32
//   transforms_tool postprocess IN.f32 N C H W IMG_SIZE IN_H IN_W ORIG_H ORIG_W OUT.f32
//   transforms_tool shape H W LONG_SIDE                       -> prints "NEWH NEWW"
//   transforms_tool coords H W LONG_SIDE X Y                  -> prints "X' Y'" (%.9g)
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "masks/upsample.h"
#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/transforms.h"

namespace {

using namespace samfast;

std::vector<char> read_all(const std::string& path, size_t expected) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> buf(expected);
  if (!f.read(buf.data(), static_cast<std::streamsize>(expected)))
    throw Error("cannot read " + std::to_string(expected) + " bytes from " + path);
  return buf;
}

void write_all(const std::string& path, const void* data, size_t n) {
  std::ofstream f(path, std::ios::binary);
  if (!f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n)))
    throw Error("cannot write " + path);
}

Image read_rgb(const std::string& path, int h, int w) {
  Image img;
  img.height = h;
  img.width = w;
  std::vector<char> buf = read_all(path, size_t(h) * w * 3);
  img.rgb.assign(buf.begin(), buf.end());
  return img;
}

Tensor read_f32(const std::string& path, Shape shape) {
  Tensor t = Tensor::empty(shape);
  std::vector<char> buf = read_all(path, sizeof(float) * t.numel());
  std::copy(buf.begin(), buf.end(), reinterpret_cast<char*>(t.data));
  return t;
}

int run(const std::vector<std::string>& a) {
  auto i = [&](size_t k) { return std::stoi(a.at(k)); };
  const std::string& cmd = a.at(0);
  if (cmd == "decode" && a.size() == 3) {
    Image img = read_image(a[1]);
    write_all(a[2], img.rgb.data(), img.rgb.size());
    std::printf("%d %d\n", img.height, img.width);
  } else if (cmd == "resize" && a.size() == 7) {
    Image out = resize_pil_bilinear(read_rgb(a[1], i(2), i(3)), i(4), i(5));
    write_all(a[6], out.rgb.data(), out.rgb.size());
  } else if (cmd == "normalize" && a.size() == 6) {
    Tensor t = normalize_and_pad(read_rgb(a[1], i(2), i(3)), i(4));
    write_all(a[5], t.data, sizeof(float) * t.numel());
  } else if (cmd == "interpolate" && a.size() == 9) {
    Tensor t = interpolate_bilinear(read_f32(a[1], {i(2), i(3), i(4), i(5)}), i(6), i(7));
    write_all(a[8], t.data, sizeof(float) * t.numel());
  } else if (cmd == "postprocess" && a.size() == 12) {
    Tensor t = postprocess_masks(read_f32(a[1], {i(2), i(3), i(4), i(5)}), i(6), {i(7), i(8)}, {i(9), i(10)});
    write_all(a[11], t.data, sizeof(float) * t.numel());
  } else if (cmd == "shape" && a.size() == 4) {
    auto [h, w] = preprocess_shape(i(1), i(2), i(3));
    std::printf("%d %d\n", h, w);
  } else if (cmd == "coords" && a.size() == 6) {
    float xy[2] = {std::stof(a[4]), std::stof(a[5])};
    apply_coords(xy, 1, {i(1), i(2)}, i(3));
    std::printf("%.9g %.9g\n", xy[0], xy[1]);
  } else {
    std::cerr << "transforms_tool: bad arguments (see the comment at the top of transforms_tool.cpp)\n";
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::cerr << "transforms_tool: " << e.what() << "\n";
    return 1;
  }
}
