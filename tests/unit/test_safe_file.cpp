// io/safe_file: atomic writes, refusal of non-regular targets and inputs, staged outputs that appear
// together or not at all, temporaries of dead runs, and the output folder's lock.
#include "samfast/safe_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "error_of.h"
#include "samfast/error.h"

namespace samfast {
namespace {
namespace fs = std::filesystem;
using testing::error_of;

class SafeFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "samfast_safe_file_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir = tmpl;
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string read(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  std::vector<std::string> names() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path dir;
};

TEST_F(SafeFile, WritesAndReplacesRegularFilesLeavingNoTemporary) {
  write_file_atomically(dir / "a.txt", "first");
  write_file_atomically(dir / "a.txt", "second");
  EXPECT_EQ(read(dir / "a.txt"), "second");
  EXPECT_EQ(names(), std::vector<std::string>{"a.txt"});
}

TEST_F(SafeFile, RefusesToReplaceSymlinksFifosAndFolders) {
  write_file_atomically(dir / "real", "precious");
  fs::create_symlink(dir / "real", dir / "link");
  ASSERT_EQ(mkfifo((dir / "fifo").c_str(), 0600), 0);
  fs::create_directory(dir / "folder");
  for (const char* name : {"link", "fifo", "folder"}) {
    const std::string e = error_of([&] { write_file_atomically(dir / name, "x"); });
    EXPECT_NE(e.find("refusing to write"), std::string::npos) << e;
  }
  EXPECT_NE(error_of([&] { write_file_atomically("/dev/null", "x"); }).find("a character device"), std::string::npos);
  EXPECT_TRUE(fs::is_symlink(dir / "link"));
  EXPECT_TRUE(fs::is_fifo(dir / "fifo"));
  EXPECT_EQ(read(dir / "real"), "precious");
  EXPECT_EQ(names(), (std::vector<std::string>{"fifo", "folder", "link", "real"}));
}

TEST_F(SafeFile, AWriterThatFailsLeavesNothing) {
  write_file_atomically(dir / "a.txt", "old");
  EXPECT_THROW(write_file_atomically(dir / "a.txt",
                                     [](std::ostream& out) {
                                       out << "half";
                                       throw Error("the writer gave up");
                                     }),
               Error);
  EXPECT_EQ(read(dir / "a.txt"), "old");
  EXPECT_EQ(names(), std::vector<std::string>{"a.txt"});
}

TEST_F(SafeFile, StagedFilesAppearTogetherOrNotAtAll) {
  {
    StagedFiles files;
    files.add(dir / "one", "1");
    fs::create_symlink(dir / "one", dir / "two");  // the second target is one we must not replace
    EXPECT_THROW(files.add(dir / "two", "2"), Error);
  }  // destroyed uncommitted
  EXPECT_EQ(names(), std::vector<std::string>{"two"});
  fs::remove(dir / "two");
  StagedFiles files;
  files.add(dir / "one", "1");
  files.add(dir / "two", [](std::ostream& out) { out << std::string(1 << 20, 'x'); });  // past the stream's buffer
  EXPECT_EQ(names().size(), 2u);                                                        // two temporaries
  files.commit();
  EXPECT_EQ(names(), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(read(dir / "two").size(), size_t(1) << 20);
}

TEST_F(SafeFile, InputsMustBeRegularFiles) {
  ASSERT_EQ(mkfifo((dir / "fifo").c_str(), 0600), 0);
  EXPECT_NE(error_of([&] { require_regular_file((dir / "fifo").string(), "checkpoint"); }).find("a FIFO"),
            std::string::npos);
  EXPECT_NE(error_of([&] { require_regular_file((dir / "none").string(), "checkpoint"); }).find("does not exist"),
            std::string::npos);
  fs::create_symlink("loop", dir / "loop");
  EXPECT_NE(error_of([&] { require_regular_file((dir / "loop").string(), "image file"); }).find("symbolic links"),
            std::string::npos);
  write_file_atomically(dir / "f", "x");
  fs::create_symlink(dir / "f", dir / "link");
  EXPECT_NO_THROW(require_regular_file((dir / "link").string(), "image file"));  // followed: a file behind it
}

TEST_F(SafeFile, RemovesOnlyDeadRunsTemporaries) {
  const std::string live = std::string(kTempPrefix) + std::to_string(getpid()) + "-a";
  const std::string dead = std::string(kTempPrefix) + "999999999-b";  // above any pid_max
  fs::create_directory(dir / live);
  fs::create_directory(dir / dead);
  write_file_atomically(dir / "c", "user's");
  fs::create_directory(dir / "keep");
  fs::create_symlink(dir / "keep", dir / (std::string(kTempPrefix) + "999999999-link"));
  remove_temporaries(dir, /*all=*/false);
  EXPECT_EQ(names(), (std::vector<std::string>{live, "c", "keep"}));
  remove_temporaries(dir, /*all=*/true);
  EXPECT_EQ(names(), (std::vector<std::string>{"c", "keep"}));  // the link's target stays
}

TEST_F(SafeFile, OneLockAFolder) {
  {
    FolderLock first(dir);
    EXPECT_EQ(read(dir / FolderLock::kFileName), std::to_string(getpid()) + "\n");
    // flock() locks belong to open files, so a second open in this same process conflicts too.
    const std::string e = error_of([&] { FolderLock second(dir); });
    EXPECT_NE(e.find("in use by another samfast run (pid " + std::to_string(getpid()) + ")"), std::string::npos) << e;
  }
  EXPECT_FALSE(fs::exists(dir / FolderLock::kFileName));
  FolderLock again(dir);  // released with its holder
}

}  // namespace
}  // namespace samfast
