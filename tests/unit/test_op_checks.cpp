// The op contract checks (backend/op_checks.h) as a backend meets them: the CPU backend refuses
// arguments that do not fit with the op's own message instead of reading out of bounds.
#include <gtest/gtest.h>

#include "backend/cpu/cpu_ops.h"
#include "error_of.h"

namespace samfast {
namespace {

using testing::error_of;

TEST(OpChecks, CpuBackendRefusesWhatDoesNotFit) {
  CpuOps cpu_ops;
  Ops& cpu = cpu_ops;  // the interface, with its default arguments
  const Tensor x = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(error_of([&] { cpu.nchw_to_nhwc(x); }), "nchw_to_nhwc: expected (B, C, H, W), got (2, 3, 4)");
  EXPECT_EQ(error_of([&] { cpu.slice(x, 2, 2); }), "slice: [2, 4) of (2, 3, 4)");
  EXPECT_EQ(error_of([&] { cpu.linear(x, Tensor::zeros({5, 3}), nullptr); }), "linear: input (2, 3, 4) vs weight (5, 3)");
  const Tensor b = Tensor::zeros({4});
  EXPECT_EQ(error_of([&] { cpu.linear(x, Tensor::zeros({5, 4}), &b); }), "linear: bias (4) for weight (5, 4)");
  EXPECT_EQ(error_of([&] { cpu.gather(x, {0, 2}); }), "gather: index 2 outside 0..1");
  EXPECT_EQ(error_of([&] { cpu.attention(x, Tensor::zeros({2, 0, 4}), Tensor::zeros({2, 0, 4}), 2); }),
            "attention: q (2, 3, 4), k (2, 0, 4), v (2, 0, 4)");
  EXPECT_EQ(error_of([&] { cpu.postprocess_masks(Tensor::zeros({1, 1, 4, 5}), 16, {8, 8}, {8, 8}, false); }),
            "postprocess_masks: low-res masks must be square, got (1, 1, 4, 5)");
  const Tensor pixels = Tensor::zeros({1, 3, 8, 12}), pos = Tensor::zeros({1, 2, 2, 8});
  EXPECT_EQ(error_of([&] { cpu.patch_embed(pixels, Tensor::zeros({8, 3, 4, 4}), nullptr, &pos); }),
            "patch_embed: position embedding (1, 2, 2, 8) for a grid (1, 2, 3, 8)");
}

}  // namespace
}  // namespace samfast
