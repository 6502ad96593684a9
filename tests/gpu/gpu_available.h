// Whether a CUDA GPU can be used here: the GPU tests skip (with a message) when not. And the
// precision whose storage type a test is parametrised by.
#pragma once
#include <cuda_runtime.h>

#include "samfast/precision.h"
#include "samfast/tensor.h"

namespace samfast {

inline bool have_gpu() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();
  return ok;
}

inline Precision precision_of(DType storage) {
  return storage == DType::F32 ? Precision::FP32 : storage == DType::BF16 ? Precision::BF16 : Precision::FP16;
}

}  // namespace samfast
