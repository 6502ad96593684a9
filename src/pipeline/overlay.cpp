#include "samfast/overlay.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "samfast/error.h"

namespace samfast {

namespace {

using Rgb = std::array<uint8_t, 3>;

// Well-separated hues (the "tab10" palette) so that neighbouring masks stay distinguishable.
constexpr Rgb kPalette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                            {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127},
                            {188, 189, 34},  {23, 190, 207}};
constexpr Rgb kGreen = {0, 220, 0}, kRed = {230, 0, 0}, kWhite = {255, 255, 255};

void put(Image& img, int x, int y, const Rgb& c) {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  uint8_t* p = img.rgb.data() + (size_t(y) * img.width + x) * 3;
  p[0] = c[0];
  p[1] = c[1];
  p[2] = c[2];
}

void draw_mask(Image& out, const uint8_t* mask, const Rgb& c) {
  const int h = out.height, w = out.width;
  auto inside = [&](int x, int y) { return x >= 0 && y >= 0 && x < w && y < h && mask[size_t(y) * w + x]; };
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const bool in = inside(x, y);
      // A pixel next to a pixel of the other side lies on the boundary; marking both sides gives a
      // 2-pixel line centred on the mask edge.
      bool edge = false;
      for (int dy = -1; dy <= 1 && !edge; ++dy)
        for (int dx = -1; dx <= 1 && !edge; ++dx) {
          const int nx = x + dx, ny = y + dy;
          if (nx >= 0 && ny >= 0 && nx < w && ny < h && inside(nx, ny) != in) edge = true;
        }
      uint8_t* p = out.rgb.data() + (size_t(y) * w + x) * 3;
      if (edge) {
        for (int k = 0; k < 3; ++k) p[k] = c[k];
      } else if (in) {
        for (int k = 0; k < 3; ++k) p[k] = static_cast<uint8_t>((p[k] + c[k] + 1) / 2);
      }
    }
  }
}

void draw_disc(Image& img, float cx, float cy, float radius, const Rgb& c) {
  const int x0 = static_cast<int>(std::floor(cx - radius)), x1 = static_cast<int>(std::ceil(cx + radius));
  const int y0 = static_cast<int>(std::floor(cy - radius)), y1 = static_cast<int>(std::ceil(cy + radius));
  for (int y = y0; y <= y1; ++y)
    for (int x = x0; x <= x1; ++x)
      if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= radius * radius) put(img, x, y, c);
}

void draw_box(Image& img, const std::array<float, 4>& b, const Rgb& c) {
  const int x0 = static_cast<int>(std::lround(std::min(b[0], b[2])));
  const int x1 = static_cast<int>(std::lround(std::max(b[0], b[2])));
  const int y0 = static_cast<int>(std::lround(std::min(b[1], b[3])));
  const int y1 = static_cast<int>(std::lround(std::max(b[1], b[3])));
  for (int t = 0; t < 2; ++t) {  // 2 pixels thick, drawn inwards
    for (int x = x0; x <= x1; ++x) {
      put(img, x, y0 + t, c);
      put(img, x, y1 - t, c);
    }
    for (int y = y0; y <= y1; ++y) {
      put(img, x0 + t, y, c);
      put(img, x1 - t, y, c);
    }
  }
}

}  // namespace

Image make_overlay(const Image& img, const std::vector<const uint8_t*>& masks,
                   const std::vector<std::array<float, 2>>& points, const std::vector<int>& labels,
                   const std::vector<std::array<float, 4>>& boxes) {
  if (img.height <= 0 || img.width <= 0 || img.rgb.size() != size_t(img.height) * img.width * 3)
    throw Error("make_overlay: image " + std::to_string(img.height) + "x" + std::to_string(img.width) +
                " has " + std::to_string(img.rgb.size()) + " bytes, expected height*width*3 > 0");
  if (labels.size() != points.size())
    throw Error("make_overlay: " + std::to_string(points.size()) + " points but " +
                std::to_string(labels.size()) + " labels");
  Image out = img;
  for (size_t i = 0; i < masks.size(); ++i) {
    if (!masks[i]) throw Error("make_overlay: mask " + std::to_string(i) + " is null");
    draw_mask(out, masks[i], kPalette[i % std::size(kPalette)]);
  }
  for (const auto& b : boxes) draw_box(out, b, kGreen);
  // Markers scale with the image so they stay visible on large photos.
  const float radius = std::max(4.0f, std::min(img.height, img.width) / 120.0f);
  for (size_t i = 0; i < points.size(); ++i) {
    if (labels[i] != 0 && labels[i] != 1) continue;
    draw_disc(out, points[i][0], points[i][1], radius + 2.0f, kWhite);
    draw_disc(out, points[i][0], points[i][1], radius, labels[i] == 1 ? kGreen : kRed);
  }
  return out;
}

}  // namespace samfast
