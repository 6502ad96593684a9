// The backend op interface: the model definition (src/model) is written once as calls to these ops.
// Layout convention: activations are channel-last, e.g. image tokens (B, H, W, C) and decoder
// tokens (B, N, C); weights keep PyTorch's layouts ((out, in) for Linear, (out, in, kh, kw) for Conv2d,
// (in, out, kh, kw) for ConvTranspose2d) so that a checkpoint's tensors are used as stored.
// Each op's argument contract is checked by backend/op_checks.h, which every backend calls.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "samfast/rle.h"
#include "samfast/tensor.h"

namespace samfast {

enum class Act { None, GELU, ReLU };  // GELU is the exact erf form, as nn.GELU()

class Ops {
 public:
  virtual ~Ops() = default;
  // A result the backend may still be computing; calling it waits for it and returns it.
  template <class T>
  using Later = std::function<T()>;

  // act(x @ w^T + b) (+ residual): x (..., in), w (out, in), b (out) or null, residual (..., out) or null.
  virtual Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b, Act act = Act::None,
                        const Tensor* residual = nullptr) = 0;
  // act(LayerNorm over the last dim). LayerNorm2d over channels is this op on channel-last data.
  virtual Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                            Act act = Act::None) = 0;
  // {layer_norm(x, w, b, eps), that + pe}: the mask decoder's norms whose output the next attention
  // also takes with the tokens' positional term; pe has x's shape or its trailing shape. This default
  // adds; a backend may write both from one pass.
  virtual std::pair<Tensor, Tensor> layer_norm_pe(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                                                  const Tensor& pe);
  // linear(layer_norm(x, ln_w, ln_b, eps), w, b, act): the encoder blocks' norm1 -> qkv. This
  // default composes the two; a backend may fuse them (the CUDA one does for fp8 weights: the
  // LayerNorm writes the quantised input that the fp8 GEMM reads).
  virtual Tensor layer_norm_linear(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w,
                                   const Tensor* b, Act act = Act::None);
  // x + linear(rel_pos_attention(layer_norm_linear(x, ln_w, ln_b, eps, qkv_w, &qkv_b), qkv_b, rel_pos_h,
  // rel_pos_w, heads, window), proj_w, &proj_b): the encoder blocks' attention half. This default
  // composes them; the CUDA backend's attention writes its output in fp8 for proj's fp8 GEMM, with
  // one scale from a bound on the values (it is their weighted mean), where a pass found each row's.
  virtual Tensor layer_norm_attention(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps,
                                      const Tensor& qkv_w, const Tensor& qkv_b, const Tensor& rel_pos_h,
                                      const Tensor& rel_pos_w, int heads, int window, const Tensor& proj_w,
                                      const Tensor& proj_b);
  // x + linear(GELU(layer_norm_linear(x, ln_w, ln_b, eps, w1, b1)), w2, b2): the encoder blocks' MLP
  // half (norm2 -> lin1 -> GELU -> lin2, plus the residual). This default composes them; the CUDA
  // backend keeps the hidden layer in fp8 between its two fp8 GEMMs.
  virtual Tensor layer_norm_mlp(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w1,
                                const Tensor& b1, const Tensor& w2, const Tensor& b2);
  // At load, once for each LayerNorm and the Linear layer after it that layer_norm_attention (qkv) or
  // layer_norm_mlp (lin1) will take, the weights as uploaded: a backend may precompute what depends
  // on them alone (the CUDA one: fp8's activation scales). The default keeps nothing.
  virtual void prepare_layer_norm_linear(const Tensor& ln_w, const Tensor& ln_b, const Tensor& w, const Tensor& b) {
    (void)ln_w, (void)ln_b, (void)w, (void)b;
  }
  // Conv2d on channel-last x (B, H, W, Cin) with w (Cout, Cin, kh, kw) -> (B, Ho, Wo, Cout).
  virtual Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad) = 0;
  // The image encoder's patch embedding (ref: PatchEmbed): a Conv2d whose stride is its kernel
  // (w (Cout, C, p, p)), no padding, on channel-first pixels x (B, C, H, W) -> channel-last
  // (B, H / p, W / p, Cout), plus pos (1, H / p, W / p, Cout) where given (the encoder's position
  // embedding, ref: ImageEncoderViT.forward). This default transposes x, runs conv2d and adds; a
  // backend may gather the patches from the channel-first pixels directly.
  virtual Tensor patch_embed(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor* pos);
  // ConvTranspose2d with kernel 2, stride 2: x (B, H, W, Cin), w (Cin, Cout, 2, 2) -> (B, 2H, 2W, Cout).
  virtual Tensor conv_transpose2x2(const Tensor& x, const Tensor& w, const Tensor& b, Act act) = 0;
  // a + b, where b has a's shape or a's trailing shape (broadcast over leading dims).
  virtual Tensor add(const Tensor& a, const Tensor& b) = 0;
  // (B, C, H, W) -> (B, H, W, C) and back.
  virtual Tensor nchw_to_nhwc(const Tensor& x) = 0;
  virtual Tensor nhwc_to_nchw(const Tensor& x) = 0;
  // The image encoder's input from the bytes of resized RGB images (ref: Sam.preprocess): rgb
  // (B, S, S, 3) uint8, each image in its top-left corner; extent (B, 2, S) uint8, extent[b, 0, y]
  // and extent[b, 1, x] 1 where row y and column x lie inside image b. ->
  // (rgb - mean) / std in fp32 (subtract, then divide, as torch) inside, 0 outside (upstream pads
  // after normalising), channel-first (B, 3, S, S) as patch_embed takes it. Host inputs: a GPU
  // receives a quarter of the bytes of the fp32 input.
  virtual Tensor normalize_rgb(const Tensor& rgb, const Tensor& extent, const std::array<float, 3>& mean,
                               const std::array<float, 3>& stdev) = 0;

  // Image-encoder attention with decomposed relative position (ref: modeling/image_encoder.py
  // Attention + window_partition). qkv (B, H, W, 3C) from the qkv Linear on unpadded tokens;
  // window > 0: attention inside window x window tiles, the grid zero-padded to a multiple of the
  // window after norm1 as upstream does, so padded tokens act as keys with k = v = bias
  // (qkv_bias (3C)); window == 0: global attention. Returns (B, H, W, C).
  virtual Tensor rel_pos_attention(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                                   const Tensor& rel_pos_w, int heads, int window) = 0;
  // Multi-head attention on projected q (B, Nq, D), k, v (B, Nk, D) -> (B, Nq, D),
  // softmax(q k^T / sqrt(D / heads)) v per head (ref: modeling/transformer.py Attention).
  // q, or k and v together, may have a batch of 1, shared by all B items of the other.
  virtual Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) = 0;
  // The mask decoder's self-attention of the prompt tokens up to its output projection (ref:
  // modeling/transformer.py Attention.forward): attention(linear(x, wq, bq), linear(x, wk, bk),
  // linear(x_v, wv, bv), heads). x, x_v (B, N, D); wq, wk, wv (C, D); bq, bk, bv (C) -> (B, N, C).
  // This default composes them; a backend may compute a (prompt, head)'s projections and attention
  // in one block (three small dependent kernels a layer fewer).
  virtual Tensor token_self_attention(const Tensor& x, const Tensor& x_v, const Tensor& wq, const Tensor& bq,
                                      const Tensor& wk, const Tensor& bk, const Tensor& wv, const Tensor& bv,
                                      int heads);
  // Image tokens attending to a few prompt tokens, the attention's four projections folded into
  // per-prompt keys, key biases and values (mask_decoder.cpp derives them), then the residual and
  // a LayerNorm, as one op so that a GPU reads and writes each image token once:
  //   out[b, t] = LayerNorm(residual[b, t] + bias + sum_h sum_n p[b, t, h, n] v[b, n, h, :]),
  //   p[b, t, h, :] = softmax_n(x[b, t] . k[b, n, h, :] + kb[b, n, h]).
  // x, residual (B or 1, T, D); k, v (B, N, heads * D); kb (B, N, heads); bias, ln_w, ln_b (D).
  // Returns (B, T, D).
  virtual Tensor image_to_token_attention(const Tensor& x, const Tensor& k, const Tensor& kb, const Tensor& v,
                                          const Tensor& bias, const Tensor& residual, const Tensor& ln_w,
                                          const Tensor& ln_b, float eps, int heads) = 0;
  // The same, with its output + key_pe (1, T, D) beside it (the next attention's keys + PE): {out,
  // out + key_pe}. This default adds; a backend may write both from one pass.
  virtual std::pair<Tensor, Tensor> image_to_token_attention_pe(const Tensor& x, const Tensor& k, const Tensor& kb,
                                                                const Tensor& v, const Tensor& bias,
                                                                const Tensor& residual, const Tensor& ln_w,
                                                                const Tensor& ln_b, float eps, int heads,
                                                                const Tensor& key_pe);
  // MaskDecoder.predict_masks' output upscaling and hypernetwork product:
  //   x = GELU(LayerNorm2d(ConvTranspose2d_2x2(keys; w1, b1); ln_w, ln_b, eps))
  //   x = GELU(ConvTranspose2d_2x2(x; w2, b2)),  masks[b, m] = hyper[b, m] . x[b] per pixel.
  // keys (B, G, G, D), w1 (D, C1, 2, 2), w2 (C1, C2, 2, 2), hyper (B, M, C2) -> (B, M, 4G, 4G).
  // This default composes the ops above; a backend may fuse it.
  virtual Tensor upscale_masks(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w,
                               const Tensor& ln_b, float eps, const Tensor& w2, const Tensor& b2, const Tensor& hyper);
  // The weight (out, in) of a Linear layer that carries most of the model's work (the image encoder
  // blocks'), uploaded, in the form linear() takes it: by default itself; a backend computing those
  // layers in fp8 returns it quantised.
  virtual Tensor prepare_bulk_linear(const Tensor& w) { return w; }
  // The model's weights in one allocation, made at load: weight_bytes(host, bulk) is what
  // upload_weight(host, bulk) takes of it (bulk: a weight for prepare_bulk_linear), reserve_weights
  // makes it for their sum, and upload_weight then fills it in turn. The defaults make no such
  // allocation.
  virtual size_t weight_bytes(const Tensor& host, bool bulk) const {
    (void)host, (void)bulk;
    return 0;
  }
  virtual void reserve_weights(size_t bytes) { (void)bytes; }
  virtual Tensor upload_weight(const Tensor& host, bool bulk) {
    Tensor t = upload(host);
    return bulk ? prepare_bulk_linear(t) : t;
  }
  // Batched a (B, M, K) @ b(B, N, K)^T -> (B, M, N).
  virtual Tensor bmm_nt(const Tensor& a, const Tensor& b) = 0;

  // Sam.postprocess_masks on low-res logits (B, C, L, L): bilinear (align_corners=False) to
  // (img_size, img_size), crop to input_size, bilinear to original_size -> (B, C, H, W) fp32 logits,
  // or uint8 0/1 when binarize (logit > 0). ref: modeling/sam.py postprocess_masks.
  virtual Tensor postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                                   std::pair<int, int> original_size, bool binarize) = 0;

  // Full-resolution measures of mask planes for the automatic mask generator, computed without
  // storing the full-resolution logits. low_res: (N, L, L) logits; each plane is upsampled exactly as
  // postprocess_masks does to `size`. Per plane: the count of logits > hi and > lo (the stability
  // score's intersection and union; on the CPU the per-row counts wrap to int16 as upstream's do) and
  // the inclusive box (x0, y0, x1, y1) of logits > thr, all zeros for an empty mask.
  // (Returned as a Later: see download_later.)
  struct MaskStats {
    std::vector<int32_t> above_hi, above_lo;
    std::vector<std::array<int, 4>> box;
  };
  virtual Later<MaskStats> mask_stats(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                               std::pair<int, int> size, float thr, float hi, float lo) = 0;
  // COCO-layout RLEs of the binary masks (logit > thr) of low_res (N, L, L) upsampled to `size`
  // (h, w) and placed at (x0, y0) of a frame_size (H, W) image of zeros (upstream's uncrop_masks).
  virtual std::vector<Rle> mask_rles(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                                     std::pair<int, int> size, float thr, std::pair<int, int> offset_xy,
                                     std::pair<int, int> frame_size) = 0;
  // Planes x[select[i]] of x (N, ...) -> (select.size(), ...), in backend memory.
  virtual Tensor gather(const Tensor& x, const std::vector<int64_t>& select) = 0;

  // Layout and movement.
  // Elements [first, first + count) of dim 1 of x (B, N, ...) -> (B, count, ...).
  virtual Tensor slice(const Tensor& x, int64_t first, int64_t count) = 0;
  // Tensors (B, n_i, ...) with equal other dims, joined along dim 1.
  virtual Tensor concat(const std::vector<Tensor>& xs) = 0;
  // x (1, ...) repeated to (batch, ...).
  virtual Tensor expand_batch(const Tensor& x, int64_t batch) = 0;
  // Host fp32 tensor -> this backend's memory and compute precision (weights, prompts, images). A
  // backend tensor comes back as it is, or, from another backend on the same device in another
  // precision (the image encoder's, where the decoder computes in its own), converted.
  virtual Tensor upload(const Tensor& host) = 0;
  // This backend's tensor -> host fp32 tensor (waits for the work that produces x).
  virtual Tensor download(const Tensor& x) = 0;
  // The same, returned as a Later: calling it waits for x alone, not for work queued after this
  // call, so the host can queue the next work first (a CPU backend's result is ready at once).
  virtual Later<Tensor> download_later(const Tensor& x) {
    Tensor host = download(x);
    return [host] { return host; };
  }
  // Waits until all work queued so far has finished (device backends run asynchronously).
  virtual void synchronize() {}
  // A pure device computation that a backend may record once and replay (CUDA graphs: one launch
  // instead of hundreds). fn must read nothing but its inputs and the model's weights, allocate only
  // through this backend, queue only device work (no uploads, downloads or host synchronisation),
  // and return backend tensors. `inputs` are backend tensors or host fp32 tensors, which are uploaded
  // first (on a replay straight into the recording's own input buffer: no extra copy). `key` names
  // the computation; the backend adds the inputs' shapes. Returns tensors the caller owns. The
  // default uploads and runs fn.
  using Computation = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
  virtual std::vector<Tensor> run_recorded(const std::string& key, const std::vector<Tensor>& inputs,
                                           const Computation& fn) {
    (void)key;
    std::vector<Tensor> dev;
    for (const Tensor& t : inputs) dev.push_back(t.on_host() ? upload(t) : t);
    return fn(dev);
  }
  // Lanes: computations that may run at the same time. run_recorded_on_lane with lane l >= 1 (of
  // lanes()) is run_recorded, except that a backend may run it beside the work queued after it and
  // other lanes' until join_lanes(), which orders all later work after it. In between, its outputs
  // must not be read, nor its inputs written (the backend keeps both alive). Lane 0, and a backend
  // with one lane, run it in order (the defaults).
  virtual int lanes() const { return 1; }
  virtual std::vector<Tensor> run_recorded_on_lane(int lane, const std::string& key, const std::vector<Tensor>& inputs,
                                                   const Computation& fn) {
    (void)lane;
    return run_recorded(key, inputs, fn);
  }
  virtual void join_lanes() {}
  // The most memory this backend has held at once (device memory for a GPU; 0 where not tracked).
  virtual int64_t peak_memory_bytes() const { return 0; }
  // Device memory by use (0 where not tracked): the weights' allocation and how much of it
  // upload_weight has filled, the arena of the recorded computations (CUDA graphs) and how many
  // recorded computations replay with their buffers in it.
  struct MemoryUse {
    int64_t weights = 0, weights_filled = 0, graph_arena = 0, graphs_in_arena = 0;
  };
  virtual MemoryUse memory_use() const { return {}; }
};

}  // namespace samfast
