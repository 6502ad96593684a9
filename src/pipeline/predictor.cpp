// ref: segment_anything/predictor.py SamPredictor
#include "samfast/predictor.h"

#include <cmath>
#include <cstring>
#include <map>
#include <tuple>

#include "io/image.h"
#include "pipeline/transforms.h"
#include "samfast/error.h"

namespace samfast {

EncoderInput Predictor::prepare(const Image& rgb, int S) {
  if (rgb.height <= 0 || rgb.width <= 0 || (int64_t)rgb.rgb.size() != (int64_t)rgb.height * rgb.width * 3)
    throw Error("set_image: expected an RGB image, got " + std::to_string(rgb.width) + "x" + std::to_string(rgb.height) +
                " with " + std::to_string(rgb.rgb.size()) + " bytes");
  auto [h, w] = preprocess_shape(rgb.height, rgb.width, S);
  if (h == 0 || w == 0)
    throw Error("image " + std::to_string(rgb.width) + "x" + std::to_string(rgb.height) + " is too thin: resized to " +
                std::to_string(S) + " on its long side it would be " + std::to_string(w) + "x" + std::to_string(h));
  return {normalize_and_pad(resize_pil_bilinear(rgb, h, w), S), {rgb.height, rgb.width}, {h, w}};
}

void Predictor::set_image(const Image& rgb) { set_image(prepare(rgb, model_.config().img_size)); }

void Predictor::set_image(const EncoderInput& input) {
  const int S = model_.config().img_size;
  if (input.image.ndim() != 4 || input.image.dim(2) != S || input.image.dim(3) != S)
    throw Error("set_image: the prepared image " + shape_str(input.image.shape) + " is not for a " + std::to_string(S) +
                "-pixel encoder");
  embedding_ = model_.encode_image(input.image);
  original_size_ = input.original_size;
  input_size_ = input.input_size;
}

Tensor Predictor::image_embedding() const {
  if (!is_image_set()) throw Error("an image must be set with set_image() before the embedding is read");
  const Tensor e = model_.download(embedding_);
  const int64_t G = e.dim(1), D = e.dim(3);
  Tensor out = Tensor::empty({1, D, G, G});
  for (int64_t i = 0; i < G * G; ++i)
    for (int64_t d = 0; d < D; ++d) out.data[d * G * G + i] = e.data[i * D + d];
  return out;
}

void Predictor::check(const Prompt& p) const {
  if (!is_image_set()) throw Error("an image must be set with set_image() before predict()");
  const auto [H, W] = original_size_;
  auto inside = [&](float x, float y) { return std::isfinite(x) && std::isfinite(y) && x >= 0 && y >= 0 && x <= W && y <= H; };
  if (p.points.size() != p.labels.size())
    throw Error("prompt has " + std::to_string(p.points.size()) + " points but " + std::to_string(p.labels.size()) + " labels");
  for (size_t i = 0; i < p.points.size(); ++i) {
    if (!inside(p.points[i][0], p.points[i][1]))
      throw Error("point (" + std::to_string(p.points[i][0]) + ", " + std::to_string(p.points[i][1]) +
                  ") lies outside the " + std::to_string(W) + "x" + std::to_string(H) + " image");
    if (p.labels[i] < -1 || p.labels[i] > 1)
      throw Error("point label " + std::to_string(p.labels[i]) + " is not 1 (foreground), 0 (background) or -1 (ignore)");
  }
  if (p.box) {
    const auto& b = *p.box;
    if (!inside(b[0], b[1]) || !inside(b[2], b[3]) || b[2] < b[0] || b[3] < b[1])
      throw Error("box (" + std::to_string(b[0]) + ", " + std::to_string(b[1]) + ", " + std::to_string(b[2]) + ", " +
                  std::to_string(b[3]) + ") must have x0 <= x1, y0 <= y1 and lie inside the " + std::to_string(W) + "x" +
                  std::to_string(H) + " image");
  }
  const int64_t L = 4 * model_.config().grid();
  if (p.mask_input.defined() && (p.mask_input.numel() != L * L))
    throw Error("mask input must be (1, " + std::to_string(L) + ", " + std::to_string(L) + "), got " + shape_str(p.mask_input.shape));
}

DecoderOutput Predictor::decode(const PromptBatch& prompts, bool multimask_output) const {
  if (!is_image_set()) throw Error("an image must be set with set_image() before decode()");
  return model_.decode_masks(embedding_, model_.encode_prompts(prompts), multimask_output);
}

Prediction Predictor::predict(const Prompt& prompt, bool multimask_output, bool return_logits) const {
  return predict_batch({prompt}, multimask_output, return_logits).front();
}

std::vector<Prediction> Predictor::predict_batch(const std::vector<Prompt>& prompts, bool multimask_output,
                                                 bool return_logits) const {
  for (const Prompt& p : prompts) check(p);
  const int S = model_.config().img_size;
  const int64_t L = 4 * model_.config().grid();
  // Group prompts of the same form so that each group is one decoder batch.
  std::map<std::tuple<size_t, bool, bool>, std::vector<size_t>> groups;
  for (size_t i = 0; i < prompts.size(); ++i)
    groups[{prompts[i].points.size(), prompts[i].box.has_value(), prompts[i].mask_input.defined()}].push_back(i);

  std::vector<Prediction> results(prompts.size());
  for (const auto& [form, idx] : groups) {
    const auto [n_points, has_box, has_mask] = form;
    const int64_t B = (int64_t)idx.size(), N = (int64_t)n_points;
    PromptBatch batch;
    if (N > 0) {
      batch.points = Tensor::empty({B, N, 2});
      batch.labels = Tensor::empty({B, N});
    }
    if (has_box) batch.boxes = Tensor::empty({B, 4});
    if (has_mask) batch.masks = Tensor::empty({B, 1, L, L});
    for (int64_t b = 0; b < B; ++b) {
      const Prompt& p = prompts[idx[b]];
      for (int64_t i = 0; i < N; ++i) {
        float* xy = batch.points.data + (b * N + i) * 2;
        xy[0] = p.points[i][0], xy[1] = p.points[i][1];
        batch.labels.data[b * N + i] = (float)p.labels[i];
      }
      if (N > 0) apply_coords(batch.points.data + b * N * 2, N, original_size_, S);
      if (has_box) {
        std::memcpy(batch.boxes.data + b * 4, p.box->data(), sizeof(float) * 4);
        apply_coords(batch.boxes.data + b * 4, 2, original_size_, S);
      }
      if (has_mask) std::memcpy(batch.masks.data + b * L * L, p.mask_input.data, sizeof(float) * L * L);
    }
    DecoderOutput dec = model_.decode_masks(embedding_, model_.encode_prompts(batch), multimask_output);
    const Tensor low_res = model_.download(dec.low_res_masks), iou = model_.download(dec.iou);
    Tensor masks = model_.postprocess_masks(dec.low_res_masks, input_size_, original_size_, !return_logits);
    for (int64_t b = 0; b < B; ++b) {  // views into the batch's tensors: no copies of full-size masks
      Prediction& r = results[idx[b]];
      r.masks = masks.item(b);
      r.iou = iou.item(b);
      r.low_res_masks = low_res.item(b);
    }
  }
  return results;
}

}  // namespace samfast
