// Checkpoint loading and saving: round trips, torch interoperability, and one test per kind of
// damaged or hostile file, each checking that the error names the problem.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zip.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <sstream>

#include "io/pickle.h"
#include "io/zip.h"
#include "samfast/checkpoint.h"
#include "samfast/error.h"
#include "samfast/model.h"

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
  // A million nested tuples (the most objects allowed) and a list containing itself: refused or
  // ignored, never a crash.
  expect_error([&] { load("\x80\x02)" + std::string((1 << 20) - 1, '\x85') + "."); }, {"holds a tuple"});
  expect_error([&] { load("\x80\x02)" + std::string(1 << 20, '\x85') + "."); }, {"more than 1048576 objects"});
  expect_error([&] { load(std::string("\x80\x02]q\x00h\x00h\x00" "aa.", 12)); }, {"holds a list"});
  expect_error([&] { load("\x80\x02" + std::string(2 << 20, '(') + "."); }, {"nests too deeply"});
  expect_error([&] { load("\x80\x02" "c" + std::string(300, 'a') + "\nb\n."); }, {"GLOBAL name longer"});
}

// --- what a crafted pickle may make the loader build ------------------------------------------

// Peak resident memory of this process so far, in bytes (Linux reports kilobytes).
int64_t peak_rss() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t{usage.ru_maxrss} * 1024;
}

std::string pickle_u32(char op, uint32_t v) {
  std::string s(1, op);
  for (int i = 0; i < 4; ++i) s += static_cast<char>(v >> (8 * i));
  return s;
}

// The reported attack: 5,000 entries naming one key, each a memo reference to one tensor with
// 100,000 dimensions. The loader used to copy that shape per entry (gigabytes, then bad_alloc);
// torch.load(weights_only=True) reads the file in 240 MB. It must fail fast, small, and say why.
TEST(Checkpoint, PickleWithHugeSharedShapeFailsSmall) {
  std::string ones = "(";
  for (int i = 0; i < 100000; ++i) ones += "K\x01";
  ones += "t";
  std::string pkl = "\x80\x02}(" + pickle_str("image_encoder.pos_embed") + "q\x01" +
                    "ctorch._utils\n_rebuild_tensor_v2\n((" + pickle_str("storage") + "ctorch\nFloatStorage\n" +
                    pickle_str("0") + pickle_str("cpu") + pickle_int(1) + "tQ" + pickle_int(0) + ones + ones + "\x89" +
                    "ccollections\nOrderedDict\n)RtRq\x02";
  for (int i = 1; i < 5000; ++i) pkl += "h\x01h\x02";
  pkl += "u.";
  const auto bytes = archive({{"archive/data.pkl", pkl}, {"archive/data/0", f32_bytes({1})}});
  const int64_t rss_before = peak_rss();
  const auto start = std::chrono::steady_clock::now();
  try {
    load_pth_bytes(bytes, "checkpoint crafted.pth");
    ADD_FAILURE() << "the crafted checkpoint loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint crafted.pth: data.pkl gives a tensor's size of 100000 dimensions, "
                                         "more than the 8 allowed"),
              std::string::npos)
        << e.what();
  } catch (const std::bad_alloc&) {
    ADD_FAILURE() << "ran out of memory instead of refusing the file";
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  EXPECT_LT(peak_rss() - rss_before, int64_t{200} << 20);
}

TEST(Checkpoint, PickleRepeatedNameKeepsTheLast) {
  // Python's dict semantics, without building one tensor per repetition.
  std::string pkl = "\x80\x02}(" + pickle_str("w") + "q\x01" +
                    pickle_tensor({.name = "w", .size = {1}, .stride = {1}});
  for (int i = 0; i < 5000; ++i) pkl += "h\x01" + pickle_tensor({.name = "w", .offset = 1, .size = {1}, .stride = {1}});
  pkl += pickle_str("b") + pickle_tensor({.name = "b", .offset = 2, .size = {1}, .stride = {1}});
  pkl += "h\x01" + pickle_tensor({.name = "w", .offset = 3, .size = {1}, .stride = {1}}) + "u.";
  const StateDict sd = load_pth_bytes(archive({{"archive/data.pkl", pkl}, {"archive/data/0", f32_bytes({0, 1, 2, 3})}}), "dup");
  ASSERT_EQ(sd.size(), 2u);
  EXPECT_EQ(sd.at("w").value.data[0], 3.0f);
  EXPECT_EQ(sd.at("b").value.data[0], 2.0f);
}

TEST(Checkpoint, PickleLimits) {
  auto load = [](const std::string& pkl, const std::string& storage = "") {
    return load_pth_bytes(archive({{"archive/data.pkl", pkl}, {"archive/data/0", storage}}), "checkpoint limits.pth");
  };
  // Dimensions: SAM needs 4; 8 are allowed.
  std::vector<int64_t> nine(9, 1);
  expect_error([&] { load(pickle_state_dict({{.name = "w", .size = nine, .stride = nine}}), f32_bytes({1})); },
               {"checkpoint limits.pth", "9 dimensions, more than the 8 allowed"});
  std::vector<int64_t> eight(8, 1);
  EXPECT_EQ(load(pickle_state_dict({{.name = "w", .size = eight, .stride = eight}}), f32_bytes({1})).at("w").value.shape,
            Shape(eight));
  // Entries: 65,537 names for one memoized tensor.
  std::string many = "\x80\x02}(" + pickle_str("t") + pickle_tensor({.name = "t", .size = {1}, .stride = {1}}) + "q\x02";
  for (int i = 0; i < 65536; ++i) many += pickle_str("t" + std::to_string(i)) + "h\x02";
  expect_error([&] { load(many + "u.", f32_bytes({1})); }, {"65537 entries, more than the 65536 allowed"});
  // Memo entries: a million and one slots, all holding None.
  std::string memo = "\x80\x02N";
  for (uint32_t i = 0; i <= (1u << 20); ++i) memo += pickle_u32('r', i);
  expect_error([&] { load(memo + "."); }, {"more than 1048576 memo entries"});
  // Metadata bytes: a 1 MB storage key, stored once and copied into every tensor viewing it.
  const std::string key(1 << 20, '7');
  std::string copies = "\x80\x02}(";
  for (int i = 0; i < 70; ++i) {
    const std::string storage = i == 0 ? "(" + pickle_str("storage") + "ctorch\nFloatStorage\n" + pickle_str(key) +
                                             pickle_str("cpu") + pickle_int(1) + "tQq\x05"
                                       : std::string("h\x05");
    copies += pickle_str("t" + std::to_string(i)) + "ctorch._utils\n_rebuild_tensor_v2\n(" + storage + pickle_int(0) +
              pickle_ints({1}) + pickle_ints({1}) + "\x89" + "ccollections\nOrderedDict\n)RtR";
  }
  expect_error([&] { load(copies + "u."); }, {"more than 64 MB of strings, containers, sizes and strides"});
  // One storage declared with two dtypes.
  expect_error([&] {
    load(pickle_state_dict({{.name = "a", .size = {1}, .stride = {1}},
                            {.name = "b", .storage_class = "HalfStorage", .size = {1}, .stride = {1}}}),
         f32_bytes({1}));
  }, {"declares storage 0 as both float32 and float16"});
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
  const std::string data = u16_bytes({0x3C00, 0xC000, 0x7BFF, 0x0001, 0x8000, 0xFBFF}) + u16_bytes({0x3F80, 0xC0A0, 0x0001});
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
  EXPECT_EQ(h[5], -65504.0f);
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
  expect_error([&] { load(safetensors_file(R"({"w":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}})", "1234")); },
               {"tensor w", "9 dimensions, more than the 8 allowed"});
}

// The reference library's rule: sorted by offset, the tensors tile the data from byte 0 to the
// file's end, with no overlap, gap or trailing bytes.
TEST(Checkpoint, SafetensorsOffsetsMustTileTheData) {
  auto load = [](const std::string& header, size_t data_bytes) {
    return load_safetensors_bytes(safetensors_file(header, std::string(data_bytes, '\0')), "checkpoint x.safetensors");
  };
  expect_error([&] { load(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12); },
               {"checkpoint x.safetensors: safetensors tensors a [0, 8] and b [4, 12] overlap (invalid data_offsets)"});
  expect_error([&] { load(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8); },
               {"tensors a [0, 8] and b [0, 8] overlap"});
  // Pointed at another tensor's bytes: an overlap, whether or not the sizes also disagree.
  expect_error([&] { load(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[5],"data_offsets":[0,8]},)"
                          R"("c":{"dtype":"F32","shape":[5],"data_offsets":[8,28]}})", 28); },
               {"[0, 8] overlap (invalid data_offsets)"});
  expect_error([&] { load(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12); },
               {"data bytes [4, 8] belong to no tensor", "before b [8, 12]"});
  expect_error([&] { load(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8); },
               {"data bytes [0, 4] belong to no tensor"});
  expect_error([&] { load(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8); },
               {"tensors cover 4 bytes of data, but the file has 8", "trailing bytes"});
  expect_error([&] { load("{}", 4); }, {"cover 0 bytes of data, but the file has 4"});
  // Out of order in the header, and empty tensors anywhere, are fine.
  const StateDict sd = load(R"({"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"e":{"dtype":"F16","shape":[0],"data_offsets":[4,4]},)"
                            R"("a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"f":{"dtype":"F32","shape":[3,0],"data_offsets":[12,12]}})",
                            12);
  EXPECT_EQ(sd.size(), 4u);
  EXPECT_EQ(sd.at("f").value.shape, (Shape{3, 0}));
}

// --- values and names the loaders must not pass on ------------------------------------------------

TEST(Checkpoint, NonFiniteWeightsAreRefused) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::string name = "image_encoder.blocks.0.attn.qkv.weight";
  const auto pth = archive({{"archive/data.pkl", pickle_state_dict({{.name = "ok", .size = {2}, .stride = {1}},
                                                                    {.name = name, .offset = 2, .size = {5}, .stride = {1}}})},
                            {"archive/data/0", f32_bytes({1, 2, 1, nan, inf, -inf, 2})}});
  expect_error([&] { load_pth_bytes(pth, "checkpoint F"); },
               {"checkpoint F: tensor " + name + " has 3 non-finite values (NaN or Inf)"});
  const auto half = archive({{"archive/data.pkl", pickle_state_dict({{.name = "h", .storage_class = "HalfStorage", .size = {3}, .stride = {1}}})},
                             {"archive/data/0", u16_bytes({0x3C00, 0x7E00, 0x0000})}});
  expect_error([&] { load_pth_bytes(half, "checkpoint F"); }, {"tensor h has 1 non-finite values"});

  const std::string header = R"({"ok":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"(")" + name + R"(":{"dtype":"F32","shape":[2,2],"data_offsets":[4,20]}})";
  expect_error([&] { load_safetensors_bytes(safetensors_file(header, f32_bytes({1, 0, nan, -inf, nan})), "checkpoint F"); },
               {"checkpoint F: tensor " + name + " has 3 non-finite values (NaN or Inf)"});
  const std::string bf16 = R"({"b":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})";
  expect_error([&] { load_safetensors_bytes(safetensors_file(bf16, u16_bytes({0xFF80, 0x3F80})), "checkpoint F"); },
               {"tensor b has 1 non-finite values"});
}

// Weights handed over in memory (Model::from_tensors: Python's load_state_dict) are checked as a file's are.
TEST(Checkpoint, NonFiniteWeightsInMemoryAreRefused) {
  auto tensors = Model::synthetic_tensors(SamConfig::preset("tiny"), 3);
  const std::string name = tensors[7].first;
  tensors[7].second.data[1] = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { Model::from_tensors(tensors, {.device = "cpu"}); },
               {"weights: tensor " + name + " has 1 non-finite values (NaN or Inf)"});
}

// The C++ API's own mistakes: a weight that is not host fp32 (bytes were read as floats, past the
// buffer), undefined, or given twice, and a config no checkpoint could have (one divided by zero).
TEST(Checkpoint, TensorsInMemoryMustBeWeights) {
  const auto good = Model::synthetic_tensors(SamConfig::preset("tiny"), 3);
  const std::string name = good[7].first;
  auto tensors = good;
  tensors[7].second = Tensor::empty(good[7].second.shape, DType::U8);
  expect_error([&] { Model::from_tensors(tensors, {.device = "cpu"}); },
               {"weights: tensor " + name + " is not a host fp32 tensor"});
  tensors[7].second = Tensor{};
  expect_error([&] { Model::from_tensors(tensors, {.device = "cpu"}); },
               {"weights: tensor " + name + " is not defined"});
  tensors = good;
  tensors.push_back(good[7]);
  expect_error([&] { Model::from_tensors(tensors, {.device = "cpu"}); },
               {"weights: tensor " + name + " is given twice"});
  SamConfig cfg = SamConfig::preset("tiny");
  cfg.embed_dim = 0;
  expect_error([&] { Model::synthetic_tensors(cfg, 1); }, {"embed_dim is 0, not positive"});
  cfg = SamConfig::preset("tiny");
  cfg.global_attn_indexes = {1, 99};
  expect_error([&] { Model::synthetic_tensors(cfg, 1); }, {"global block 99 is not one of the 4 blocks"});
  EXPECT_FALSE(Tensor{}.clone().defined());
  EXPECT_THROW(good[7].second.dim(5), InvalidArgument);  // (std::out_of_range before)
}

// Expects `f` to throw an Error whose message holds `escaped` and is one line with no escape
// sequence a terminal would act on.
template <class F>
void expect_escaped(F f, const std::string& escaped) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning " << escaped;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(escaped), std::string::npos) << message;
    EXPECT_EQ(message.find_first_of("\n\r\x1b"), std::string::npos) << message;
  }
}

TEST(Checkpoint, NamesFromTheFileAreEscapedInErrors) {
  const std::string evil = "evil\n\x1b[31m";
  const std::string shown = "evil\\n\\x1b[31m";
  expect_escaped([&] { load_safetensors_bytes(safetensors_file(R"({"evil\n\u001b[31m":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})",
                                                               std::string(8, '\0')), "st"); },
                 "tensor " + shown + " has dtype I64");
  expect_escaped([&] { load_safetensors_bytes(safetensors_file(R"({"w":{"dtype":"F\u001b[31m","shape":[1],"data_offsets":[0,8]}})",
                                                               std::string(8, '\0')), "st"); },
                 "has dtype F\\x1b[31m: unsupported");
  expect_escaped([&] { load_safetensors_bytes(safetensors_file(R"({"evil\n\u001b[31m":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                                                               std::string(8, '\0')), "st"); },
                 "safetensors tensor " + shown + " has 8 bytes");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  expect_escaped([&] { load_safetensors_bytes(safetensors_file(R"({"evil\n\u001b[31m":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                                               f32_bytes({nan})), "st"); },
                 "tensor " + shown + " has 1 non-finite");
  expect_escaped([&] { load_pth_bytes(archive({{"archive/data.pkl", "\x80\x02}" + pickle_str(evil) + "K\x02s."}}), "pth"); },
                 "entry '" + shown + "' is a int");
  expect_escaped([&] { load_pth_bytes(archive({{"archive/data.pkl", pickle_state_dict({{.name = evil, .key = evil, .size = {1}, .stride = {1}}})}}), "pth"); },
                 "tensor " + shown + " refers to storage data/" + shown + ", which the archive lacks");
  expect_escaped([&] { load_pth_bytes(archive({{"archive/data.pkl", pickle_state_dict({{.name = evil, .size = {2}, .stride = {1}}})},
                                               {"archive/data/0", f32_bytes({1})}}), "pth"); },
                 "tensor " + shown + " needs 8 bytes");
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
  expect_error([&] { load_checkpoint(temp_path("missing.pth")); }, {"missing.pth", "does not exist"});
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
