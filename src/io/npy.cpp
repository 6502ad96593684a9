#include "samfast/npy.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string_view>
#include <vector>

#include "io/printable.h"
#include "samfast/error.h"
#include "samfast/safe_file.h"

namespace samfast {

void write_npy(std::ostream& f, const Tensor& t) {
  std::string shape;
  for (int64_t d : t.shape) shape += std::to_string(d) + ",";
  if (t.shape.size() > 1) shape.pop_back();
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');  // total header size a multiple of 64
  header += '\n';
  const uint16_t len = (uint16_t)header.size();
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(reinterpret_cast<const char*>(&len), 2);
  f << header;
  f.write(reinterpret_cast<const char*>(t.data), std::streamsize(sizeof(float) * t.numel()));
}

void write_npy(const std::string& path, const Tensor& t) {
  write_file_atomically(path, [&](std::ostream& f) { write_npy(f, t); });
}

namespace {

constexpr size_t kMaxHeaderBytes = 65536;
constexpr int64_t kMaxElements = int64_t{1} << 30;
constexpr size_t kMaxDims = 64;  // NPY_MAXDIMS of numpy 2

// What a .npy header says about the array after it.
struct NpyLayout {
  Shape shape;
  int64_t numel = 1;
  size_t element_bytes = 4;  // <f4 or <f8
  size_t data_offset = 0;    // the header's end
};

// Where the header text lies: after the magic string, version and a 2-byte length (version 1) or
// a 4-byte one (versions 2 and 3). `bytes` holds at least the file's first 12 bytes, or all of a
// shorter file.
struct HeaderRange {
  size_t begin, end;
};
HeaderRange header_range(std::span<const uint8_t> bytes, const std::string& what) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) throw Error(what + " is not a .npy file");
  const uint8_t version = bytes[6];
  if (version < 1 || version > 3) throw Error(what + ": .npy format version " + std::to_string(version) + " is not supported");
  const size_t begin = version == 1 ? 10 : 12;
  if (bytes.size() < begin) throw Error(what + " is truncated inside its .npy header");
  size_t length = 0;
  for (size_t i = begin; i-- > 8;) length = length << 8 | bytes[i];
  if (length > kMaxHeaderBytes) throw Error(what + ": .npy header too large (" + std::to_string(length) + " bytes)");
  return {begin, begin + length};
}

// The shape as Python writes a tuple of ints: "()", "(5,)", "(2, 3)". numpy reads headers with
// ast.literal_eval and refuses anything else, such as "(3,-1)", "(3)" (an int) or "(2 3)".
Shape parse_shape(std::string_view inside, const std::string& what) {
  auto bad = [&](const std::string& problem) {
    return Error(what + ": .npy shape (" + printable(inside) + ") " + problem);
  };
  Shape shape;
  size_t i = 0;
  auto skip_spaces = [&] {
    while (i < inside.size() && inside[i] == ' ') ++i;
  };
  bool trailing_comma = false;
  skip_spaces();
  while (i < inside.size()) {
    if (!std::isdigit(static_cast<unsigned char>(inside[i]))) throw bad("is not a tuple of sizes");
    int64_t d = 0;
    for (; i < inside.size() && std::isdigit(static_cast<unsigned char>(inside[i])); ++i)
      if (__builtin_mul_overflow(d, 10, &d) || __builtin_add_overflow(d, inside[i] - '0', &d))
        throw bad("has a dimension past 2^63");
    shape.push_back(d);
    skip_spaces();
    trailing_comma = i < inside.size() && inside[i] == ',';
    if (!trailing_comma) break;
    ++i;
    skip_spaces();
  }
  if (i != inside.size() || (shape.size() == 1 && !trailing_comma)) throw bad("is not a tuple of sizes");
  return shape;
}

// The header's text after `key` and the spaces after it ("" if the key is absent). Plain string
// search, not std::regex: libstdc++'s regex recurses once per character matched, and a 64 KB
// header overflowed the stack.
std::string_view value_of(std::string_view header, std::string_view key) {
  const size_t at = header.find(key);
  if (at == std::string_view::npos) return {};
  std::string_view value = header.substr(at + key.size());
  while (value.starts_with(' ')) value.remove_prefix(1);
  return value;
}

// `bytes` starts with the file's first byte and reaches at least to the header's end.
NpyLayout parse_header(std::span<const uint8_t> bytes, const std::string& what) {
  const HeaderRange range = header_range(bytes, what);
  if (bytes.size() < range.end) throw Error(what + " is truncated inside its .npy header");
  NpyLayout layout;
  layout.data_offset = range.end;
  const std::string header(bytes.begin() + range.begin, bytes.begin() + range.end);
  const std::string_view descr = value_of(header, "'descr':");
  if (descr.starts_with("'<f4'") || descr.starts_with("'|f4'")) {
    layout.element_bytes = 4;
  } else if (descr.starts_with("'<f8'") || descr.starts_with("'|f8'")) {
    layout.element_bytes = 8;
  } else {
    throw Error(what + ": only little-endian float32/float64 .npy arrays are supported (header: " +
                printable(header, 200) + ")");
  }
  if (value_of(header, "'fortran_order':").starts_with("True")) throw Error(what + ": Fortran-order arrays are not supported");
  const std::string_view shape = value_of(header, "'shape':");
  const size_t close = shape.find(')');
  if (!shape.starts_with('(') || close == std::string_view::npos) throw Error(what + ": .npy header has no shape");
  layout.shape = parse_shape(shape.substr(1, close - 1), what);
  if (layout.shape.size() > kMaxDims)
    throw Error(what + ": .npy shape has " + std::to_string(layout.shape.size()) + " dimensions, more than numpy's " +
                std::to_string(kMaxDims));
  for (int64_t d : layout.shape)
    if (__builtin_mul_overflow(layout.numel, d, &layout.numel))
      throw Error(what + ": .npy shape " + shape_str(layout.shape) + " has more elements than fit in 64 bits");
  if (layout.numel > kMaxElements)
    throw Error(what + ": .npy array too large: shape " + shape_str(layout.shape) + " has " +
                std::to_string(layout.numel) + " elements, more than the 2^30 supported");
  return layout;
}

size_t data_bytes(const NpyLayout& layout) { return static_cast<size_t>(layout.numel) * layout.element_bytes; }

Tensor decode(const NpyLayout& layout, std::span<const uint8_t> data, const std::string& what) {
  if (data.size() < data_bytes(layout))
    throw Error(what + " is truncated: expected " + std::to_string(layout.numel) + " values");
  Tensor t = Tensor::empty(layout.shape);
  if (layout.element_bytes == 4) {
    std::memcpy(t.data, data.data(), data_bytes(layout));
  } else {
    for (int64_t i = 0; i < layout.numel; ++i) {
      double v;
      std::memcpy(&v, data.data() + 8 * i, 8);
      t.data[i] = static_cast<float>(v);
    }
  }
  return t;
}

// Reads into bytes[from, size()), then shrinks `bytes` to what the file had.
void read_into(std::istream& in, std::vector<uint8_t>& bytes, size_t from) {
  in.read(reinterpret_cast<char*>(bytes.data() + from), static_cast<std::streamsize>(bytes.size() - from));
  bytes.resize(from + static_cast<size_t>(in.gcount()));
}

}  // namespace

Tensor read_npy_bytes(std::span<const uint8_t> bytes, const std::string& what) {
  const NpyLayout layout = parse_header(bytes, what);
  return decode(layout, bytes.subspan(layout.data_offset), what);
}

Tensor read_npy(const std::string& path) {
  require_regular_file(path, "mask input");  // a FIFO would block the read below forever
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open " + path);
  // The header, then only the data it declares: a huge file is never read whole.
  std::vector<uint8_t> bytes(12);
  read_into(f, bytes, 0);
  const size_t prefix = bytes.size();
  bytes.resize(std::max(prefix, header_range(bytes, path).end));
  read_into(f, bytes, prefix);
  const NpyLayout layout = parse_header(bytes, path);
  bytes.resize(layout.data_offset + data_bytes(layout));
  read_into(f, bytes, layout.data_offset);
  return decode(layout, std::span<const uint8_t>(bytes).subspan(layout.data_offset), path);
}

}  // namespace samfast
