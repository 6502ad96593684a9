// ref: segment_anything/automatic_mask_generator.py SamAutomaticMaskGenerator
// Same steps, same order, same arithmetic as upstream. What differs is where the work happens: the
// filters run on per-mask numbers (IoU, stability counts, boxes) measured by the backend straight
// from the low-res logits, so full-resolution masks are never stored, and only masks that survive
// every filter and the per-crop NMS are run-length encoded. generate, generate_masks, process_crop,
// process_batch and postprocess_small_regions are upstream's methods of those names, in its order;
// process_batch's first half (up to predict_torch) is decode_batch, so batches can run two deep.
#include "samfast/mask_generator.h"

#include <chrono>
#include <cmath>
#include <deque>
#include <iterator>
#include <string>

#include "backend/ops.h"
#include "pipeline/amg_utils.h"
#include "pipeline/small_regions.h"
#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/predictor.h"
#include "samfast/rle.h"
#include "samfast/transforms.h"

namespace samfast {
namespace {

// A mask that passed the filters of its point batch, until it is written out.
struct Candidate {
  float iou = 0.f, stability = 0.f;
  Point2d point{};   // image pixels
  BoxXyxyi box{};    // inclusive x0, y0, x1, y1 in image pixels (upstream's batched_mask_to_box)
  BoxXyxyi crop{};   // x0, y0, x1, y1
  Rle rle;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

Image crop_image(const Image& im, const BoxXyxyi& b) {
  Image out;
  out.height = b[3] - b[1], out.width = b[2] - b[0];
  out.rgb.resize(size_t(out.height) * out.width * 3);
  for (int y = 0; y < out.height; ++y)
    std::copy_n(im.rgb.data() + (size_t(b[1] + y) * im.width + b[0]) * 3, size_t(out.width) * 3,
                out.rgb.data() + size_t(y) * out.width * 3);
  return out;
}

BoxXyxyf to_float(const BoxXyxyi& b) { return {float(b[0]), float(b[1]), float(b[2]), float(b[3])}; }

// Keeps the candidates at `keep`, in that order.
void filter(std::vector<Candidate>& c, const std::vector<int64_t>& keep) {
  std::vector<Candidate> out;
  out.reserve(keep.size());
  for (int64_t i : keep) out.push_back(std::move(c[size_t(i)]));
  c = std::move(out);
}

// ref: batched_nms(boxes.float(), scores, zeros (one category), thresh)
std::vector<int64_t> nms(const std::vector<BoxXyxyi>& boxes, const std::vector<float>& scores, double thresh) {
  std::vector<BoxXyxyf> f;
  for (const BoxXyxyi& b : boxes) f.push_back(to_float(b));
  return batched_nms(f, scores, std::vector<int>(boxes.size(), 0), thresh);
}

std::vector<BoxXyxyi> boxes_of(const std::vector<Candidate>& c) {
  std::vector<BoxXyxyi> b;
  for (const Candidate& m : c) b.push_back(m.box);
  return b;
}

void require(bool ok, const std::string& what) {
  if (!ok) throw InvalidArgument("mask generator: " + what);
}

// Bounds on crops, which upstream does not have. Every crop is an encoder pass, and layer i has
// 4^i of them: 8 layers would be 87,381 passes an image. Layer i's crops are about 1/2^i of the
// image a side, magnified to the encoder's input size: at 4 layers (341 crops) a 1500-pixel photo
// gives ~130-pixel crops magnified ~8x, past which the encoder sees interpolation, not detail.
// For the same reason a layer whose crops are under 16 pixels on their long side (magnified over
// 64x: one source pixel spans several of the encoder's 16-pixel patches) is refused for the image.
constexpr int kMaxCropLayers = 4;
constexpr int kMinCropSide = 16;

// 1 + 4 + ... + 4^n_layers, for n_layers <= 30 (fits in int64).
int64_t boxes_asked(int n_layers) { return ((int64_t(1) << (2 * n_layers + 2)) - 1) / 3; }

std::string size_str(int width, int height) { return std::to_string(width) + "x" + std::to_string(height); }

// The crops generate() encodes for a H x W image: upstream's generate_crop_boxes less the boxes it
// makes empty (x0 >= x1 or y0 >= y1) when a side is only a few pixels, e.g. width 1 with one layer
// gives crops starting at x0 = 1. Upstream crashes on those (PIL cannot make a 0-pixel image);
// they hold no pixels, so nothing is lost by skipping them.
CropBoxes plan_crops(const MaskGeneratorOptions& o, int H, int W) {
  require(H > 0 && W > 0, "image " + size_str(W, H) + " has no pixels");
  const CropBoxes all = generate_crop_boxes(H, W, o.crop_n_layers, o.crop_overlap_ratio);
  CropBoxes out;
  for (size_t i = 0; i < all.boxes.size(); ++i) {
    const BoxXyxyi& b = all.boxes[i];
    const int layer = all.layer_idxs[i];
    // A layer's first crop has the layer's full size: only the last row and column are clipped.
    if (layer > 0 && layer != all.layer_idxs[i - 1])
      require(std::max(b[2] - b[0], b[3] - b[1]) >= kMinCropSide,
              "crop_n_layers " + std::to_string(o.crop_n_layers) + " makes crops of " +
                  size_str(b[2] - b[0], b[3] - b[1]) + " pixels (layer " + std::to_string(layer) + ") in the " +
                  size_str(W, H) + " image; crops under " + std::to_string(kMinCropSide) +
                  " pixels on their long side show the encoder nothing new: use at most " +
                  std::to_string(layer - 1) + " crop layers for it");
    if (b[2] > b[0] && b[3] > b[1]) {
      out.boxes.push_back(b);
      out.layer_idxs.push_back(layer);
    }
  }
  return out;
}

// What the steps of one generate() call share: upstream's self (model, options, point grids), the
// image and its size (orig_size), and where the time goes.
struct Job {
  const Model& model;
  Ops& ops;
  const MaskGeneratorOptions& o;
  const std::vector<std::vector<Point2d>>& point_grids;  // one per crop layer, in [0, 1]^2
  const Image& image;
  const EncoderInput* prepared;  // the whole image prepared ahead, or null
  int H, W;                      // orig_size
  int S;                         // the encoder's input size (img_size)
  int64_t L;                     // side of the low-res masks
  // ref: model.mask_threshold; torch compares float32 logits with Python floats in float32.
  float mask_thr, hi, lo;        // hi, lo: mask_thr +- stability_score_offset
  GenerateTimings& t;
};

// One crop as the encoder saw it (upstream's crop_box and im_size, and the predictor's input size).
struct CropFrame {
  BoxXyxyi box;                    // x0, y0, x1, y1 in the image
  int h = 0, w = 0;                // cropped_im_size
  std::pair<int, int> input_size;  // (h, w) resized to the encoder's input
};

// One point batch whose decode is queued: its points (crop pixels), the decoder's output and the
// predicted IoUs on their way to the host.
struct QueuedBatch {
  std::vector<Point2d> points;
  DecoderOutput dec;
  Ops::Later<Tensor> iou;  // (P, 3)
};

// The masks of one crop that passed the filters of their batch, with their low-res logits batch
// by batch in the same order, until the crop's NMS picks those to run-length encode.
struct CropMasks {
  std::vector<Candidate> data;
  std::vector<Tensor> planes;
};

// Upstream's methods of these names, defined after generate() in upstream's order.
std::vector<Candidate> generate_masks(Job& job, const std::function<void(int, int)>& progress);
std::vector<Candidate> process_crop(Job& job, const BoxXyxyi& crop_box, int crop_layer_idx);
QueuedBatch decode_batch(const Job& job, const Predictor& predictor, const CropFrame& crop,
                         std::vector<Point2d> points);
void process_batch(const Job& job, const CropFrame& crop, const QueuedBatch& batch, const Tensor& iou_preds,
                   const std::function<void()>& queue_next, CropMasks& out);
void postprocess_small_regions(std::vector<Candidate>& data, int H, int W, int min_area, double nms_thresh);

}  // namespace

void MaskGenerator::validate(const MaskGeneratorOptions& p) {
  require((p.points_per_side > 0) != !p.point_grids.empty(),
          "exactly one of points_per_side (> 0) and point_grids must be given");
  require(p.points_per_side >= 0 && p.points_per_side <= 1024, "points_per_side must be 1..1024");
  require(p.points_per_batch >= 1 && p.points_per_batch <= 65536, "points_per_batch must be 1..65536");
  require(p.crop_n_layers >= 0, "crop_n_layers must not be negative");
  require(p.crop_n_layers <= kMaxCropLayers,
          "crop_n_layers " + std::to_string(p.crop_n_layers) + " asks for " +
              (p.crop_n_layers <= 30 ? std::to_string(boxes_asked(p.crop_n_layers)) : "over 10^18") +
              " crops (encoder passes) an image; at most " + std::to_string(kMaxCropLayers) + " layers (" +
              std::to_string(boxes_asked(kMaxCropLayers)) + " crops) are allowed");
  require(p.crop_n_points_downscale_factor >= 1, "crop_n_points_downscale_factor must be at least 1");
  require(std::isfinite(p.crop_overlap_ratio) && p.crop_overlap_ratio >= 0 && p.crop_overlap_ratio < 1,
          "crop_overlap_ratio must be in [0, 1)");
  for (double v : {p.pred_iou_thresh, p.stability_score_thresh, p.stability_score_offset, p.box_nms_thresh,
                   p.crop_nms_thresh, p.mask_threshold})
    require(std::isfinite(v), "thresholds and offsets must be finite numbers");
  require(p.min_mask_region_area >= 0, "min_mask_region_area must not be negative");
  require(p.output_mode == "binary_mask" || p.output_mode == "uncompressed_rle" || p.output_mode == "coco_rle",
          "output_mode '" + p.output_mode + "' is not binary_mask, uncompressed_rle or coco_rle");
  if (p.points_per_side > 0) {
    // Layer i's grid has int(points_per_side / factor^i) points a side: none once factor^i exceeds
    // points_per_side (checked before the next multiplication, so scale stays below 2^42).
    int64_t scale = 1;
    for (int i = 0; i <= p.crop_n_layers; ++i, scale *= p.crop_n_points_downscale_factor)
      require(scale <= p.points_per_side,
              "crop layer " + std::to_string(i) + " would have no points (points_per_side " +
                  std::to_string(p.points_per_side) + " / crop_n_points_downscale_factor^" + std::to_string(i) +
                  " < 1)");
  } else {
    require(p.point_grids.size() == size_t(p.crop_n_layers) + 1,
            "point_grids must hold one grid per crop layer (" + std::to_string(p.crop_n_layers + 1) + "), got " +
                std::to_string(p.point_grids.size()));
    for (const auto& g : p.point_grids) {
      require(!g.empty(), "a point grid is empty");
      for (const auto& pt : g)
        require(pt[0] >= 0 && pt[0] <= 1 && pt[1] >= 0 && pt[1] <= 1, "point grids must lie in [0, 1] x [0, 1]");
    }
  }
}

int64_t MaskGenerator::crop_count(const MaskGeneratorOptions& options) {
  validate(options);
  return boxes_asked(options.crop_n_layers);
}

int64_t MaskGenerator::crop_count(const MaskGeneratorOptions& options, int height, int width) {
  validate(options);
  return (int64_t)plan_crops(options, height, width).boxes.size();
}

MaskGenerator::MaskGenerator(const Model& model, MaskGeneratorOptions o) : model_(model), options_(std::move(o)) {
  validate(options_);
  const MaskGeneratorOptions& p = options_;
  grids_ = p.points_per_side > 0
               ? build_all_layer_point_grids(p.points_per_side, p.crop_n_layers, p.crop_n_points_downscale_factor)
               : p.point_grids;
}

// ref: SamAutomaticMaskGenerator.generate
std::vector<MaskRecord> MaskGenerator::generate(const Image& rgb, GenerateTimings* timings,
                                                const EncoderInput* prepared,
                                                const std::function<void(int, int)>& progress) const {
  const MaskGeneratorOptions& o = options_;
  const int H = rgb.height, W = rgb.width, S = model_.config().img_size;
  if (prepared && prepared->original_size != std::pair<int, int>{H, W})
    throw InvalidArgument("generate: the prepared image is " + std::to_string(prepared->original_size.second) + "x" +
                std::to_string(prepared->original_size.first) + ", the image " + std::to_string(W) + "x" + std::to_string(H));
  GenerateTimings t;
  Job job{model_, model_.backend(), o, grids_, rgb, prepared, H, W, S, 4 * model_.config().grid(),
          float(o.mask_threshold), float(o.mask_threshold + o.stability_score_offset),
          float(o.mask_threshold - o.stability_score_offset), t};

  // Generate masks
  std::vector<Candidate> data = generate_masks(job, progress);

  // Filter small disconnected regions and holes in masks
  const auto t0 = std::chrono::steady_clock::now();
  if (o.min_mask_region_area > 0)
    postprocess_small_regions(data, H, W, o.min_mask_region_area, std::max(o.box_nms_thresh, o.crop_nms_thresh));

  // Encode masks and write mask records
  std::vector<MaskRecord> records(data.size());
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < data.size(); ++i) {
    Candidate& c = data[i];
    MaskRecord& r = records[i];
    r.height = H, r.width = W;
    if (o.output_mode == "binary_mask") r.mask = rle_to_mask(c.rle);
    if (o.output_mode == "coco_rle") r.coco_counts = rle_to_coco_string(c.rle);
    r.area = rle_area(c.rle);
    r.bbox = {c.box[0], c.box[1], c.box[2] - c.box[0], c.box[3] - c.box[1]};
    r.predicted_iou = c.iou;
    r.point_coords = c.point;
    r.stability_score = c.stability;
    r.crop_box = {c.crop[0], c.crop[1], c.crop[2] - c.crop[0], c.crop[3] - c.crop[1]};
    r.rle_counts = std::move(c.rle.counts);
  }
  t.postprocess_ms += ms_since(t0);
  if (timings) *timings = t;
  return records;
}

namespace {

// ref: SamAutomaticMaskGenerator._generate_masks. The crops one by one (progress after each), then
// the duplicates between crops removed.
std::vector<Candidate> generate_masks(Job& job, const std::function<void(int, int)>& progress) {
  const CropBoxes crops = plan_crops(job.o, job.H, job.W);

  // Iterate over image crops
  std::vector<Candidate> data;
  for (size_t ci = 0; ci < crops.boxes.size(); ++ci) {
    std::vector<Candidate> crop_data = process_crop(job, crops.boxes[ci], crops.layer_idxs[ci]);
    data.insert(data.end(), std::make_move_iterator(crop_data.begin()), std::make_move_iterator(crop_data.end()));
    if (progress) progress(int(ci) + 1, int(crops.boxes.size()));
  }

  // Remove duplicate masks between crops
  const auto t0 = std::chrono::steady_clock::now();
  if (crops.boxes.size() > 1 && !data.empty()) {
    // Prefer masks from smaller crops
    std::vector<float> scores;
    for (const Candidate& c : data) scores.push_back(1.f / float((c.crop[2] - c.crop[0]) * (c.crop[3] - c.crop[1])));
    filter(data, nms(boxes_of(data), scores, job.o.crop_nms_thresh));
  }
  job.t.postprocess_ms += ms_since(t0);
  return data;
}

// ref: SamAutomaticMaskGenerator._process_crop. Returns the crop's masks in the image's frame, run-length
// encoded: only those that survive the crop's NMS are encoded.
std::vector<Candidate> process_crop(Job& job, const BoxXyxyi& crop_box, int crop_layer_idx) {
  GenerateTimings& t = job.t;
  const int H = job.H, W = job.W;

  // Crop the image and calculate embeddings (the whole image may come prepared)
  auto t0 = std::chrono::steady_clock::now();
  Predictor predictor(job.model);
  const bool whole = crop_box[0] == 0 && crop_box[1] == 0 && crop_box[2] == W && crop_box[3] == H;
  EncoderInput own;
  if (!(whole && job.prepared))
    own = whole ? Predictor::prepare(job.image, job.S) : Predictor::prepare(crop_image(job.image, crop_box), job.S);
  const EncoderInput& input = whole && job.prepared ? *job.prepared : own;
  t.preprocess_ms += ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  predictor.set_image(input);
  job.model.synchronize();
  t.encoder_ms += ms_since(t0);
  const CropFrame crop{crop_box, crop_box[3] - crop_box[1], crop_box[2] - crop_box[0], predictor.input_size()};

  // Get points for this crop
  std::vector<Point2d> points_for_image;
  for (const Point2d& g : job.point_grids[size_t(crop_layer_idx)])
    points_for_image.push_back({g[0] * crop.w, g[1] * crop.h});

  // Generate masks for this crop in batches. They run two deep: the next batch's decode is queued
  // before the host waits for this batch's numbers, so the GPU never idles while the host filters
  // (results come in order).
  CropMasks masks;
  std::deque<QueuedBatch> in_flight;
  size_t next_first = 0;
  const size_t per_batch = size_t(job.o.points_per_batch);
  auto queue_batches = [&] {  // ref: batch_iterator
    for (; in_flight.size() < 2 && next_first < points_for_image.size(); next_first += per_batch) {
      const size_t end = std::min(points_for_image.size(), next_first + per_batch);
      in_flight.push_back(decode_batch(job, predictor, crop, {points_for_image.begin() + ptrdiff_t(next_first),
                                                              points_for_image.begin() + ptrdiff_t(end)}));
    }
  };
  t0 = std::chrono::steady_clock::now();
  queue_batches();
  while (!in_flight.empty()) {
    const QueuedBatch batch = std::move(in_flight.front());
    in_flight.pop_front();
    const Tensor iou_preds = batch.iou();
    t.decoder_ms += ms_since(t0);  // with batches overlapped: the time the host waited for decodes
    t.candidates += int64_t(batch.points.size()) * iou_preds.dim(1);
    t0 = std::chrono::steady_clock::now();
    process_batch(job, crop, batch, iou_preds, queue_batches, masks);
    t.postprocess_ms += ms_since(t0);
    t0 = std::chrono::steady_clock::now();
  }
  if (masks.data.empty()) return {};

  // Remove duplicates within this crop (boxes in crop coordinates, scored by predicted IoU)
  t0 = std::chrono::steady_clock::now();
  std::vector<Candidate>& data = masks.data;
  std::vector<float> scores;
  for (const Candidate& c : data) scores.push_back(c.iou);
  const std::vector<int64_t> keep = nms(boxes_of(data), scores, job.o.box_nms_thresh);
  filter(data, keep);

  // Return to the original image frame: boxes, points, and the kept masks as RLEs (upstream's
  // uncrop_masks + mask_to_rle_pytorch, done per batch there)
  const int64_t L = job.L;
  Tensor planes = masks.planes[0];
  if (masks.planes.size() > 1) {
    std::vector<Tensor> rows;
    for (const Tensor& p : masks.planes) rows.push_back(p.view({1, p.dim(0), L * L}));
    planes = job.ops.concat(rows);
  }
  planes = job.ops.gather(planes.view({planes.numel() / (L * L), L, L}), keep);
  std::vector<Rle> rles = job.ops.mask_rles(planes, job.S, crop.input_size, {crop.h, crop.w}, job.mask_thr,
                                            {crop_box[0], crop_box[1]}, {H, W});
  for (size_t i = 0; i < data.size(); ++i) {
    Candidate& c = data[i];
    c.box = {c.box[0] + crop_box[0], c.box[1] + crop_box[1], c.box[2] + crop_box[0], c.box[3] + crop_box[1]};
    c.point = {c.point[0] + crop_box[0], c.point[1] + crop_box[1]};
    c.crop = crop_box;
    c.rle = std::move(rles[i]);
  }
  t.postprocess_ms += ms_since(t0);
  return std::move(data);
}

// ref: SamAutomaticMaskGenerator._process_batch, up to predict_torch: the points (crop pixels) as
// single-point prompts to the decoder. Returns once the decode is queued.
QueuedBatch decode_batch(const Job& job, const Predictor& predictor, const CropFrame& crop,
                         std::vector<Point2d> points) {
  // ref: transform.apply_coords, then the prompt encoder's (x + 0.5) / S, in float64.
  const double sx = double(crop.input_size.second) / crop.w, sy = double(crop.input_size.first) / crop.h;
  const int64_t P = (int64_t)points.size();
  PromptBatch in;
  in.points = Tensor::empty({P, 1, 2});
  in.labels = Tensor::empty({P, 1});
  in.points_normalized = true;
  for (int64_t i = 0; i < P; ++i) {
    in.points.data[2 * i] = float((points[size_t(i)][0] * sx + 0.5) / job.S);
    in.points.data[2 * i + 1] = float((points[size_t(i)][1] * sy + 0.5) / job.S);
    in.labels.data[i] = 1.f;
  }
  QueuedBatch batch;
  batch.points = std::move(points);
  batch.dec = predictor.decode(in, /*multimask_output=*/true);
  batch.iou = job.ops.download_later(batch.dec.iou);
  return batch;
}

// ref: SamAutomaticMaskGenerator._process_batch, after predict_torch: the filters by predicted IoU,
// stability score and boxes near the crop's edges, on the numbers the backend measures from the
// low-res logits (full-resolution masks are not made here). The survivors join `out`. queue_next
// is called once the measures are queued, so that the next batches decode while the host waits.
void process_batch(const Job& job, const CropFrame& crop, const QueuedBatch& batch, const Tensor& iou_preds,
                   const std::function<void()>& queue_next, CropMasks& out) {
  const MaskGeneratorOptions& o = job.o;
  const int64_t P = (int64_t)batch.points.size(), M = iou_preds.dim(1), L = job.L;

  // Filter by predicted IoU
  std::vector<int64_t> keep;
  for (int64_t k = 0; k < P * M; ++k)
    if (!(o.pred_iou_thresh > 0) || iou_preds.data[k] > float(o.pred_iou_thresh)) keep.push_back(k);
  Tensor kept;
  Ops::Later<Ops::MaskStats> stats;
  if (!keep.empty()) {  // stability counts and boxes of the thresholded masks
    const Tensor low = batch.dec.low_res_masks.view({P * M, L, L});
    kept = (int64_t)keep.size() == P * M ? low : job.ops.gather(low, keep);
    stats = job.ops.mask_stats(kept, job.S, crop.input_size, {crop.h, crop.w}, job.mask_thr, job.hi, job.lo);
  }
  queue_next();
  if (keep.empty()) return;
  const Ops::MaskStats st = stats();

  // Calculate stability score, filter by it, and filter boxes that touch crop boundaries
  std::vector<BoxXyxyf> boxes;
  for (const auto& b : st.box) boxes.push_back(to_float(BoxXyxyi{b[0], b[1], b[2], b[3]}));
  const std::vector<uint8_t> near = is_box_near_crop_edge(boxes, crop.box, {0, 0, job.W, job.H});
  std::vector<int64_t> survive;
  for (size_t i = 0; i < keep.size(); ++i) {
    const float stability = float(st.above_hi[i]) / float(st.above_lo[i]);  // ref: calculate_stability_score
    if (o.stability_score_thresh > 0 && !(stability >= float(o.stability_score_thresh))) continue;
    if (near[i]) continue;  // ref: ~is_box_near_crop_edge
    Candidate c;
    c.iou = iou_preds.data[keep[i]], c.stability = stability;
    c.point = batch.points[size_t(keep[i] / M)];
    c.box = {st.box[i][0], st.box[i][1], st.box[i][2], st.box[i][3]};
    out.data.push_back(std::move(c));
    survive.push_back((int64_t)i);
  }
  if (!survive.empty()) out.planes.push_back(survive.size() == keep.size() ? kept : job.ops.gather(kept, survive));
}

// ref: SamAutomaticMaskGenerator.postprocess_small_regions. Removes small disconnected regions and
// holes, then reruns box NMS to remove new duplicates; only the kept masks that changed are re-encoded.
void postprocess_small_regions(std::vector<Candidate>& data, int H, int W, int min_area, double nms_thresh) {
  if (data.empty()) return;
  const size_t n = data.size();
  std::vector<float> scores(n);
  std::vector<BoxXyxyi> reboxed(n);  // boxes of the cleaned masks; masks are rebuilt for the kept ones
  auto clean = [&](const Rle& rle, bool& unchanged) {
    std::vector<uint8_t> m = rle_to_mask(rle);
    const bool holes = remove_small_regions(m, H, W, min_area, /*holes=*/true);
    const bool islands = remove_small_regions(m, H, W, min_area, /*holes=*/false);
    unchanged = !holes && !islands;
    return m;
  };
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < n; ++i) {
    bool unchanged = true;
    const std::vector<uint8_t> m = clean(data[i].rle, unchanged);
    const std::array<int, 4> b = mask_bbox_xywh(m.data(), H, W);
    reboxed[i] = {b[0], b[1], b[0] + b[2], b[1] + b[3]};
    scores[i] = unchanged ? 1.f : 0.f;  // NMS prefers masks that needed no change
  }
  const std::vector<int64_t> keep = nms(reboxed, scores, nms_thresh);
#pragma omp parallel for schedule(dynamic)
  for (size_t k = 0; k < keep.size(); ++k) {
    const size_t i = size_t(keep[k]);
    if (scores[i] != 0.f) continue;
    bool unchanged = true;
    const std::vector<uint8_t> m = clean(data[i].rle, unchanged);
    data[i].rle = mask_to_rle(m.data(), H, W);
    data[i].box = reboxed[i];
  }
  filter(data, keep);
}

}  // namespace
}  // namespace samfast
