// The CPU backend gives the same numbers whatever the calling thread's OpenMP setting (PyTorch sets
// the thread that imports it to one thread; a server computes on its own worker threads).
#include <dnnl.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "core/rng.h"

namespace samfast {
namespace {

Tensor random(Shape shape, Rng& rng) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = rng.normal(1.f);
  return t;
}

// y (M, N) = x w^T straight through oneDNN with `threads` threads on the calling thread.
std::vector<float> raw_gemm(const Tensor& x, const Tensor& w, int threads) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  std::vector<float> y(size_t(M * N));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  dnnl_sgemm('N', 'T', M, N, K, 1.f, x.data, K, w.data, K, 0.f, y.data(), N);
  omp_set_num_threads(saved);
  return y;
}

TEST(CpuThreads, ResultsDoNotDependOnTheCallersThreadCount) {
  if (omp_get_num_procs() < 2) GTEST_SKIP() << "one core: a thread count cannot differ";
  Rng rng(5);
  // A shape on which oneDNN 2.6 splits K among threads (tens of rows, a long K).
  const Tensor x = random({64, 4096}, rng), w = random({256, 4096}, rng), b = random({256}, rng);
  if (raw_gemm(x, w, 1) == raw_gemm(x, w, 2)) GTEST_SKIP() << "this oneDNN gives equal sums on 1 and 2 threads here";
  CpuOps ops;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Tensor one = ops.linear(x, w, &b, Act::None, nullptr);
  omp_set_num_threads(2);
  const Tensor two = ops.linear(x, w, &b, Act::None, nullptr);
  omp_set_num_threads(saved);
  ASSERT_EQ(one.numel(), two.numel());
  EXPECT_EQ(std::memcmp(one.data, two.data, sizeof(float) * one.numel()), 0);
}

}  // namespace
}  // namespace samfast
