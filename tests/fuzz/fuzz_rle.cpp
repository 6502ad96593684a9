// libFuzzer target for the RLE codecs (COCO counts strings come from users' annotation files): the
// first two bytes are the mask's height and width, the rest a COCO compressed counts string. Any
// input may be rejected with samfast::Error, but must never crash, hang or read out of bounds
// (ASan/UBSan by run_fuzz.sh); a string that decodes must round-trip through the mask.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "samfast/error.h"
#include "samfast/rle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int h = data[0] % 64, w = data[1] % 64;  // zero sizes included
  const std::string s(reinterpret_cast<const char*>(data + 2), size - 2);
  samfast::Rle rle;
  try {
    rle = samfast::coco_string_to_rle(s, h, w);
  } catch (const samfast::Error&) {
    return 0;
  }
  const std::vector<uint8_t> mask = samfast::rle_to_mask(rle);
  const samfast::Rle again = samfast::mask_to_rle(mask.data(), h, w);
  // Zero-length runs may be written differently, never the mask they describe.
  if (samfast::rle_to_mask(again) != mask || samfast::rle_area(again) != samfast::rle_area(rle)) abort();
  if (samfast::rle_to_mask(samfast::coco_string_to_rle(samfast::rle_to_coco_string(again), h, w)) != mask) abort();
  return 0;
}
