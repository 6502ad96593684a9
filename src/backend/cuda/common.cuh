// Shared pieces of the CUDA backend's kernels: error checks that throw samfast::Error with the place
// and the library's own message, element conversion between the storage types (fp32, bf16) and
// the fp32 that all arithmetic uses, warp and block reductions, and launch-size helpers.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "samfast/error.h"
#include "samfast/tensor.h"

namespace samfast::cuda {

[[noreturn]] inline void fail(const char* file, int line, const std::string& what) {
  throw Error(std::string("CUDA backend (") + file + ":" + std::to_string(line) + "): " + what);
}

// A launch reached with a storage type that has no kernel (uint8 masks, fp8 weights): a caller's bug,
// reported rather than run on bytes of another type.
[[noreturn]] inline void no_kernel_for(const char* file, int line, DType dt) {
  fail(file, line, std::string("no kernel for storage type ") +
                       (dt == DType::U8 ? "uint8" : dt == DType::F8E4M3 ? "fp8 E4M3" : "unknown"));
}

}  // namespace samfast::cuda

#define CUDA_CHECK(expr)                                                                    \
  do {                                                                                      \
    const cudaError_t err_ = (expr);                                                        \
    if (err_ != cudaSuccess)                                                                \
      ::samfast::cuda::fail(__FILE__, __LINE__, std::string(#expr) + ": " + cudaGetErrorString(err_)); \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                      \
    const cublasStatus_t st_ = (expr);                                                      \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                       \
      ::samfast::cuda::fail(__FILE__, __LINE__, std::string(#expr) + ": " + cublasGetStatusString(st_)); \
  } while (0)

// After every kernel launch: reports a bad configuration (grid, shared memory) at its launcher.
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

namespace samfast::cuda {

// Storage types: every kernel is instantiated for float (the exact path), __nv_bfloat16 and __half.
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
// The same GELU with erf by Abramowitz & Stegun 7.1.26 (abs error < 1.5e-7, the formula of PyTorch's
// vectorized CPU GELU and of our CPU backend) on the fast exp and reciprocal: about half the
// instructions of erff. For results stored in 16 bits, whose rounding (bf16 4e-3, fp16 5e-4) is far
// above that error; fp32 keeps erff.
__device__ __forceinline__ float gelu_erf_fast(float x) {
  const float a = fabsf(x) * 0.70710678118654752f;
  const float t = __fdividef(1.f, fmaf(0.3275911f, a, 1.f));
  const float r = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  return 0.5f * x * (1.f + copysignf(1.f - r * __expf(-a * a), x));
}
// GELU in the tanh form, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), on the
// hardware tanh (tanh.approx.f32, relative error 2^-11): 6 instructions, one of them for the
// special-function unit, against gelu_erf_fast's ~18 with two (a reciprocal and an exp); that unit
// issues at an eighth of the FMA rate, and the decoder upscaling's GELUs (96 a thread a tile) were
// bound by it. Absolute error against erf GELU: the form's at most 4.7e-4 (at x = +-2.7) plus the
// tanh's 2.5e-4 |x|, about one fp16 rounding step of the result or less for |x| < 4, far below a
// bf16 step. For 16-bit results that feed a sum of many (the upscaling's next product).
__device__ __forceinline__ float gelu_tanh_fast(float x) {
  float t;
  asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(x * fmaf(0.0356774081f, x * x, 0.7978845608f)));
  const float half_x = 0.5f * x;
  return fmaf(half_x, t, half_x);
}
// GELU for a result stored as T.
template <class T>
__device__ __forceinline__ float gelu(float x) {
  if constexpr (sizeof(T) == 2) return gelu_erf_fast(x);
  return gelu_erf(x);
}

// The sum of two 16-byte vectors of T, element by element, each rounded once to T (ops.add's
// rounding, which the kernels writing a sum beside their output must match).
template <class T>
__device__ __forceinline__ uint4 add_vec16(uint4 a, const uint4& b) {
  T* ea = reinterpret_cast<T*>(&a);
  const T* eb = reinterpret_cast<const T*>(&b);
#pragma unroll
  for (int k = 0; k < int(16 / sizeof(T)); ++k) ea[k] = from_f32<T>(to_f32(ea[k]) + to_f32(eb[k]));
  return a;
}

inline unsigned blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 16 ? b : 65535 * 16);  // grid-stride loops cover the rest
}

// Reductions over a warp, and over a block of 256 threads (red: 8 floats of shared memory), whose
// every thread gets the result.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float block_max(float v, float* red) {
#pragma unroll
  for (int o = 16; o; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  v = red[0];
  for (int w = 1; w < 8; ++w) v = fmaxf(v, red[w]);
  __syncthreads();  // red is free again
  return v;
}
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  v = 0.f;
  for (int w = 0; w < 8; ++w) v += red[w];
  __syncthreads();
  return v;
}

}  // namespace samfast::cuda

// Launches kernel<float>, kernel<__nv_bfloat16> or kernel<__half> by dtype; throws for another.
#define SAMFAST_DISPATCH(dt, T, ...)                             \
  do {                                                           \
    if ((dt) == DType::F32) {                                    \
      using T = float;                                           \
      __VA_ARGS__;                                               \
    } else if ((dt) == DType::BF16) {                            \
      using T = __nv_bfloat16;                                   \
      __VA_ARGS__;                                               \
    } else if ((dt) == DType::F16) {                             \
      using T = __half;                                          \
      __VA_ARGS__;                                               \
    } else {                                                     \
      ::samfast::cuda::no_kernel_for(__FILE__, __LINE__, (dt));  \
    }                                                            \
  } while (0)

