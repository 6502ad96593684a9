// libFuzzer target for the .npy reader (mask inputs come from users): any input may be rejected
// with samfast::Error, but must never crash, hang, leak, or read out of bounds (run under
// ASan/UBSan by run_fuzz.sh).
#include <cstddef>
#include <cstdint>

#include "samfast/error.h"
#include "samfast/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    samfast::read_npy_bytes({data, size}, "fuzz input");
  } catch (const samfast::Error&) {
  }
  return 0;
}
