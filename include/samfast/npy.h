// NumPy .npy files (float32, C order): mask-input logits in and out of the CLI, tensors for tests.
#pragma once
#include <cstdint>
#include <ostream>
#include <span>
#include <string>

#include "samfast/tensor.h"

namespace samfast {

// Writes atomically (samfast/safe_file.h); the stream form is for outputs written together with others.
void write_npy(const std::string& path, const Tensor& t);
void write_npy(std::ostream& out, const Tensor& t);
// Reads a little-endian float32 (or float64, converted) C-order array of at most 2^30 elements.
// Throws samfast::Error naming the file for anything else, as numpy does for a malformed header.
Tensor read_npy(const std::string& path);
// The same from a whole file's bytes in memory (the fuzz target and tests); `what` names the source.
Tensor read_npy_bytes(std::span<const uint8_t> bytes, const std::string& what);

}  // namespace samfast
