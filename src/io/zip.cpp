#include "io/zip.h"

#include <zlib.h>

#include <zip.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <limits>

#include "io/printable.h"
#include "samfast/error.h"

namespace samfast {
namespace {

std::string libzip_message(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string message = zip_error_strerror(&error);
  zip_error_fini(&error);
  return message;
}

// Deflate cannot expand data by more than about 1032:1, so an entry declaring more than that is
// lying about its size; refusing it keeps a tiny crafted file from asking for gigabytes.
constexpr uint64_t kMaxDeflateRatio = 1032;

}  // namespace

ZipReader::ZipReader(struct zip* archive, uint64_t archive_bytes, std::string what)
    : archive_(archive), archive_bytes_(archive_bytes), what_(std::move(what)) {}

ZipReader::ZipReader(ZipReader&& other) noexcept
    : archive_(other.archive_), archive_bytes_(other.archive_bytes_), what_(std::move(other.what_)) {
  other.archive_ = nullptr;
}

ZipReader::~ZipReader() {
  if (archive_) zip_discard(archive_);
}

ZipReader ZipReader::open_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  const uint64_t bytes = std::filesystem::file_size(path, ec);
  if (ec) throw Error(what + " cannot be read: " + ec.message());
  int code = 0;
  struct zip* archive = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
  if (!archive) {
    if (code == ZIP_ER_OPEN || code == ZIP_ER_READ || code == ZIP_ER_NOENT)
      throw Error(what + " cannot be read: " + libzip_message(code));
    throw Error(what + " is truncated or not a zip archive: " + libzip_message(code));
  }
  return ZipReader(archive, bytes, what);
}

ZipReader ZipReader::open_bytes(const std::vector<uint8_t>& bytes, const std::string& what) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  struct zip* archive = source ? zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error) : nullptr;
  if (!archive) {
    if (source) zip_source_free(source);
    std::string message = zip_error_strerror(&error);
    zip_error_fini(&error);
    throw Error(what + " is truncated or not a zip archive: " + message);
  }
  zip_error_fini(&error);
  return ZipReader(archive, bytes.size(), what);
}

int64_t ZipReader::entry_count() const { return zip_get_num_entries(archive_, 0); }

std::string ZipReader::entry_name(int64_t index) const {
  const char* name = zip_get_name(archive_, static_cast<zip_uint64_t>(index), ZIP_FL_ENC_RAW);
  return name ? name : "";
}

std::optional<int64_t> ZipReader::find(const std::string& name) const {
  const zip_int64_t index = zip_name_locate(archive_, name.c_str(), ZIP_FL_ENC_RAW);
  if (index < 0) return std::nullopt;
  return index;
}

uint64_t ZipReader::entry_size(int64_t index) const {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(archive_, static_cast<zip_uint64_t>(index), 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
    throw Error(what_ + " is damaged: cannot read the directory entry of " + printable(entry_name(index)));
  return st.size;
}

std::vector<uint8_t> ZipReader::read(int64_t index, uint64_t max_bytes) const {
  const std::string name = printable(entry_name(index));  // for messages: the name is the file's text
  zip_stat_t st;
  zip_stat_init(&st);
  const zip_uint64_t wanted = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD;
  if (zip_stat_index(archive_, static_cast<zip_uint64_t>(index), 0, &st) != 0 || (st.valid & wanted) != wanted)
    throw Error(what_ + " is damaged: cannot read the directory entry of " + name);
  if (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE)
    throw Error(what_ + ": entry " + name + " uses zip compression method " + std::to_string(st.comp_method) +
                "; only stored and deflated entries are supported");
  if (st.comp_size > archive_bytes_)
    throw Error(what_ + " is truncated: entry " + name + " declares " + std::to_string(st.comp_size) +
                " bytes of data, the archive has " + std::to_string(archive_bytes_));
  const uint64_t plausible = st.comp_method == ZIP_CM_STORE ? st.comp_size : st.comp_size * kMaxDeflateRatio;
  if (st.size > plausible)
    throw Error(what_ + " is damaged: entry " + name + " declares " + std::to_string(st.size) +
                " bytes, more than its " + std::to_string(st.comp_size) + " compressed bytes can hold");
  if (st.size > max_bytes)
    throw Error(what_ + ": entry " + name + " has " + std::to_string(st.size) + " bytes, more than the " +
                std::to_string(max_bytes) + " a checkpoint needs there");

  zip_file_t* file = zip_fopen_index(archive_, static_cast<zip_uint64_t>(index), 0);
  if (!file) throw Error(what_ + " is damaged: cannot open entry " + name + ": " + zip_strerror(archive_));
  std::vector<uint8_t> data(st.size);
  uint64_t done = 0;
  std::string failure;
  while (done < data.size()) {
    const zip_int64_t got = zip_fread(file, data.data() + done, data.size() - done);
    if (got <= 0) {
      failure = got < 0 ? zip_file_strerror(file) : "entry ends early";
      break;
    }
    done += static_cast<uint64_t>(got);
  }
  // One more read reaches the end of the entry, where libzip verifies the CRC.
  if (failure.empty()) {
    uint8_t extra;
    const zip_int64_t got = zip_fread(file, &extra, 1);
    if (got != 0) failure = got < 0 ? zip_file_strerror(file) : "entry is longer than declared";
  }
  zip_fclose(file);
  if (!failure.empty())
    throw Error(what_ + " is truncated or damaged: reading " + name + ": " + failure);
  return data;
}

namespace {

uint32_t crc32_of(std::span<const uint8_t> data) {
  // zlib's crc32 (libzip's own dependency), fed in chunks that fit its uInt length.
  uLong c = crc32(0L, Z_NULL, 0);
  for (size_t off = 0; off < data.size(); off += (1u << 30))
    c = crc32(c, data.data() + off, (uInt)std::min<size_t>(data.size() - off, 1u << 30));
  return (uint32_t)c;
}

void put16(std::string& out, uint32_t v) {
  out += static_cast<char>(v & 0xFF);
  out += static_cast<char>((v >> 8) & 0xFF);
}
void put32(std::string& out, uint32_t v) {
  put16(out, v & 0xFFFF);
  put16(out, v >> 16);
}

constexpr uint64_t kAlignment = 64;
constexpr uint32_t kZip32Limit = std::numeric_limits<uint32_t>::max();
// A fixed timestamp (1980-01-01 00:00) makes identical state_dicts give identical files.
constexpr uint32_t kDosTime = 0, kDosDate = (1 << 5) | 1;

}  // namespace

void write_stored_zip(std::ostream& out, const std::vector<ZipEntryToWrite>& entries, const std::string& what) {
  struct Written {
    uint32_t crc, size, offset;
  };
  std::vector<Written> written;
  uint64_t pos = 0;
  auto emit = [&](const void* data, uint64_t n) {
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
    if (!out) throw Error("cannot write " + what + ": write failed (disk full?)");
    pos += n;
  };
  if (entries.size() >= 0xFFFF) throw Error("cannot write " + what + ": too many zip entries");
  for (const ZipEntryToWrite& e : entries) {
    const uint64_t fixed = 30 + e.name.size();
    uint64_t pad = (kAlignment - (pos + fixed) % kAlignment) % kAlignment;
    if (pad != 0 && pad < 4) pad += kAlignment;  // the padding is an extra field with a 4-byte header
    if (pos + fixed + pad + e.data.size() >= kZip32Limit)
      throw Error("cannot write " + what + ": more than 4 GiB, which would need zip64 (not supported)");
    const Written w{crc32_of(e.data), static_cast<uint32_t>(e.data.size()), static_cast<uint32_t>(pos)};
    std::string header;
    put32(header, 0x04034b50);
    put16(header, 20);  // version needed: 2.0, plain stored entries
    put16(header, 0);   // flags
    put16(header, 0);   // method: stored
    put16(header, kDosTime);
    put16(header, kDosDate);
    put32(header, w.crc);
    put32(header, w.size);
    put32(header, w.size);
    put16(header, static_cast<uint32_t>(e.name.size()));
    put16(header, static_cast<uint32_t>(pad));
    header += e.name;
    if (pad) {
      put16(header, 0x4246);  // "FB", the id torch.save uses for its padding field
      put16(header, static_cast<uint32_t>(pad - 4));
      header.append(pad - 4, 'Z');
    }
    emit(header.data(), header.size());
    emit(e.data.data(), e.data.size());
    written.push_back(w);
  }
  const uint64_t directory_start = pos;
  std::string directory;
  for (size_t i = 0; i < entries.size(); ++i) {
    put32(directory, 0x02014b50);
    put16(directory, 20);  // made by: MS-DOS attributes, spec 2.0
    put16(directory, 20);
    put16(directory, 0);
    put16(directory, 0);
    put16(directory, kDosTime);
    put16(directory, kDosDate);
    put32(directory, written[i].crc);
    put32(directory, written[i].size);
    put32(directory, written[i].size);
    put16(directory, static_cast<uint32_t>(entries[i].name.size()));
    put16(directory, 0);  // extra
    put16(directory, 0);  // comment
    put16(directory, 0);  // disk
    put16(directory, 0);  // internal attributes
    put32(directory, 0);  // external attributes
    put32(directory, written[i].offset);
    directory += entries[i].name;
  }
  const uint64_t directory_bytes = directory.size();
  if (directory_start + directory_bytes >= kZip32Limit)
    throw Error("cannot write " + what + ": more than 4 GiB, which would need zip64 (not supported)");
  put32(directory, 0x06054b50);
  put16(directory, 0);
  put16(directory, 0);
  put16(directory, static_cast<uint32_t>(entries.size()));
  put16(directory, static_cast<uint32_t>(entries.size()));
  put32(directory, static_cast<uint32_t>(directory_bytes));
  put32(directory, static_cast<uint32_t>(directory_start));
  put16(directory, 0);
  emit(directory.data(), directory.size());
}

}  // namespace samfast
