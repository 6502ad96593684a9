// ref: segment_anything/modeling/image_encoder.py ImageEncoderViT, Block, Attention
#include "backend/ops.h"
#include "samfast/error.h"
#include "samfast/model.h"

namespace samfast {

Tensor Model::encode_image(const Tensor& image, const std::function<void(int, const Tensor&)>& on_block) const {
  const SamConfig& c = cfg_;
  Ops& ops = *enc_ops_;
  if (image.ndim() != 4 || image.dim(1) != 3 || image.dim(2) != c.img_size || image.dim(3) != c.img_size ||
      (image.on_host() && image.dtype != DType::F32))
    throw Error("encode_image: expected a (B, 3, " + std::to_string(c.img_size) + ", " + std::to_string(c.img_size) +
                ") fp32 image, got " + shape_str(image.shape) + (image.dtype == DType::U8 ? " of uint8" : ""));
  try {
    // The embedding goes to the decoder's backend (converted, where that computes in another
    // precision: inside the recording, so that the copy is made in the graph's arena).
    if (!on_block)  // (the parity tests' per-block view needs the eager run)
      return ops.run_recorded("image_encoder", {image}, [&](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{ops_->upload(encode_pixels(in[0], {}))};
      })[0];
    return ops_->upload(encode_pixels(ops.upload(image), on_block));
  } catch (const OutOfMemory& e) {  // say which batch asked for it
    throw OutOfMemory("image encoder at batch size " + std::to_string(image.dim(0)) + ": " + e.what());
  }
}

Tensor Model::encode_rgb(const Tensor& rgb, const Tensor& extent) const {
  const int64_t S = cfg_.img_size;
  if (rgb.ndim() != 4 || rgb.dim(1) != S || rgb.dim(2) != S || rgb.dim(3) != 3 || rgb.dtype != DType::U8 ||
      !rgb.on_host() || extent.ndim() != 3 || extent.dim(0) != rgb.dim(0) || extent.dim(1) != 2 ||
      extent.dim(2) != S || extent.dtype != DType::U8 || !extent.on_host())
    throw Error("encode_rgb: expected host uint8 pixels (B, " + std::to_string(S) + ", " + std::to_string(S) +
                ", 3) and extents (B, 2, " + std::to_string(S) + "), got " + shape_str(rgb.shape) + " and " +
                shape_str(extent.shape));
  Ops& ops = *enc_ops_;
  try {
    return ops.run_recorded("image_encoder rgb", {rgb, extent}, [&](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{ops_->upload(encode_pixels(ops.normalize_rgb(in[0], in[1], kPixelMean, kPixelStd), {}))};
    })[0];
  } catch (const OutOfMemory& e) {
    throw OutOfMemory("image encoder at batch size " + std::to_string(rgb.dim(0)) + ": " + e.what());
  }
}

void Model::prepare_encoder_blocks() const {
  for (int i = 0; i < cfg_.depth; ++i) {
    const std::string b = "image_encoder.blocks." + std::to_string(i) + ".";
    enc_ops_->prepare_layer_norm_linear(w(b + "norm1.weight"), w(b + "norm1.bias"), w(b + "attn.qkv.weight"),
                                        w(b + "attn.qkv.bias"));
    enc_ops_->prepare_layer_norm_linear(w(b + "norm2.weight"), w(b + "norm2.bias"), w(b + "mlp.lin1.weight"),
                                        w(b + "mlp.lin1.bias"));
  }
}

Tensor Model::encode_pixels(const Tensor& pixels, const std::function<void(int, const Tensor&)>& on_block) const {
  const SamConfig& c = cfg_;
  Ops& ops = *enc_ops_;
  const std::string e = "image_encoder.";
  Tensor x = ops.patch_embed(pixels, w(e + "patch_embed.proj.weight"), &w(e + "patch_embed.proj.bias"),
                             &w(e + "pos_embed"));  // (B, G, G, E)
  for (int i = 0; i < c.depth; ++i) {
    const std::string b = e + "blocks." + std::to_string(i) + ".";
    x = ops.layer_norm_attention(x, w(b + "norm1.weight"), w(b + "norm1.bias"), 1e-6f, w(b + "attn.qkv.weight"),
                                 w(b + "attn.qkv.bias"), w(b + "attn.rel_pos_h"), w(b + "attn.rel_pos_w"), c.num_heads,
                                 c.is_global(i) ? 0 : c.window_size, w(b + "attn.proj.weight"),
                                 w(b + "attn.proj.bias"));
    x = ops.layer_norm_mlp(x, w(b + "norm2.weight"), w(b + "norm2.bias"), 1e-6f, w(b + "mlp.lin1.weight"),
                           w(b + "mlp.lin1.bias"), w(b + "mlp.lin2.weight"), w(b + "mlp.lin2.bias"));
    if (on_block) on_block(i, x);
  }
  // neck: 1x1 conv (a Linear on channel-last tokens), LayerNorm2d, 3x3 conv, LayerNorm2d
  const Tensor& n0 = w(e + "neck.0.weight");
  x = ops.linear(x, n0.view({n0.dim(0), n0.dim(1)}), nullptr);                        // (B, G, G, 256)
  x = ops.layer_norm(x, w(e + "neck.1.weight"), w(e + "neck.1.bias"), 1e-6f);
  x = ops.conv2d(x, w(e + "neck.2.weight"), nullptr, 1, 1);
  return ops.layer_norm(x, w(e + "neck.3.weight"), w(e + "neck.3.bias"), 1e-6f);
}

}  // namespace samfast
