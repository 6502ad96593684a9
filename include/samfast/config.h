// The model's shape: everything needed to build SAM, inferred from a checkpoint's tensor shapes.
#pragma once
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "samfast/tensor.h"

namespace samfast {

// ref: modeling/sam.py Sam.pixel_mean / pixel_std (float32 buffers, the same in every SAM): the
// image encoder's input is (rgb - mean) / std, zero-padded.
inline constexpr std::array<float, 3> kPixelMean{123.675f, 116.28f, 103.53f};
inline constexpr std::array<float, 3> kPixelStd{58.395f, 57.12f, 57.375f};

struct SamConfig {
  // Image encoder (ref: modeling/image_encoder.py ImageEncoderViT)
  int img_size = 1024;
  int patch_size = 16;
  int embed_dim = 768;
  int depth = 12;
  int num_heads = 12;
  int mlp_dim = 3072;
  int window_size = 14;
  std::vector<int> global_attn_indexes = {2, 5, 8, 11};
  int out_chans = 256;
  // Prompt encoder and mask decoder (ref: build_sam.py _build_sam)
  int prompt_embed_dim = 256;
  int mask_in_chans = 16;
  int decoder_depth = 2;
  int decoder_heads = 8;  // not recoverable from shapes; upstream always uses 8
  int decoder_mlp_dim = 2048;
  int num_multimask_outputs = 3;
  int iou_head_depth = 3;
  int iou_head_hidden_dim = 256;

  int grid() const { return img_size / patch_size; }  // image embedding side (64)
  int head_dim() const { return embed_dim / num_heads; }
  bool is_global(int block) const;
  // "vit_b" / "vit_l" / "vit_h" when the encoder matches an official one, otherwise "custom".
  std::string name() const;
  std::string describe() const;  // one line per field group, for `samfast info`

  // Official configs and a tiny one for tests: "vit_b", "vit_l", "vit_h", "tiny".
  static SamConfig preset(const std::string& name);
};

// Every parameter a SAM state_dict holds for this config, with its shape, grouped by module.
std::vector<std::pair<std::string, Shape>> expected_parameters(const SamConfig& cfg);

}  // namespace samfast

namespace samfast {
// Reads the config off a checkpoint's tensor names and shapes: embed dim and patch size from the
// patch embedding, depth from the block count, heads from the rel_pos head dim, window size and
// global blocks from the rel_pos table lengths, decoder sizes from its layers. Throws samfast::Error
// naming the first tensor that is missing or does not fit.
SamConfig infer_config(const std::vector<std::pair<std::string, Shape>>& tensors);
// Checks that `tensors` are exactly the parameters of `cfg` with the right shapes.
void validate_parameters(const SamConfig& cfg, const std::vector<std::pair<std::string, Shape>>& tensors);
}  // namespace samfast
