// Pieces shared by the .pth and safetensors halves of checkpoint loading and saving.
#pragma once
#include <bit>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

namespace samfast::detail {

// Stored data is little-endian, and fp32 tensors are written and read with plain copies.
static_assert(std::endian::native == std::endian::little, "checkpoint I/O assumes a little-endian host");

// No SAM weight comes near this; larger counts in a file are corruption or an attack.
constexpr int64_t kMaxTensorElements = int64_t{1} << 31;

// Bytes per element of "float32", "float16" or "bfloat16"; 0 for any other dtype.
size_t dtype_size(const std::string& dtype);
// Converts `count` packed little-endian elements of a supported dtype to fp32, exactly.
void decode_to_f32(const uint8_t* src, const std::string& dtype, int64_t count, float* dst);

// Runs `write` on "<path>.tmp" and renames it to `path` once complete, so a failed or
// interrupted save never leaves a half-written file under the real name.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

}  // namespace samfast::detail
