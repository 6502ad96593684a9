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

// The decoder's precision on a GPU for an image encoder in `encoder`: asked is Auto, fp32, bf16 or
// fp16. Auto beside bf16 (or fp8, whose storage is bf16) is fp16: bf16's 8-bit significand in the
// decoder costs the masks ~0.4 points of IoU against fp32 (BENCHMARKS.md), fp16 has TF32's 11 bits
// at bf16's speed, and the decoder's values (LayerNorm'd tokens, logits) are far inside its range.
Precision decoder_precision(Precision encoder, Precision asked) {
  if (asked == Precision::Auto) return encoder == Precision::BF16 || encoder == Precision::FP8 ? Precision::FP16 : encoder;
  if (asked != Precision::FP32 && asked != Precision::BF16 && asked != Precision::FP16)
    throw Error("decoder precision " + to_string(asked) + ": expected auto, fp32, bf16 or fp16");
  return asked;
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
    b.decoder_precision = decoder_precision(b.precision, options.decoder_precision);
    auto ops = std::make_shared<CudaOps>(index, b.precision, options.cuda_graphs);
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, index);
    b.device = "cuda:" + std::to_string(index) + " (" + prop.name + ")";
    b.encoder_ops = ops;
    const bool same = b.decoder_precision == b.precision || (b.precision == Precision::FP8 && b.decoder_precision == Precision::BF16);
    b.ops = same ? ops : ops->sibling(b.decoder_precision);
    return b;
#endif
  }
  if (dev == "cuda" || dev.rfind("cuda:", 0) == 0) throw Error("device " + dev + " requested, but " + why);
  const bool int8 = options.precision == Precision::INT8;
  if (options.precision != Precision::Auto && options.precision != Precision::FP32 && !int8)
    throw Error("precision " + to_string(options.precision) +
                " needs a CUDA GPU; the CPU backend computes in fp32 (or int8: --precision int8)");
  if (dev == "auto" && why != "this build has no CUDA backend") b.note = why + ": running on the CPU";
  if (decoder_precision(Precision::FP32, options.decoder_precision) != Precision::FP32)
    throw Error("decoder precision " + to_string(options.decoder_precision) + " needs a CUDA GPU; the CPU backend computes in fp32");
  b.ops = std::make_shared<CpuOps>(int8);
  b.encoder_ops = b.ops;
  b.device = "cpu";
  b.precision = int8 ? Precision::INT8 : Precision::FP32;
  b.decoder_precision = Precision::FP32;
  return b;
}

}  // namespace samfast
