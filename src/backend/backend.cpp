#include "backend/backend.h"

#include "backend/cpu/cpu_ops.h"
#include "samfast/error.h"
#ifdef SAMFAST_WITH_CUDA
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#endif

namespace samfast {
namespace {

// Number of usable CUDA GPUs, and why there are none.
int cuda_devices(std::string* why) {
#ifdef SAMFAST_WITH_CUDA
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    *why = std::string("no usable CUDA GPU (") + cudaGetErrorString(err) + ")";
    cudaGetLastError();
    return 0;
  }
  if (n == 0) *why = "no CUDA GPU found";
  return n;
#else
  *why = "this build has no CUDA backend";
  return 0;
#endif
}

}  // namespace

Backend make_backend(const BackendOptions& options) {
  const std::string& dev = options.device;
  if (dev != "auto" && dev != "cpu" && dev != "cuda" && dev.rfind("cuda:", 0) != 0)
    throw Error("unknown device '" + dev + "': expected auto, cpu, cuda or cuda:N");
  Backend b;
  std::string why;
  const int gpus = dev == "cpu" ? 0 : cuda_devices(&why);
  if (dev != "cpu" && gpus > 0) {
#ifdef SAMFAST_WITH_CUDA
    int index = 0;
    if (dev.rfind("cuda:", 0) == 0) {
      try {
        index = std::stoi(dev.substr(5));
      } catch (const std::exception&) {
        throw Error("bad device '" + dev + "': expected cuda:N");
      }
      if (index < 0 || index >= gpus)
        throw Error("device " + dev + " does not exist: " + std::to_string(gpus) + " CUDA GPU(s) found");
    }
    b.precision = options.precision == Precision::Auto ? Precision::BF16 : options.precision;
    auto ops = std::make_shared<CudaOps>(index, b.precision, options.cuda_graphs);
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, index);
    b.device = "cuda:" + std::to_string(index) + " (" + prop.name + ")";
    b.ops = ops;
    return b;
#endif
  }
  if (dev == "cuda" || dev.rfind("cuda:", 0) == 0) throw Error("device " + dev + " requested, but " + why);
  const bool int8 = options.precision == Precision::INT8;
  if (options.precision != Precision::Auto && options.precision != Precision::FP32 && !int8)
    throw Error("precision " + to_string(options.precision) +
                " needs a CUDA GPU; the CPU backend computes in fp32 (or int8: --precision int8)");
  if (dev == "auto" && why != "this build has no CUDA backend") b.note = why + ": running on the CPU";
  b.ops = std::make_shared<CpuOps>(int8);
  b.device = "cpu";
  b.precision = int8 ? Precision::INT8 : Precision::FP32;
  return b;
}

}  // namespace samfast
