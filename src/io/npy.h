// NumPy .npy files (float32, C order): mask-input logits in and out of the CLI, tensors for tests.
#pragma once
#include <string>

#include "samfast/tensor.h"

namespace samfast {

void write_npy(const std::string& path, const Tensor& t);
// Reads a little-endian float32 (or float64, converted) C-order array. Throws samfast::Error
// naming the file for anything else.
Tensor read_npy(const std::string& path);

}  // namespace samfast
