// Chooses and creates the backend a model runs on.
#pragma once
#include <memory>
#include <string>

#include "backend/ops.h"
#include "samfast/model.h"

namespace samfast {

struct Backend {
  std::shared_ptr<Ops> ops;
  std::string device;     // "cpu" or "cuda:N (GPU name)"
  std::string precision;  // "fp32", "bf16" or "fp16"
  std::string note;       // set when the choice differs from what was asked (e.g. no GPU: CPU)
};

// device "auto" takes the first CUDA GPU if there is one and the CPU otherwise (with a note);
// "cuda" or "cuda:N" requires that GPU; "cpu" the CPU. precision "auto" is bf16 on a GPU and fp32
// on the CPU, which computes in fp32 only. Throws samfast::Error for an impossible request.
Backend make_backend(const ModelOptions& options);

}  // namespace samfast
