// ref: segment_anything/modeling/mask_decoder.py MaskDecoder, modeling/transformer.py TwoWayTransformer
#include <cstring>

#include "backend/ops.h"
#include "samfast/error.h"
#include "samfast/model.h"

namespace samfast {

DecoderOutput Model::decode_masks(const Tensor& embedding, const PromptEmbeddings& prompts, bool multimask_output) const {
  Ops& ops = *ops_;
  const SamConfig& c = cfg_;
  const int64_t B = prompts.sparse.dim(0), Ns = prompts.sparse.dim(1), D = c.prompt_embed_dim, G = c.grid();
  const int64_t M = c.num_multimask_outputs + 1, heads = c.decoder_heads;
  if (embedding.ndim() != 4 || embedding.dim(1) != G || embedding.dim(2) != G || embedding.dim(3) != D ||
      (embedding.dim(0) != 1 && embedding.dim(0) != B))
    throw Error("decode_masks: image embedding " + shape_str(embedding.shape) + " does not fit " + std::to_string(B) + " prompts");
  const std::string md = "mask_decoder.", t = md + "transformer.";

  // Tokens (B, 1 + M + Ns, D): the IoU token, the mask tokens, then the prompt's sparse embedding.
  const int64_t N = 1 + M + Ns;
  Tensor host_tokens = Tensor::empty({B, N, D});
  for (int64_t b = 0; b < B; ++b) {
    float* dst = host_tokens.data + b * N * D;
    std::memcpy(dst, hw(md + "iou_token.weight").data, sizeof(float) * D);
    std::memcpy(dst + D, hw(md + "mask_tokens.weight").data, sizeof(float) * M * D);
    std::memcpy(dst + (1 + M) * D, prompts.sparse.data + b * Ns * D, sizeof(float) * Ns * D);
  }
  Tensor tokens = ops.upload(host_tokens);
  // Image tokens (B, G*G, D): the embedding (repeated per prompt) plus the dense prompt embedding.
  const bool dense_full = prompts.dense.numel() == B * G * G * D;
  // Many prompts on one image without mask prompts: the image tokens start the same for every
  // prompt, so the first layer's projections of them are computed once (batch 1) and shared.
  const bool shared = embedding.dim(0) == 1 && !dense_full && B > 1;
  Tensor keys1 = shared ? ops.add(embedding, prompts.dense).view({1, G * G, D}) : Tensor{};
  Tensor keys = shared       ? ops.expand_batch(keys1, B)
                : dense_full ? ops.add(prompts.dense, embedding)
                             : ops.add(embedding.dim(0) == B ? embedding : ops.expand_batch(embedding, B), prompts.dense);
  keys = keys.view({B, G * G, D});
  Tensor key_pe = dense_pe_.view({1, G * G, D});
  const Tensor keys1_pe = shared ? ops.add(keys1, key_pe) : Tensor{};

  // Attention with projections; out = residual + out_proj(attn) when residual is given.
  auto attend = [&](const std::string& n, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* residual) {
    Tensor qp = ops.linear(q, w(n + ".q_proj.weight"), &w(n + ".q_proj.bias"));
    Tensor kp = ops.linear(k, w(n + ".k_proj.weight"), &w(n + ".k_proj.bias"));
    Tensor vp = ops.linear(v, w(n + ".v_proj.weight"), &w(n + ".v_proj.bias"));
    Tensor o = ops.attention(qp, kp, vp, (int)heads);
    return ops.linear(o, w(n + ".out_proj.weight"), &w(n + ".out_proj.bias"), Act::None, residual);
  };
  auto norm = [&](const Tensor& x, const std::string& n) {
    return ops.layer_norm(x, w(n + ".weight"), w(n + ".bias"), 1e-5f);  // nn.LayerNorm default eps
  };

  // ref: TwoWayTransformer.forward / TwoWayAttentionBlock.forward
  const Tensor& query_pe = tokens;
  Tensor queries = tokens;
  for (int l = 0; l < c.decoder_depth; ++l) {
    const std::string L = t + "layers." + std::to_string(l);
    if (l == 0) {  // skip_first_layer_pe: no positional term and no residual
      queries = attend(L + ".self_attn", queries, queries, queries, nullptr);
    } else {
      Tensor q = ops.add(queries, query_pe);
      queries = attend(L + ".self_attn", q, q, queries, &queries);
    }
    queries = norm(queries, L + ".norm1");
    const bool first_shared = shared && l == 0;  // keys are still the same for every prompt
    // keys + key_pe serves both cross attentions: keys change only at the end of the layer.
    const Tensor k = first_shared ? keys1_pe : ops.add(keys, key_pe);
    Tensor q = ops.add(queries, query_pe);
    queries = norm(attend(L + ".cross_attn_token_to_image", q, k, first_shared ? keys1 : keys, &queries), L + ".norm2");
    Tensor h = ops.linear(queries, w(L + ".mlp.lin1.weight"), &w(L + ".mlp.lin1.bias"), Act::ReLU);
    queries = norm(ops.linear(h, w(L + ".mlp.lin2.weight"), &w(L + ".mlp.lin2.bias"), Act::None, &queries), L + ".norm3");
    q = ops.add(queries, query_pe);
    keys = norm(attend(L + ".cross_attn_image_to_token", k, q, queries, &keys), L + ".norm4");
  }
  {
    Tensor q = ops.add(queries, query_pe), k = ops.add(keys, key_pe);
    queries = norm(attend(t + "final_attn_token_to_image", q, k, keys, &queries), t + "norm_final_attn");
  }

  // ref: MaskDecoder.predict_masks: upscale the image tokens, hypernetwork MLPs per mask token.
  const std::string up = md + "output_upscaling.";
  Tensor x = ops.conv_transpose2x2(keys.view({B, G, G, D}), w(up + "0.weight"), w(up + "0.bias"), Act::None);
  x = ops.layer_norm(x, w(up + "1.weight"), w(up + "1.bias"), 1e-6f, Act::GELU);
  x = ops.conv_transpose2x2(x, w(up + "3.weight"), w(up + "3.bias"), Act::GELU);  // (B, 4G, 4G, D/8)
  const int64_t C8 = x.dim(3);

  auto mlp = [&](const std::string& n, int depth, Tensor h) {
    for (int j = 0; j < depth; ++j) {
      const std::string lj = n + ".layers." + std::to_string(j);
      h = ops.linear(h, w(lj + ".weight"), &w(lj + ".bias"), j < depth - 1 ? Act::ReLU : Act::None);
    }
    return h;
  };
  std::vector<Tensor> hyper;  // M x (B, 1, D/8)
  for (int64_t i = 0; i < M; ++i)
    hyper.push_back(mlp(md + "output_hypernetworks_mlps." + std::to_string(i), 3, ops.slice(queries, 1 + i, 1)));
  Tensor masks = ops.bmm_nt(ops.concat(hyper), x.view({B, 16 * G * G, C8}));  // (B, M, 16 G^2)
  Tensor iou = mlp(md + "iou_prediction_head", c.iou_head_depth, ops.slice(queries, 0, 1)).view({B, M});

  // multimask: masks 1..M-1; otherwise mask 0 alone.
  const int64_t first = multimask_output ? 1 : 0, count = multimask_output ? M - 1 : 1;
  DecoderOutput out;
  out.low_res_masks = ops.slice(masks, first, count).view({B, count, 4 * G, 4 * G});
  out.iou = ops.slice(iou, first, count);
  return out;
}

}  // namespace samfast
