// Checkpoint loading and saving: round trips, torch interoperability, and one test per kind of
// damaged or hostile file, each checking that the error names the problem.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zip.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/checkpoint.h"
#include "io/pickle.h"
#include "io/zip.h"
#include "samfast/error.h"

namespace samfast {
namespace {

namespace fs = std::filesystem;

// One scratch folder per test process, removed when the process exits.
fs::path temp_path(const std::string& name) {
  struct ScratchDir {
    fs::path path = fs::temp_directory_path() / ("samfast_ckpt_test_" + std::to_string(getpid()));
    ScratchDir() { fs::create_directories(path); }
    ~ScratchDir() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static const ScratchDir dir;
  return dir.path / name;
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> as_bytes(const std::string& s) { return {s.begin(), s.end()}; }

// Runs `f`, expecting a samfast::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning '" << *parts.begin() << "'";
  } catch (const Error& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "message: " << e.what() << "\nmissing: " << part;
  }
}

std::vector<std::pair<std::string, Tensor>> sample_tensors() {
  std::vector<std::pair<std::string, Tensor>> tensors;
  auto filled = [](Shape shape, float scale) {
    Tensor t = Tensor::empty(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = scale * static_cast<float>(i % 977) - 3.5f;
    return t;
  };
  tensors.emplace_back("image_encoder.patch_embed.proj.weight", filled({4, 3, 2, 2}, 0.25f));
  tensors.emplace_back("mask_decoder.iou_token.weight", filled({1, 70000}, 1.0f));  // exercises BININT
  tensors.emplace_back("scalar", filled({}, 2.0f));
  tensors.emplace_back("empty", filled({0, 4}, 1.0f));
  tensors.emplace_back("a.bias", filled({300}, -0.5f));
  return tensors;
}

void expect_same(const std::vector<std::pair<std::string, Tensor>>& expected, const StateDict& loaded) {
  ASSERT_EQ(loaded.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    const auto it = loaded.find(name);
    ASSERT_NE(it, loaded.end()) << name;
    EXPECT_EQ(it->second.dtype, "float32");
    ASSERT_EQ(it->second.value.shape, tensor.shape) << name;
    for (int64_t i = 0; i < tensor.numel(); ++i) ASSERT_EQ(it->second.value.data[i], tensor.data[i]) << name << "[" << i << "]";
  }
}

// Hand-built data.pkl pieces, so tests can describe tensors torch.save would write (views, f16,
// parameters) and ones it never would, without needing Python.
struct TensorSpec {
  std::string name, storage_class = "FloatStorage", key = "0";
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
  bool parameter = false;
};

std::string pickle_int(int64_t v) {
  std::string s = "\x8a\x08";  // LONG1, 8 bytes
  for (int i = 0; i < 8; ++i) s += static_cast<char>(static_cast<uint64_t>(v) >> (8 * i));
  return s;
}
std::string pickle_str(const std::string& v) {
  std::string s = "X";
  for (int i = 0; i < 4; ++i) s += static_cast<char>(v.size() >> (8 * i));
  return s + v;
}
std::string pickle_ints(const std::vector<int64_t>& values) {
  std::string s = "(";
  for (int64_t v : values) s += pickle_int(v);
  return s + "t";
}
std::string pickle_tensor(const TensorSpec& t) {
  std::string s;
  if (t.parameter) s += "ctorch._utils\n_rebuild_parameter\n";
  s += "ctorch._utils\n_rebuild_tensor_v2\n((" + pickle_str("storage") + "ctorch\n" + t.storage_class + "\n" +
       pickle_str(t.key) + pickle_str("cpu") + pickle_int(1) + "tQ" + pickle_int(t.offset) + pickle_ints(t.size) +
       pickle_ints(t.stride) + "\x89" + "ccollections\nOrderedDict\n)R" + "tR";
  if (t.parameter) s += "\x88}\x87R";  // (tensor, True, {}) -> Parameter
  return s;
}
std::string pickle_state_dict(const std::vector<TensorSpec>& tensors) {
  std::string s = "\x80\x02}(";  // a plain dict this time; torch.save writes an OrderedDict
  for (const TensorSpec& t : tensors) s += pickle_str(t.name) + pickle_tensor(t);
  return s + "u.";
}

std::vector<uint8_t> archive(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::vector<ZipEntryToWrite> list;
  for (const auto& [name, data] : entries)
    list.push_back({name, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size())});
  std::ostringstream out;
  write_stored_zip(out, list, "test archive");
  return as_bytes(out.str());
}

std::string f32_bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}
std::string u16_bytes(const std::vector<uint16_t>& values) {
  std::string s;
  for (uint16_t v : values) s += static_cast<char>(v & 0xFF), s += static_cast<char>(v >> 8);
  return s;
}

// --- round trips -------------------------------------------------------------------------------

TEST(Checkpoint, PthRoundTrip) {
  const auto tensors = sample_tensors();
  const fs::path path = temp_path("round.pth");
  save_pth(tensors, path);
  expect_same(tensors, load_pth(path));
  expect_same(tensors, load_checkpoint(path));
  expect_same(tensors, load_pth_bytes(read_bytes(path), "bytes"));
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
}

TEST(Checkpoint, PthStoragesAre64ByteAligned) {
  const fs::path path = temp_path("aligned.pth");
  save_pth(sample_tensors(), path);
  const std::vector<uint8_t> bytes = read_bytes(path);
  int checked = 0;
  for (size_t at = 0; at + 30 < bytes.size(); ++at) {
    if (std::memcmp(&bytes[at], "PK\x03\x04", 4) != 0) continue;
    const size_t name_len = bytes[at + 26] | (bytes[at + 27] << 8), extra_len = bytes[at + 28] | (bytes[at + 29] << 8);
    const std::string name(bytes.begin() + at + 30, bytes.begin() + at + 30 + name_len);
    if (name.rfind("archive/data/", 0) != 0) continue;
    EXPECT_EQ((at + 30 + name_len + extra_len) % 64, 0u) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

TEST(Checkpoint, SafetensorsRoundTrip) {
  const auto tensors = sample_tensors();
  const fs::path path = temp_path("round.safetensors");
  save_safetensors(tensors, path);
  expect_same(tensors, load_safetensors(path));
  expect_same(tensors, load_checkpoint(path));
  const std::vector<uint8_t> bytes = read_bytes(path);
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | bytes[i];
  EXPECT_EQ(header % 8, 0u);
  expect_same(tensors, load_safetensors_bytes(bytes, "bytes"));
}

TEST(Checkpoint, SaveIntoMissingFolderFailsCleanly) {
  const fs::path path = temp_path("no_such_dir") / "x.pth";
  expect_error([&] { save_pth(sample_tensors(), path); }, {"cannot write", path.string()});
  EXPECT_FALSE(fs::exists(path));
  expect_error([&] { save_pth({{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({1})}}, temp_path("dup.pth")); },
               {"appears twice"});
}

// --- what torch.save writes, described by hand -------------------------------------------------

TEST(Checkpoint, StridedViewsOffsetsAndParameters) {
  const std::string storage = f32_bytes({0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  TensorSpec transposed{.name = "t", .size = {3, 2}, .stride = {1, 3}};  // (2, 3).t()
  TensorSpec slice{.name = "s", .offset = 7, .size = {3}, .stride = {1}, .parameter = true};
  TensorSpec every_other{.name = "e", .offset = 1, .size = {2, 2}, .stride = {4, 2}};
  const auto bytes = archive({{"sam_vit_b_01ec64/data.pkl", pickle_state_dict({transposed, slice, every_other})},
                              {"sam_vit_b_01ec64/data/0", storage},
                              {"sam_vit_b_01ec64/version", "3\n"}});
  const StateDict sd = load_pth_bytes(bytes, "views");
  ASSERT_EQ(sd.size(), 3u);
  EXPECT_EQ(sd.at("t").value.shape, (Shape{3, 2}));
  EXPECT_EQ(std::vector<float>(sd.at("t").value.data, sd.at("t").value.data + 6), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(std::vector<float>(sd.at("s").value.data, sd.at("s").value.data + 3), (std::vector<float>{7, 8, 9}));
  EXPECT_EQ(std::vector<float>(sd.at("e").value.data, sd.at("e").value.data + 4), (std::vector<float>{1, 3, 5, 7}));
}

TEST(Checkpoint, HalfAndBFloat16InPth) {
  TensorSpec half{.name = "h", .storage_class = "HalfStorage", .key = "0", .size = {4}, .stride = {1}};
  TensorSpec bf{.name = "b", .storage_class = "BFloat16Storage", .key = "1", .size = {2}, .stride = {1}};
  const auto bytes = archive({{"archive/data.pkl", pickle_state_dict({half, bf})},
                              {"archive/data/0", u16_bytes({0x3C00, 0xC000, 0x7BFF, 0x0001})},
                              {"archive/data/1", u16_bytes({0x3F80, 0xC0A0})}});
  const StateDict sd = load_pth_bytes(bytes, "halves");
  EXPECT_EQ(sd.at("h").dtype, "float16");
  EXPECT_EQ(sd.at("b").dtype, "bfloat16");
  const float* h = sd.at("h").value.data;
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 65504.0f);
  EXPECT_EQ(h[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(sd.at("b").value.data[0], 1.0f);
  EXPECT_EQ(sd.at("b").value.data[1], -5.0f);
}

TEST(Checkpoint, StateDictWrappedUnderModel) {
  TensorSpec w{.name = "w", .size = {2}, .stride = {1}};
  const std::string pkl = "\x80\x02}(" + pickle_str("epoch") + "K\x03" + pickle_str("model") + "}(" +
                          pickle_str("w") + pickle_tensor(w) + "u" + "u.";
  const auto bytes = archive({{"archive/data.pkl", pkl}, {"archive/data/0", f32_bytes({1, 2})}});
  const StateDict sd = load_pth_bytes(bytes, "wrapped");
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd.at("w").value.data[1], 2.0f);
}

TEST(Checkpoint, DeflatedEntriesAreAccepted) {
  const fs::path stored = temp_path("stored.pth"), deflated = temp_path("deflated.pth");
  const auto tensors = sample_tensors();
  save_pth(tensors, stored);
  const std::vector<uint8_t> original = read_bytes(stored);
  int error = 0;
  zip_t* in = zip_open(stored.c_str(), ZIP_RDONLY, &error);
  zip_t* out = zip_open(deflated.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
  ASSERT_TRUE(in && out);
  for (zip_int64_t i = 0; i < zip_get_num_entries(in, 0); ++i) {
    zip_source_t* src = zip_source_zip(out, in, static_cast<zip_uint64_t>(i), 0, 0, -1);
    const zip_int64_t index = zip_file_add(out, zip_get_name(in, static_cast<zip_uint64_t>(i), 0), src, 0);
    ASSERT_GE(index, 0);
    zip_set_file_compression(out, static_cast<zip_uint64_t>(index), ZIP_CM_DEFLATE, 9);
  }
  ASSERT_EQ(zip_close(out), 0);
  zip_discard(in);
  EXPECT_LT(fs::file_size(deflated), original.size());
  expect_same(tensors, load_pth(deflated));
}

// --- damaged and hostile .pth files ------------------------------------------------------------

TEST(Checkpoint, TruncatedZip) {
  const fs::path path = temp_path("trunc.pth");
  save_pth(sample_tensors(), path);
  std::vector<uint8_t> bytes = read_bytes(path);
  bytes.resize(bytes.size() / 2);
  expect_error([&] { load_pth_bytes(bytes, "checkpoint half.pth"); },
               {"checkpoint half.pth", "truncated or not a zip archive"});
  write_bytes(path, std::string(bytes.begin(), bytes.end()));
  expect_error([&] { load_checkpoint(path); }, {path.string(), "truncated or not a zip archive"});
}

TEST(Checkpoint, CorruptedStorageFailsItsCrc) {
  const fs::path path = temp_path("crc.pth");
  save_pth(sample_tensors(), path);
  std::vector<uint8_t> bytes = read_bytes(path);
  const std::string marker = "archive/data/1";
  const auto at = std::search(bytes.begin(), bytes.end(), marker.begin(), marker.end());
  ASSERT_NE(at, bytes.end());
  at[200] ^= 0x55;  // inside the 70000-float storage that follows its local header
  expect_error([&] { load_pth_bytes(bytes, "flipped"); }, {"flipped", "damaged", "archive/data/1"});
}

TEST(Checkpoint, MissingDataPkl) {
  const auto bytes = archive({{"archive/data/0", f32_bytes({1})}, {"archive/version", "3\n"}});
  expect_error([&] { load_pth_bytes(bytes, "nopkl"); }, {"nopkl", "data.pkl"});
}

TEST(Checkpoint, MissingStorageEntry) {
  const auto bytes = archive({{"archive/data.pkl", pickle_state_dict({{.name = "w", .key = "7", .size = {2}, .stride = {1}}})},
                              {"archive/data/0", f32_bytes({1, 2})}});
  expect_error([&] { load_pth_bytes(bytes, "nostorage"); }, {"nostorage", "tensor w", "data/7", "lacks"});
}

TEST(Checkpoint, StorageTooSmall) {
  const std::string name = "image_encoder.blocks.3.attn.qkv.weight";
  const auto bytes = archive({{"archive/data.pkl", pickle_state_dict({{.name = name, .key = "12", .size = {2, 3}, .stride = {3, 1}}})},
                              {"archive/data/12", std::string(3, '\0')}});
  expect_error([&] { load_pth_bytes(bytes, "checkpoint small.pth"); },
               {"checkpoint small.pth: tensor " + name + " needs 24 bytes of storage data/12, which has 3"});
  // A view whose far end, not its start, is out of range.
  const auto strided = archive({{"archive/data.pkl", pickle_state_dict({{.name = "v", .offset = 1, .size = {2}, .stride = {5}}})},
                                {"archive/data/0", f32_bytes({0, 1, 2, 3, 4, 5})}});
  expect_error([&] { load_pth_bytes(strided, "strided"); }, {"tensor v needs 28 bytes", "which has 24"});
}

TEST(Checkpoint, HugeDeclaredSizes) {
  auto load = [](const TensorSpec& spec) {
    return load_pth_bytes(archive({{"archive/data.pkl", pickle_state_dict({spec})}, {"archive/data/0", f32_bytes({1})}}), "huge");
  };
  expect_error([&] { load({.name = "w", .size = {int64_t{1} << 20, int64_t{1} << 20}, .stride = {int64_t{1} << 20, 1}}); },
               {"tensor w", "2^31 elements"});
  expect_error([&] { load({.name = "w", .size = {int64_t{1} << 30}, .stride = {1}}); },
               {"tensor w needs 4294967296 bytes of storage data/0, which has 4"});
  expect_error([&] { load({.name = "w", .size = {3, 3}, .stride = {INT64_MAX / 2, INT64_MAX / 2}}); },
               {"tensor w", "past any storage"});
  expect_error([&] { load({.name = "w", .size = {-1}, .stride = {1}}); }, {"tensor w", "negative"});
  expect_error([&] { load({.name = "w", .size = {1000}, .stride = {0}}); }, {"tensor w", "overlapping"});
}

TEST(Checkpoint, ForbiddenGlobal) {
  const std::string os_system = "\x80\x02" "cos\nsystem\n" + pickle_str("echo hi") + "\x85R.";
  expect_error([&] { load_pth_bytes(archive({{"archive/data.pkl", os_system}}), "checkpoint evil.pth"); },
               {"checkpoint evil.pth: pickle asks for global 'os.system', which a state_dict never needs; refusing"});
  const std::string eval = "\x80\x04" "\x8c\x08" "builtins" "\x8c\x04" "eval" "\x93" + pickle_str("1") + "\x85R.";
  expect_error([&] { load_pth_bytes(archive({{"archive/data.pkl", eval}}), "evil"); }, {"'builtins.eval'"});
  // An allowed global used the wrong way is refused too.
  const std::string call_storage = "\x80\x02" "ctorch\nFloatStorage\n)R.";
  expect_error([&] { load_pth_bytes(archive({{"archive/data.pkl", call_storage}}), "evil"); },
               {"torch.FloatStorage", "never calls"});
}

TEST(Checkpoint, UnknownOpcode) {
  const std::string pkl = "\x80\x02" "S'abc'\n.";  // STRING, protocol 0 text strings
  expect_error([&] { load_pth_bytes(archive({{"archive/data.pkl", pkl}}), "oddpickle"); }, {"oddpickle", "opcode 0x53"});
}

TEST(Checkpoint, UnsupportedDtype) {
  TensorSpec longs{.name = "num_batches_tracked", .storage_class = "LongStorage", .size = {}, .stride = {}};
  const auto bytes = archive({{"archive/data.pkl", pickle_state_dict({longs})}, {"archive/data/0", std::string(8, '\0')}});
  expect_error([&] { load_pth_bytes(bytes, "ints"); }, {"tensor num_batches_tracked has dtype int64: unsupported"});
  TensorSpec doubles{.name = "d", .storage_class = "DoubleStorage", .size = {1}, .stride = {1}};
  const auto bytes2 = archive({{"archive/data.pkl", pickle_state_dict({doubles})}, {"archive/data/0", std::string(8, '\0')}});
  expect_error([&] { load_pth_bytes(bytes2, "doubles"); }, {"tensor d has dtype float64: unsupported"});
}

TEST(Checkpoint, MalformedPickles) {
  auto load = [](const std::string& pkl) { return load_pth_bytes(archive({{"archive/data.pkl", pkl}}), "malformed"); };
  expect_error([&] { load("\x80\x02}"); }, {"without a STOP"});
  expect_error([&] { load("\x80\x02X\xff\xff\xff\x7f"); }, {"truncated"});
  expect_error([&] { load("\x80\x02h\x05."); }, {"memo entry 5"});
  expect_error([&] { load("\x80\x02]."); }, {"holds a list, not a state_dict"});
  expect_error([&] { load("\x80\x02}K\x01K\x02s."); }, {"int key"});
  expect_error([&] { load("\x80\x02}" + pickle_str("a") + "K\x02s."); }, {"entry 'a' is a int, not a tensor"});
  // A million nested tuples and a list containing itself: refused or ignored, never a crash.
  expect_error([&] { load("\x80\x02)" + std::string(1 << 20, '\x85') + "."); }, {"holds a tuple"});
  expect_error([&] { load(std::string("\x80\x02]q\x00h\x00h\x00" "aa.", 12)); }, {"holds a list"});
  expect_error([&] { load("\x80\x02" + std::string(2 << 20, '(') + "."); }, {"nests too deeply"});
}

TEST(Checkpoint, BigEndianByteOrder) {
  const auto bytes = archive({{"archive/data.pkl", pickle_state_dict({})}, {"archive/byteorder", "big"}});
  expect_error([&] { load_pth_bytes(bytes, "be"); }, {"big-endian"});
}

// --- safetensors ---------------------------------------------------------------------------------

std::vector<uint8_t> safetensors_file(const std::string& header, const std::string& data) {
  std::string s;
  for (int i = 0; i < 8; ++i) s += static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  return as_bytes(s + header + data);
}

TEST(Checkpoint, SafetensorsHalfAndBFloat16) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
      R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[12,18]}})";
  const std::string data = u16_bytes({0x3C00, 0xC000, 0x7BFF, 0x0001, 0x8000, 0x7C00}) + u16_bytes({0x3F80, 0xC0A0, 0x0001});
  const StateDict sd = load_safetensors_bytes(safetensors_file(header, data), "halves");
  ASSERT_EQ(sd.size(), 2u);
  EXPECT_EQ(sd.at("h").dtype, "float16");
  EXPECT_EQ(sd.at("h").value.shape, (Shape{2, 3}));
  const float* h = sd.at("h").value.data;
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 65504.0f);
  EXPECT_EQ(h[3], std::ldexp(1.0f, -24));
  EXPECT_TRUE(h[4] == 0.0f && std::signbit(h[4]));
  EXPECT_TRUE(std::isinf(h[5]) && h[5] > 0);
  EXPECT_EQ(sd.at("b").dtype, "bfloat16");
  EXPECT_EQ(sd.at("b").value.data[0], 1.0f);
  EXPECT_EQ(sd.at("b").value.data[1], -5.0f);
  EXPECT_EQ(sd.at("b").value.data[2], std::ldexp(1.0f, -133));  // the smallest bf16 subnormal
}

TEST(Checkpoint, SafetensorsBadFiles) {
  auto load = [](const std::vector<uint8_t>& bytes) { return load_safetensors_bytes(bytes, "checkpoint x.safetensors"); };
  std::vector<uint8_t> long_header = safetensors_file("{}", "");
  long_header[0] = 0xFF;
  expect_error([&] { load(long_header); }, {"checkpoint x.safetensors", "header length 255 exceeds the file size 10"});
  expect_error([&] { load(as_bytes("abc")); }, {"too short"});
  expect_error([&] { load(safetensors_file("{\"a\": [1,", "")); }, {"not valid JSON"});
  expect_error([&] { load(safetensors_file("[1]", "")); }, {"not an object"});
  expect_error([&] { load(safetensors_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234")); },
               {"tensor w", "outside", "4 bytes of data"});
  expect_error([&] { load(safetensors_file(R"({"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", "12345678")); },
               {"tensor w has dtype I64: unsupported"});
  expect_error([&] { load(safetensors_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678")); },
               {"tensor w", "8 bytes of data", "need 12"});
  expect_error([&] { load(safetensors_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", "12345678")); },
               {"tensor w", "shape"});
  expect_error([&] { load(safetensors_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", "12345678")); },
               {"tensor w", "data_offsets"});
  expect_error([&] { load(safetensors_file(R"({"w":{"dtype":"F32","shape":[65536,65536],"data_offsets":[0,8]}})", "12345678")); },
               {"tensor w", "2^31"});
  expect_error([&] { load(safetensors_file(R"({"w":5})", "")); }, {"tensor w", "not an object"});
}

// --- format detection ----------------------------------------------------------------------------

TEST(Checkpoint, NotACheckpoint) {
  const fs::path png = temp_path("image.png"), text = temp_path("notes.txt"), legacy = temp_path("old.pth");
  write_bytes(png, std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16));
  write_bytes(text, "just some notes\n");
  write_bytes(legacy, "\x80\x02\x8a\x0al\xfc\x9c" "F\xf9 j\xa8P\x19.");
  expect_error([&] { load_checkpoint(png); }, {png.string(), "neither a PyTorch .pth (zip) nor a safetensors file"});
  expect_error([&] { load_checkpoint(text); }, {text.string(), "neither"});
  expect_error([&] { load_checkpoint(legacy); }, {legacy.string(), "legacy", "torch.save"});
  expect_error([&] { load_checkpoint(temp_path("missing.pth")); }, {"missing.pth", "cannot be opened"});
  expect_error([&] { load_pth(text); }, {text.string(), "not a zip archive"});
  expect_error([&] { load_safetensors(png); }, {png.string(), "exceeds the file size"});
}

// --- real torch ---------------------------------------------------------------------------------

bool have_torch() { return std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0; }

std::string run_python(const std::string& script, const fs::path& arg) {
  const fs::path py = temp_path("script.py"), out = temp_path("python.out");
  write_bytes(py, script);
  const std::string command = "/usr/bin/python3 " + py.string() + " " + arg.string() + " > " + out.string() + " 2>&1";
  const int rc = std::system(command.c_str());
  const std::vector<uint8_t> bytes = read_bytes(out);
  const std::string text(bytes.begin(), bytes.end());
  EXPECT_EQ(rc, 0) << text;
  return text;
}

TEST(Checkpoint, TorchLoadsWhatWeSave) {
  if (!have_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch; cannot check torch.load";
  const auto tensors = sample_tensors();
  const fs::path path = temp_path("for_torch.pth");
  save_pth(tensors, path);
  const std::string printed = run_python(
      "import sys, torch\n"
      "sd = torch.load(sys.argv[1])\n"
      "print(type(sd).__name__)\n"
      "for k, v in sd.items():\n"
      "    print(k, tuple(v.shape), v.dtype, v.is_contiguous(), '%.4f' % v.double().sum().item())\n",
      path);
  std::ostringstream expected;
  expected << "OrderedDict\n";
  for (const auto& [name, t] : tensors) {
    double sum = 0;
    for (int64_t i = 0; i < t.numel(); ++i) sum += t.data[i];
    std::string shape = "(";
    for (size_t d = 0; d < t.shape.size(); ++d) shape += std::to_string(t.shape[d]) + (t.shape.size() == 1 ? "," : d + 1 < t.shape.size() ? ", " : "");
    char formatted[64];
    std::snprintf(formatted, sizeof formatted, "%.4f", sum);
    expected << name << " " << shape << ") torch.float32 True " << formatted << "\n";
  }
  EXPECT_EQ(printed, expected.str());
}

TEST(Checkpoint, WeLoadWhatTorchSaves) {
  if (!have_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch; cannot run torch.save";
  const fs::path path = temp_path("from_torch.pth");
  run_python(
      "import sys, torch, collections\n"
      "base = torch.arange(12, dtype=torch.float32)\n"
      "sd = collections.OrderedDict()\n"
      "sd['plain'] = base.reshape(3, 4)\n"
      "sd['transposed'] = base.reshape(3, 4).t()\n"
      "sd['offset'] = base[5:9]\n"
      "sd['half'] = (base / 4).half()\n"
      "sd['bf16'] = (base * 2).bfloat16().reshape(2, 6)[:, ::2]\n"
      "sd['param'] = torch.nn.Parameter(torch.full((2,), 0.5))\n"
      "sd['scalar'] = torch.tensor(7.0)\n"
      "torch.save(sd, sys.argv[1])\n",
      path);
  const StateDict sd = load_checkpoint(path);
  ASSERT_EQ(sd.size(), 7u);
  auto values = [&](const std::string& name) {
    const Tensor& t = sd.at(name).value;
    return std::vector<float>(t.data, t.data + t.numel());
  };
  EXPECT_EQ(values("plain"), (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(sd.at("transposed").value.shape, (Shape{4, 3}));
  EXPECT_EQ(values("transposed"), (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_EQ(values("offset"), (std::vector<float>{5, 6, 7, 8}));
  EXPECT_EQ(sd.at("half").dtype, "float16");
  EXPECT_EQ(values("half")[3], 0.75f);
  EXPECT_EQ(sd.at("bf16").dtype, "bfloat16");
  EXPECT_EQ(values("bf16"), (std::vector<float>{0, 4, 8, 12, 16, 20}));
  EXPECT_EQ(values("param"), (std::vector<float>{0.5f, 0.5f}));
  EXPECT_EQ(sd.at("scalar").value.shape, Shape{});
  EXPECT_EQ(values("scalar"), std::vector<float>{7});
}

}  // namespace
}  // namespace samfast
