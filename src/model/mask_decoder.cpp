// ref: segment_anything/modeling/mask_decoder.py MaskDecoder, modeling/transformer.py TwoWayTransformer
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <tuple>
#include <unordered_map>

#include "backend/ops.h"
#include "samfast/error.h"
#include "samfast/model.h"

namespace samfast {

constexpr int kHypernetworkDepth = 3;  // ref: MaskDecoder's output_hypernetworks_mlps, MLP(..., 3)
constexpr int64_t kPromptsPerImageAlone = 12;  // (decode_per_image)

// The cross attentions' projections multiplied together, so that the decoder never projects the
// G*G image tokens of every prompt (ref: modeling/transformer.py Attention). Per head h, with the
// head's rows q_h, k_h, v_h of the q/k/v projections, its columns o_h of out_proj, and s = 1/sqrt(dh):
//  - token to image (queries q_n attend to image tokens x_t + pe_t, averaging the x_t):
//      score = s (Wq_h q + bq_h) . (Wk_h x + bk_h) = x . Q_hn + const, Q_hn = s Wk_h^T (Wq_h q + bq_h)
//      (the const does not depend on t and cancels in the softmax); the output
//      Wo (concat_h Wv_h (sum_t p_t x_t) + bv) + bo = sum_h (Wo_h Wv_h) Y_hn + (Wo bv + bo).
//    folded.q = [s Wk_h^T Wq_h]_h (heads*D, D) with bias [s Wk_h^T bq_h]_h, scaled by sqrt(D) because
//    ops.attention with one head divides by sqrt(D); folded.out = [Wo_h Wv_h]_h (D, heads*D).
//  - image to token (image tokens attend to the prompt tokens k_n, averaging the v_n):
//      score = x . K_hn + c_hn with K_hn = s Wq_h^T (Wk_h k_n + bk_h), c_hn = s bq_h . (Wk_h k_n + bk_h),
//      output bo + sum_h sum_n p_hn V_hn with V_hn = Wo_h (Wv_h v_n + bv_h).
//    folded.k (heads*D, D), folded.kb (heads, D), folded.v (heads*D, D), each with its bias.
// Products in double, rounded once to fp32.
std::vector<std::pair<std::string, Tensor>> Model::folded_decoder_weights() const {
  std::vector<std::pair<std::string, Tensor>> out;
  const std::string t = "mask_decoder.transformer.";
  const int64_t D = cfg_.prompt_embed_dim, H = cfg_.decoder_heads;
  // r[h] = sum over head h's internal channels c of a[c] (x) b[c] (a, b: (Di, A), (Di, Bn) -> (A, Bn)),
  // or with a_col: a given as columns of a (A, Di) matrix.
  auto fold = [&](const std::string& name, int64_t rows, int64_t cols, const std::function<double(int64_t, int64_t, int64_t)>& term,
                  int64_t per_head) {
    Tensor r = Tensor::empty({H * rows, cols});
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
          double acc = 0;
          for (int64_t c = h * per_head; c < (h + 1) * per_head; ++c) acc += term(c, i, j);
          r.data[(h * rows + i) * cols + j] = (float)acc;
        }
    out.emplace_back(name, rows == 1 ? r.view({H, cols}) : r);
  };
  auto attn = [&](const std::string& n, bool token_to_image) {
    const Tensor &wq = hw(n + ".q_proj.weight"), &bq = hw(n + ".q_proj.bias"), &wk = hw(n + ".k_proj.weight"),
                 &bk = hw(n + ".k_proj.bias"), &wv = hw(n + ".v_proj.weight"), &bv = hw(n + ".v_proj.bias"),
                 &wo = hw(n + ".out_proj.weight"), &bo = hw(n + ".out_proj.bias");
    const int64_t Di = wq.dim(0), dh = Di / H;
    const double s = 1.0 / std::sqrt((double)dh);
    auto W = [](const Tensor& m, int64_t r, int64_t c) { return (double)m.data[r * m.dim(1) + c]; };
    auto vec = [](const Tensor& v, int64_t i) { return (double)v.data[i]; };
    if (token_to_image) {
      const double sq = s * std::sqrt((double)D);
      fold(n + ".folded.q.weight", D, D, [&](int64_t c, int64_t j, int64_t i) { return sq * W(wk, c, j) * W(wq, c, i); }, dh);
      fold(n + ".folded.q.bias", D, 1, [&](int64_t c, int64_t j, int64_t) { return sq * W(wk, c, j) * vec(bq, c); }, dh);
      out.back().second = out.back().second.view({H * D});
      // out (D, H*D): row o, column block h = Wo_h Wv_h; built transposed-free below.
      Tensor fo = Tensor::empty({D, H * D}), fb = Tensor::empty({D});
      for (int64_t o = 0; o < D; ++o) {
        double b = vec(bo, o);
        for (int64_t c = 0; c < Di; ++c) b += W(wo, o, c) * vec(bv, c);
        fb.data[o] = (float)b;
        for (int64_t h = 0; h < H; ++h)
          for (int64_t j = 0; j < D; ++j) {
            double acc = 0;
            for (int64_t c = h * dh; c < (h + 1) * dh; ++c) acc += W(wo, o, c) * W(wv, c, j);
            fo.data[o * H * D + h * D + j] = (float)acc;
          }
      }
      out.emplace_back(n + ".folded.out.weight", fo);
      out.emplace_back(n + ".folded.out.bias", fb);
    } else {
      fold(n + ".folded.k.weight", D, D, [&](int64_t c, int64_t i, int64_t j) { return s * W(wq, c, i) * W(wk, c, j); }, dh);
      fold(n + ".folded.k.bias", D, 1, [&](int64_t c, int64_t i, int64_t) { return s * W(wq, c, i) * vec(bk, c); }, dh);
      out.back().second = out.back().second.view({H * D});
      fold(n + ".folded.kb.weight", 1, D, [&](int64_t c, int64_t, int64_t j) { return s * vec(bq, c) * W(wk, c, j); }, dh);
      fold(n + ".folded.kb.bias", 1, 1, [&](int64_t c, int64_t, int64_t) { return s * vec(bq, c) * vec(bk, c); }, dh);
      out.back().second = out.back().second.view({H});
      fold(n + ".folded.v.weight", D, D, [&](int64_t c, int64_t o, int64_t j) { return W(wo, o, c) * W(wv, c, j); }, dh);
      fold(n + ".folded.v.bias", D, 1, [&](int64_t c, int64_t o, int64_t) { return W(wo, o, c) * vec(bv, c); }, dh);
      out.back().second = out.back().second.view({H * D});
    }
  };
  for (int l = 0; l < cfg_.decoder_depth; ++l) {
    attn(t + "layers." + std::to_string(l) + ".cross_attn_token_to_image", true);
    attn(t + "layers." + std::to_string(l) + ".cross_attn_image_to_token", false);
  }
  attn(t + "final_attn_token_to_image", true);

  // The output heads (ref: MaskDecoder.predict_masks): the hypernetwork MLP of each mask token, and
  // the IoU head when it is as deep (3 layers, as in every released model), as one MLP whose layers
  // are block-diagonal: layer j's weight holds each head's layer j on the diagonal (tokens side by
  // side in, outputs side by side out; the IoU head first). One GEMM a layer for all the heads
  // instead of one a head, and the hypernetwork outputs come out as the (B, M, D / 8) the upscaling
  // takes. The zero blocks add exact zeros.
  const int64_t M = cfg_.num_multimask_outputs + 1, depth = kHypernetworkDepth;
  std::vector<std::string> heads;
  if (cfg_.iou_head_depth == depth) heads.push_back("mask_decoder.iou_prediction_head");
  for (int64_t i = 0; i < M; ++i) heads.push_back("mask_decoder.output_hypernetworks_mlps." + std::to_string(i));
  for (int64_t j = 0; j < depth; ++j) {
    const std::string lj = ".layers." + std::to_string(j);
    int64_t rows = 0, cols = 0;
    for (const std::string& h : heads) rows += hw(h + lj + ".weight").dim(0), cols += hw(h + lj + ".weight").dim(1);
    Tensor wd = Tensor::zeros({rows, cols}), bd = Tensor::empty({rows});
    int64_t r0 = 0, c0 = 0;
    for (const std::string& h : heads) {
      const Tensor &wh = hw(h + lj + ".weight"), &bh = hw(h + lj + ".bias");
      for (int64_t r = 0; r < wh.dim(0); ++r) {
        std::memcpy(wd.data + (r0 + r) * cols + c0, wh.data + r * wh.dim(1), sizeof(float) * wh.dim(1));
        bd.data[r0 + r] = bh.data[r];
      }
      r0 += wh.dim(0), c0 += wh.dim(1);
    }
    out.emplace_back("mask_decoder.output_heads" + lj + ".weight", wd);
    out.emplace_back("mask_decoder.output_heads" + lj + ".bias", bd);
  }
  return out;
}

DecoderOutput Model::decode_masks(const Tensor& embeddings, const std::vector<int64_t>& image_of_prompt,
                                  const PromptEmbeddings& prompts, bool multimask_output) const {
  const int64_t B = prompts.sparse.ndim() == 3 ? prompts.sparse.dim(0) : -1;
  if (embeddings.ndim() != 4 || (int64_t)image_of_prompt.size() != B)
    throw Error("decode_masks: " + std::to_string(image_of_prompt.size()) + " image indices for " + std::to_string(B) +
                " prompts, embeddings " + shape_str(embeddings.shape));
  for (size_t b = 0; b < image_of_prompt.size(); ++b)
    if (image_of_prompt[b] < 0 || image_of_prompt[b] >= embeddings.dim(0))
      throw Error("decode_masks: prompt " + std::to_string(b) + " names image " + std::to_string(image_of_prompt[b]) +
                  ", but there are " + std::to_string(embeddings.dim(0)) + " images");
  // Prompts of one image keep its embedding a batch of 1 (the decoder then shares work across them).
  const int64_t first = image_of_prompt.empty() ? 0 : image_of_prompt[0];
  if (std::all_of(image_of_prompt.begin(), image_of_prompt.end(), [&](int64_t i) { return i == first; }))
    return decode_masks(embeddings.dim(0) == 1 ? embeddings : ops_->gather(embeddings, {first}), prompts,
                        multimask_output);
  // Several images with many prompts each: one decode an image (decode_per_image). With few, one
  // batched decode of each prompt's image embedding: the decoder has no per-image state beyond it.
  std::vector<int64_t> images = image_of_prompt;
  std::sort(images.begin(), images.end());
  images.erase(std::unique(images.begin(), images.end()), images.end());
  if ((int64_t)image_of_prompt.size() >= kPromptsPerImageAlone * (int64_t)images.size())
    return decode_per_image(embeddings, image_of_prompt, prompts, multimask_output);
  return decode_masks(ops_->gather(embeddings, image_of_prompt), prompts, multimask_output);
}

// One decode per image, each on the backend's next lane (side streams on a GPU, Ops::lanes), then
// the outputs joined in prompt order. A decode of one image's prompts shares the image's first
// layer among them and keeps its image tokens in the GPU's L2 (16 prompts' are ~34 MB in fp16),
// where the batched form gathers every prompt's embedding and streams them all through memory; a
// decode's token path, ~45 small dependent kernels, runs beside another image's image-token
// kernels. It has a fixed cost the batched form pays once: on an H100 (vit_b fp8, 8 images) the
// batched form is faster at 8 prompts an image, level at 12 and slower at 16 (BENCHMARKS.md), hence
// kPromptsPerImageAlone prompts an image on average.
DecoderOutput Model::decode_per_image(const Tensor& embeddings, const std::vector<int64_t>& image_of_prompt,
                                      const PromptEmbeddings& prompts, bool multimask_output) const {
  Ops& ops = *ops_;
  const int64_t B = (int64_t)image_of_prompt.size(), Ns = prompts.sparse.dim(1), D = prompts.sparse.dim(2);
  // The prompts of each image, the images in the order they first appear.
  std::vector<int64_t> run_images;
  std::vector<std::vector<int64_t>> run_prompts;
  std::unordered_map<int64_t, size_t> run_of;
  for (int64_t b = 0; b < B; ++b) {
    auto [it, added] = run_of.emplace(image_of_prompt[b], run_images.size());
    if (added) run_images.push_back(image_of_prompt[b]), run_prompts.emplace_back();
    run_prompts[it->second].push_back(b);
  }
  std::vector<int64_t> order;  // prompts in decode order
  for (const std::vector<int64_t>& r : run_prompts) order.insert(order.end(), r.begin(), r.end());
  const bool dense_per_prompt = prompts.dense.dim(0) != 1;
  std::vector<Tensor> masks, ious;
  try {
    for (size_t r = 0; r < run_images.size(); ++r) {
      const std::vector<int64_t>& mine = run_prompts[r];
      const int64_t n = (int64_t)mine.size();
      PromptEmbeddings p;
      p.sparse = Tensor::empty({n, Ns, D});
      for (int64_t k = 0; k < n; ++k)
        std::memcpy(p.sparse.data + k * Ns * D, prompts.sparse.data + mine[k] * Ns * D, sizeof(float) * Ns * D);
      p.dense = dense_per_prompt ? ops.gather(prompts.dense, mine) : prompts.dense;
      Shape one = embeddings.shape;
      one[0] = 1;
      const DecoderOutput d =
          decode_on_lane(embeddings.item(run_images[r]).view(one), p, multimask_output, int(r % size_t(ops.lanes())));
      masks.push_back(d.low_res_masks), ious.push_back(d.iou);
    }
    ops.join_lanes();
  } catch (...) {
    try {
      ops.join_lanes();  // (lanes' work must end while what it reads lives)
    } catch (...) {
    }
    throw;
  }
  // Joined along dim 0 (as one row each for concat), then back in prompt order.
  auto join = [&](std::vector<Tensor>& parts) {
    Shape shape = parts[0].shape;
    shape[0] = B;
    for (Tensor& t : parts) t = t.view({1, t.numel()});
    return ops.concat(parts).view(shape);
  };
  DecoderOutput out{join(masks), join(ious)};
  std::vector<int64_t> position(B);
  bool in_order = true;
  for (int64_t k = 0; k < B; ++k) position[order[k]] = k, in_order = in_order && order[k] == k;
  if (!in_order) out = {ops.gather(out.low_res_masks, position), ops.gather(out.iou, position)};
  return out;
}

DecoderOutput Model::decode_masks(const Tensor& embedding, const PromptEmbeddings& prompts, bool multimask_output) const {
  return decode_on_lane(embedding, prompts, multimask_output, 0);
}

DecoderOutput Model::decode_on_lane(const Tensor& embedding, const PromptEmbeddings& prompts, bool multimask_output,
                                    int lane) const {
  if (!prompts.sparse.defined() || !prompts.dense.defined())
    throw InvalidArgument("decode_masks: the prompt embeddings are not made (Model::encode_prompts makes them)");
  Ops& ops = *ops_;
  const SamConfig& c = cfg_;
  const int64_t B = prompts.sparse.dim(0), Ns = prompts.sparse.dim(1), D = c.prompt_embed_dim, G = c.grid();
  const int64_t M = c.num_multimask_outputs + 1;
  if (embedding.ndim() != 4 || embedding.dim(1) != G || embedding.dim(2) != G || embedding.dim(3) != D ||
      (embedding.dim(0) != 1 && embedding.dim(0) != B))
    throw Error("decode_masks: image embedding " + shape_str(embedding.shape) + " does not fit " + std::to_string(B) + " prompts");
  const std::string md = "mask_decoder.";

  // Tokens (B, 1 + M + Ns, D): the IoU token, the mask tokens, then the prompt's sparse embedding.
  const int64_t N = 1 + M + Ns;
  Tensor host_tokens = Tensor::empty({B, N, D});
  for (int64_t b = 0; b < B; ++b) {
    float* dst = host_tokens.data + b * N * D;
    std::memcpy(dst, hw(md + "iou_token.weight").data, sizeof(float) * D);
    std::memcpy(dst + D, hw(md + "mask_tokens.weight").data, sizeof(float) * M * D);
    std::memcpy(dst + (1 + M) * D, prompts.sparse.data + b * Ns * D, sizeof(float) * Ns * D);
  }
  try {
    const std::vector<Tensor> out = ops.run_recorded_on_lane(
        lane, multimask_output ? "mask_decoder multimask" : "mask_decoder", {host_tokens, embedding, prompts.dense},
        [&](const std::vector<Tensor>& in) {
          DecoderOutput d = decode_tokens(in[0], in[1], in[2], multimask_output);
          return std::vector<Tensor>{d.low_res_masks, d.iou};
        });
    return DecoderOutput{out[0], out[1]};
  } catch (const OutOfMemory& e) {  // say which batch asked for it
    throw OutOfMemory("mask decoder at " + std::to_string(B) + " prompts per batch: " + e.what());
  }
}

DecoderOutput Model::decode_tokens(const Tensor& tokens, const Tensor& embedding, const Tensor& dense,
                                   bool multimask_output) const {
  Ops& ops = *ops_;
  const SamConfig& c = cfg_;
  const int64_t B = tokens.dim(0), N = tokens.dim(1), D = c.prompt_embed_dim, G = c.grid();
  const int64_t M = c.num_multimask_outputs + 1, heads = c.decoder_heads;
  const std::string md = "mask_decoder.", t = md + "transformer.";
  // Image tokens (B, G*G, D): the embedding plus the dense prompt embedding. Without mask prompts
  // they start the same for every prompt, and stay a batch of 1 until the first layer updates them.
  const bool dense_full = dense.numel() == B * G * G * D;
  Tensor keys = dense_full ? ops.add(dense, embedding) : ops.add(embedding, dense);
  keys = keys.view({keys.dim(0), G * G, D});
  const Tensor key_pe = dense_pe_.view({1, G * G, D});

  // Self-attention of the prompt tokens, with its projections; out = residual + out_proj(attn).
  auto self_attend = [&](const std::string& n, const Tensor& q, const Tensor& v, const Tensor* residual) {
    Tensor o = ops.token_self_attention(q, v, w(n + ".q_proj.weight"), w(n + ".q_proj.bias"), w(n + ".k_proj.weight"),
                                        w(n + ".k_proj.bias"), w(n + ".v_proj.weight"), w(n + ".v_proj.bias"),
                                        (int)heads);
    return ops.linear(o, w(n + ".out_proj.weight"), &w(n + ".out_proj.bias"), Act::None, residual);
  };
  // Prompt tokens attending to the image tokens (folded, see folded_decoder_weights): one query of
  // width D per (token, head), scored against image tokens + PE and averaging the image tokens
  // themselves, so that no projection of the G*G image tokens is ever computed.
  auto token_to_image = [&](const std::string& n, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& residual) {
    Tensor qf = ops.linear(q, w(n + ".folded.q.weight"), &w(n + ".folded.q.bias")).view({B, N * heads, D});
    Tensor y = ops.attention(qf, k, v, 1).view({B, N, heads * D});
    return ops.linear(y, w(n + ".folded.out.weight"), &w(n + ".folded.out.bias"), Act::None, &residual);
  };
  auto norm = [&](const Tensor& x, const std::string& n) {
    return ops.layer_norm(x, w(n + ".weight"), w(n + ".bias"), 1e-5f);  // nn.LayerNorm default eps
  };

  // ref: TwoWayTransformer.forward / TwoWayAttentionBlock.forward
  const Tensor& query_pe = tokens;
  // {norm(x), norm(x) + query_pe}
  auto norm_pe = [&](const Tensor& x, const std::string& n) {
    return ops.layer_norm_pe(x, w(n + ".weight"), w(n + ".bias"), 1e-5f, query_pe);
  };
  Tensor queries = tokens;
  Tensor keys_pe;  // keys + key_pe, once an image-to-token attention has written it beside keys
  auto keys_plus_pe = [&] { return keys_pe.defined() ? keys_pe : ops.add(keys, key_pe); };
  // queries + query_pe from a layer's norm3: the image-to-token attention's queries, and the next
  // layer's self-attention's (or the final attention's), the queries not changing in between.
  Tensor queries_pe;
  for (int l = 0; l < c.decoder_depth; ++l) {
    const std::string L = t + "layers." + std::to_string(l);
    if (l == 0)  // skip_first_layer_pe: no positional term and no residual
      queries = self_attend(L + ".self_attn", queries, queries, nullptr);
    else
      queries = self_attend(L + ".self_attn", queries_pe, queries, &queries);
    Tensor q;  // queries + query_pe
    std::tie(queries, q) = norm_pe(queries, L + ".norm1");
    // keys + key_pe serves both cross attentions: keys change only at the end of the layer.
    const Tensor k = keys_plus_pe();
    queries = norm(token_to_image(L + ".cross_attn_token_to_image", q, k, keys, queries), L + ".norm2");
    Tensor h = ops.linear(queries, w(L + ".mlp.lin1.weight"), &w(L + ".mlp.lin1.bias"), Act::ReLU);
    std::tie(queries, queries_pe) =
        norm_pe(ops.linear(h, w(L + ".mlp.lin2.weight"), &w(L + ".mlp.lin2.bias"), Act::None, &queries), L + ".norm3");
    // Image tokens attending to the prompt tokens (folded into per-prompt keys and values), + norm4.
    const std::string A = L + ".cross_attn_image_to_token";
    Tensor kf = ops.linear(queries_pe, w(A + ".folded.k.weight"), &w(A + ".folded.k.bias"));
    Tensor kb = ops.linear(queries_pe, w(A + ".folded.kb.weight"), &w(A + ".folded.kb.bias"));
    Tensor vf = ops.linear(queries, w(A + ".folded.v.weight"), &w(A + ".folded.v.bias"));
    std::tie(keys, keys_pe) = ops.image_to_token_attention_pe(k, kf, kb, vf, w(A + ".out_proj.bias"), keys,
                                                              w(L + ".norm4.weight"), w(L + ".norm4.bias"), 1e-5f,
                                                              (int)heads, key_pe);
  }
  {
    Tensor q = queries_pe.defined() ? queries_pe : ops.add(queries, query_pe), k = keys_plus_pe();
    queries = norm(token_to_image(t + "final_attn_token_to_image", q, k, keys, queries), t + "norm_final_attn");
  }
  if (keys.dim(0) != B) keys = ops.expand_batch(keys, B);  // decoder_depth 0

  // ref: MaskDecoder.predict_masks: hypernetwork MLPs per mask token, upscaled image tokens.
  auto mlp = [&](const std::string& n, int depth, Tensor h) {
    for (int j = 0; j < depth; ++j) {
      const std::string lj = n + ".layers." + std::to_string(j);
      h = ops.linear(h, w(lj + ".weight"), &w(lj + ".bias"), j < depth - 1 ? Act::ReLU : Act::None);
    }
    return h;
  };
  // multimask: masks 1..M-1; otherwise mask 0 alone. Only those are upscaled.
  const int64_t first = multimask_output ? 1 : 0, count = multimask_output ? M - 1 : 1;
  // The heads as one block-diagonal MLP over their tokens side by side (folded_decoder_weights): the
  // IoU head's M outputs first when it joins, then the hypernetworks' M x D/8.
  const bool iou_joins = c.iou_head_depth == kHypernetworkDepth;
  const int64_t token0 = iou_joins ? 0 : 1, ntokens = 1 + M - token0, hyper0 = iou_joins ? M : 0;
  Tensor out_heads =
      mlp(md + "output_heads", kHypernetworkDepth, ops.slice(queries, token0, ntokens).view({B, ntokens * D}));
  DecoderOutput out;
  out.iou = ops.slice(iou_joins ? out_heads
                                : mlp(md + "iou_prediction_head", c.iou_head_depth, ops.slice(queries, 0, 1)).view({B, M}),
                      first, count);
  const Tensor hyper = ops.slice(out_heads, hyper0 + first * (D / 8), count * (D / 8)).view({B, count, D / 8});
  const std::string up = md + "output_upscaling.";
  out.low_res_masks = ops.upscale_masks(keys.view({B, G, G, D}), w(up + "0.weight"), w(up + "0.bias"),
                                        w(up + "1.weight"), w(up + "1.bias"), 1e-6f, w(up + "3.weight"),
                                        w(up + "3.bias"), hyper);
  return out;
}

}  // namespace samfast
