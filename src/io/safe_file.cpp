#include "samfast/safe_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <streambuf>
#include <system_error>

#include "samfast/error.h"

namespace samfast {
namespace fs = std::filesystem;

namespace {

std::string kind_of(mode_t mode) {
  if (S_ISREG(mode)) return "";
  if (S_ISLNK(mode)) return "a symlink";
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// write(2) until all of `n` bytes are out; false with errno set on failure.
bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w == 0) errno = ENOSPC;
      return false;
    }
    p += w;
    n -= size_t(w);
  }
  return true;
}

// A stream buffer over a file descriptor that remembers the first write error (errno), so that the
// caller can name it; the ostream over it goes bad at that point and ignores later writes.
class FdWriteBuf : public std::streambuf {
 public:
  explicit FdWriteBuf(int fd) : fd_(fd) { setp(buf_, buf_ + sizeof buf_); }
  int error() const { return error_; }

 protected:
  int_type overflow(int_type c) override {
    if (!flush_buffer()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n < std::streamsize(sizeof buf_)) return std::streambuf::xsputn(s, n);
    // A large block (a checkpoint's tensor) goes straight to the file.
    if (!flush_buffer()) return 0;
    if (!write_all(fd_, s, size_t(n))) return record_error(), 0;
    return n;
  }
  int sync() override { return flush_buffer() ? 0 : -1; }

 private:
  bool flush_buffer() {
    if (error_) return false;
    const bool ok = write_all(fd_, pbase(), size_t(pptr() - pbase()));
    setp(buf_, buf_ + sizeof buf_);
    if (!ok) record_error();
    return ok;
  }
  void record_error() {
    if (!error_) error_ = errno ? errno : EIO;
  }
  int fd_;
  int error_ = 0;
  char buf_[1 << 16];
};

[[noreturn]] void throw_write_error(const fs::path& path, int err) {
  throw Error("cannot write " + path.string() + ": " + std::strerror(err));
}

}  // namespace

std::string non_regular_kind(const fs::path& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return "";
  return kind_of(st.st_mode);
}

void require_regular_file(const std::string& path, const std::string& what) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    throw Error(what + " " + path + (errno == ENOENT ? " does not exist" : std::string(" cannot be read: ") + std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) throw Error(what + " " + path + " is " + kind_of(st.st_mode) + ", not a regular file");
}

void require_replaceable(const fs::path& path) {
  if (const std::string kind = non_regular_kind(path); !kind.empty())
    throw Error("refusing to write " + path.string() + ": it exists and is " + kind +
                " (samfast replaces only regular files; remove it or choose another name)");
}

fs::path temp_path_for(const fs::path& target) {
  // A number, not the target's name: a name of up to 255 bytes (the file system's limit) would not
  // fit beside the prefix.
  static std::atomic<uint64_t> next{0};
  return target.parent_path() / (std::string(kTempPrefix) + std::to_string(::getpid()) + "-" + std::to_string(next++));
}

namespace {

// Writes `path`'s temporary (temp_path_for) and returns its name; throws, leaving nothing, on failure.
fs::path write_temporary(const fs::path& path, const StreamWriter& write) {
  require_replaceable(path);
  const fs::path tmp = temp_path_for(path);
  ::unlink(tmp.c_str());  // a leftover of this pid's earlier life would make O_EXCL fail
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
  if (fd < 0) throw_write_error(path, errno);
  int err = 0;
  FdWriteBuf buf(fd);
  try {
    std::ostream out(&buf);
    write(out);
    out.flush();
    err = buf.error() ? buf.error() : (out ? 0 : EIO);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    if (buf.error()) throw_write_error(path, buf.error());  // the writer gave up on a bad stream: say why
    throw;
  }
  // close() is where some filesystems (NFS, quota) first report a failed write.
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    throw_write_error(path, err);
  }
  return tmp;
}

}  // namespace

StagedFiles::~StagedFiles() {
  for (const auto& [tmp, target] : staged_) ::unlink(tmp.c_str());
}

void StagedFiles::add(const fs::path& target, const StreamWriter& write) {
  staged_.emplace_back(write_temporary(target, write), target);
}

void StagedFiles::add(const fs::path& target, std::string_view bytes) {
  add(target, [&](std::ostream& out) { out.write(bytes.data(), std::streamsize(bytes.size())); });
}

void StagedFiles::commit() {
  for (const auto& [tmp, target] : staged_) require_replaceable(target);  // again: it may have appeared meanwhile
  while (!staged_.empty()) {
    const auto& [tmp, target] = staged_.front();
    if (::rename(tmp.c_str(), target.c_str()) != 0) throw_write_error(target, errno);
    staged_.erase(staged_.begin());
  }
}

void write_file_atomically(const fs::path& path, const StreamWriter& write) {
  StagedFiles file;
  file.add(path, write);
  file.commit();
}

void write_file_atomically(const fs::path& path, std::string_view bytes) {
  StagedFiles file;
  file.add(path, bytes);
  file.commit();
}

void remove_temporaries(const fs::path& dir, bool all) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kTempPrefix, 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + kTempPrefix.size(), nullptr, 10);
    if (!all && pid > 0 && (pid == ::getpid() || ::kill(pid_t(pid), 0) == 0 || errno == EPERM)) continue;
    std::error_code ignored;
    fs::remove_all(it->path(), ignored);  // remove_all removes a symlink itself, not its target
  }
}

FolderLock::FolderLock(const fs::path& dir) : file_(dir / kFileName) {
  for (;;) {
    fd_ = ::open(file_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0)
      throw Error("cannot lock the output folder " + dir.string() + ": " + file_.string() + ": " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char pid[32] = {};
      const ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
      ::close(fd_);
      fd_ = -1;
      if (err != EWOULDBLOCK)
        throw Error("cannot lock the output folder " + dir.string() + ": " + std::strerror(err));
      const long other = n > 0 ? std::strtol(pid, nullptr, 10) : 0;
      throw Error("the output folder " + dir.string() + " is in use by another samfast run" +
                  (other > 0 ? " (pid " + std::to_string(other) + ")" : "") +
                  "; wait for it to finish, or give another --output");
    }
    // The holder before us may have removed the file between our open and our flock: then we hold
    // a lock on a file nobody else will see. Start again on the file the path names now.
    struct stat mine, named;
    if (::fstat(fd_, &mine) == 0 && ::stat(file_.c_str(), &named) == 0 && mine.st_ino == named.st_ino &&
        mine.st_dev == named.st_dev)
      break;
    ::close(fd_);
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != ssize_t(pid.size())) {
    const int err = errno;
    ::unlink(file_.c_str());
    ::close(fd_);
    throw Error("cannot lock the output folder " + dir.string() + ": " + std::strerror(err));
  }
}

FolderLock::~FolderLock() {
  ::unlink(file_.c_str());  // while still holding it, so no other run takes a file we then remove
  ::close(fd_);
}

}  // namespace samfast
