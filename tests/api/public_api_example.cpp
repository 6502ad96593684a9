// The README's Library example as a program that sees only include/samfast/ (no src/ on its
// include path): it fails to build if a public header leans on a private one.
//   public_api_example OUT_DIR [CHECKPOINT IMAGE]
// segments IMAGE at a point with CHECKPOINT (by default a tiny synthetic model and the test images'
// dog.jpg) and writes OUT_DIR/mask.png.
#include <cstdio>
#include <string>
#include <vector>

#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/mask_generator.h"
#include "samfast/predictor.h"

int main(int argc, char** argv) {
  try {
    if (argc != 2 && argc != 4) {
      std::fprintf(stderr, "usage: public_api_example OUT_DIR [CHECKPOINT IMAGE]\n");
      return 2;
    }
    const bool given = argc == 4;
    samfast::Model model =
        given ? samfast::Model::load(argv[2])
              : samfast::Model::from_tensors(samfast::Model::synthetic_tensors(samfast::SamConfig::preset("tiny"), 1),
                                             {.device = "cpu"});
    const std::string image = given ? argv[3] : std::string(SAMFAST_SOURCE_DIR) + "/../shared/testdata/images/dog.jpg";
    const std::string out = argv[1];
    samfast::Predictor predictor(model);
    predictor.set_image(samfast::read_image(image));
    samfast::Prediction p = predictor.predict({.points = {{400, 260}}, .labels = {1}}, /*multimask=*/true);
    const int H = int(p.masks.dim(1)), W = int(p.masks.dim(2));
    std::vector<uint8_t> gray(size_t(H) * W);
    for (size_t i = 0; i < gray.size(); ++i) gray[i] = p.masks.ptr<uint8_t>()[i] ? 255 : 0;
    samfast::write_png_gray(out + "/mask.png", H, W, gray);
    std::printf("mask %dx%d, predicted IoU %.3f\n", W, H, p.iou.data[0]);
  } catch (const samfast::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
