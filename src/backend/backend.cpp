#include "backend/backend.h"

#include "backend/cpu/cpu_ops.h"
#include "samfast/error.h"
#ifdef SAMFAST_WITH_CUDA
#include <cuda_runtime.h>

#include "backend/cuda/cuda_ops.h"
#endif

namespace samfast {
namespace {

DType parse_precision(const std::string& p) {
  if (p == "fp32") return DType::F32;
  if (p == "bf16") return DType::BF16;
  if (p == "fp16") return DType::F16;
  if (p == "fp8") return DType::BF16;  // bf16 storage; the encoder blocks' Linear layers in fp8
  throw Error("unknown precision '" + p + "': expected fp32, bf16, fp16, fp8 or auto");
}

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

Backend make_backend(const ModelOptions& options) {
  const std::string& dev = options.device;
  if (dev != "auto" && dev != "cpu" && dev != "cuda" && dev.rfind("cuda:", 0) != 0)
    throw Error("unknown device '" + dev + "': expected auto, cpu, cuda or cuda:N");
  if (options.precision != "auto") parse_precision(options.precision);
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
    b.precision = options.precision == "auto" ? "bf16" : options.precision;
    auto ops = std::make_shared<CudaOps>(index, parse_precision(b.precision), options.cuda_graphs, b.precision == "fp8");
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, index);
    b.device = "cuda:" + std::to_string(index) + " (" + prop.name + ")";
    b.ops = ops;
    return b;
#endif
  }
  if (dev == "cuda" || dev.rfind("cuda:", 0) == 0) throw Error("device " + dev + " requested, but " + why);
  if (options.precision != "auto" && options.precision != "fp32")
    throw Error("precision " + options.precision + " needs a CUDA GPU; the CPU backend computes in fp32");
  if (dev == "auto" && why != "this build has no CUDA backend") b.note = why + ": running on the CPU";
  b.ops = std::make_shared<CpuOps>();
  b.device = "cpu";
  b.precision = "fp32";
  return b;
}

}  // namespace samfast
