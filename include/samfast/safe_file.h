// Files in and out without surprises. Inputs must be regular files: a FIFO would block a read
// forever and a device never end. Outputs appear atomically: written under a temporary name in the
// target's folder with every write and the close checked, then renamed over the target, so a full
// disk or a kill never leaves a partial file under the real name. An existing target that is not a
// regular file (a symlink, device, FIFO, socket or folder) is refused, never replaced and never
// written through: `--out /dev/null` must not turn /dev/null into a file, nor a symlink be
// silently swapped for a copy.
#pragma once
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace samfast {

// Every temporary name samfast writes starts with this; a killed run's leftovers are such names.
inline constexpr std::string_view kTempPrefix = ".samfast-tmp-";

// Throws Error unless `path` is a regular file (symlinks followed) that exists. `what` names it in
// the message ("checkpoint", "image file", "mask input").
void require_regular_file(const std::string& path, const std::string& what);

// Throws Error if `path` exists and is anything but a regular file (not following a symlink).
void require_replaceable(const std::filesystem::path& path);

// What kind of file `path` is, for messages: "a symlink", "a FIFO", ... ("" for a regular file or
// nothing there).
std::string non_regular_kind(const std::filesystem::path& path);

// "<dir>/.samfast-tmp-<pid>-<n>" for the target <dir>/<name>: a new n each call.
std::filesystem::path temp_path_for(const std::filesystem::path& target);

using StreamWriter = std::function<void(std::ostream&)>;

// Writes `bytes` (or what `write` puts on the stream) to `path` atomically, as described above.
// Throws Error naming the path and the system's reason ("No space left on device"); nothing is
// left behind on failure.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);
void write_file_atomically(const std::filesystem::path& path, const StreamWriter& write);

// Files that appear together or not at all: add() writes each under its temporary name (checked as
// above), commit() renames them all into place; if anything fails first, or the object is destroyed
// uncommitted, the temporaries are removed and no target has changed.
class StagedFiles {
 public:
  StagedFiles() = default;
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;
  ~StagedFiles();
  void add(const std::filesystem::path& target, std::string_view bytes);
  void add(const std::filesystem::path& target, const StreamWriter& write);
  void commit();

 private:
  std::vector<std::pair<std::filesystem::path, std::filesystem::path>> staged_;  // (temporary, target)
};

// Removes temporaries in `dir` (entries starting with kTempPrefix, files or folders; a symlink is
// removed, not followed) left by processes that are gone, or all of them when `all` is set (the
// caller holds the folder's lock, so no live run owns any).
void remove_temporaries(const std::filesystem::path& dir, bool all);

// An exclusive lock on an output folder, held until destruction: a second run on the same folder
// is refused at once, naming the process that holds it. The lock is an flock() on a file in the
// folder (.samfast-lock, holding the pid), so the kernel releases it when a run dies, even by
// SIGKILL; the file is removed when the lock is released.
class FolderLock {
 public:
  explicit FolderLock(const std::filesystem::path& dir);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;
  static constexpr const char* kFileName = ".samfast-lock";

 private:
  std::filesystem::path file_;
  int fd_ = -1;
};

}  // namespace samfast
