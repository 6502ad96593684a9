// Pieces shared by the .pth and safetensors halves of checkpoint loading and saving.
#pragma once
#include <bit>
#include <cstdint>
#include <string>

namespace samfast::detail {

// Stored data is little-endian, and fp32 tensors are written and read with plain copies.
static_assert(std::endian::native == std::endian::little, "checkpoint I/O assumes a little-endian host");

// No SAM weight comes near this; larger counts in a file are corruption or an attack.
constexpr int64_t kMaxTensorElements = int64_t{1} << 31;
// SAM's tensors have at most 4 dimensions; a file's shape or stride longer than this is refused
// before anything is built from it.
constexpr size_t kMaxTensorDims = 8;

// Bytes per element of "float32", "float16" or "bfloat16"; 0 for any other dtype.
size_t dtype_size(const std::string& dtype);
// Converts `count` packed little-endian elements of a supported dtype to fp32, exactly.
void decode_to_f32(const uint8_t* src, const std::string& dtype, int64_t count, float* dst);
// Throws Error naming tensor `name` of `what` if any of its `count` decoded values is NaN or Inf:
// the model would run on them and print finite, meaningless scores (upstream's are NaN).
void check_finite(const std::string& name, const float* values, int64_t count, const std::string& what);

}  // namespace samfast::detail
