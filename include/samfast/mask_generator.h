// "Segment everything": SamAutomaticMaskGenerator with upstream's options, defaults and records.
// ref: segment_anything/automatic_mask_generator.py
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "samfast/image.h"
#include "samfast/model.h"
#include "samfast/predictor.h"

namespace samfast {

struct MaskGeneratorOptions {  // the names, defaults and meaning of upstream's __init__ arguments
  int points_per_side = 32;    // 0: use point_grids instead (upstream's None)
  int points_per_batch = 64;   // points decoded together: memory against speed, same results
  double pred_iou_thresh = 0.88;
  double stability_score_thresh = 0.95;
  double stability_score_offset = 1.0;
  double box_nms_thresh = 0.7;
  int crop_n_layers = 0;
  double crop_nms_thresh = 0.7;
  double crop_overlap_ratio = 512.0 / 1500.0;
  int crop_n_points_downscale_factor = 1;
  std::vector<std::vector<std::array<double, 2>>> point_grids;  // one grid in [0,1]^2 per crop layer
  int min_mask_region_area = 0;
  std::string output_mode = "binary_mask";  // binary_mask, uncompressed_rle or coco_rle
  double mask_threshold = 0.0;  // upstream reads it from the model: sam.mask_threshold (logits above it are mask)
};

struct MaskRecord {
  // The mask as RLE (always; column-major counts as pycocotools), and in the output mode's form:
  // `mask` (H, W) 0/1 bytes for binary_mask, `coco_counts` for coco_rle.
  int height = 0, width = 0;
  std::vector<uint32_t> rle_counts;
  std::vector<uint8_t> mask;
  std::string coco_counts;
  int64_t area = 0;
  std::array<int, 4> bbox{};  // x, y, w, h with w = x1 - x0 as upstream
  float predicted_iou = 0.f;
  std::array<double, 2> point_coords{};  // the grid point, in image pixels
  float stability_score = 0.f;
  std::array<int, 4> crop_box{};  // x, y, w, h
};

// Where the time of one generate() went (wall clock; the GPU is waited for at each boundary).
struct GenerateTimings {
  double preprocess_ms = 0;  // host: resize + normalize of the image (0 when given prepared)
  double encoder_ms = 0, decoder_ms = 0, postprocess_ms = 0;
  int64_t candidates = 0;  // masks decoded, before any filter
};

class MaskGenerator {
 public:
  // Throws samfast::Error for options upstream would reject (and for out-of-range values): see validate().
  MaskGenerator(const Model& model, MaskGeneratorOptions options = {});  // (the model must outlive it)
  MaskGenerator(const Model&&, MaskGeneratorOptions = {}) = delete;      // (a temporary would not)
  // The constructor's checks without a model, so that bad options are refused before one loads.
  // Beyond upstream: crop_n_layers is at most 4, i.e. 341 crops (why: kMaxCropLayers in mask_generator.cpp).
  static void validate(const MaskGeneratorOptions& options);
  // Crops, the whole image included, that the options ask for an image: 1 + 4 + ... + 4^crop_n_layers.
  // Each is an encoder pass. Throws as validate() does.
  static int64_t crop_count(const MaskGeneratorOptions& options);
  // The crops generate() encodes for a height x width image: crop_count(options) less the crops that
  // upstream's generate_crop_boxes leaves empty on images a few pixels thin (upstream crashes on
  // them). Throws as validate() does, and, as generate() does, when the image is too small for the
  // crop layers asked for (crops under 16 pixels on their long side).
  static int64_t crop_count(const MaskGeneratorOptions& options, int height, int width);
  const MaskGeneratorOptions& options() const { return options_; }
  // Records in upstream's order. timings, if given, receives the split of the time. prepared, if
  // given, is Predictor::prepare(rgb, img_size), made ahead (e.g. on another thread while the GPU
  // works on the previous image); crops are always prepared here. progress, if given, is called
  // after each crop with the crops done so far and crop_count(options(), rgb.height, rgb.width).
  std::vector<MaskRecord> generate(const Image& rgb, GenerateTimings* timings = nullptr,
                                   const EncoderInput* prepared = nullptr,
                                   const std::function<void(int crops_done, int crops_total)>& progress = {}) const;

 private:
  const Model& model_;
  MaskGeneratorOptions options_;
  std::vector<std::vector<std::array<double, 2>>> grids_;
};

}  // namespace samfast
