// PyTorch .pth checkpoints (zip archive + restricted unpickler), format detection, and the
// helpers shared with safetensors.cpp.
#include "samfast/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "io/checkpoint_internal.h"
#include "io/pickle.h"
#include "io/printable.h"
#include "io/zip.h"
#include "samfast/error.h"
#include "samfast/safe_file.h"

namespace samfast {
namespace detail {

size_t dtype_size(const std::string& dtype) {
  if (dtype == "float32") return 4;
  if (dtype == "float16" || dtype == "bfloat16") return 2;
  return 0;
}

namespace {

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exponent = (h >> 10) & 0x1F;
  const uint32_t mantissa = h & 0x3FF;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24 is exact in fp32
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  const uint32_t bits = exponent == 0x1F ? sign | 0x7F800000u | (mantissa << 13)  // inf, nan
                                         : sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  return std::bit_cast<float>(bits);
}

}  // namespace

void decode_to_f32(const uint8_t* src, const std::string& dtype, int64_t count, float* dst) {
  if (dtype == "float32") {
    std::memcpy(dst, src, static_cast<size_t>(count) * 4);
    return;
  }
  const bool is_bf16 = dtype == "bfloat16";
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t v = static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
    dst[i] = is_bf16 ? std::bit_cast<float>(uint32_t{v} << 16) : half_to_float(v);
  }
}

void check_finite(const std::string& name, const float* values, int64_t count, const std::string& what) {
  int64_t bad = 0;
  for (int64_t i = 0; i < count; ++i)  // all exponent bits set: Inf or NaN (a bit test vectorises)
    bad += (std::bit_cast<uint32_t>(values[i]) & 0x7F800000u) == 0x7F800000u;
  if (bad)
    throw Error(what + ": tensor " + printable(name) + " has " + std::to_string(bad) +
                " non-finite values (NaN or Inf); refusing to load it");
}

}  // namespace detail

namespace {

// torch.save's data.pkl for a SAM state_dict is ~60 KB; a far larger one is not a state_dict.
constexpr uint64_t kMaxPickleBytes = uint64_t{64} << 20;
// Tensors may share a storage (tied weights, slices of one buffer), but a file whose views expand
// its storage many times over is a crafted one asking for unbounded memory.
constexpr uint64_t kMaxExpansion = 8;

struct View {
  int64_t numel = 0;
  bool contiguous = true;
};

// Checks that every element of the strided view lies inside a storage of `have` bytes.
View check_view(const std::string& raw_name, const pickle::TensorRef& ref, uint64_t have, const std::string& what) {
  const std::string name = printable(raw_name);
  const size_t elem = detail::dtype_size(ref.dtype);
  if (elem == 0)
    throw Error(what + ": tensor " + name + " has dtype " + ref.dtype +
                ": unsupported (only float32, float16 and bfloat16 load)");
  auto bad = [&](const std::string& problem) { return Error(what + ": tensor " + name + " " + problem); };
  if (ref.storage_offset < 0) throw bad("has a negative storage offset");
  View view;
  view.numel = 1;
  int64_t last = ref.storage_offset;  // storage index of the view's last element
  int64_t expected_stride = 1;
  for (size_t d = ref.size.size(); d-- > 0;) {
    const int64_t size = ref.size[d], stride = ref.stride[d];
    if (size < 0 || stride < 0) throw bad("has a negative size or stride");
    if (size > detail::kMaxTensorElements) throw bad("has a dimension of " + std::to_string(size) + ", too large");
    view.numel *= size;  // both factors are at most 2^31 here, so no overflow
    if (view.numel > detail::kMaxTensorElements)
      throw bad("declares more than 2^31 elements (size " + shape_str(ref.size) + ")");
    if (size > 1 && stride != expected_stride) view.contiguous = false;
    expected_stride *= size;
    int64_t reach = 0;
    if (size > 0 && (__builtin_mul_overflow(size - 1, stride, &reach) || __builtin_add_overflow(last, reach, &last)))
      throw bad("has strides that reach past any storage");
  }
  if (view.numel == 0) return view;
  uint64_t needed = 0;
  const bool overflow = __builtin_mul_overflow(static_cast<uint64_t>(last) + 1, elem, &needed);
  if (overflow || needed > have)
    throw Error(what + ": tensor " + name + " needs " + (overflow ? "more than 2^64" : std::to_string(needed)) +
                " bytes of storage data/" + printable(ref.storage_key) + ", which has " + std::to_string(have));
  if (static_cast<uint64_t>(view.numel) > have / elem)
    throw bad("has more elements than its storage holds (overlapping strides); not supported");
  return view;
}

void gather(const uint8_t* storage, const pickle::TensorRef& ref, const View& view, float* dst) {
  const size_t elem = detail::dtype_size(ref.dtype);
  if (view.numel == 0) return;
  if (view.contiguous) {
    detail::decode_to_f32(storage + ref.storage_offset * elem, ref.dtype, view.numel, dst);
    return;
  }
  // Walk the view in row-major order with an odometer over its indices.
  const size_t ndim = ref.size.size();
  std::vector<int64_t> index(ndim, 0);
  int64_t at = ref.storage_offset;
  for (int64_t i = 0; i < view.numel; ++i) {
    detail::decode_to_f32(storage + at * elem, ref.dtype, 1, dst + i);
    for (size_t d = ndim; d-- > 0;) {
      if (++index[d] < ref.size[d]) {
        at += ref.stride[d];
        break;
      }
      at -= ref.stride[d] * (ref.size[d] - 1);
      index[d] = 0;
    }
  }
}

StateDict load_archive(const ZipReader& zip, const std::string& what) {
  // torch.save puts everything under one folder, named after the file or "archive".
  std::string prefix;
  std::optional<int64_t> pkl_index;
  for (int64_t i = 0; i < zip.entry_count() && !pkl_index; ++i) {
    const std::string name = zip.entry_name(i);
    const size_t slash = name.find('/');
    if (slash != std::string::npos && slash > 0 && name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      prefix = name.substr(0, slash + 1);
      pkl_index = i;
    }
  }
  if (!pkl_index) throw Error(what + " is a zip archive without <folder>/data.pkl, so not a PyTorch checkpoint");
  if (const auto order = zip.find(prefix + "byteorder")) {
    const std::vector<uint8_t> bytes = zip.read(*order, 16);
    if (std::string(bytes.begin(), bytes.end()) != "little")
      throw Error(what + " stores big-endian tensors, which are not supported");
  }
  const std::vector<uint8_t> pkl = zip.read(*pkl_index, kMaxPickleBytes);
  const std::vector<std::pair<std::string, pickle::TensorRef>> refs = pickle::read_state_dict(pkl, what);

  // Read each storage once, build every tensor viewing it, and free it before the next.
  std::vector<size_t> order(refs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return refs[a].second.storage_key < refs[b].second.storage_key; });
  StateDict out;
  uint64_t storage_bytes = 0, output_bytes = 0;
  for (size_t first = 0; first < order.size();) {
    const std::string& key = refs[order[first]].second.storage_key;
    size_t last = first;
    while (last < order.size() && refs[order[last]].second.storage_key == key) ++last;
    const auto index = zip.find(prefix + "data/" + key);
    if (!index)
      throw Error(what + ": tensor " + printable(refs[order[first]].first) + " refers to storage data/" +
                  printable(key) + ", which the archive lacks");
    const uint64_t have = zip.entry_size(*index);
    std::vector<View> views;
    for (size_t k = first; k < last; ++k) {
      views.push_back(check_view(refs[order[k]].first, refs[order[k]].second, have, what));
      output_bytes += static_cast<uint64_t>(views.back().numel) * sizeof(float);
    }
    storage_bytes += have;
    if (output_bytes > kMaxExpansion * storage_bytes + (uint64_t{1} << 20))
      throw Error(what + ": its tensors view the same storage data over and over (" + std::to_string(output_bytes) +
                  " bytes of fp32 from " + std::to_string(storage_bytes) + " stored); refusing to expand it");
    const std::vector<uint8_t> storage = zip.read(*index, have);
    for (size_t k = first; k < last; ++k) {
      const auto& [name, ref] = refs[order[k]];
      LoadedTensor loaded{ref.dtype, Tensor::empty(ref.size)};
      gather(storage.data(), ref, views[k - first], loaded.value.data);
      detail::check_finite(name, loaded.value.data, loaded.value.numel(), what);
      out.emplace(name, std::move(loaded));  // names are unique: read_state_dict kept a repeated one's last
    }
    first = last;
  }
  return out;
}

std::string describe(const std::string& path) { return "checkpoint " + path; }

void check_unique_names(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path) {
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    if (!seen.insert(name).second) throw Error("cannot write " + path + ": tensor name " + name + " appears twice");
    if (!tensor.defined() && tensor.numel() > 0) throw Error("cannot write " + path + ": tensor " + name + " has no data");
  }
}

}  // namespace

StateDict load_pth(const std::string& path) {
  const ZipReader zip = ZipReader::open_file(path, describe(path));
  return load_archive(zip, describe(path));
}

StateDict load_pth_bytes(const std::vector<uint8_t>& bytes, const std::string& what) {
  const ZipReader zip = ZipReader::open_bytes(bytes, what);
  return load_archive(zip, what);
}

StateDict load_checkpoint(const std::string& path) {
  require_regular_file(path, "checkpoint");  // a FIFO would block the read below forever
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(describe(path) + " cannot be opened (missing or unreadable)");
  char head[9] = {};
  in.read(head, sizeof head);
  const std::streamsize got = in.gcount();
  if (got >= 2 && head[0] == 'P' && head[1] == 'K') return load_pth(path);
  // The legacy torch.save format is a bare pickle stream, which starts with the PROTO opcode.
  if (got >= 1 && static_cast<uint8_t>(head[0]) == 0x80)
    throw Error(describe(path) + " is in PyTorch's legacy (non-zip) format, which is not supported; "
                "re-save it with torch.save(state_dict, path) from torch >= 1.6 (the zip format)");
  if (got == 9 && head[8] == '{') return load_safetensors(path);  // JSON header after its length
  throw Error(describe(path) + " is neither a PyTorch .pth (zip) nor a safetensors file");
}

void save_pth(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path) {
  check_unique_names(tensors, path);
  std::vector<pickle::TensorToWrite> meta;
  for (const auto& [name, tensor] : tensors) meta.push_back({name, tensor.shape});
  const std::string pkl = pickle::write_state_dict(meta);
  static const std::string kVersion = "3\n", kByteOrder = "little";
  auto bytes = [](const void* p, size_t n) { return std::span<const uint8_t>(static_cast<const uint8_t*>(p), n); };
  // The entry order torch.save uses: data.pkl, byteorder, the storages, version.
  std::vector<ZipEntryToWrite> entries;
  entries.push_back({"archive/data.pkl", bytes(pkl.data(), pkl.size())});
  entries.push_back({"archive/byteorder", bytes(kByteOrder.data(), kByteOrder.size())});
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i].second;
    entries.push_back({"archive/data/" + std::to_string(i), bytes(t.data, sizeof(float) * t.numel())});
  }
  entries.push_back({"archive/version", bytes(kVersion.data(), kVersion.size())});
  write_file_atomically(path, [&](std::ostream& out) { write_stored_zip(out, entries, describe(path)); });
}

}  // namespace samfast
