// Run-length encoding of binary masks and the per-mask measures the automatic mask generator keeps.
// ref: segment_anything/utils/amg.py mask_to_rle_pytorch, rle_to_mask, area_from_rle,
//      batched_mask_to_box, box_xyxy_to_xywh, coco_encode_rle (pycocotools maskApi.c rleToString)
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace samfast {

// Uncompressed RLE in pycocotools' layout: runs over the column-major (Fortran-order) scan of an
// H x W mask, alternating outside / inside and starting with outside, so counts[0] may be 0.
// The counts sum to height * width.
struct Rle {
  int height = 0, width = 0;
  std::vector<uint32_t> counts;
};

// mask: row-major (H, W), any non-zero byte is inside. Same counts as upstream mask_to_rle_pytorch
// and pycocotools.mask.encode(np.asfortranarray(mask)). An H*W of 0 gives counts [0].
Rle mask_to_rle(const uint8_t* mask, int height, int width);

// Row-major (H, W) mask of 0/1 bytes. Throws Error if the counts do not sum to H*W.
std::vector<uint8_t> rle_to_mask(const Rle& rle);

// pycocotools' compressed counts string (rleToString): each count, delta-coded against the count two
// before it from the fourth on, in little-endian 5-bit groups with 0x20 as the "more" bit, plus 48.
std::string rle_to_coco_string(const Rle& rle);

// A row-major (H, W) mask somewhere in memory (any non-zero byte is inside).
struct MaskView {
  const uint8_t* data = nullptr;
  int height = 0, width = 0;
};

// The compressed counts strings of many masks of any sizes (the clicks of a server's decode pass),
// computed on several threads at once.
std::vector<std::string> masks_to_coco_strings(const std::vector<MaskView>& masks);

// Inverse of rle_to_coco_string (rleFrString). Throws Error on a character outside '0'..'o', a
// count cut off mid-way, a count outside 0..2^32-1, or counts that do not sum to h*w.
Rle coco_string_to_rle(const std::string& s, int height, int width);

// Label Studio's brush RLE of a row-major (H, W) mask (any non-zero byte is inside, drawn as 255 in
// all four RGBA channels): the bytes of label_studio_converter.brush.mask2rle(mask * 255), which its
// decode_rle reads back as H*W*4 values. Throws Error past 2^30 pixels (the format's 32-bit length).
std::vector<uint8_t> mask_to_label_studio_rle(const uint8_t* mask, int height, int width);

// Pixels inside: the sum of the odd-indexed counts (upstream area_from_rle).
int64_t rle_area(const Rle& rle);

// Box (x, y, w, h) as upstream's records hold it: box_xyxy_to_xywh(batched_mask_to_box(mask)), where
// x1 and y1 are the last column and row inside, so w = x1 - x0 and h = y1 - y0 (a single pixel gives
// w = h = 0). An empty mask gives [0, 0, 0, 0].
std::array<int, 4> mask_bbox_xywh(const uint8_t* mask, int height, int width);

}  // namespace samfast
