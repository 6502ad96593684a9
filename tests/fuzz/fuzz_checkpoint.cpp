// libFuzzer target for the checkpoint loaders: any input may be rejected with samfast::Error, but
// must never crash, hang, leak, or read out of bounds (run under ASan/UBSan by run_fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <vector>

#include "io/zip.h"
#include "samfast/checkpoint.h"
#include "samfast/error.h"

namespace {

// Mutations of a whole .pth almost always break a CRC, so the unpickler and the tensor checks
// behind it are also fed the input directly: as data.pkl of an archive with a few small storages.
std::vector<uint8_t> archive_around_pickle(const uint8_t* data, size_t size) {
  static const uint8_t storage[64] = {0, 0, 128, 63, 0, 0, 0, 64, 0, 60, 128, 63};
  const std::vector<samfast::ZipEntryToWrite> entries = {
      {"archive/data.pkl", {data, size}},
      {"archive/data/0", {storage, 64}},
      {"archive/data/1", {storage, 12}},
      {"archive/data/2", {storage, 2}},
  };
  std::ostringstream out;
  samfast::write_stored_zip(out, entries, "fuzz archive");
  const std::string bytes = out.str();
  return {bytes.begin(), bytes.end()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  try {
    samfast::load_pth_bytes(bytes, "fuzz input");
  } catch (const samfast::Error&) {
  }
  try {
    samfast::load_safetensors_bytes(bytes, "fuzz input");
  } catch (const samfast::Error&) {
  }
  try {
    samfast::load_pth_bytes(archive_around_pickle(data, size), "fuzz pickle");
  } catch (const samfast::Error&) {
  }
  return 0;
}
