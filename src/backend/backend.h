// Chooses and creates the backend a model runs on.
#pragma once
#include <memory>
#include <string>

#include "backend/ops.h"
#include "samfast/precision.h"

namespace samfast {

// What make_backend is asked for (src/model fills it from the public ModelOptions).
struct BackendOptions {
  std::string device = "auto";  // auto, cpu, cuda or cuda:N
  Precision precision = Precision::Auto;
  Precision decoder_precision = Precision::Auto;  // ModelOptions::decoder_precision
  bool cuda_graphs = true;  // on a GPU, record and replay CUDA graphs (Ops::run_recorded)
};

struct Backend {
  std::shared_ptr<Ops> ops;          // the prompt encoder's, the mask decoder's and post-processing's
  std::shared_ptr<Ops> encoder_ops;  // the image encoder's: ops itself, or a sibling in another precision
  std::string device;                      // "cpu" or "cuda:N (GPU name)"
  Precision precision = Precision::FP32;   // never Auto: what it became
  Precision decoder_precision = Precision::FP32;  // the same for the decoder
  std::string note;                        // set when the choice differs from what was asked (e.g. no GPU: CPU)
};

// device "auto" takes the first CUDA GPU if there is one and the CPU otherwise (with a note);
// "cuda" or "cuda:N" requires that GPU; "cpu" the CPU. precision Auto is BF16 on a GPU and FP32
// on the CPU, which computes in fp32 only; decoder_precision Auto is fp16 beside a bf16 or fp8 image
// encoder on a GPU, else the encoder's. Throws samfast::Error for an impossible request.
Backend make_backend(const BackendOptions& options);

}  // namespace samfast
