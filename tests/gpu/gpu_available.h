// Whether a CUDA GPU can be used here: the GPU tests skip (with a message) when not.
#pragma once
#include <cuda_runtime.h>

namespace samfast {

inline bool have_gpu() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();
  return ok;
}

}  // namespace samfast
