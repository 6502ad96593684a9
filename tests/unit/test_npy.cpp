// .npy reading: round trips, and headers numpy itself refuses (bad shapes, sizes past 64 bits),
// each refused with a message naming the file and the problem.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "samfast/error.h"
#include "samfast/npy.h"

namespace samfast {
namespace {

namespace fs = std::filesystem;

// A .npy file with the given header dict (padded as numpy pads it) and data.
std::string npy(const std::string& dict, const std::string& data, int version = 1) {
  std::string header = dict;
  const size_t prefix = version == 1 ? 10 : 12;
  header.append(64 - (prefix + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY" + std::string{char(version), 0};
  for (size_t i = 0; i < prefix - 8; ++i) out += char(header.size() >> (8 * i));
  return out + header + data;
}

std::string f32(const std::vector<float>& v) { return {reinterpret_cast<const char*>(v.data()), v.size() * 4}; }

std::string dict(const std::string& shape, const std::string& descr = "<f4") {
  return "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
}

Tensor read(const std::string& bytes) {
  return read_npy_bytes({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "mask m.npy");
}

void expect_error(const std::string& bytes, const std::string& needle) {
  try {
    read(bytes);
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("mask m.npy"), std::string::npos) << message;
    EXPECT_NE(message.find(needle), std::string::npos) << message;
    EXPECT_EQ(message.find_first_of("\n\x1b"), std::string::npos) << message;
  }
}

TEST(Npy, RoundTripThroughAFile) {
  const fs::path path = fs::temp_directory_path() / ("samfast_npy_" + std::to_string(getpid()) + ".npy");
  const Tensor t = Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6.5f});
  write_npy(path.string(), t);
  const Tensor back = read_npy(path.string());
  EXPECT_EQ(back.shape, t.shape);
  EXPECT_EQ(std::vector<float>(back.data, back.data + 6), std::vector<float>(t.data, t.data + 6));
  // Data past what the header declares is ignored, as np.load ignores it.
  std::ofstream(path, std::ios::binary | std::ios::app) << "trailing";
  EXPECT_EQ(read_npy(path.string()).shape, t.shape);
  // Cut short: the message names the file.
  const std::string bytes = npy(dict("(2, 3)"), f32({1, 2, 3}));
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  try {
    read_npy(path.string());
    ADD_FAILURE() << "a truncated .npy loaded";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path.string() + " is truncated: expected 6 values");
  }
  fs::remove(path);
}

TEST(Npy, ShapesAndTypes) {
  EXPECT_EQ(read(npy(dict("()"), f32({7}))).shape, Shape{});
  EXPECT_EQ(read(npy(dict("(3,)"), f32({1, 2, 3}))).shape, Shape{3});
  EXPECT_EQ(read(npy(dict("(1,2 ,  3 ,)"), f32({1, 2, 3, 4, 5, 6}))).shape, (Shape{1, 2, 3}));
  EXPECT_EQ(read(npy(dict("(0, 5)"), "")).shape, (Shape{0, 5}));
  EXPECT_EQ(read(npy(dict("(2,)"), f32({1, 2}), 2)).data[1], 2.0f);  // version 2: a 4-byte header length
  const double values[2] = {0.5, -3.0};
  const Tensor f64 = read(npy(dict("(2,)", "<f8"), std::string(reinterpret_cast<const char*>(values), 16)));
  EXPECT_EQ(f64.data[0], 0.5f);
  EXPECT_EQ(f64.data[1], -3.0f);
}

TEST(Npy, MalformedHeadersAreRefused) {
  expect_error("not numpy at all", "is not a .npy file");
  expect_error(npy(dict("(2,)"), f32({1, 2}), 4), ".npy format version 4 is not supported");
  expect_error(npy(dict("(2,)"), f32({1})), "is truncated: expected 2 values");
  expect_error(npy(dict("(2,)", "<i8"), f32({1, 2, 3, 4})), "only little-endian float32/float64");
  expect_error(npy(dict("(2,)", ">f4"), f32({1, 2})), "only little-endian float32/float64");
  expect_error(npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", f32({1, 2, 3, 4})), "Fortran-order");
  expect_error(npy("{'descr': '<f4', 'fortran_order': False, }", ""), "has no shape");
  expect_error(npy(dict("(2,)"), "").substr(0, 30), "is truncated inside its .npy header");
  // Shapes numpy's literal_eval would not read as a tuple of sizes: no silently dropped '-'.
  for (const std::string shape : {"(3,-1)", "(-1,)", "(3)", "(2 3)", "(2,,3)", "(,)", "(2, 3.5)"})
    expect_error(npy(dict(shape), f32({1, 2, 3, 4, 5, 6})), "is not a tuple of sizes");
  // Long headers: no recursion per character (std::regex overflowed the stack on these).
  expect_error(npy(dict("(" + std::string(60000, '1') + ",)"), ""), "has a dimension past 2^63");
  expect_error(npy(dict("(" + std::string(60000, ' ') + ")"), ""), "is truncated: expected 1 values");
  std::string ones = "(";
  for (int i = 0; i < 65; ++i) ones += "1, ";
  expect_error(npy(dict(ones + ")"), f32({1})), "65 dimensions, more than numpy's 64");
  // Control characters in a header are shown escaped.
  expect_error(npy(dict("(2,)", "\x1b[31m"), ""), "'descr': '\\x1b[31m'");
}

TEST(Npy, SizesPast64BitsAndTheLimitAreRefused) {
  expect_error(npy(dict("(99999999999999999999,)"), ""), "has a dimension past 2^63");
  expect_error(npy(dict("(4294967296, 4294967296)"), ""), "(4294967296, 4294967296) has more elements than fit in 64 bits");
  // Fits int64 as a count, but not as bytes of float64.
  expect_error(npy(dict("(999999999999999999, 3)", "<f8"), ""), "too large");
  expect_error(npy(dict("(65536, 65536)"), ""), "has 4294967296 elements, more than the 2^30 supported");
}

}  // namespace
}  // namespace samfast
