// ref: segment_anything/modeling/prompt_encoder.py PromptEncoder, PositionEmbeddingRandom
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/ops.h"
#include "samfast/error.h"
#include "samfast/model.h"

namespace samfast {

Tensor Model::positional_encoding(const Tensor& coords01) const {
  // PositionEmbeddingRandom._pe_encoding: [sin, cos](2 pi (2c - 1) @ G)
  const Tensor& g = hw("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix");  // (2, D/2)
  const int64_t half = g.dim(1), n = coords01.numel() / 2;
  Shape s = coords01.shape;
  s.back() = 2 * half;
  Tensor out = Tensor::empty(s);
  const float two_pi = (float)(2.0 * M_PI);
  for (int64_t i = 0; i < n; ++i) {
    const float x = 2.f * coords01.data[2 * i] - 1.f, y = 2.f * coords01.data[2 * i + 1] - 1.f;
    float* o = out.data + i * 2 * half;
    for (int64_t j = 0; j < half; ++j) {
      const float v = two_pi * (x * g.data[j] + y * g.data[half + j]);
      o[j] = std::sin(v);
      o[half + j] = std::cos(v);
    }
  }
  return out;
}

Tensor Model::compute_dense_positional_encoding() const {
  const int64_t G = cfg_.grid();
  Tensor grid = Tensor::empty({1, G, G, 2});
  for (int64_t y = 0; y < G; ++y)
    for (int64_t x = 0; x < G; ++x) {
      grid.data[(y * G + x) * 2] = ((float)x + 1.f - 0.5f) / (float)G;  // (cumsum - 0.5) / w
      grid.data[(y * G + x) * 2 + 1] = ((float)y + 1.f - 0.5f) / (float)G;
    }
  return positional_encoding(grid);
}

PromptEmbeddings Model::encode_prompts(const PromptBatch& p) const {
  const int64_t B = p.batch(), D = cfg_.prompt_embed_dim, G = cfg_.grid();
  const float S = (float)cfg_.img_size;
  const std::string pe = "prompt_encoder.";
  auto embed_row = [&](const std::string& name) { return hw(pe + name + ".weight").data; };
  // Upstream fails deep in its decoder on an empty batch and turns NaN prompts into NaN masks; both
  // are refused here with what is wrong (predict() checks its points and boxes itself; predict_torch's
  // batches and every mask input meet their checks only here).
  if (B == 0) throw InvalidArgument("prompts: the batch holds no prompts (its first dimension is 0)");
  auto finite = [](const Tensor& t) {
    return std::all_of(t.data, t.data + t.numel(), [](float v) { return std::isfinite(v); });
  };
  if ((p.points.defined() && !finite(p.points)) || (p.labels.defined() && !finite(p.labels)) ||
      (p.boxes.defined() && !finite(p.boxes)))
    throw InvalidArgument("prompts: a point, label or box coordinate is NaN or infinite");
  if (p.masks.defined() && !finite(p.masks))
    throw InvalidArgument("prompts: the mask input holds NaN or infinite logits");

  // Sparse: points (padded with a not-a-point when there is no box), then the two box corners.
  const int64_t N = p.points.defined() ? p.points.dim(1) : 0;
  if (p.points.defined() && (p.points.ndim() != 3 || p.points.dim(2) != 2 || !p.labels.defined() ||
                             p.labels.numel() != B * N))
    throw InvalidArgument("prompts: points must be (B, N, 2) with labels (B, N); got points " + shape_str(p.points.shape) +
                          " and labels " + (p.labels.defined() ? shape_str(p.labels.shape) : std::string("none")));
  if (p.boxes.defined() && p.boxes.numel() != B * 4)
    throw InvalidArgument("prompts: boxes must be (B, 4) for B = " + std::to_string(B) + "; got " + shape_str(p.boxes.shape));
  const bool pad = p.points.defined() && !p.boxes.defined();
  const int64_t np = p.points.defined() ? N + (pad ? 1 : 0) : 0, nb = p.boxes.defined() ? 2 : 0;
  Tensor coords = Tensor::empty({B, np + nb, 2});
  constexpr int kNotAPoint = -1, kPlain = -2;  // otherwise: index into point_embeddings
  std::vector<int> kind(B * (np + nb));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < np; ++i) {
      float* c = coords.data + (b * (np + nb) + i) * 2;
      const bool is_pad = i == N;
      // + 0.5: shift to the pixel centre; then normalise by the input image size (x / W, y / H)
      const float* xy = p.points.data + (b * N + i) * 2;
      c[0] = is_pad ? 0.f : p.points_normalized ? xy[0] : (xy[0] + 0.5f) / S;
      c[1] = is_pad ? 0.f : p.points_normalized ? xy[1] : (xy[1] + 0.5f) / S;
      const float label = is_pad ? -1.f : p.labels.data[b * N + i];
      // upstream adds point_embeddings[label] for labels 0 and 1 only; -1 replaces the encoding
      kind[b * (np + nb) + i] = label == -1.f ? kNotAPoint : (label == 0.f || label == 1.f) ? (int)label : kPlain;
    }
    for (int64_t k = 0; k < nb; ++k) {
      float* c = coords.data + (b * (np + nb) + np + k) * 2;
      c[0] = (p.boxes.data[b * 4 + 2 * k] + 0.5f) / S;
      c[1] = (p.boxes.data[b * 4 + 2 * k + 1] + 0.5f) / S;
      kind[b * (np + nb) + np + k] = 2 + (int)k;  // box corners take point_embeddings[2] and [3]
    }
  }
  PromptEmbeddings out;
  out.sparse = positional_encoding(coords);  // (B, Ns, D)
  for (int64_t i = 0; i < B * (np + nb); ++i) {
    float* e = out.sparse.data + i * D;
    const float* add = nullptr;
    if (kind[i] == kNotAPoint) {
      std::memset(e, 0, sizeof(float) * D);
      add = embed_row("not_a_point_embed");
    } else if (kind[i] >= 0) {
      add = embed_row("point_embeddings." + std::to_string(kind[i]));
    }
    if (add)
      for (int64_t d = 0; d < D; ++d) e[d] += add[d];
  }

  // Dense: the mask prompt through mask_downscaling, or no_mask_embed everywhere.
  Ops& ops = *ops_;
  if (p.masks.defined()) {
    if (p.masks.ndim() != 4 || p.masks.dim(0) != B || p.masks.dim(1) != 1 || p.masks.dim(2) != 4 * G ||
        p.masks.dim(3) != 4 * G)
      throw InvalidArgument("prompts: mask input must be (B, 1, " + std::to_string(4 * G) + ", " + std::to_string(4 * G) +
                            ") for B = " + std::to_string(B) + "; got " + shape_str(p.masks.shape));
    const std::string m = pe + "mask_downscaling.";
    Tensor masks = p.masks;
    if (decoder_precision_ == Precision::FP16) {
      // fp16 ends at 65504: a larger logit (a mask of 0 and 1e6, say) would become inf and the
      // mask's embedding NaN. Past 1e4 the downscaling's LayerNorms see the same pattern anyway.
      masks = Tensor::empty(p.masks.shape);
      for (int64_t i = 0; i < masks.numel(); ++i) masks.data[i] = std::clamp(p.masks.data[i], -1e4f, 1e4f);
    }
    Tensor x = ops.upload(masks).view({B, 4 * G, 4 * G, 1});  // one channel: NCHW and NHWC coincide
    x = ops.conv2d(x, w(m + "0.weight"), &w(m + "0.bias"), 2, 0);
    x = ops.layer_norm(x, w(m + "1.weight"), w(m + "1.bias"), 1e-6f, Act::GELU);
    x = ops.conv2d(x, w(m + "3.weight"), &w(m + "3.bias"), 2, 0);
    x = ops.layer_norm(x, w(m + "4.weight"), w(m + "4.bias"), 1e-6f, Act::GELU);
    const Tensor& w6 = w(m + "6.weight");
    out.dense = ops.linear(x, w6.view({w6.dim(0), w6.dim(1)}), &w(m + "6.bias"));  // (B, G, G, D)
  } else {
    out.dense = w(pe + "no_mask_embed.weight").view({1, 1, 1, D});  // broadcast over the grid
  }
  return out;
}

}  // namespace samfast
