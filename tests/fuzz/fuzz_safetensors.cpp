// libFuzzer target for the safetensors header: the input is the JSON header, then optionally a NUL
// byte and the tensor data (JSON text holds no raw NUL). The 8-byte header length is written here,
// so mutations reach the JSON and its offsets instead of breaking the length first. Any input may
// be rejected with samfast::Error, but must never crash, hang, leak, or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "samfast/checkpoint.h"
#include "samfast/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const size_t header = nul ? static_cast<size_t>(nul - data) : size;
  std::vector<uint8_t> file;
  for (int i = 0; i < 8; ++i) file.push_back(static_cast<uint8_t>(uint64_t{header} >> (8 * i)));
  file.insert(file.end(), data, data + header);
  if (nul) file.insert(file.end(), nul + 1, data + size);
  try {
    samfast::load_safetensors_bytes(file, "fuzz header");
  } catch (const samfast::Error&) {
  }
  return 0;
}
