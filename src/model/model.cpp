// Model loading, validation and synthetic weights.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "backend/backend.h"
#include "backend/ops.h"
#include "core/rng.h"
#include "io/checkpoint_internal.h"
#include "io/printable.h"
#include "samfast/checkpoint.h"
#include "samfast/error.h"
#include "samfast/model.h"

namespace samfast {
namespace {

// The image encoder blocks' Linear weights: nearly all of the model's arithmetic (a backend may keep
// them quantised, Ops::prepare_bulk_linear).
bool is_bulk_linear_weight(std::string_view name) {
  if (!name.starts_with("image_encoder.blocks.")) return false;
  for (std::string_view tail : {".attn.qkv.weight", ".attn.proj.weight", ".mlp.lin1.weight", ".mlp.lin2.weight"})
    if (name.ends_with(tail)) return true;
  return false;
}

}  // namespace

int64_t PromptBatch::batch() const {
  if (points.defined()) return points.dim(0);
  if (boxes.defined()) return boxes.dim(0);
  if (masks.defined()) return masks.dim(0);
  return 1;
}

Model Model::load(const std::string& path, const ModelOptions& options) {
  StateDict sd = load_checkpoint(path);
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.reserve(sd.size());
  for (auto& [name, t] : sd) tensors.emplace_back(name, std::move(t.value));
  try {
    return from_finite_tensors(std::move(tensors), options);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

Model Model::from_tensors(std::vector<std::pair<std::string, Tensor>> tensors, const ModelOptions& options) {
  std::set<std::string_view> names;
  for (const auto& [name, t] : tensors) {
    if (!t.defined() || t.dtype != DType::F32 || !t.on_host())
      throw InvalidArgument("weights: tensor " + printable(name) + " is not " +
                            (t.defined() ? "a host fp32 tensor" : "defined (it has no data)"));
    if (!names.insert(name).second) throw InvalidArgument("weights: tensor " + printable(name) + " is given twice");
    detail::check_finite(name, t.data, t.numel(), "weights");
  }
  return from_finite_tensors(std::move(tensors), options);
}

Model Model::from_finite_tensors(std::vector<std::pair<std::string, Tensor>> tensors, const ModelOptions& options) {
  std::vector<std::pair<std::string, Shape>> shapes;
  for (const auto& [n, t] : tensors) shapes.emplace_back(n, t.shape);
  Model m;
  m.cfg_ = infer_config(shapes);
  m.tensors_ = std::move(tensors);
  Backend backend = make_backend({.device = options.device,
                                  .precision = options.precision,
                                  .decoder_precision = options.decoder_precision,
                                  .cuda_graphs = options.cuda_graphs});
  m.ops_ = backend.ops;
  m.enc_ops_ = backend.encoder_ops;
  m.device_ = backend.device;
  m.precision_ = backend.precision;
  m.decoder_precision_ = backend.decoder_precision;
  m.backend_note_ = backend.note;
  for (const auto& [n, t] : m.tensors_) m.host_by_name_[n] = t;
  for (auto& [n, t] : m.folded_decoder_weights()) m.host_by_name_[n] = std::move(t);
  m.dense_pe_host_ = m.compute_dense_positional_encoding();
  // Everything a backend keeps (host tensor, whether a bulk Linear weight, where it goes), in one
  // allocation per backend, sized first: the image encoder's weights on its backend, the rest on the
  // decoder's (one backend when they are the same).
  struct Upload {
    const Tensor* host;
    bool bulk;
    Tensor* dst;
  };
  std::map<Ops*, std::vector<Upload>> uploads;
  uploads[m.ops_.get()].push_back({&m.dense_pe_host_, false, &m.dense_pe_});
  for (const auto& [n, t] : m.host_by_name_)
    uploads[n.starts_with("image_encoder.") ? m.enc_ops_.get() : m.ops_.get()].push_back(
        {&t, is_bulk_linear_weight(n), &m.by_name_[n]});
  for (const auto& [ops, list] : uploads) {
    size_t bytes = 0;
    for (const Upload& u : list) bytes += ops->weight_bytes(*u.host, u.bulk);
    ops->reserve_weights(bytes);
    for (const Upload& u : list) *u.dst = ops->upload_weight(*u.host, u.bulk);
  }
  m.prepare_encoder_blocks();
  return m;
}

const Tensor& Model::w(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) throw Error("internal: model has no tensor '" + name + "'");
  return it->second;
}

const Tensor& Model::hw(const std::string& name) const {
  auto it = host_by_name_.find(name);
  if (it == host_by_name_.end()) throw Error("internal: model has no tensor '" + name + "'");
  return it->second;
}

Tensor Model::download(const Tensor& x) const { return ops_->download(x); }

namespace {
// The model's tensor inputs are fp32 (a uint8 tensor is a binarized mask, not logits or pixels).
const Tensor& fp32_input(const Tensor& t, const char* what) {
  if (t.on_host() && t.dtype != DType::F32)
    throw Error(std::string(what) + ": expected an fp32 host tensor, got " + shape_str(t.shape) +
                (t.dtype == DType::U8 ? " of uint8" : " of another type"));
  return t;
}
}  // namespace

Tensor Model::upload(const Tensor& host) const { return ops_->upload(fp32_input(host, "upload")); }

Tensor Model::upload_images(const Tensor& host) const { return enc_ops_->upload(fp32_input(host, "upload_images")); }

Model::MemoryUse Model::memory_use() const {
  const Ops::MemoryUse use = ops_->memory_use();
  MemoryUse out{use.weights, use.weights_filled, use.graph_arena, use.graphs_in_arena};
  if (enc_ops_ != ops_) {  // (siblings share the graph arena)
    const Ops::MemoryUse enc = enc_ops_->memory_use();
    out.weights += enc.weights, out.weights_filled += enc.weights_filled;
  }
  return out;
}

Tensor Model::postprocess_masks(const Tensor& low_res, std::pair<int, int> input_size,
                                std::pair<int, int> original_size, bool binarize, bool to_host) const {
  Tensor masks = ops_->postprocess_masks(low_res, cfg_.img_size, input_size, original_size, binarize);
  return to_host ? ops_->download(masks) : masks;
}

void Model::synchronize() const { ops_->synchronize(); }

int64_t Model::peak_memory_bytes() const { return ops_->peak_memory_bytes(); }

Model::MemoryPlan Model::plan_memory(int64_t batch, int64_t prompts) const {
  if (batch < 1 || prompts < 1)
    throw Error("plan_memory: batch and prompts must be at least 1, not " + std::to_string(batch) + " and " +
                std::to_string(prompts));
  const int64_t S = cfg_.img_size;
  // (the predictor's path: images as bytes, normalized by the backend)
  Tensor rgb = Tensor::empty({batch, S, S, 3}, DType::U8), extent = Tensor::empty({batch, 2, S}, DType::U8);
  std::fill_n(rgb.ptr<uint8_t>(), rgb.numel(), uint8_t(0));
  std::fill_n(extent.ptr<uint8_t>(), extent.numel(), uint8_t(1));
  PromptBatch p;
  p.points = Tensor::empty({prompts, 1, 2});
  p.labels = Tensor::empty({prompts, 1});
  for (int64_t i = 0; i < prompts; ++i) p.points.data[2 * i] = p.points.data[2 * i + 1] = S / 2.f, p.labels.data[i] = 1.f;
  for (int run = 0; run < 2; ++run) {  // the first runs eagerly (its buffers traced), the second is recorded
    const Tensor embeddings = encode_rgb(rgb, extent);
    decode_masks(batch == 1 ? embeddings : ops_->gather(embeddings, {0}), encode_prompts(p), true);
  }
  synchronize();
  const MemoryUse use = memory_use();
  return {use.weights, use.graph_arena, peak_memory_bytes()};
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : tensors_) n += t.numel();
  return n;
}

namespace {

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::vector<std::pair<std::string, Tensor>> Model::synthetic_tensors(const SamConfig& cfg, uint64_t seed) {
  // Like PyTorch's default init (uniform +-1/sqrt(fan_in) for Linear/Conv, N(0,1) for embeddings),
  // but with norms, positional and relative-position tables away from their trivial values so
  // that every term of the model is exercised.
  // A config that no checkpoint could have is refused, not built (a zero size divides by zero below).
  for (const auto& [what, v] : {std::pair{"img_size", cfg.img_size}, {"patch_size", cfg.patch_size},
                                {"embed_dim", cfg.embed_dim}, {"depth", cfg.depth}, {"num_heads", cfg.num_heads},
                                {"mlp_dim", cfg.mlp_dim}, {"out_chans", cfg.out_chans},
                                {"prompt_embed_dim", cfg.prompt_embed_dim}, {"mask_in_chans", cfg.mask_in_chans},
                                {"decoder_depth", cfg.decoder_depth}, {"decoder_heads", cfg.decoder_heads},
                                {"decoder_mlp_dim", cfg.decoder_mlp_dim},
                                {"num_multimask_outputs", cfg.num_multimask_outputs},
                                {"iou_head_depth", cfg.iou_head_depth}, {"iou_head_hidden_dim", cfg.iou_head_hidden_dim}})
    if (v <= 0) throw InvalidArgument(std::string("synthetic_tensors: ") + what + " is " + std::to_string(v) + ", not positive");
  if (cfg.window_size < 0 || cfg.img_size % cfg.patch_size != 0 || cfg.embed_dim % cfg.num_heads != 0 ||
      cfg.prompt_embed_dim % cfg.decoder_heads != 0)
    throw InvalidArgument("synthetic_tensors: the sizes do not fit together:\n" + cfg.describe());
  for (int g : cfg.global_attn_indexes)
    if (g < 0 || g >= cfg.depth)
      throw InvalidArgument("synthetic_tensors: global block " + std::to_string(g) + " is not one of the " +
                            std::to_string(cfg.depth) + " blocks");
  Rng rng{seed};
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, shape] : expected_parameters(cfg)) {
    Tensor t = Tensor::empty(shape);
    const int64_t n = t.numel();
    float* d = t.data;
    if (contains(name, "rel_pos") || contains(name, "pos_embed")) {
      for (int64_t i = 0; i < n; ++i) d[i] = rng.normal(0.1f);
    } else if (contains(name, "gaussian_matrix") || contains(name, "point_embeddings") ||
               contains(name, "not_a_point") || contains(name, "no_mask_embed") || contains(name, "iou_token") ||
               contains(name, "mask_tokens")) {
      for (int64_t i = 0; i < n; ++i) d[i] = rng.normal(1.0f);
    } else if (shape.size() == 1 && ends_with(name, ".weight")) {  // LayerNorm scale
      for (int64_t i = 0; i < n; ++i) d[i] = rng.uniform(0.8f, 1.2f);
    } else if (shape.size() == 1) {  // bias
      for (int64_t i = 0; i < n; ++i) d[i] = rng.uniform(-0.05f, 0.05f);
    } else {
      const float bound = 1.0f / std::sqrt((float)(n / shape[0]));
      for (int64_t i = 0; i < n; ++i) d[i] = rng.uniform(-bound, bound);
    }
    out.emplace_back(name, t);
  }
  return out;
}

}  // namespace samfast
