#include "io/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <vector>

#include "samfast/error.h"

namespace samfast {

void write_npy(const std::string& path, const Tensor& t) {
  std::string shape;
  for (int64_t d : t.shape) shape += std::to_string(d) + ",";
  if (t.shape.size() > 1) shape.pop_back();
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');  // total header size a multiple of 64
  header += '\n';
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    const uint16_t len = (uint16_t)header.size();
    f.write("\x93NUMPY\x01\x00", 8);
    f.write(reinterpret_cast<const char*>(&len), 2);
    f << header;
    f.write(reinterpret_cast<const char*>(t.data), sizeof(float) * t.numel());
    if (!f) throw Error("cannot write " + path);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error("cannot write " + path);
}

Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open " + path);
  char magic[10];
  f.read(magic, 10);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error(path + " is not a .npy file");
  size_t hlen = (uint8_t)magic[8] | ((uint8_t)magic[9] << 8);
  if (magic[6] != 1) {  // version 2/3: 4-byte header length
    char more[2];
    f.read(more, 2);
    hlen |= ((size_t)(uint8_t)more[0] << 16) | ((size_t)(uint8_t)more[1] << 24);
  }
  if (hlen > 65536) throw Error(path + ": .npy header too large");
  std::string header(hlen, '\0');
  f.read(header.data(), (std::streamsize)hlen);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([<|]f[48])'")))
    throw Error(path + ": only little-endian float32/float64 .npy arrays are supported (header: " + header + ")");
  const bool f64 = m[1].str().back() == '8';
  if (std::regex_search(header, std::regex("'fortran_order':\\s*True"))) throw Error(path + ": Fortran-order arrays are not supported");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) throw Error(path + ": .npy header has no shape");
  Shape shape;
  std::string dims = m[1].str();
  const std::regex number("\\d+");
  for (std::sregex_iterator it(dims.begin(), dims.end(), number), end; it != end; ++it) {
    if (it->str().size() > 9) throw Error(path + ": .npy dimension too large");
    shape.push_back(std::stoll(it->str()));
  }
  const int64_t n = numel_of(shape);
  if (n > (int64_t(1) << 30)) throw Error(path + ": .npy array too large");
  Tensor t = Tensor::empty(shape);
  if (f64) {
    std::vector<double> buf(n);
    f.read(reinterpret_cast<char*>(buf.data()), sizeof(double) * n);
    for (int64_t i = 0; i < n; ++i) t.data[i] = (float)buf[i];
  } else {
    f.read(reinterpret_cast<char*>(t.data), sizeof(float) * n);
  }
  if (!f) throw Error(path + " is truncated: expected " + std::to_string(n) + " values");
  return t;
}

}  // namespace samfast
