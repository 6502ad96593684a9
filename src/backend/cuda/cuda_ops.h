// CUDA backend: the ops of backend/ops.h on one GPU and one stream, in fp32 (exact: no TF32, matches
// the CPU backend to ~1e-6), bf16 (fast: bf16 storage, tensor-core GEMMs and attention with fp32
// accumulation, fp32 statistics) or fp16 (the same kernels on fp16 storage), with optionally the
// image encoder's bulk Linear layers in fp8 (beside bf16). GEMMs run through cuBLASLt with fused
// bias / ReLU / residual epilogues; LayerNorm, exact-erf GELU, layout ops, attention and the
// decoder's fused upscaling are our own kernels.
// No op synchronises with the host except download().
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <map>
#include <memory>
#include <set>

#include "backend/cuda/cuda_memory.h"
#include "backend/cuda/graph.h"
#include "backend/op_checks.h"
#include "backend/ops.h"
#include "samfast/precision.h"

namespace samfast {

namespace cuda {
// A cuBLASLt matmul prepared for one shape: descriptors and the heuristic's algorithm.
struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatrixLayout_t d = nullptr;  // the output's, where its type differs from C's (else c)
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;  // false: cuBLASLt offers nothing for this shape; cublasGemmEx is used
};

// The plans of the GEMMs run so far, one per key (all a plan depends on: storage type, shape,
// strides, epilogue, alignment), for the 16-bit / fp32 GEMMs and the fp8 ones alike (gemm.cu). It
// owns the plans' descriptors.
class GemmPlanCache {
 public:
  using Key = std::array<int64_t, 17>;
  GemmPlanCache() = default;
  GemmPlanCache(const GemmPlanCache&) = delete;
  GemmPlanCache& operator=(const GemmPlanCache&) = delete;
  ~GemmPlanCache() { clear(); }

  // The plan for key; make() makes it on the key's first use.
  template <class Make>
  const GemmPlan& get(const Key& key, Make make) {
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, make()).first;
    return it->second;
  }
  void clear();  // destroys every plan's descriptors

 private:
  std::map<Key, GemmPlan> plans_;
};
}  // namespace cuda

// Everything a CudaOps needs on its device: no globals.
struct CudaContext {
  explicit CudaContext(int device);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t(32) << 20;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;  // compute capability
  // Hopper's own kernels (wgmma) where they exist: compute capability 9.x, unless the environment sets
  // SAMFAST_GENERIC_KERNELS=1 (then the kernels of other GPUs run, e.g. to test them on a Hopper GPU).
  bool hopper_kernels = false;
  // Opt-in limit of dynamic shared memory a block; the environment's SAMFAST_MAX_SMEM_PER_BLOCK
  // (bytes) lowers it, so that a Hopper GPU (227 KB) runs the kernel choices of GPUs with less: an
  // A100's 166912, Ampere and Ada workstation GPUs' 101376.
  size_t max_smem_per_block = 0;
  std::shared_ptr<cuda::DevicePool> pool;
  std::shared_ptr<cuda::PinnedPool> pinned = std::make_shared<cuda::PinnedPool>();  // download buffers
  cuda::GemmPlanCache gemm_plans;  // cuBLASLt descriptors and algorithms, per shape
};

class CudaOps final : public Ops {
 public:
  // precision: FP32, BF16 or FP16, the storage type of activations and weights; or FP8: BF16 storage
  // with prepare_bulk_linear quantising to fp8 E4M3 (compute capability 8.9+).
  // graphs: record and replay run_recorded computations as CUDA graphs (graph.h).
  CudaOps(int device, Precision precision, bool graphs = true);
  // Another CudaOps in `precision` on this one's device, stream, memory pool and graph cache: the
  // model's prompt encoder and mask decoder beside an image encoder in another precision. Tensors
  // pass between the two through upload().
  std::shared_ptr<CudaOps> sibling(Precision precision) const;

  // A weight of dtype F8E4M3 (from prepare_bulk_linear) runs the fp8 GEMM: x is quantised per row
  // (token) on the fly, y = bf16.
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b, Act act, const Tensor* residual) override;
  // With fp8_bulk: w (out, in) -> F8E4M3 (out, in) scaled by 448 / amax of the tensor, then the scale
  // once a row (fp32) and quantize_weight_fp8's stats in the same allocation. Unchanged where out is
  // not a multiple of 16 or in not fp8_row_length_ok (cuBLASLt's fp8 kernels need multiples of 16).
  Tensor prepare_bulk_linear(const Tensor& w) override;
  size_t weight_bytes(const Tensor& host, bool bulk) const override;
  void reserve_weights(size_t bytes) override;
  Tensor upload_weight(const Tensor& host, bool bulk) override;
  Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Act act) override;
  std::pair<Tensor, Tensor> layer_norm_pe(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                                          const Tensor& pe) override;
  Tensor layer_norm_linear(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w,
                           const Tensor* b, Act act) override;
  Tensor layer_norm_attention(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& qkv_w,
                              const Tensor& qkv_b, const Tensor& rel_pos_h, const Tensor& rel_pos_w, int heads,
                              int window, const Tensor& proj_w, const Tensor& proj_b) override;
  Tensor layer_norm_mlp(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w1,
                        const Tensor& b1, const Tensor& w2, const Tensor& b2) override;
  // fp8: fp8_bounds' scales for these weights, into the fp8 weight's own allocation, so that the ops
  // above read them instead of computing them on every call.
  void prepare_layer_norm_linear(const Tensor& ln_w, const Tensor& ln_b, const Tensor& w, const Tensor& b) override;
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad) override;
  // The position embedding as the GEMM's C operand, one copy for every image (batch stride 0).
  Tensor patch_embed(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor* pos) override;
  Tensor conv_transpose2x2(const Tensor& x, const Tensor& w, const Tensor& b, Act act) override;
  Tensor add(const Tensor& a, const Tensor& b) override;
  Tensor nchw_to_nhwc(const Tensor& x) override;
  Tensor nhwc_to_nchw(const Tensor& x) override;
  Tensor normalize_rgb(const Tensor& rgb, const Tensor& extent, const std::array<float, 3>& mean,
                       const std::array<float, 3>& stdev) override;
  Tensor rel_pos_attention(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                           const Tensor& rel_pos_w, int heads, int window) override;
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) override;
  // fp16 / bf16, head width 32, D 256, N <= 32: one block a (prompt, head), projections on tensor cores.
  Tensor token_self_attention(const Tensor& x, const Tensor& x_v, const Tensor& wq, const Tensor& bq, const Tensor& wk,
                              const Tensor& bk, const Tensor& wv, const Tensor& bv, int heads) override;
  Tensor image_to_token_attention(const Tensor& x, const Tensor& k, const Tensor& kb, const Tensor& v,
                                  const Tensor& bias, const Tensor& residual, const Tensor& ln_w, const Tensor& ln_b,
                                  float eps, int heads) override;
  // On the tensor-core path, out + key_pe written by the same kernel.
  std::pair<Tensor, Tensor> image_to_token_attention_pe(const Tensor& x, const Tensor& k, const Tensor& kb,
                                                        const Tensor& v, const Tensor& bias, const Tensor& residual,
                                                        const Tensor& ln_w, const Tensor& ln_b, float eps, int heads,
                                                        const Tensor& key_pe) override;
  Tensor upscale_masks(const Tensor& keys, const Tensor& w1, const Tensor& b1, const Tensor& ln_w, const Tensor& ln_b,
                       float eps, const Tensor& w2, const Tensor& b2, const Tensor& hyper) override;  // upscale.cu
  Tensor bmm_nt(const Tensor& a, const Tensor& b) override;
  // fp32 logits, or uint8 0/1 when binarize, whatever the precision; download() takes it.
  Tensor postprocess_masks(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                           std::pair<int, int> original_size, bool binarize) override;
  Later<MaskStats> mask_stats(const Tensor& low_res, int img_size, std::pair<int, int> input_size, std::pair<int, int> size,
                       float thr, float hi, float lo) override;
  std::vector<Rle> mask_rles(const Tensor& low_res, int img_size, std::pair<int, int> input_size,
                             std::pair<int, int> size, float thr, std::pair<int, int> offset_xy,
                             std::pair<int, int> frame_size) override;
  Tensor gather(const Tensor& x, const std::vector<int64_t>& select) override;
  Tensor slice(const Tensor& x, int64_t first, int64_t count) override;
  Tensor concat(const std::vector<Tensor>& xs) override;
  Tensor expand_batch(const Tensor& x, int64_t batch) override;
  // A host fp32 tensor, or a device tensor of a sibling in another precision (converted), in this
  // backend's precision; a tensor of this backend as it is.
  Tensor upload(const Tensor& host) override;
  // Host fp32 tensor into an existing tensor of this backend with as many elements.
  void upload_into(const Tensor& host, const Tensor& dst);
  Tensor download(const Tensor& x) override;  // x of this backend or a sibling, or fp32, or uint8
  Later<Tensor> download_later(const Tensor& x) override;
  void synchronize() override;
  int64_t peak_memory_bytes() const override;
  MemoryUse memory_use() const override;
  std::vector<Tensor> run_recorded(const std::string& key, const std::vector<Tensor>& inputs,
                                   const Computation& fn) override;
  // Lanes are side streams of the graph cache (graph.h); without CUDA graphs, one lane.
  int lanes() const override { return graphs_ ? graphs_->lanes() : 1; }
  std::vector<Tensor> run_recorded_on_lane(int lane, const std::string& key, const std::vector<Tensor>& inputs,
                                           const Computation& fn) override;
  void join_lanes() override;

  CudaContext& context() const { return *ctx_; }
  DType precision() const { return dt_; }  // the storage type
  // An uninitialised device tensor in the backend's precision (or `dtype`), from the pool.
  Tensor empty(Shape shape) const { return empty(std::move(shape), dt_); }
  Tensor empty(Shape shape, DType dtype) const;

 private:
  CudaOps(std::shared_ptr<CudaContext> ctx, Precision precision, std::shared_ptr<cuda::GraphCache> graphs);
  // Throws unless t is a tensor of this backend (device memory, the backend's precision).
  void expect(const Tensor& t, const char* op, const char* name) const;
  // image_to_token_attention; with key_pe and on the tensor-core path, also out + key_pe into
  // *out_pe (left undefined otherwise).
  Tensor image_to_token(const Tensor& x, const Tensor& k, const Tensor& kb, const Tensor& v, const Tensor& bias,
                        const Tensor& residual, const Tensor& ln_w, const Tensor& ln_b, float eps, int heads,
                        const Tensor* key_pe, Tensor* out_pe);
  bool fp8_weight(const Tensor& w) const;  // prepare_bulk_linear quantises w
  // The next `bytes` of the weights' allocation as a tensor (from the pool where it is full).
  Tensor weight_slot(Shape shape, DType dtype, size_t bytes);
  Tensor quantize_fp8(const Tensor& w, Tensor q);  // into q (fp8_weight_bytes(w) bytes)
  // rel_pos_attention; with fp8_scale (a device float; bf16 activations), the output in fp8 E4M3
  // times *fp8_scale (U8), from the kernel itself on Hopper, else by a pass after it.
  Tensor rel_pos_attention_out(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                               const Tensor& rel_pos_w, int heads, int window, const float* fp8_scale);
  // layer_norm_linear / _attention / _mlp take the fp8 path: w fp8, the LayerNorm's kernel takes C.
  bool fp8_layer_norm_ok(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, const Tensor& w) const;
  // Their inputs' checks (op: the name in the messages).
  void check_fp8_layer_norm(const char* op, const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, const Tensor& w,
                            const Tensor* b) const;
  // Their common part: act(LayerNorm(x) w^T + b), the LayerNorm's output quantised with the scale
  // *ln_scale, the GEMM per-tensor; bf16 (..., out), or with out_scale fp8 (U8, rows x out bytes).
  Tensor fp8_layer_norm_gemm(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, float eps, const Tensor& w,
                             const Tensor* b, Act act, const float* ln_scale, const float* out_scale);
  // fp8_bounds' output for (ln_w, ln_b, w, b) (w fp8, b null for the LayerNorm's scale alone): where
  // prepare_layer_norm_linear saw these weights, the scales it stored in w; otherwise computed now.
  Tensor fp8_layer_scales(const Tensor& ln_w, const Tensor& ln_b, const Tensor& w, const Tensor* b);

  std::shared_ptr<CudaContext> ctx_;
  DType dt_;
  bool fp8_bulk_ = false;
  Tensor weights_;              // the weights' one allocation (U8)
  size_t weights_filled_ = 0;   // bytes of it handed out by upload_weight
  // The (ln_w, ln_b, w, b) whose scales prepare_layer_norm_linear stored (device addresses; the
  // weights never change or move after load).
  std::set<std::array<const void*, 4>> fp8_scales_stored_;
  // Shared with siblings: the graphs share the pool's one arena, so one cache must know them all.
  std::shared_ptr<cuda::GraphCache> graphs_;  // null: --no-graphs (destroyed before ctx_)
};

namespace cuda {

// The one GEMM entry point (row-major): C (M, N) = act(A (M, K) @ op(B) + bias (N)) + residual,
// B stored (N, K) when b_transposed, else (K, N); residual (M, N) with leading dim ldc or null;
// `batch` problems at element strides sA, sB, sC, and s_residual for residual (-1: sC; a stride of 0
// shares one matrix). All matrices of type dt, or C fp32 when f32_out (no epilogue then); fp32 accumulation
// always, TF32 never. Quantised variants slot in behind this signature.
void gemm(CudaContext& ctx, DType dt, bool b_transposed, int64_t M, int64_t N, int64_t K, const void* A,
          int64_t lda, const void* B, int64_t ldb, void* C, int64_t ldc, const void* bias = nullptr,
          Act act = Act::None, const void* residual = nullptr, int64_t batch = 1, int64_t sA = 0,
          int64_t sB = 0, int64_t sC = 0, bool f32_out = false, int64_t s_residual = -1);

// How the fp8 GEMM's operands are scaled: per row of A and per row of W (cuBLASLt's outer vectors,
// a_scale[M] and w_scale[N]), or one scale each (a_scale[0], w_scale[0]: the per-tensor mode, the only
// one in which cuBLASLt writes an fp8 output, and the faster one at the encoder's shapes).
enum class Fp8Scales { RowsAndColumns, Tensor };

// fp8 (E4M3) GEMM, row-major: C (M, N) bf16 = act((a_scale A[m, :]) . (w_scale W[n, :]) + bias)
// + residual, A (M, K) and W (N, K) fp8, through cuBLASLt; bias and residual bf16 (an activation and
// a residual together: the residual added after). With out_scale (a device float; per-tensor
// scales, no residual): C is fp8 E4M3, *out_scale times that, which must stay within E4M3's 448.
void gemm_fp8(CudaContext& ctx, int64_t M, int64_t N, int64_t K, const void* A, const float* a_scale, const void* W,
              const float* w_scale, void* C, const void* bias, Act act, const void* residual,
              Fp8Scales scales = Fp8Scales::RowsAndColumns, const float* out_scale = nullptr);

// gemm_fp8's per-tensor-scaled forms with a bias and no residual on Hopper (compute capability 9.0),
// by CUTLASS kernels (gemm_fp8_cutlass.cu): GELU with an fp8 C (lin1: C = *out_scale GELU(*a_scale
// *w_scale A W^T + bias), GELU's tanh form), or no activation with a bf16 C (qkv). gemm_fp8 takes
// them where gemm_fp8_cutlass_ok (false in a build without CUTLASS).
bool gemm_fp8_cutlass_ok(const CudaContext& ctx, int64_t M, int64_t N, int64_t K, Act act, bool fp8_out);
void gemm_fp8_cutlass(CudaContext& ctx, int64_t M, int64_t N, int64_t K, const void* A, const float* a_scale,
                      const void* W, const float* w_scale, const void* bias, Act act, void* C,
                      const float* out_scale);

// gemm's bf16 forms that CUTLASS kernels run faster on Hopper (compute capability 9.0; gemm_bf16_cutlass.cu):
// one product of at least 1 GFLOP, dense row-major operands, B transposed, a bias, and GELU, or no
// activation with or without a residual (then K <= N). gemm takes them where gemm_bf16_cutlass_ok
// (false in a build without CUTLASS).
bool gemm_bf16_cutlass_ok(const CudaContext& ctx, int64_t M, int64_t N, int64_t K, Act act, bool residual);
void gemm_bf16_cutlass(CudaContext& ctx, int64_t M, int64_t N, int64_t K, const void* A, const void* W,
                       const void* bias, Act act, const void* residual, void* C);

// Rows of x (rows, K) bf16 -> q (rows, K) fp8 E4M3 scaled by 448 / amax of the row, and scale[row]
// = amax / 448 (1 for a row of zeros). K: fp8_row_length_ok (a multiple of 16, at most 8192).
bool fp8_row_length_ok(int64_t K);
void quantize_rows_fp8(CudaContext& ctx, const __nv_bfloat16* x, int64_t rows, int64_t K, void* q, float* scale);
// The same rows and scales for LayerNorm(x) (x, w, b bf16, rows of C, 16-byte aligned): the values
// quantize_rows_fp8 gives for layer_norm's bf16 output, in one kernel. C: layer_norm_fp8_ok. With
// tensor_scale (a device float, fp8_bounds' first): every row scaled by 1 / *tensor_scale instead,
// and no row scales written.
bool layer_norm_fp8_ok(int64_t C);
void layer_norm_rows_fp8(CudaContext& ctx, const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* b,
                         int64_t rows, int64_t C, float eps, void* q, float* scale,
                         const float* tensor_scale = nullptr);

// A weight w (rows, K) bf16 -> q fp8 E4M3 scaled by 448 / amax of the whole tensor, scale[row] = amax
// / 448 for every row (the outer-vector GEMMs read them, the per-tensor ones scale[0]), and stats[0]
// = the largest Euclidean norm of a row of the quantised weight (its values times the scale).
void quantize_weight_fp8(CudaContext& ctx, const __nv_bfloat16* w, int64_t rows, int64_t K, void* q, float* scale,
                         float* stats);

// The per-tensor scales of LayerNorm -> fp8 GEMM [-> GELU -> fp8 GEMM] from bounds that every input
// meets, so that nothing reads the activations to find them (gemm.cu derives the bounds). out[0]:
// the LayerNorm's output scale (LayerNorm weight and bias ln_w, ln_b of C). With the first GEMM's
// bias (N) and its weight's quantize_weight_fp8 stats: out[kFp8ScaleStride] = 448 / a bound on the
// first GEMM's values (with GELU or not, and on their weighted means: the attention's output), the
// scale that puts them in fp8, and out[2 kFp8ScaleStride] = 1 / that, the next GEMM's input scale.
// (cuBLASLt takes scale pointers 16-byte aligned only: "not supported".)
constexpr int64_t kFp8ScaleStride = 64;
void fp8_bounds(CudaContext& ctx, const __nv_bfloat16* ln_w, const __nv_bfloat16* ln_b, int64_t C,
                const __nv_bfloat16* bias, int64_t N, const float* w_stats, float* out);

// q (n bytes) = x (n bf16 values, n a multiple of 8, 16-byte aligned) times *scale, in fp8 E4M3.
void scale_to_fp8(CudaContext& ctx, const __nv_bfloat16* x, int64_t n, void* q, const float* scale);

// y (rows, cols) = act(y + bias) + residual in place; bias (cols) and residual (rows, cols) optional.
void bias_act_residual(CudaContext& ctx, DType dt, void* y, int64_t rows, int64_t cols, const void* bias, Act act,
                       const void* residual);

// ops.attention with one head wider than 64 (decoder_attention.cu): out (B, Nq, D) preallocated.
void wide_head_attention(const CudaOps& ops, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);

}  // namespace cuda
}  // namespace samfast
