#include <map>
#include <set>

#include "io/printable.h"
#include "samfast/config.h"
#include "samfast/error.h"

namespace samfast {
namespace {

struct ShapeTable {
  static constexpr int64_t kMaxDim = 1 << 16;
  std::map<std::string, Shape> by_name;
  const Shape& get(const std::string& name, size_t ndim) const {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw Error("checkpoint has no tensor '" + name + "': is this a SAM (v1) checkpoint?");
    if (it->second.size() != ndim)
      throw Error("checkpoint tensor '" + name + "' has shape " + shape_str(it->second) + ", expected " +
                  std::to_string(ndim) + " dimensions");
    // Sizes become ints and divisors below: an empty or huge one is no SAM checkpoint (its largest
    // dimension is vit_h's 5120).
    for (int64_t d : it->second)
      if (d < 1 || d > kMaxDim)
        throw Error("checkpoint tensor '" + name + "' has shape " + shape_str(it->second) + ": a size outside 1.." +
                    std::to_string(kMaxDim) + " fits no SAM model");
    return it->second;
  }
  int count(const std::string& prefix, const std::string& suffix) const {
    int n = 0;
    while (by_name.count(prefix + std::to_string(n) + suffix)) ++n;
    return n;
  }
};

}  // namespace

SamConfig infer_config(const std::vector<std::pair<std::string, Shape>>& tensors) {
  ShapeTable t;
  for (const auto& [n, s] : tensors) t.by_name[n] = s;
  SamConfig c;
  const Shape& pe = t.get("image_encoder.patch_embed.proj.weight", 4);
  c.embed_dim = (int)pe[0];
  c.patch_size = (int)pe[2];
  if (pe[1] != 3 || pe[2] != pe[3] || c.patch_size <= 0)
    throw Error("checkpoint tensor 'image_encoder.patch_embed.proj.weight' has shape " + shape_str(pe) +
                ", expected (embed_dim, 3, p, p)");
  const Shape& pos = t.get("image_encoder.pos_embed", 4);
  if (pos[1] != pos[2] || pos[1] <= 0 || pos[1] > 1024)
    throw Error("checkpoint tensor 'image_encoder.pos_embed' has shape " + shape_str(pos) + ", expected (1, G, G, embed_dim)");
  c.img_size = (int)pos[1] * c.patch_size;
  c.depth = t.count("image_encoder.blocks.", ".norm1.weight");
  if (c.depth == 0) throw Error("checkpoint has no image encoder blocks (image_encoder.blocks.0.*)");
  const Shape& rel0 = t.get("image_encoder.blocks.0.attn.rel_pos_h", 2);
  if (rel0[1] <= 0 || c.embed_dim % rel0[1] != 0)
    throw Error("checkpoint tensor 'image_encoder.blocks.0.attn.rel_pos_h' has head dim " + std::to_string(rel0[1]) +
                ", which does not divide embed_dim " + std::to_string(c.embed_dim));
  c.num_heads = c.embed_dim / (int)rel0[1];
  c.mlp_dim = (int)t.get("image_encoder.blocks.0.mlp.lin1.weight", 2)[0];
  c.global_attn_indexes.clear();
  c.window_size = 0;
  for (int i = 0; i < c.depth; ++i) {
    const std::string n = "image_encoder.blocks." + std::to_string(i) + ".attn.rel_pos_h";
    const int64_t len = t.get(n, 2)[0];
    if (len == 2 * c.grid() - 1) {
      c.global_attn_indexes.push_back(i);
    } else if (len % 2 == 1 && (c.window_size == 0 || c.window_size == (len + 1) / 2)) {
      c.window_size = (int)(len + 1) / 2;
    } else {
      throw Error("checkpoint tensor '" + n + "' has " + std::to_string(len) +
                  " rows: neither a global table (" + std::to_string(2 * c.grid() - 1) +
                  ") nor the window size of the other blocks");
    }
  }
  if (c.window_size == 0) c.window_size = 14;  // every block global: the value is never used
  c.out_chans = (int)t.get("image_encoder.neck.0.weight", 4)[0];
  c.prompt_embed_dim = (int)t.get("prompt_encoder.no_mask_embed.weight", 2)[1];
  c.mask_in_chans = (int)t.get("prompt_encoder.mask_downscaling.3.weight", 4)[0];
  c.decoder_depth = t.count("mask_decoder.transformer.layers.", ".norm1.weight");
  c.decoder_mlp_dim = (int)t.get("mask_decoder.transformer.layers.0.mlp.lin1.weight", 2)[0];
  c.num_multimask_outputs = (int)t.get("mask_decoder.mask_tokens.weight", 2)[0] - 1;
  c.iou_head_depth = t.count("mask_decoder.iou_prediction_head.layers.", ".weight");
  c.iou_head_hidden_dim = (int)t.get("mask_decoder.iou_prediction_head.layers.0.weight", 2)[0];
  if (c.prompt_embed_dim % 16 != 0 || c.out_chans != c.prompt_embed_dim || c.num_multimask_outputs < 1 ||
      c.iou_head_depth < 2 || c.decoder_depth < 1)
    throw Error("checkpoint's prompt encoder / mask decoder sizes do not fit together (prompt embed dim " +
                std::to_string(c.prompt_embed_dim) + ", neck channels " + std::to_string(c.out_chans) + ")");
  validate_parameters(c, tensors);
  return c;
}

void validate_parameters(const SamConfig& cfg, const std::vector<std::pair<std::string, Shape>>& tensors) {
  std::map<std::string, Shape> have;
  for (const auto& [n, s] : tensors) have[n] = s;
  std::set<std::string> expected;
  for (const auto& [name, shape] : expected_parameters(cfg)) {
    expected.insert(name);
    auto it = have.find(name);
    if (it == have.end()) throw Error("checkpoint is missing tensor '" + name + "' " + shape_str(shape));
    if (it->second != shape)
      throw Error("checkpoint tensor '" + name + "' has shape " + shape_str(it->second) + ", expected " +
                  shape_str(shape) + " for a " + cfg.name() + " model");
  }
  for (const auto& [n, s] : have)
    if (!expected.count(n)) throw Error("checkpoint has an unexpected tensor '" + printable(n) + "' " + shape_str(s) + " for a SAM model");
}

}  // namespace samfast
