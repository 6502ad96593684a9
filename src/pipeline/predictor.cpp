// ref: segment_anything/predictor.py SamPredictor
#include "samfast/predictor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>

#include "backend/ops.h"
#include "samfast/error.h"
#include "samfast/image.h"
#include "samfast/transforms.h"

namespace samfast {
namespace {

void check_point_count(int64_t n) {
  if (n > (int64_t)Prompt::kMaxPoints)
    throw InvalidArgument("a prompt holds at most " + std::to_string(Prompt::kMaxPoints) + " points, got " + std::to_string(n));
}

}  // namespace

EncoderInput Predictor::prepare(const Image& rgb, int S) {
  if (rgb.height <= 0 || rgb.width <= 0 || (int64_t)rgb.rgb.size() != (int64_t)rgb.height * rgb.width * 3)
    throw InvalidArgument("set_image: expected an RGB image, got " + std::to_string(rgb.width) + "x" + std::to_string(rgb.height) +
                " with " + std::to_string(rgb.rgb.size()) + " bytes");
  auto [h, w] = preprocess_shape(rgb.height, rgb.width, S);
  if (h == 0 || w == 0)
    throw InvalidArgument("image " + std::to_string(rgb.width) + "x" + std::to_string(rgb.height) + " is too thin: resized to " +
                std::to_string(S) + " on its long side it would be " + std::to_string(w) + "x" + std::to_string(h));
  EncoderInput in;
  in.resized = resize_pil_bilinear(rgb, h, w);
  in.original_size = {rgb.height, rgb.width}, in.input_size = {h, w};
  return in;
}

void Predictor::set_image(const Image& rgb) { set_image(prepare(rgb, model_.config().img_size)); }

void Predictor::set_image(const EncoderInput& input) { set_images(std::vector<EncoderInput>{input}); }

void Predictor::set_images(const std::vector<Image>& rgbs) {
  std::vector<EncoderInput> inputs;
  for (const Image& rgb : rgbs) inputs.push_back(prepare(rgb, model_.config().img_size));
  set_images(inputs);
}

namespace {

bool has_bytes(const EncoderInput& in) { return !in.resized.rgb.empty(); }

// Resized images as the bytes Model::encode_rgb takes: each in the top-left corner of an S x S
// canvas (zeros elsewhere), and its rows' and columns' extents.
std::pair<Tensor, Tensor> pack_rgb(const std::vector<EncoderInput>& inputs, int64_t S) {
  const int64_t B = (int64_t)inputs.size();
  Tensor rgb = Tensor::empty({B, S, S, 3}, DType::U8), extent = Tensor::empty({B, 2, S}, DType::U8);
#pragma omp parallel for
  for (int64_t b = 0; b < B; ++b) {
    const Image& im = inputs[size_t(b)].resized;
    uint8_t* canvas = rgb.ptr<uint8_t>() + b * S * S * 3;
    const size_t row = size_t(im.width) * 3;
    for (int64_t y = 0; y < S; ++y) {
      uint8_t* dst = canvas + y * S * 3;
      const size_t used = y < im.height ? row : 0;  // the image's bytes of this row, then zeros
      if (used) std::memcpy(dst, im.rgb.data() + y * row, used);
      std::memset(dst + used, 0, size_t(S) * 3 - used);
    }
    uint8_t* ex = extent.ptr<uint8_t>() + b * 2 * S;
    for (int64_t i = 0; i < S; ++i) ex[i] = i < im.height, ex[S + i] = i < im.width;
  }
  return {rgb, extent};
}

}  // namespace

void Predictor::set_images(const std::vector<EncoderInput>& inputs) {
  const int64_t S = model_.config().img_size, plane = 3 * S * S;
  if (inputs.empty()) throw InvalidArgument("set_images: no images");
  for (const EncoderInput& in : inputs) {
    if (has_bytes(in)) {
      const Image& r = in.resized;
      if (r.height <= 0 || r.width <= 0 || r.height > S || r.width > S ||
          r.rgb.size() != size_t(r.height) * r.width * 3 || in.input_size != std::pair<int, int>{r.height, r.width} ||
          in.input_size != preprocess_shape(in.original_size.first, in.original_size.second, (int)S))  // (prepare()'s)
        throw InvalidArgument("set_image: the prepared image (" + std::to_string(r.width) + "x" + std::to_string(r.height) +
                              ", " + std::to_string(r.rgb.size()) + " bytes) is not for a " + std::to_string(S) +
                              "-pixel encoder");
    } else if (in.image.ndim() != 4 || in.image.dim(0) != 1 || in.image.dim(1) != 3 || in.image.dim(2) != S ||
               in.image.dim(3) != S || in.image.dtype != DType::F32) {
      throw InvalidArgument("set_image: the prepared image " + shape_str(in.image.shape) + " is not for a " +
                            std::to_string(S) + "-pixel encoder");
    }
  }
  embedding_ = Tensor(), embedding_host_ = false;  // a failed encode leaves no image set
  original_sizes_.clear(), input_sizes_.clear();
  Tensor embedding;
  if (std::all_of(inputs.begin(), inputs.end(), has_bytes)) {
    const auto [rgb, extent] = pack_rgb(inputs, S);
    embedding = model_.encode_rgb(rgb, extent);
  } else if (inputs.size() == 1) {
    embedding = model_.encode_image(inputs[0].image);
  } else {  // some came as floats: all as the encoder's fp32 input, normalized here
    Tensor batch = Tensor::empty({(int64_t)inputs.size(), 3, S, S});
    // (on several threads: 96 MB for a batch of 8, ahead of every encoder pass of a server)
#pragma omp parallel for
    for (int64_t i = 0; i < (int64_t)inputs.size(); ++i) {
      const EncoderInput& in = inputs[size_t(i)];
      const Tensor one = has_bytes(in) ? normalize_and_pad(in.resized, (int)S) : in.image;
      std::memcpy(batch.data + i * plane, one.data, sizeof(float) * plane);
    }
    embedding = model_.encode_image(batch);
  }
  for (const EncoderInput& in : inputs) original_sizes_.push_back(in.original_size), input_sizes_.push_back(in.input_size);
  embedding_ = embedding;
}

Predictor Predictor::select(int image) const {
  if (!on_device()) throw Error("select: the predictor has no image on the backend");
  const size_t i = checked(image);
  Predictor one(model_);
  one.embedding_ = image_count() == 1 ? embedding_ : model_.backend().gather(embedding_, {(int64_t)i});
  one.original_sizes_ = {original_sizes_[i]}, one.input_sizes_ = {input_sizes_[i]};
  return one;
}

Predictor Predictor::join(const std::vector<const Predictor*>& parts) {
  if (parts.empty()) throw InvalidArgument("join: no predictors");
  if (std::find(parts.begin(), parts.end(), nullptr) != parts.end()) throw InvalidArgument("join: a predictor is null");
  Predictor all(parts[0]->model_);
  std::vector<Tensor> flat;  // each (I_k, G, G, D) as (1, I_k * G * G * D): concat along dim 1 joins them whole
  int64_t images = 0;
  for (const Predictor* p : parts) {
    if (&p->model_ != &all.model_) throw InvalidArgument("join: the predictors belong to different models");
    if (!p->on_device()) throw InvalidArgument("join: a predictor has no image on the backend");
    flat.push_back(p->embedding_.view({1, p->embedding_.numel()}));
    images += p->embedding_.dim(0);
    all.original_sizes_.insert(all.original_sizes_.end(), p->original_sizes_.begin(), p->original_sizes_.end());
    all.input_sizes_.insert(all.input_sizes_.end(), p->input_sizes_.begin(), p->input_sizes_.end());
  }
  const Tensor& e = parts[0]->embedding_;
  all.embedding_ = parts.size() == 1 ? e : all.model_.backend().concat(flat).view({images, e.dim(1), e.dim(2), e.dim(3)});
  return all;
}

void Predictor::to_host() {
  if (is_image_set() && !embedding_host_) embedding_ = model_.download(embedding_), embedding_host_ = true;
}

void Predictor::to_device() {
  if (is_image_set() && embedding_host_) embedding_ = model_.upload(embedding_), embedding_host_ = false;
}

size_t Predictor::checked(int image) const {
  if (image < 0 || image >= image_count())
    throw InvalidArgument("image " + std::to_string(image) + " was not set (" + std::to_string(image_count()) + " image" +
                (image_count() == 1 ? "" : "s") + " set)");
  return (size_t)image;
}

Tensor Predictor::image_embedding(int image) const {
  if (!is_image_set()) throw Error("an image must be set with set_image() before the embedding is read");
  const int64_t i = (int64_t)checked(image);
  const Tensor e = embedding_host_ ? embedding_.item(i).view({1, embedding_.dim(1), embedding_.dim(2), embedding_.dim(3)})
                                   : model_.download(image_count() == 1 ? embedding_ : model_.backend().gather(embedding_, {i}));
  const int64_t G = e.dim(1), D = e.dim(3);
  Tensor out = Tensor::empty({1, D, G, G});
  for (int64_t i = 0; i < G * G; ++i)
    for (int64_t d = 0; d < D; ++d) out.data[d * G * G + i] = e.data[i * D + d];
  return out;
}

void Predictor::check(const Prompt& p) const {
  if (!is_image_set()) throw Error("an image must be set with set_image() before predict()");
  if (embedding_host_) throw Error("the image embedding is in host memory: to_device() before predict()");
  const auto [H, W] = original_sizes_[checked(p.image)];
  check_prompt(p, H, W, 4 * model_.config().grid());
}

void Predictor::check_prompt(const Prompt& p, int H, int W, int64_t L) {
  auto inside = [&](float x, float y) { return std::isfinite(x) && std::isfinite(y) && x >= 0 && y >= 0 && x <= W && y <= H; };
  check_point_count((int64_t)p.points.size());
  if (p.points.size() != p.labels.size())
    throw InvalidArgument("prompt has " + std::to_string(p.points.size()) + " points but " + std::to_string(p.labels.size()) + " labels");
  for (size_t i = 0; i < p.points.size(); ++i) {
    if (!inside(p.points[i][0], p.points[i][1]))
      throw InvalidArgument("point (" + std::to_string(p.points[i][0]) + ", " + std::to_string(p.points[i][1]) +
                  ") lies outside the " + std::to_string(W) + "x" + std::to_string(H) + " image");
    if (p.labels[i] < -1 || p.labels[i] > 1)
      throw InvalidArgument("point label " + std::to_string(p.labels[i]) + " is not 1 (foreground), 0 (background) or -1 (ignore)");
  }
  if (p.box) {
    const auto& b = *p.box;
    if (!inside(b[0], b[1]) || !inside(b[2], b[3]) || b[2] < b[0] || b[3] < b[1])
      throw InvalidArgument("box (" + std::to_string(b[0]) + ", " + std::to_string(b[1]) + ", " + std::to_string(b[2]) + ", " +
                  std::to_string(b[3]) + ") must have x0 <= x1, y0 <= y1 and lie inside the " + std::to_string(W) + "x" +
                  std::to_string(H) + " image");
  }
  // (L, L) after leading 1s: (1, L, L) as upstream, (L, L) or (1, 1, L, L) as unambiguous; never
  // another shape of L * L values, such as (4, L/2, L/2), read as if it were one.
  auto low_res_shape = [L](const Shape& s) {
    return s.size() >= 2 && s[s.size() - 1] == L && s[s.size() - 2] == L &&
           std::all_of(s.begin(), s.end() - 2, [](int64_t d) { return d == 1; });
  };
  if (p.mask_input.defined() &&
      (!low_res_shape(p.mask_input.shape) || p.mask_input.dtype != DType::F32 || !p.mask_input.on_host()))
    throw InvalidArgument("mask input must be (1, " + std::to_string(L) + ", " + std::to_string(L) + ") fp32 low-res logits on the host, got " +
                shape_str(p.mask_input.shape) + (p.mask_input.dtype == DType::U8 ? " of uint8 (a binary mask)" : ""));
}

int64_t Predictor::max_decode_batch() const {
  return embedding_.defined() && embedding_.device == Device::CUDA ? 256 : 8;
}

DecoderOutput Predictor::decode(const PromptBatch& prompts, bool multimask_output) const {
  if (!is_image_set()) throw Error("an image must be set with set_image() before decode()");
  if (embedding_host_) throw Error("the image embedding is in host memory: to_device() before decode()");
  if (image_count() != 1) throw Error("decode() takes one image; with several, use Model::decode_masks with image indices");
  if (prompts.points.defined() && prompts.points.ndim() == 3) check_point_count(prompts.points.dim(1));
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
  // Group prompts of the same form, then cut each group into decoder batches of bounded size.
  using Form = std::tuple<size_t, bool, bool, bool>;  // points, box?, mask?, points given (if none)?
  std::map<Form, std::vector<size_t>> groups;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Prompt& p = prompts[i];
    groups[{p.points.size(), p.box.has_value(), p.mask_input.defined(), !p.points.empty() || p.empty_point_array}]
        .push_back(i);
  }
  std::vector<std::pair<Form, std::vector<size_t>>> batches;
  const size_t most = (size_t)max_decode_batch();
  for (const auto& [form, all] : groups)
    for (size_t first = 0; first < all.size(); first += most)
      batches.emplace_back(form, std::vector<size_t>(all.begin() + first, all.begin() + std::min(all.size(), first + most)));

  std::vector<Prediction> results(prompts.size());
  Ops& ops = model_.backend();
  for (const auto& [form, idx] : batches) {
    const auto [n_points, has_box, has_mask, has_points] = form;
    const int64_t B = (int64_t)idx.size(), N = (int64_t)n_points;
    PromptBatch batch;
    if (has_points) {
      batch.points = Tensor::empty({B, N, 2});
      batch.labels = Tensor::empty({B, N});
    }
    if (has_box) batch.boxes = Tensor::empty({B, 4});
    if (has_mask) batch.masks = Tensor::empty({B, 1, L, L});
    std::vector<int64_t> image_of(B);
    for (int64_t b = 0; b < B; ++b) {
      const Prompt& p = prompts[idx[b]];
      const std::pair<int, int> original = original_sizes_[p.image];
      image_of[b] = p.image;
      for (int64_t i = 0; i < N; ++i) {
        float* xy = batch.points.data + (b * N + i) * 2;
        xy[0] = p.points[i][0], xy[1] = p.points[i][1];
        batch.labels.data[b * N + i] = (float)p.labels[i];
      }
      if (N > 0) apply_coords(batch.points.data + b * N * 2, N, original, S);
      if (has_box) {
        std::memcpy(batch.boxes.data + b * 4, p.box->data(), sizeof(float) * 4);
        apply_coords(batch.boxes.data + b * 4, 2, original, S);
      }
      if (has_mask) std::memcpy(batch.masks.data + b * L * L, p.mask_input.data, sizeof(float) * L * L);
    }
    // One decode for the batch, whatever images its prompts belong to.
    DecoderOutput dec = model_.decode_masks(embedding_, image_of, model_.encode_prompts(batch), multimask_output);
    const Tensor low_res = model_.download(dec.low_res_masks), iou = model_.download(dec.iou);
    for (int64_t b = 0; b < B; ++b) {  // views into the batch's tensors: no copies
      results[idx[b]].iou = iou.item(b);
      results[idx[b]].low_res_masks = low_res.item(b);
    }
    // Masks at each image's own size: one post-processing per image of the group.
    for (int image = 0; image < image_count(); ++image) {
      std::vector<int64_t> rows;
      for (int64_t b = 0; b < B; ++b)
        if (image_of[b] == image) rows.push_back(b);
      if (rows.empty()) continue;
      const Tensor mine = (int64_t)rows.size() == B ? dec.low_res_masks : ops.gather(dec.low_res_masks, rows);
      Tensor masks = model_.postprocess_masks(mine, input_sizes_[image], original_sizes_[image], !return_logits);
      for (size_t k = 0; k < rows.size(); ++k) results[idx[rows[k]]].masks = masks.item((int64_t)k);
    }
  }
  return results;
}

}  // namespace samfast
