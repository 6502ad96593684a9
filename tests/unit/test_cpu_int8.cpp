// The CPU's int8 Linear (--precision int8): the row quantization by hand, and the layer against the
// fp32 one within int8's rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "core/rng.h"

namespace samfast {
namespace {

TEST(CpuInt8, RowsQuantisedSymmetricallyToTheirOwnMaximum) {
  const std::vector<float> x = {1.f, -2.f, 0.5f, 0.f, 0.f, 0.f};  // two rows of three, the second all zeros
  std::vector<int8_t> q(6);
  std::vector<float> s(2);
  cpu::quantize_rows_int8(x.data(), 2, 3, q.data(), s.data());
  EXPECT_FLOAT_EQ(s[0], 2.f / 127.f);
  EXPECT_EQ(q[0], 64);  // 63.5 to the even neighbour
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 32);  // 31.75
  EXPECT_FLOAT_EQ(s[1], 1.f);  // a zero row keeps a usable scale
  EXPECT_EQ(q[3], 0);
}

TEST(CpuInt8, LinearMatchesFp32WithinInt8Rounding) {
  Rng rng(3);
  const int64_t rows = 70, in = 96, out = 48;
  Tensor x = Tensor::empty({2, rows / 2, in}), w = Tensor::empty({out, in}), b = Tensor::empty({out}),
         r = Tensor::empty({2, rows / 2, out});
  for (Tensor* t : {&x, &w, &b, &r})
    for (int64_t i = 0; i < t->numel(); ++i) t->data[i] = rng.normal(1.f);
  CpuOps fp32, int8(true);
  const Tensor wq = int8.prepare_bulk_linear(w);
  ASSERT_EQ(wq.dtype, DType::I8);
  EXPECT_EQ(fp32.prepare_bulk_linear(w).data, w.data);  // fp32 keeps the weight as it is
  for (Act act : {Act::None, Act::GELU}) {
    const Tensor ref = fp32.linear(x, w, &b, act, &r), got = int8.linear(x, wq, &b, act, &r);
    ASSERT_EQ(got.shape, ref.shape);
    double err = 0, norm = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) {
      err += std::pow(double(got.data[i]) - ref.data[i], 2);
      norm += std::pow(double(ref.data[i]), 2);
    }
    // int8 rounding of both operands: ~1% of a row's range per product, averaging down over in = 96
    EXPECT_LT(std::sqrt(err / norm), 0.02);
    EXPECT_GT(std::sqrt(err / norm), 1e-5);  // (and it is int8's product, not fp32's)
  }
}

}  // namespace
}  // namespace samfast
