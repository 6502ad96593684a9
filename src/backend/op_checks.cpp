#include "backend/op_checks.h"

#include <algorithm>
#include <string>

#include "samfast/error.h"

namespace samfast {
namespace {

void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

std::string size_str(int h, int w) { return std::to_string(h) + "x" + std::to_string(w); }

}  // namespace

void check_linear(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor* residual) {
  check(x.ndim() >= 1 && w.ndim() == 2 && x.dim(-1) == w.dim(1), "linear",
        "input " + shape_str(x.shape) + " vs weight " + shape_str(w.shape));
  if (b) check(b->numel() == w.dim(0), "linear", "bias " + shape_str(b->shape) + " for weight " + shape_str(w.shape));
  if (residual) {
    Shape ys = x.shape;
    ys.back() = w.dim(0);
    check(residual->numel() == numel_of(ys), "linear", "residual shape " + shape_str(residual->shape));
  }
}

void check_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b) {
  check(x.ndim() >= 1 && w.numel() == x.dim(-1) && b.numel() == x.dim(-1), "layer_norm",
        "input " + shape_str(x.shape) + " vs weight " + shape_str(w.shape));
}

void check_conv2d(const Tensor& x, const Tensor& w, int stride, int pad) {
  check(x.ndim() == 4 && w.ndim() == 4 && w.dim(1) == x.dim(3) && stride > 0 && pad >= 0, "conv2d",
        "input " + shape_str(x.shape) + " vs weight " + shape_str(w.shape));
  const int64_t Ho = (x.dim(1) + 2 * pad - w.dim(2)) / stride + 1, Wo = (x.dim(2) + 2 * pad - w.dim(3)) / stride + 1;
  check(Ho > 0 && Wo > 0, "conv2d", "kernel larger than input " + shape_str(x.shape));
}

void check_conv_transpose2x2(const Tensor& x, const Tensor& w, const Tensor& b) {
  check(x.ndim() == 4 && w.ndim() == 4 && w.dim(0) == x.dim(3) && w.dim(2) == 2 && w.dim(3) == 2 &&
            b.numel() == w.dim(1),
        "conv_transpose2x2", "input " + shape_str(x.shape) + " vs weight " + shape_str(w.shape));
}

void check_add(const Tensor& a, const Tensor& b) {
  const int64_t n = a.numel(), m = b.numel();
  check(m > 0 && n % m == 0, "add", "cannot broadcast " + shape_str(b.shape) + " onto " + shape_str(a.shape));
}

void check_4d(const Tensor& x, const char* op, const char* layout) {
  check(x.ndim() == 4, op, std::string("expected ") + layout + ", got " + shape_str(x.shape));
}

void check_normalize_rgb(const Tensor& rgb, const Tensor& extent) {
  const bool ok = rgb.dtype == DType::U8 && extent.dtype == DType::U8 && rgb.ndim() == 4 && rgb.dim(1) == rgb.dim(2) &&
                  rgb.dim(3) == 3 && extent.ndim() == 3 && extent.dim(0) == rgb.dim(0) && extent.dim(1) == 2 &&
                  extent.dim(2) == rgb.dim(1);
  check(ok, "normalize_rgb",
        "expected uint8 pixels (B, S, S, 3) and extents (B, 2, S), got " + shape_str(rgb.shape) + " and " +
            shape_str(extent.shape));
}

void check_patch_embed(const Tensor& x, const Tensor& w, const Tensor* pos) {
  check(x.ndim() == 4 && w.ndim() == 4 && w.dim(1) == x.dim(1) && w.dim(2) == w.dim(3) && w.dim(2) > 0, "patch_embed",
        "expected pixels (B, C, H, W) and a square kernel (Cout, C, p, p), got " + shape_str(x.shape) + " and " +
            shape_str(w.shape));
  const Shape grid{1, x.dim(2) / w.dim(2), x.dim(3) / w.dim(2), w.dim(0)};
  check(!pos || pos->shape == grid, "patch_embed",
        "position embedding " + (pos ? shape_str(pos->shape) : std::string()) + " for a grid " + shape_str(grid));
}

void check_rel_pos_attention(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                             const Tensor& rel_pos_w, int heads, int window) {
  const char* op = "rel_pos_attention";
  check(qkv.ndim() == 4 && heads > 0 && window >= 0, op, "qkv " + shape_str(qkv.shape));
  const int64_t H = qkv.dim(1), W = qkv.dim(2), C = qkv.dim(3) / 3;
  check(qkv.dim(3) == 3 * C && C % heads == 0 && qkv_bias.numel() == 3 * C, op,
        "qkv " + shape_str(qkv.shape) + " with " + std::to_string(heads) + " heads");
  const int64_t hd = C / heads, th = window > 0 ? window : H, tw = window > 0 ? window : W;
  check(rel_pos_h.ndim() == 2 && rel_pos_w.ndim() == 2 && rel_pos_h.dim(0) == 2 * th - 1 &&
            rel_pos_w.dim(0) == 2 * tw - 1 && rel_pos_h.dim(1) == hd && rel_pos_w.dim(1) == hd,
        op,
        "relative-position tables " + shape_str(rel_pos_h.shape) + ", " + shape_str(rel_pos_w.shape) +
            " do not fit a " + std::to_string(th) + "x" + std::to_string(tw) + " attention tile with head dim " +
            std::to_string(hd));
}

void check_attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) {
  check(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3 && heads > 0, "attention", "q " + shape_str(q.shape));
  // A batch of 1 in q, or in k and v, is shared by every item of the other's batch.
  const int64_t B = std::max(q.dim(0), k.dim(0)), D = q.dim(2), Nk = k.dim(1);
  check((q.dim(0) == B || q.dim(0) == 1) && (k.dim(0) == B || k.dim(0) == 1) && v.dim(0) == k.dim(0) && k.dim(2) == D &&
            v.dim(2) == D && v.dim(1) == Nk && D % heads == 0 && Nk > 0,
        "attention", "q " + shape_str(q.shape) + ", k " + shape_str(k.shape) + ", v " + shape_str(v.shape));
}

void check_token_self_attention(const Tensor& x, const Tensor& x_v, const Tensor& wq, const Tensor& bq,
                                const Tensor& wk, const Tensor& bk, const Tensor& wv, const Tensor& bv, int heads) {
  const bool ranks = x.ndim() == 3 && wq.ndim() == 2;
  const int64_t D = ranks ? x.dim(2) : 0, C = ranks ? wq.dim(0) : 0;
  check(ranks && x_v.shape == x.shape && wq.dim(1) == D && wk.shape == wq.shape && wv.shape == wq.shape &&
            bq.numel() == C && bk.numel() == C && bv.numel() == C && heads > 0 && C % heads == 0,
        "token_self_attention",
        "x " + shape_str(x.shape) + ", x_v " + shape_str(x_v.shape) + ", wq " + shape_str(wq.shape) + ", wk " +
            shape_str(wk.shape) + ", wv " + shape_str(wv.shape) + ", heads " + std::to_string(heads));
}

void check_image_to_token_attention(const Tensor& x, const Tensor& k, const Tensor& kb, const Tensor& v,
                                    const Tensor& bias, const Tensor& residual, const Tensor& ln_w,
                                    const Tensor& ln_b, int heads) {
  const bool ranks = x.ndim() == 3 && k.ndim() == 3 && residual.ndim() == 3;
  const int64_t B = ranks ? k.dim(0) : 0, N = ranks ? k.dim(1) : 0, T = ranks ? x.dim(1) : 0, D = ranks ? x.dim(2) : 0;
  check(ranks && heads > 0 && k.dim(2) == heads * D && v.shape == k.shape && kb.numel() == B * N * heads &&
            (x.dim(0) == B || x.dim(0) == 1) && (residual.dim(0) == B || residual.dim(0) == 1) &&
            residual.dim(1) == T && residual.dim(2) == D && bias.numel() == D && ln_w.numel() == D &&
            ln_b.numel() == D,
        "image_to_token_attention",
        "x " + shape_str(x.shape) + ", k " + shape_str(k.shape) + ", kb " + shape_str(kb.shape) + ", v " +
            shape_str(v.shape) + ", residual " + shape_str(residual.shape));
}

void check_upscale(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w, const Tensor& ln_b,
                   const Tensor& w2, const Tensor& b2, const Tensor& hyper) {
  const bool ok = keys.ndim() == 4 && w1.ndim() == 4 && w2.ndim() == 4 && hyper.ndim() == 3 &&
                  w1.dim(0) == keys.dim(3) && w1.dim(2) == 2 && w1.dim(3) == 2 && b1.numel() == w1.dim(1) &&
                  ln_w.numel() == w1.dim(1) && ln_b.numel() == w1.dim(1) && w2.dim(0) == w1.dim(1) && w2.dim(2) == 2 &&
                  w2.dim(3) == 2 && b2.numel() == w2.dim(1) && hyper.dim(0) == keys.dim(0) && hyper.dim(2) == w2.dim(1);
  check(ok, "upscale_masks",
        "keys " + shape_str(keys.shape) + ", weights " + shape_str(w1.shape) + " and " + shape_str(w2.shape) +
            ", hypernetwork outputs " + shape_str(hyper.shape) + " do not fit together");
}

void check_bmm_nt(const Tensor& a, const Tensor& b) {
  check(a.ndim() == 3 && b.ndim() == 3 && b.dim(0) == a.dim(0) && b.dim(2) == a.dim(2), "bmm_nt",
        shape_str(a.shape) + " vs " + shape_str(b.shape));
}

void check_postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                             std::pair<int, int> original_size) {
  const char* op = "postprocess_masks";
  const auto [in_h, in_w] = input_size;
  const auto [orig_h, orig_w] = original_size;
  check(low_res.ndim() == 4 && low_res.numel() > 0, op,
        "expected a non-empty (N, C, H, W) tensor, got " + shape_str(low_res.shape));
  check(img_size > 0 && in_h > 0 && in_w > 0 && in_h <= img_size && in_w <= img_size && orig_h > 0 && orig_w > 0, op,
        "bad sizes: input " + size_str(in_h, in_w) + ", original " + size_str(orig_h, orig_w) + ", image " +
            std::to_string(img_size));
  check(low_res.dim(2) == low_res.dim(3), op, "low-res masks must be square, got " + shape_str(low_res.shape));
}

void check_mask_planes(const Tensor& low_res, const char* op) {
  check(low_res.ndim() == 3 && low_res.dim(1) == low_res.dim(2), op,
        "expected (N, L, L) low-res logits, got " + shape_str(low_res.shape));
}

void check_mask_frame(std::pair<int, int> size, std::pair<int, int> offset_xy, std::pair<int, int> frame) {
  const auto [h, w] = size;
  const auto [x0, y0] = offset_xy;
  const auto [H, W] = frame;
  check(h > 0 && w > 0 && x0 >= 0 && y0 >= 0 && int64_t(x0) + w <= W && int64_t(y0) + h <= H, "mask_rles",
        "a " + std::to_string(w) + "x" + std::to_string(h) + " mask at (" + std::to_string(x0) + ", " +
            std::to_string(y0) + ") does not fit in the " + std::to_string(W) + "x" + std::to_string(H) + " frame");
  check(uint64_t(H) * uint64_t(W) <= 0xffffffffull, "mask_rles",
        "a " + std::to_string(W) + "x" + std::to_string(H) +
            " frame has more than 2^32-1 pixels, which 32-bit RLE counts cannot hold");
}

void check_gather(const Tensor& x, const std::vector<int64_t>& select) {
  check(x.ndim() >= 1, "gather", "expected (N, ...), got " + shape_str(x.shape));
  const int64_t n = x.dim(0);
  for (int64_t i : select)
    check(i >= 0 && i < n, "gather", "index " + std::to_string(i) + " outside 0.." + std::to_string(n - 1));
}

void check_slice(const Tensor& x, int64_t first, int64_t count) {
  check(x.ndim() >= 2, "slice", "expected (B, N, ...), got " + shape_str(x.shape));
  std::string range = "[";  // (not "[" + string&&, on which GCC 12 warns falsely)
  range += std::to_string(first) + ", " + std::to_string(first + count) + ") of " + shape_str(x.shape);
  check(first >= 0 && count >= 0 && first + count <= x.dim(1), "slice", range);
}

void check_concat(const std::vector<Tensor>& xs) {
  check(!xs.empty(), "concat", "no tensors");
  check(xs[0].ndim() >= 2, "concat", "expected (B, n, ...) tensors, got " + shape_str(xs[0].shape));
  const int64_t B = xs[0].dim(0), inner = xs[0].numel() / std::max<int64_t>(1, B * xs[0].dim(1));
  for (const Tensor& x : xs)
    check(x.ndim() == xs[0].ndim() && x.dim(0) == B && x.numel() == B * x.dim(1) * inner, "concat",
          "mismatched " + shape_str(x.shape) + " and " + shape_str(xs[0].shape));
}

void check_expand_batch(const Tensor& x, int64_t batch) {
  check(x.ndim() >= 1 && x.dim(0) == 1 && batch >= 0, "expand_batch", "expected a batch of 1, got " + shape_str(x.shape));
}

}  // namespace samfast
