// Label Studio's brush RLE, written as label_studio_converter's encode_rle writes it.
// ref: label-studio-converter 0.0.59, label_studio_converter/brush.py mask2rle, encode_rle,
//      base_rle_encode, bits2byte (decode_rle reads it back)
// In C++ because a mask of a large photo is tens of millions of values and the Python original
// builds a string of bits per run.
#include <limits>

#include "samfast/error.h"
#include "samfast/rle.h"

namespace samfast {
namespace {

// Bits, most significant first, packed into bytes.
class BitWriter {
 public:
  void put(uint32_t value, int bits) {
    for (int b = bits - 1; b >= 0; --b) {
      acc_ = uint8_t(acc_ << 1 | ((value >> b) & 1));
      if (++n_ == 8) {
        out_.push_back(acc_);
        acc_ = 0, n_ = 0;
      }
    }
  }
  // encode_rle pads with 8 - len % 8 zero bits: a whole zero byte when already aligned.
  std::vector<uint8_t> finish() {
    put(0, 8 - n_);
    return std::move(out_);
  }

 private:
  std::vector<uint8_t> out_;
  uint8_t acc_ = 0;
  int n_ = 0;
};

// One run of `length` copies of `value`, as encode_rle writes it: a flag (0: one value, 1: a
// series), the index of the length's field size among rle_sizes [3, 4, 8, 16], length - 1 in that
// many bits, then the value in 8 bits. Series past 2^16 go out in pieces of 2^16.
void put_run(BitWriter& w, uint64_t length, uint8_t value) {
  if (length == 1) {
    w.put(0, 1), w.put(0, 2), w.put(0, 3), w.put(value, 8);
    return;
  }
  for (; length > (1u << 16); length -= 1u << 16) w.put(1, 1), w.put(3, 2), w.put(0xffff, 16), w.put(value, 8);
  const int index = length <= 8 ? 0 : length <= 16 ? 1 : length <= 256 ? 2 : 3;
  constexpr int kBits[] = {3, 4, 8, 16};
  w.put(1, 1), w.put(uint32_t(index), 2), w.put(uint32_t(length - 1), kBits[index]), w.put(value, 8);
}

}  // namespace

std::vector<uint8_t> mask_to_label_studio_rle(const uint8_t* mask, int height, int width) {
  if (height <= 0 || width <= 0)
    throw Error("mask_to_label_studio_rle: mask size " + std::to_string(height) + "x" + std::to_string(width) +
                " is empty or negative");
  // mask2rle repeats each pixel for the 4 channels of an RGBA image; the count is 32 bits.
  const uint64_t values = uint64_t(height) * uint64_t(width) * 4;
  if (values > std::numeric_limits<uint32_t>::max())
    throw Error("mask_to_label_studio_rle: a " + std::to_string(height) + "x" + std::to_string(width) +
                " mask has more than 2^30 pixels, past the format's 32-bit length");
  if (!mask) throw Error("mask_to_label_studio_rle: mask pointer is null");
  BitWriter w;
  w.put(uint32_t(values), 32);
  w.put(8 - 1, 5);  // word size
  for (int size : {3, 4, 8, 16}) w.put(uint32_t(size - 1), 4);
  const uint64_t n = uint64_t(height) * uint64_t(width);
  uint64_t start = 0;
  for (uint64_t i = 1; i <= n; ++i) {
    if (i == n || (mask[i] != 0) != (mask[start] != 0)) {
      put_run(w, (i - start) * 4, mask[start] ? 255 : 0);  // (inside pixels are 255, as Label Studio draws them)
      start = i;
    }
  }
  return w.finish();
}

}  // namespace samfast
