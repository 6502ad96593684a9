// safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range, then the packed data.
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/checkpoint.h"
#include "io/checkpoint_internal.h"
#include "samfast/error.h"

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

LoadedTensor read_tensor(ByteSource& src, const std::string& name, const nlohmann::json& info,
                         uint64_t data_start, const std::string& what) {
  auto bad = [&](const std::string& problem) { return Error(what + ": safetensors tensor " + name + " " + problem); };
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
  const std::string dtype = dtype_name(stored);
  if (dtype.empty()) throw Error(what + ": tensor " + name + " has dtype " + stored + ": unsupported (only F32, F16 and BF16 load)");

  Shape shape;
  int64_t numel = 1;
  for (const nlohmann::json& dim : *shape_it) {
    if (!dim.is_number_unsigned() || dim.get<uint64_t>() > static_cast<uint64_t>(detail::kMaxTensorElements))
      throw bad("has a shape entry that is not a size up to 2^31");
    shape.push_back(dim.get<int64_t>());
    numel *= shape.back();  // both factors are at most 2^31, so no overflow
    if (numel > detail::kMaxTensorElements) throw bad("declares more than 2^31 elements");
  }
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>(), end = (*offsets_it)[1].get<uint64_t>();
  const uint64_t data_bytes = src.size() - data_start;
  if (begin > end || end > data_bytes)
    throw bad("has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
              "] outside the file's " + std::to_string(data_bytes) + " bytes of data (truncated?)");
  const uint64_t expected = static_cast<uint64_t>(numel) * detail::dtype_size(dtype);
  if (end - begin != expected)
    throw bad("has " + std::to_string(end - begin) + " bytes of data, but its shape " + shape_str(shape) +
              " and dtype " + stored + " need " + std::to_string(expected));

  LoadedTensor loaded{dtype, Tensor::empty(shape)};
  if (dtype == "float32") {
    src.read(data_start + begin, expected, loaded.value.data);
  } else {
    std::vector<uint8_t> raw(expected);
    src.read(data_start + begin, expected, raw.data());
    detail::decode_to_f32(raw.data(), dtype, numel, loaded.value.data);
  }
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
    throw Error(what + ": safetensors header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw Error(what + ": safetensors header is a JSON " + header.type_name() + ", not an object");
  StateDict out;
  try {
    for (const auto& [name, info] : header.items()) {
      if (name == "__metadata__") continue;  // free-form strings, nothing a loader needs
      out.emplace(name, read_tensor(src, name, info, 8 + header_bytes, what));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": safetensors header is malformed: " + e.what());
  }
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
  detail::write_file_atomically(path, [&](std::ostream& out) {
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, tensor] : tensors)
      out.write(reinterpret_cast<const char*>(tensor.data), static_cast<std::streamsize>(sizeof(float) * tensor.numel()));
    if (!out) throw Error("cannot write " + path + ": write failed (disk full?)");
  });
}

}  // namespace samfast
