// ref: segment_anything/utils/amg.py mask_to_rle_pytorch, rle_to_mask, area_from_rle,
//      batched_mask_to_box, box_xyxy_to_xywh; pycocotools common/maskApi.c rleToString, rleFrString
#include "samfast/rle.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "samfast/error.h"

namespace samfast {
namespace {

// The word scans below find the first differing byte with countr_zero, which needs byte 0 of a
// loaded word to be its least significant.
static_assert(std::endian::native == std::endian::little, "rle.cpp assumes a little-endian target");

constexpr uint64_t kOnes = 0x0101010101010101ull;
// Columns transposed per step in mask_to_rle: a 64-column strip of a 1500-row mask is 96 KiB,
// small enough to stay in L2 between being written and being scanned.
constexpr int kStripCols = 64;

uint64_t load_word(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

uint64_t check_size(int height, int width, const char* what) {
  if (height < 0 || width < 0)
    throw InvalidArgument(std::string(what) + ": mask size " + std::to_string(height) + "x" + std::to_string(width) +
                " is negative");
  const uint64_t n = uint64_t(height) * uint64_t(width);
  if (n > std::numeric_limits<uint32_t>::max())
    throw InvalidArgument(std::string(what) + ": mask size " + std::to_string(height) + "x" + std::to_string(width) +
                " has more than 2^32-1 pixels, which 32-bit RLE counts cannot hold");
  return n;
}

void check_counts_sum(const Rle& rle, const char* what) {
  const uint64_t n = check_size(rle.height, rle.width, what);
  uint64_t sum = 0;
  for (uint32_t c : rle.counts) sum += c;
  if (sum != n)
    throw InvalidArgument(std::string(what) + ": RLE counts sum to " + std::to_string(sum) + " but the mask is " +
                std::to_string(rle.height) + "x" + std::to_string(rle.width) + " = " + std::to_string(n) +
                " pixels");
}

// Index of the first non-zero byte of p[0, n), or n.
int first_nonzero(const uint8_t* p, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    if (uint64_t v = load_word(p + i)) return i + std::countr_zero(v) / 8;
  for (; i < n; ++i)
    if (p[i]) return i;
  return n;
}

// Index of the last non-zero byte of p[0, n), or -1.
int last_nonzero(const uint8_t* p, int n) {
  int i = n;
  for (; i >= 8; i -= 8)
    if (uint64_t v = load_word(p + i - 8)) return i - 1 - std::countl_zero(v) / 8;
  for (; i > 0; --i)
    if (p[i - 1]) return i - 1;
  return -1;
}

// 1 in each byte of v that is non-zero, 0 elsewhere.
uint64_t nonzero_bytes(uint64_t v) {
  return (((v & ~(kOnes << 7)) + ~(kOnes << 7)) | v) >> 7 & kOnes;
}

// Transposes 8 words holding an 8x8 byte block (byte j of a[i] is element (i, j)) in place.
void transpose8x8(uint64_t a[8]) {
  for (int i = 0; i < 4; ++i) {
    const uint64_t t = ((a[i] >> 32) ^ a[i + 4]) & 0x00000000FFFFFFFFull;
    a[i] ^= t << 32, a[i + 4] ^= t;
  }
  for (int i : {0, 1, 4, 5}) {
    const uint64_t t = ((a[i] >> 16) ^ a[i + 2]) & 0x0000FFFF0000FFFFull;
    a[i] ^= t << 16, a[i + 2] ^= t;
  }
  for (int i : {0, 2, 4, 6}) {
    const uint64_t t = ((a[i] >> 8) ^ a[i + 1]) & 0x00FF00FF00FF00FFull;
    a[i] ^= t << 8, a[i + 1] ^= t;
  }
}

// dst[c * height + r] = src[r * stride + c] != 0 for c < cols, r < height: 8x8 blocks through
// registers, the ragged right and bottom edges byte by byte.
void transpose_strip(const uint8_t* src, int stride, int height, int cols, uint8_t* dst) {
  const int h8 = height / 8 * 8, c8 = cols / 8 * 8;
  for (int r = 0; r < h8; r += 8)
    for (int c = 0; c < c8; c += 8) {
      uint64_t a[8];
      for (int i = 0; i < 8; ++i) a[i] = nonzero_bytes(load_word(src + size_t(r + i) * stride + c));
      transpose8x8(a);
      for (int j = 0; j < 8; ++j) std::memcpy(dst + size_t(c + j) * height + r, &a[j], 8);
    }
  for (int c = 0; c < cols; ++c) {
    const int r0 = c < c8 ? h8 : 0;
    for (int r = r0; r < height; ++r) dst[size_t(c) * height + r] = src[size_t(r) * stride + c] != 0;
  }
}

}  // namespace

Rle mask_to_rle(const uint8_t* mask, int height, int width) {
  const uint64_t n = check_size(height, width, "mask_to_rle");
  Rle rle{height, width, {}};
  if (n == 0) {
    rle.counts = {0};
    return rle;
  }
  if (!mask) throw Error("mask_to_rle: mask pointer is null");

  // The runs follow the column-major scan, but the mask is row-major: transpose a strip of columns
  // (normalised to 0/1) into a contiguous buffer, then scan it 8 bytes at a time, so that a run costs
  // one step per 8 pixels and a branch only where it ends.
  std::vector<uint8_t> strip(size_t(height) * std::min(width, kStripCols));
  uint32_t cur = 0;         // value of the run being counted: runs start outside
  uint64_t run_start = 0;   // column-major index where it began
  for (int c0 = 0; c0 < width; c0 += kStripCols) {
    const int cols = std::min(kStripCols, width - c0);
    transpose_strip(mask + c0, width, height, cols, strip.data());
    const uint64_t base = uint64_t(c0) * height;
    const size_t len = size_t(cols) * height;
    size_t i = 0;
    while (i < len) {
      if (i + 8 <= len) {
        const uint64_t diff = load_word(&strip[i]) ^ (cur * kOnes);
        if (!diff) {
          i += 8;
          continue;
        }
        i += std::countr_zero(diff) / 8;
      } else if (strip[i] == cur) {
        ++i;
        continue;
      }
      rle.counts.push_back(uint32_t(base + i - run_start));
      run_start = base + i;
      cur ^= 1;
    }
  }
  rle.counts.push_back(uint32_t(n - run_start));
  return rle;
}

std::vector<uint8_t> rle_to_mask(const Rle& rle) {
  check_counts_sum(rle, "rle_to_mask");
  const int h = rle.height, w = rle.width;
  std::vector<uint8_t> mask(size_t(h) * w, 0);
  uint64_t idx = 0;  // column-major index of the run's first pixel
  for (size_t k = 0; k < rle.counts.size(); ++k) {
    const uint32_t count = rle.counts[k];
    if (k % 2 == 1 && count > 0) {  // (a mask of height 0 has only empty runs: no idx % h then)
      int r = int(idx % h), c = int(idx / h);
      for (uint32_t j = 0; j < count; ++j) {
        mask[size_t(r) * w + c] = 1;
        if (++r == h) {
          r = 0;
          ++c;
        }
      }
    }
    idx += count;
  }
  return mask;
}

std::string rle_to_coco_string(const Rle& rle) {
  std::string s;
  s.reserve(rle.counts.size() * 2);
  for (size_t i = 0; i < rle.counts.size(); ++i) {
    // Counts two apart are runs of the same value and tend to be alike, so their delta is short.
    int64_t x = rle.counts[i];
    if (i > 2) x -= rle.counts[i - 2];
    bool more = true;
    while (more) {
      int c = int(x & 0x1f);
      x >>= 5;  // arithmetic: a negative delta ends when only sign bits are left
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s.push_back(char(c + 48));
    }
  }
  return s;
}

std::vector<std::string> masks_to_coco_strings(const std::vector<MaskView>& masks) {
  const int64_t n = (int64_t)masks.size();
  std::vector<std::string> out(masks.size()), errors(masks.size());
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < n; ++i) {
    try {  // (no exception may leave an OpenMP region)
      const MaskView& m = masks[size_t(i)];
      out[size_t(i)] = rle_to_coco_string(mask_to_rle(m.data, m.height, m.width));
    } catch (const std::exception& e) {
      errors[size_t(i)] = std::string("masks_to_coco_strings: mask ") + std::to_string(i) + ": " + e.what();
    }
  }
  for (const std::string& e : errors)
    if (!e.empty()) throw Error(e);
  return out;
}

Rle coco_string_to_rle(const std::string& s, int height, int width) {
  Rle rle{height, width, {}};
  check_size(height, width, "coco_string_to_rle");
  // A count below 2^32 delta-coded against another is a 34-bit signed value: 7 groups of 5 bits.
  constexpr int kMaxGroups = 7;
  size_t p = 0;
  while (p < s.size()) {
    const size_t start = p;
    int64_t x = 0;
    for (int k = 0;; ++k) {
      if (p == s.size())
        throw InvalidArgument("coco_string_to_rle: count " + std::to_string(rle.counts.size()) + " starting at character " +
                    std::to_string(start) + " is cut off at the end of the string");
      if (k == kMaxGroups)
        throw InvalidArgument("coco_string_to_rle: count " + std::to_string(rle.counts.size()) + " starting at character " +
                    std::to_string(start) + " runs over " + std::to_string(kMaxGroups) +
                    " characters, longer than any 32-bit count");
      const int c = int(static_cast<unsigned char>(s[p])) - 48;
      if (c < 0 || c > 63)
        throw InvalidArgument("coco_string_to_rle: character " + std::to_string(p) + " (byte " +
                    std::to_string(static_cast<unsigned char>(s[p])) +
                    ") is outside '0'..'o', the alphabet of COCO compressed RLE");
      ++p;
      x |= int64_t(c & 0x1f) << (5 * k);
      if (!(c & 0x20)) {
        if (c & 0x10) x |= ~int64_t(0) << (5 * (k + 1));  // sign-extend the last group
        break;
      }
    }
    const size_t m = rle.counts.size();
    if (m > 2) x += rle.counts[m - 2];
    if (x < 0 || x > int64_t(std::numeric_limits<uint32_t>::max()))
      throw InvalidArgument("coco_string_to_rle: count " + std::to_string(m) + " decodes to " + std::to_string(x) +
                  ", outside 0..2^32-1");
    rle.counts.push_back(uint32_t(x));
  }
  check_counts_sum(rle, "coco_string_to_rle");
  return rle;
}

int64_t rle_area(const Rle& rle) {
  int64_t area = 0;
  for (size_t k = 1; k < rle.counts.size(); k += 2) area += rle.counts[k];
  return area;
}

std::array<int, 4> mask_bbox_xywh(const uint8_t* mask, int height, int width) {
  const uint64_t n = check_size(height, width, "mask_bbox_xywh");
  if (n > 0 && !mask) throw Error("mask_bbox_xywh: mask pointer is null");
  int x0 = width, x1 = -1, y0 = -1, y1 = -1;
  for (int r = 0; r < height; ++r) {
    const uint8_t* row = mask + size_t(r) * width;
    // Only the columns left of the box so far can lower x0, only those right of it can raise x1.
    const int first = first_nonzero(row, x0);
    const int last = x1 + 1 + last_nonzero(row + x1 + 1, width - x1 - 1);
    if (first == x0 && last == x1) {
      if (x1 < 0 || first_nonzero(row + x0, x1 - x0 + 1) > x1 - x0) continue;  // row is empty
    }
    if (first < x0) x0 = first;
    if (last > x1) x1 = last;
    if (y0 < 0) y0 = r;
    y1 = r;
  }
  if (y0 < 0) return {0, 0, 0, 0};
  return {x0, y0, x1 - x0, y1 - y0};
}

}  // namespace samfast
