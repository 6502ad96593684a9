// Zip archives for checkpoints: reading goes through libzip (from a file or from bytes in memory);
// writing is a small hand-made stored-only writer, because torch.save aligns every entry's data to
// 64 bytes and libzip offers no way to place data at a chosen offset.
#pragma once
#include <cstdint>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

struct zip;

namespace samfast {

class ZipReader {
 public:
  // `what` names the source in error messages ("checkpoint sam.pth").
  static ZipReader open_file(const std::string& path, const std::string& what);
  static ZipReader open_bytes(const std::vector<uint8_t>& bytes, const std::string& what);
  ZipReader(ZipReader&& other) noexcept;
  ZipReader& operator=(ZipReader&&) = delete;
  ~ZipReader();

  int64_t entry_count() const;
  std::string entry_name(int64_t index) const;
  std::optional<int64_t> find(const std::string& name) const;
  uint64_t entry_size(int64_t index) const;  // uncompressed, as the directory declares it
  // Reads a whole entry, refusing one larger than max_bytes; checks its CRC.
  std::vector<uint8_t> read(int64_t index, uint64_t max_bytes) const;

 private:
  ZipReader(struct zip* archive, uint64_t archive_bytes, std::string what);
  struct zip* archive_;
  uint64_t archive_bytes_;  // the archive's own size bounds what an honest entry can expand to
  std::string what_;
};

struct ZipEntryToWrite {
  std::string name;
  std::span<const uint8_t> data;
};

// Writes a zip with every entry stored (uncompressed), each entry's data starting at a multiple
// of 64 bytes in the stream, as torch.save does. `what` names the destination in errors.
void write_stored_zip(std::ostream& out, const std::vector<ZipEntryToWrite>& entries, const std::string& what);

}  // namespace samfast
