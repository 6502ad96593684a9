// Command-line access to the RLE utilities for tests/parity/test_rle_parity.py, which compares them
// with pycocotools and upstream amg.py.
//   rle_tool MASK H W   MASK: raw uint8 (H, W) row-major, non-zero = inside
// prints {"uncompressed": {"size": [H, W], "counts": [...]}, "coco": {"size": [H, W], "counts": "..."},
//         "area": N, "bbox": [x, y, w, h]}
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "samfast/error.h"
#include "samfast/rle.h"

namespace {

using namespace samfast;

int run(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: rle_tool MASK H W\n";
    return 2;
  }
  const int h = std::stoi(argv[2]), w = std::stoi(argv[3]);
  std::vector<uint8_t> mask(size_t(h) * w);
  std::ifstream f(argv[1], std::ios::binary);
  if (!f.read(reinterpret_cast<char*>(mask.data()), std::streamsize(mask.size())))
    throw Error(std::string("cannot read ") + std::to_string(mask.size()) + " bytes from " + argv[1]);

  const Rle rle = mask_to_rle(mask.data(), h, w);
  const std::string coco = rle_to_coco_string(rle);
  // Round trips, checked here so that every parity case exercises the decoders too.
  std::vector<uint8_t> binary(mask);
  for (uint8_t& v : binary) v = v != 0;
  if (rle_to_mask(rle) != binary)
    throw Error("rle_to_mask(mask_to_rle(mask)) differs from the mask");
  if (coco_string_to_rle(coco, h, w).counts != rle.counts)
    throw Error("coco_string_to_rle(rle_to_coco_string(rle)) differs from the RLE");

  nlohmann::json out;
  out["uncompressed"] = {{"size", {h, w}}, {"counts", rle.counts}};
  out["coco"] = {{"size", {h, w}}, {"counts", coco}};
  out["area"] = rle_area(rle);
  out["bbox"] = mask_bbox_xywh(mask.data(), h, w);
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "rle_tool: " << e.what() << "\n";
    return 1;
  }
}
