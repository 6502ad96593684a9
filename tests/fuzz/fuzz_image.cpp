// libFuzzer target for the image reader (images come from users' folders): JPEG through libjpeg
// with its EXIF orientation, PNG with its chunk CRCs, and stb_image's other formats. Any input may
// be rejected with samfast::Error, but must never crash, hang, leak, or read out of bounds (run
// under ASan/UBSan by run_fuzz.sh). read_image takes a path, so each input goes to an in-memory
// file (memfd), named through /proc/self/fd: no disk traffic.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "samfast/error.h"
#include "samfast/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("fuzz_image", 0);
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != ssize_t(size)) return 0;
  try {
    // A small pixel limit keeps each run fast; the header checks before decoding are what it tests.
    samfast::read_image("/proc/self/fd/" + std::to_string(fd), int64_t(1) << 22);
  } catch (const samfast::Error&) {
  }
  return 0;
}
