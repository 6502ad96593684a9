#include "samfast/config.h"

#include <algorithm>

#include "samfast/error.h"

namespace samfast {

bool SamConfig::is_global(int block) const {
  return std::find(global_attn_indexes.begin(), global_attn_indexes.end(), block) != global_attn_indexes.end();
}

SamConfig SamConfig::preset(const std::string& name) {
  // ref: build_sam.py build_sam_vit_h / _l / _b
  SamConfig c;
  if (name == "vit_b") return c;
  if (name == "vit_l") {
    c.embed_dim = 1024, c.depth = 24, c.num_heads = 16, c.mlp_dim = 4096;
    c.global_attn_indexes = {5, 11, 17, 23};
    return c;
  }
  if (name == "vit_h") {
    c.embed_dim = 1280, c.depth = 32, c.num_heads = 16, c.mlp_dim = 5120;
    c.global_attn_indexes = {7, 15, 23, 31};
    return c;
  }
  if (name == "tiny") {  // small enough for CI parity tests, yet every code path of the real ones
    c.embed_dim = 64, c.depth = 4, c.num_heads = 2, c.mlp_dim = 256;
    c.global_attn_indexes = {1, 3};
    return c;
  }
  throw Error("unknown model '" + name + "': expected vit_b, vit_l, vit_h or tiny");
}

std::string SamConfig::name() const {
  for (const char* n : {"vit_b", "vit_l", "vit_h"}) {
    SamConfig p = preset(n);
    if (p.embed_dim == embed_dim && p.depth == depth && p.num_heads == num_heads &&
        p.global_attn_indexes == global_attn_indexes && p.img_size == img_size && p.window_size == window_size)
      return n;
  }
  return "custom";
}

std::string SamConfig::describe() const {
  std::string g;
  for (int i : global_attn_indexes) {  // (appended in two steps: GCC 12 warns falsely on "," + string&&)
    g += g.empty() ? "" : ",";
    g += std::to_string(i);
  }
  return "model: " + name() + "\n" +
         "image encoder: img_size " + std::to_string(img_size) + ", patch " + std::to_string(patch_size) +
         ", embed_dim " + std::to_string(embed_dim) + ", depth " + std::to_string(depth) + ", heads " +
         std::to_string(num_heads) + " (head dim " + std::to_string(head_dim()) + "), mlp " +
         std::to_string(mlp_dim) + ", window " + std::to_string(window_size) + ", global blocks [" + g +
         "], out_chans " + std::to_string(out_chans) + "\n" +
         "prompt encoder: embed_dim " + std::to_string(prompt_embed_dim) + ", mask_in_chans " +
         std::to_string(mask_in_chans) + "\n" +
         "mask decoder: depth " + std::to_string(decoder_depth) + ", heads " + std::to_string(decoder_heads) +
         ", mlp " + std::to_string(decoder_mlp_dim) + ", multimask outputs " +
         std::to_string(num_multimask_outputs) + ", iou head depth " + std::to_string(iou_head_depth) + "\n";
}

std::vector<std::pair<std::string, Shape>> expected_parameters(const SamConfig& c) {
  std::vector<std::pair<std::string, Shape>> p;
  auto add = [&](std::string n, Shape s) { p.emplace_back(std::move(n), std::move(s)); };
  const int64_t E = c.embed_dim, G = c.grid(), hd = c.head_dim(), D = c.prompt_embed_dim;
  auto linear = [&](const std::string& n, int64_t out, int64_t in) {
    add(n + ".weight", {out, in});
    add(n + ".bias", {out});
  };
  auto norm = [&](const std::string& n, int64_t ch) {
    add(n + ".weight", {ch});
    add(n + ".bias", {ch});
  };
  // ref: modeling/image_encoder.py
  add("image_encoder.pos_embed", {1, G, G, E});
  add("image_encoder.patch_embed.proj.weight", {E, 3, c.patch_size, c.patch_size});
  add("image_encoder.patch_embed.proj.bias", {E});
  for (int i = 0; i < c.depth; ++i) {
    const std::string b = "image_encoder.blocks." + std::to_string(i);
    const int64_t rel = c.is_global(i) ? 2 * G - 1 : 2 * c.window_size - 1;
    norm(b + ".norm1", E);
    linear(b + ".attn.qkv", 3 * E, E);
    linear(b + ".attn.proj", E, E);
    add(b + ".attn.rel_pos_h", {rel, hd});
    add(b + ".attn.rel_pos_w", {rel, hd});
    norm(b + ".norm2", E);
    linear(b + ".mlp.lin1", c.mlp_dim, E);
    linear(b + ".mlp.lin2", E, c.mlp_dim);
  }
  add("image_encoder.neck.0.weight", {c.out_chans, E, 1, 1});
  norm("image_encoder.neck.1", c.out_chans);
  add("image_encoder.neck.2.weight", {c.out_chans, c.out_chans, 3, 3});
  norm("image_encoder.neck.3", c.out_chans);
  // ref: modeling/prompt_encoder.py
  add("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", {2, D / 2});
  for (int i = 0; i < 4; ++i) add("prompt_encoder.point_embeddings." + std::to_string(i) + ".weight", {1, D});
  add("prompt_encoder.not_a_point_embed.weight", {1, D});
  const int64_t m4 = c.mask_in_chans / 4, m = c.mask_in_chans;
  add("prompt_encoder.mask_downscaling.0.weight", {m4, 1, 2, 2});
  add("prompt_encoder.mask_downscaling.0.bias", {m4});
  norm("prompt_encoder.mask_downscaling.1", m4);
  add("prompt_encoder.mask_downscaling.3.weight", {m, m4, 2, 2});
  add("prompt_encoder.mask_downscaling.3.bias", {m});
  norm("prompt_encoder.mask_downscaling.4", m);
  add("prompt_encoder.mask_downscaling.6.weight", {D, m, 1, 1});
  add("prompt_encoder.mask_downscaling.6.bias", {D});
  add("prompt_encoder.no_mask_embed.weight", {1, D});
  // ref: modeling/mask_decoder.py, modeling/transformer.py
  const std::string t = "mask_decoder.transformer";
  auto attention = [&](const std::string& n, int64_t internal) {
    linear(n + ".q_proj", internal, D);
    linear(n + ".k_proj", internal, D);
    linear(n + ".v_proj", internal, D);
    linear(n + ".out_proj", D, internal);
  };
  for (int i = 0; i < c.decoder_depth; ++i) {
    const std::string l = t + ".layers." + std::to_string(i);
    attention(l + ".self_attn", D);
    norm(l + ".norm1", D);
    attention(l + ".cross_attn_token_to_image", D / 2);
    norm(l + ".norm2", D);
    linear(l + ".mlp.lin1", c.decoder_mlp_dim, D);
    linear(l + ".mlp.lin2", D, c.decoder_mlp_dim);
    norm(l + ".norm3", D);
    norm(l + ".norm4", D);
    attention(l + ".cross_attn_image_to_token", D / 2);
  }
  attention(t + ".final_attn_token_to_image", D / 2);
  norm(t + ".norm_final_attn", D);
  const int n_masks = c.num_multimask_outputs + 1;
  add("mask_decoder.iou_token.weight", {1, D});
  add("mask_decoder.mask_tokens.weight", {n_masks, D});
  add("mask_decoder.output_upscaling.0.weight", {D, D / 4, 2, 2});
  add("mask_decoder.output_upscaling.0.bias", {D / 4});
  norm("mask_decoder.output_upscaling.1", D / 4);
  add("mask_decoder.output_upscaling.3.weight", {D / 4, D / 8, 2, 2});
  add("mask_decoder.output_upscaling.3.bias", {D / 8});
  auto mlp = [&](const std::string& n, int64_t in, int64_t hidden, int64_t out, int depth) {
    for (int j = 0; j < depth; ++j)
      linear(n + ".layers." + std::to_string(j), j == depth - 1 ? out : hidden, j == 0 ? in : hidden);
  };
  for (int i = 0; i < n_masks; ++i)
    mlp("mask_decoder.output_hypernetworks_mlps." + std::to_string(i), D, D, D / 8, 3);
  mlp("mask_decoder.iou_prediction_head", D, c.iou_head_hidden_dim, n_masks, c.iou_head_depth);
  return p;
}

}  // namespace samfast
