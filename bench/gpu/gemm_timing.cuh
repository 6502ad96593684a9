// What bench/gpu's GEMM benchmarks (lin1_gemm_options.cu, bf16_gemm_options.cu) share: exiting on a
// failed call, and the mean time of a launch on a stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace gemm_bench {

inline void check(int status, const char* what) {
  if (status != 0) {
    std::fprintf(stderr, "%s failed (%d)\n", what, status);
    std::exit(1);
  }
}

// Mean ms of `runs` launches after `warm` ones.
template <class Launch>
float time_ms(cudaStream_t s, Launch launch, int warm, int runs) {
  for (int r = 0; r < warm; ++r) launch();
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  cudaEventRecord(a, s);
  for (int r = 0; r < runs; ++r) launch();
  cudaEventRecord(b, s);
  check(cudaEventSynchronize(b), "a timed run");
  float ms = 0.f;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a), cudaEventDestroy(b);
  return ms / runs;
}

}  // namespace gemm_bench
