// Segments an image at one point and writes the best mask: samfast as an installed library.
//   predict_point CHECKPOINT IMAGE X Y OUT.png
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "samfast/error.h"
#include "samfast/predictor.h"

int main(int argc, char** argv) {
  if (argc != 6) return std::fprintf(stderr, "usage: predict_point CHECKPOINT IMAGE X Y OUT.png\n"), 2;
  try {
    samfast::Model model = samfast::Model::load(argv[1]);  // .pth or .safetensors; a GPU if there is one
    samfast::Predictor predictor(model);
    predictor.set_image(samfast::read_image(argv[2]));
    const float x = std::strtof(argv[3], nullptr), y = std::strtof(argv[4], nullptr);
    samfast::Prediction p = predictor.predict({.points = {{x, y}}, .labels = {1}});  // 3 masks, as upstream
    const int best = int(std::max_element(p.iou.data, p.iou.data + 3) - p.iou.data);
    const int h = int(p.masks.dim(1)), w = int(p.masks.dim(2));
    const uint8_t* mask = p.masks.ptr<uint8_t>() + size_t(best) * h * w;
    std::vector<uint8_t> gray(size_t(h) * w);
    for (size_t i = 0; i < gray.size(); ++i) gray[i] = mask[i] ? 255 : 0;
    samfast::write_png_gray(argv[5], h, w, gray);
    std::printf("%s: %dx%d, predicted IoU %.3f (%s)\n", argv[5], w, h, p.iou.data[best], model.device().c_str());
  } catch (const samfast::Error& e) {
    return std::fprintf(stderr, "error: %s\n", e.what()), 1;
  }
}
