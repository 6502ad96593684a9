// The number format a model computes in, and its names (as the command line and reports write them).
#pragma once
#include <string>
#include <vector>

namespace samfast {

// Auto: bf16 on a GPU, fp32 on the CPU. BF16, FP16: GPU only. FP8: a GPU
// with fp8 tensor cores (compute capability 8.9+): bf16, with the image encoder blocks' Linear
// layers in fp8 E4M3, weights scaled per output channel and activations per token; not "no
// accuracy loss": measured. INT8: the CPU only: fp32, with the image encoder blocks' Linear layers
// in int8 (weights per output channel, activations per token, quantised on the fly: the seed's
// dynamic quantization), through oneDNN's VNNI kernels; not "no accuracy loss": measured.
enum class Precision { Auto, FP32, BF16, FP16, FP8, INT8 };

// "auto", "fp32", "bf16", "fp16", "fp8" or "int8" -> Precision; throws samfast::Error naming the valid names.
Precision parse_precision(const std::string& name);
// The name parse_precision reads back.
std::string to_string(Precision precision);
// Every name parse_precision takes, "auto" first.
const std::vector<std::string>& precision_names();

}  // namespace samfast
