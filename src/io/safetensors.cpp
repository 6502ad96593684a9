// safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range, then the packed data.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "io/checkpoint_internal.h"
#include "io/printable.h"
#include "samfast/checkpoint.h"
#include "samfast/error.h"
#include "samfast/safe_file.h"

namespace samfast {
namespace {

// The reference implementation refuses headers past 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

// Files are read piecewise so a multi-gigabyte checkpoint is never held twice in memory; the
// fuzz target and tests read from a buffer through the same interface.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // Callers check bounds against size() first.
  virtual void read(uint64_t offset, uint64_t n, void* dst) = 0;
};

class MemorySource : public ByteSource {
 public:
  explicit MemorySource(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  void read(uint64_t offset, uint64_t n, void* dst) override {
    if (n) std::memcpy(dst, bytes_.data() + offset, n);
  }

 private:
  const std::vector<uint8_t>& bytes_;
};

class FileSource : public ByteSource {
 public:
  FileSource(const std::string& path, const std::string& what) : in_(path, std::ios::binary), what_(what) {
    if (!in_) throw Error(what_ + " cannot be opened (missing or unreadable)");
    in_.seekg(0, std::ios::end);
    const std::streamoff end = in_.tellg();
    if (!in_ || end < 0) throw Error(what_ + " cannot be read (not a regular file?)");
    size_ = static_cast<uint64_t>(end);
  }
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, uint64_t n, void* dst) override {
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    if (!in_) throw Error(what_ + " cannot be read at byte " + std::to_string(offset) + " (truncated while reading?)");
  }

 private:
  std::ifstream in_;
  std::string what_;
  uint64_t size_ = 0;
};

std::string dtype_name(const std::string& safetensors_dtype) {
  if (safetensors_dtype == "F32") return "float32";
  if (safetensors_dtype == "F16") return "float16";
  if (safetensors_dtype == "BF16") return "bfloat16";
  return "";
}

// One tensor as the header describes it.
struct Entry {
  std::string name;
  std::string stored_dtype;  // as the header names it: "F32", "F16" or "BF16"
  std::string dtype;         // as LoadedTensor names it: "float32", "float16" or "bfloat16"
  Shape shape;
  int64_t numel = 1;
  uint64_t begin = 0, end = 0;  // byte range in the data, which follows the header
};

Entry parse_entry(const std::string& name, const nlohmann::json& info, uint64_t data_bytes, const std::string& what) {
  auto bad = [&](const std::string& problem) {
    return Error(what + ": safetensors tensor " + printable(name) + " " + problem);
  };
  if (!info.is_object()) throw bad("is described by a JSON " + std::string(info.type_name()) + ", not an object");
  const auto dtype_it = info.find("dtype");
  const auto shape_it = info.find("shape");
  const auto offsets_it = info.find("data_offsets");
  if (dtype_it == info.end() || !dtype_it->is_string()) throw bad("has no dtype string");
  if (shape_it == info.end() || !shape_it->is_array()) throw bad("has no shape array");
  if (offsets_it == info.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
    throw bad("has no data_offsets [begin, end]");
  const std::string stored = dtype_it->get<std::string>();
  Entry e;
  e.name = name;
  e.stored_dtype = stored;
  e.dtype = dtype_name(stored);
  if (e.dtype.empty())
    throw Error(what + ": tensor " + printable(name) + " has dtype " + printable(stored) +
                ": unsupported (only F32, F16 and BF16 load)");

  if (shape_it->size() > detail::kMaxTensorDims)
    throw bad("has a shape of " + std::to_string(shape_it->size()) + " dimensions, more than the " +
              std::to_string(detail::kMaxTensorDims) + " allowed (SAM's tensors have at most 4)");
  for (const nlohmann::json& dim : *shape_it) {
    if (!dim.is_number_unsigned() || dim.get<uint64_t>() > static_cast<uint64_t>(detail::kMaxTensorElements))
      throw bad("has a shape entry that is not a size up to 2^31");
    e.shape.push_back(dim.get<int64_t>());
    e.numel *= e.shape.back();  // both factors are at most 2^31, so no overflow
    if (e.numel > detail::kMaxTensorElements) throw bad("declares more than 2^31 elements");
  }
  e.begin = (*offsets_it)[0].get<uint64_t>();
  e.end = (*offsets_it)[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_bytes)
    throw bad("has data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
              "] outside the file's " + std::to_string(data_bytes) + " bytes of data (truncated?)");
  return e;
}

// What the reference implementation checks (safetensors' Metadata::validate): taken in order of
// their offsets, the tensors' byte ranges tile the data exactly, from byte 0 to the end of the
// file, each as long as its shape and dtype need. Overlapping ranges would load one set of bytes as
// two tensors; a gap or trailing bytes mean the header does not describe the file.
void check_layout(const std::vector<Entry>& entries, uint64_t data_bytes, const std::string& what) {
  std::vector<const Entry*> sorted;
  for (const Entry& e : entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const Entry* a, const Entry* b) { return std::pair(a->begin, a->end) < std::pair(b->begin, b->end); });
  auto range = [](const Entry& e) {
    return printable(e.name) + " [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  };
  uint64_t covered = 0;  // the data is tiled up to here
  const Entry* previous = nullptr;
  for (const Entry* e : sorted) {
    if (e->begin < covered)
      throw Error(what + ": safetensors tensors " + range(*previous) + " and " + range(*e) +
                  " overlap (invalid data_offsets)");
    if (e->begin > covered)
      throw Error(what + ": safetensors data bytes [" + std::to_string(covered) + ", " + std::to_string(e->begin) +
                  "] belong to no tensor (a gap before " + range(*e) + "; invalid data_offsets)");
    covered = e->end;
    previous = e;
  }
  if (covered != data_bytes)
    throw Error(what + ": safetensors tensors cover " + std::to_string(covered) + " bytes of data, but the file has " +
                std::to_string(data_bytes) + " after the header (invalid data_offsets, or trailing bytes)");
  // Sizes after ranges, so that two tensors pointed at the same bytes are reported as such.
  for (const Entry& e : entries) {
    const uint64_t needed = static_cast<uint64_t>(e.numel) * detail::dtype_size(e.dtype);
    if (e.end - e.begin != needed)
      throw Error(what + ": safetensors tensor " + printable(e.name) + " has " + std::to_string(e.end - e.begin) +
                  " bytes of data, but its shape " + shape_str(e.shape) + " and dtype " + e.stored_dtype + " need " +
                  std::to_string(needed));
  }
}

LoadedTensor read_tensor(ByteSource& src, const Entry& e, uint64_t data_start, const std::string& what) {
  LoadedTensor loaded{e.dtype, Tensor::empty(e.shape)};
  const uint64_t bytes = e.end - e.begin;
  if (e.dtype == "float32") {
    src.read(data_start + e.begin, bytes, loaded.value.data);
  } else {
    std::vector<uint8_t> raw(bytes);
    src.read(data_start + e.begin, bytes, raw.data());
    detail::decode_to_f32(raw.data(), e.dtype, e.numel, loaded.value.data);
  }
  detail::check_finite(e.name, loaded.value.data, e.numel, what);
  return loaded;
}

StateDict load_from(ByteSource& src, const std::string& what) {
  if (src.size() < 8)
    throw Error(what + " is too short for a safetensors file (" + std::to_string(src.size()) + " bytes)");
  uint8_t length_bytes[8];
  src.read(0, 8, length_bytes);
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | length_bytes[i];
  if (header_bytes > src.size() - 8)
    throw Error(what + ": safetensors header length " + std::to_string(header_bytes) + " exceeds the file size " +
                std::to_string(src.size()) + " (truncated or not a safetensors file)");
  if (header_bytes > kMaxHeaderBytes)
    throw Error(what + ": safetensors header length " + std::to_string(header_bytes) + " is over the 100 MB limit");
  std::string text(header_bytes, '\0');
  src.read(8, header_bytes, text.data());
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": safetensors header is not valid JSON: " + printable(e.what(), 300));
  }
  if (!header.is_object()) throw Error(what + ": safetensors header is a JSON " + header.type_name() + ", not an object");
  const uint64_t data_start = 8 + header_bytes, data_bytes = src.size() - data_start;
  // Every entry is checked, and the entries against each other, before any tensor is allocated.
  std::vector<Entry> entries;
  try {
    for (const auto& [name, info] : header.items())
      if (name != "__metadata__")  // free-form strings, nothing a loader needs
        entries.push_back(parse_entry(name, info, data_bytes, what));
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": safetensors header is malformed: " + printable(e.what(), 300));
  }
  check_layout(entries, data_bytes, what);
  StateDict out;
  for (const Entry& e : entries) out.emplace(e.name, read_tensor(src, e, data_start, what));
  return out;
}

}  // namespace

StateDict load_safetensors(const std::string& path) {
  const std::string what = "checkpoint " + path;
  FileSource src(path, what);
  return load_from(src, what);
}

StateDict load_safetensors_bytes(const std::vector<uint8_t>& bytes, const std::string& what) {
  MemorySource src(bytes);
  return load_from(src, what);
}

void save_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (!seen.insert(name).second) throw Error("cannot write " + path + ": tensor name " + name + " appears twice");
    if (name == "__metadata__") throw Error("cannot write " + path + ": __metadata__ is reserved by safetensors");
    if (!tensor.defined() && tensor.numel() > 0) throw Error("cannot write " + path + ": tensor " + name + " has no data");
    const uint64_t bytes = sizeof(float) * static_cast<uint64_t>(tensor.numel());
    header[name] = {{"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error("cannot write " + path + ": " + e.what());  // e.g. a tensor name that is not UTF-8
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned, as the format asks
  write_file_atomically(path, [&](std::ostream& out) {
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, tensor] : tensors)
      out.write(reinterpret_cast<const char*>(tensor.data), static_cast<std::streamsize>(sizeof(float) * tensor.numel()));
  });
}

}  // namespace samfast
