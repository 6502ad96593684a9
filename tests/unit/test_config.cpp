// Config inference from checkpoint shapes, and validation of every tensor's name and shape.
#include <gtest/gtest.h>

#include "samfast/config.h"
#include "samfast/error.h"

using namespace samfast;

namespace {

std::string error_of(const std::vector<std::pair<std::string, Shape>>& tensors) {
  try {
    infer_config(tensors);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, InfersEveryPresetFromShapes) {
  for (const char* name : {"vit_b", "vit_l", "vit_h", "tiny"}) {
    const SamConfig want = SamConfig::preset(name);
    const SamConfig got = infer_config(expected_parameters(want));
    EXPECT_EQ(got.embed_dim, want.embed_dim) << name;
    EXPECT_EQ(got.depth, want.depth) << name;
    EXPECT_EQ(got.num_heads, want.num_heads) << name;
    EXPECT_EQ(got.mlp_dim, want.mlp_dim) << name;
    EXPECT_EQ(got.window_size, want.window_size) << name;
    EXPECT_EQ(got.global_attn_indexes, want.global_attn_indexes) << name;
    EXPECT_EQ(got.img_size, 1024) << name;
    EXPECT_EQ(got.name(), std::string(name) == "tiny" ? "custom" : name);
  }
}

TEST(Config, ParameterCountsMatchUpstream) {
  // Element counts of upstream's sam_model_registry state_dicts (parameters plus the prompt
  // encoder's Gaussian-matrix buffer), read off segment_anything 1.0.
  auto count = [](const char* name) {
    int64_t n = 0;
    for (const auto& [k, s] : expected_parameters(SamConfig::preset(name))) n += numel_of(s);
    return n;
  };
  EXPECT_EQ(count("vit_b"), 93735728);
  EXPECT_EQ(count("vit_l"), 312343088);
  EXPECT_EQ(count("vit_h"), 641090864);
}

TEST(Config, ReportsMissingWrongAndExtraTensors) {
  auto params = expected_parameters(SamConfig::preset("tiny"));
  auto missing = params;
  missing.erase(missing.begin() + 10);
  EXPECT_NE(error_of(missing).find("missing tensor '" + params[10].first + "'"), std::string::npos) << error_of(missing);

  auto wrong = params;
  for (auto& [n, s] : wrong)
    if (n == "mask_decoder.iou_token.weight") s = {1, 128};
  EXPECT_NE(error_of(wrong).find("mask_decoder.iou_token.weight' has shape (1, 128), expected (1, 256)"), std::string::npos)
      << error_of(wrong);

  auto extra = params;
  extra.emplace_back("image_encoder.extra.weight", Shape{3});
  EXPECT_NE(error_of(extra).find("unexpected tensor 'image_encoder.extra.weight'"), std::string::npos) << error_of(extra);

  EXPECT_NE(error_of({{"foo", {1}}}).find("no tensor 'image_encoder.patch_embed.proj.weight'"), std::string::npos);

  auto bad_rel = params;
  for (auto& [n, s] : bad_rel)
    if (n == "image_encoder.blocks.0.attn.rel_pos_h") s = {20, 32};
  EXPECT_NE(error_of(bad_rel).find("rel_pos_h' has 20 rows"), std::string::npos) << error_of(bad_rel);
}
