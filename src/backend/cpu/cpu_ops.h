// fp32 CPU backend: GEMMs through OpenBLAS (cblas_sgemm), elementwise work on OpenMP threads.
// The reference path: exact against upstream in fp32 (same math, summation order aside).
#pragma once
#include "backend/ops.h"

namespace samfast {

class CpuOps final : public Ops {
 public:
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b, Act act, const Tensor* residual) override;
  Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Act act) override;
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, int pad) override;
  Tensor conv_transpose2x2(const Tensor& x, const Tensor& w, const Tensor& b, Act act) override;
  Tensor add(const Tensor& a, const Tensor& b) override;
  Tensor nchw_to_nhwc(const Tensor& x) override;
  Tensor nhwc_to_nchw(const Tensor& x) override;
  Tensor rel_pos_attention(const Tensor& qkv, const Tensor& qkv_bias, const Tensor& rel_pos_h,
                           const Tensor& rel_pos_w, int heads, int window) override;
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) override;
  Tensor bmm_nt(const Tensor& a, const Tensor& b) override;
};

namespace cpu {
// C (M, N) = alpha * A (M, K) @ op(B) + beta * C, row-major; B is (N, K) when b_transposed.
void gemm(bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void apply_act(float* x, int64_t n, Act act);
// Row-wise softmax in place on a (rows, cols) matrix.
void softmax_rows(float* x, int64_t rows, int64_t cols);
}  // namespace cpu

}  // namespace samfast
