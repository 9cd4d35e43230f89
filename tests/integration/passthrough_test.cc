// laminafs -o passthrough: open files are read and written by the kernel directly (FUSE
// passthrough, Linux 6.9+), with the same results as without it.
//
// Whether the data path really bypasses the daemon is read from the daemon's own count of
// read(2) calls (/proc/PID/io syscr): each FUSE request costs it one read of /dev/fuse.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "fixture.h"

namespace lamina::test {
namespace {

constexpr size_t kBigSize = 32 << 20;

std::string random_data(size_t n, uint64_t seed) {
    Rng rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng.below(256));
    return s;
}

// Reads the file with mmap, page by page, and returns its bytes.
std::string mmap_read(const std::string& path) {
    int fd = open(path.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0) << path;
    if (fd < 0) return "";
    struct stat st;
    fstat(fd, &st);
    size_t n = static_cast<size_t>(st.st_size);
    void* p = mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    EXPECT_NE(p, MAP_FAILED);
    if (p == MAP_FAILED) return "";
    std::string out(static_cast<const char*>(p), n);
    munmap(p, n);
    return out;
}

// A laminafs mount in the foreground (so its log can be read) over two lower layers, the lowest
// holding big (kBigSize random bytes).
class Passthrough : public ::testing::Test {
protected:
    void SetUp() override {
        REQUIRE_FUSE();
        big_ = random_data(kBigSize, 7);
        make_dirs(dir_ / "l0");
        make_dirs(dir_ / "l1");
        make_dirs(dir_ / "up");
        make_dirs(dir_ / "wk");
        make_dirs(dir_ / "mnt");
        write_file(dir_ / "l0/big", big_);
        write_file(dir_ / "l1/small", "lower small\n");
    }
    // Starts laminafs with these extra options and waits until it answered INIT. Requests are
    // counted as the daemon's read(2) calls on /dev/fuse, which FUSE over io_uring bypasses: so
    // without it.
    void start(const std::string& extra) {
        std::string opts = "lowerdir=" + (dir_ / "l1") + ":" + (dir_ / "l0") +
                           ",upperdir=" + (dir_ / "up") + ",workdir=" + (dir_ / "wk") +
                           ",log_level=info,io_uring=off" + extra;
        daemon_ = std::make_unique<ForegroundLaminafs>(opts, dir_ / "mnt", dir_ / "daemon.log");
        std::string err = daemon_->start();
        ASSERT_EQ(err, "");
        pid_ = daemon_->pid();
        struct stat st;
        ASSERT_EQ(stat((dir_ / "mnt/small").c_str(), &st), 0);  // INIT is answered by now
        log_ = daemon_->log_text();
    }

    // Starts with passthrough, or skips when this kernel or process cannot have it.
    void start_passthrough() {
        start(",passthrough");
        if (HasFatalFailure()) return;
        if (log_.find("passthrough: on") == std::string::npos) {
            auto at = log_.find("passthrough: off");
            SKIP_NEEDING("passthrough") << "FUSE passthrough is not available here: "
                                        << (at == std::string::npos ? log_ : log_.substr(at));
        }
    }

    TempDir dir_{"passthrough"};
    std::unique_ptr<ForegroundLaminafs> daemon_;
    std::string big_;
    std::string log_;
    pid_t pid_ = -1;
};

TEST_F(Passthrough, reads_and_mmap_bypass_the_daemon) {
    start_passthrough();
    if (IsSkipped() || HasFatalFailure()) return;
    long before = read_syscalls(pid_);
    EXPECT_TRUE(read_file(dir_ / "mnt/big") == big_) << "read(2) through the mount differs";
    EXPECT_TRUE(mmap_read(dir_ / "mnt/big") == big_) << "mmap through the mount differs";
    long requests = read_syscalls(pid_) - before;
    // open, flush, release (twice), a getattr or two: not one request per block of data.
    EXPECT_LT(requests, 24) << "the daemon received " << requests << " requests for 64 MiB";
    std::printf("requests for two 32 MiB reads with passthrough: %ld\n", requests);
}

// The same measure without passthrough, so the one above can tell the difference.
TEST_F(Passthrough, without_it_reads_are_requests) {
    start(",passthrough=off");
    ASSERT_FALSE(HasFatalFailure());
    long before = read_syscalls(pid_);
    EXPECT_TRUE(mmap_read(dir_ / "mnt/big") == big_);
    long requests = read_syscalls(pid_) - before;
    EXPECT_GE(requests, 32) << "32 MiB read through the page cache in at most 1 MiB requests";
    std::printf("requests for one 32 MiB mmap read without passthrough: %ld\n", requests);
}

TEST_F(Passthrough, writes_copy_up_and_land_in_the_upper_layer) {
    start_passthrough();
    if (IsSkipped() || HasFatalFailure()) return;
    std::string path = dir_ / "mnt/big";
    int fd = open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << strerror(errno);
    std::string patch = "written through passthrough";
    ASSERT_EQ(pwrite(fd, patch.data(), patch.size(), 4096), static_cast<ssize_t>(patch.size()));
    ASSERT_EQ(pwrite(fd, "tail", 4, kBigSize), 4);  // grows the file
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    EXPECT_EQ(st.st_size, static_cast<off_t>(kBigSize + 4));
    // A shared writable mapping writes through to the upper file too.
    void* p = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(p, MAP_FAILED) << strerror(errno);
    std::memcpy(static_cast<char*>(p) + 100, "MMAP", 4);
    ASSERT_EQ(msync(p, 8192, MS_SYNC), 0);
    munmap(p, 8192);
    close(fd);

    std::string expect = big_;
    expect.replace(4096, patch.size(), patch);
    expect.replace(100, 4, "MMAP");
    expect += "tail";
    EXPECT_TRUE(read_file(path) == expect) << "the mount shows other bytes";
    EXPECT_TRUE(read_file(dir_ / "up/big") == expect) << "the upper copy holds other bytes";
    EXPECT_TRUE(read_file(dir_ / "l0/big") == big_) << "the lower layer was written";
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, static_cast<off_t>(kBigSize + 4));

    // O_APPEND and truncation of a file created through the mount.
    std::string fresh = dir_ / "mnt/fresh";
    fd = open(fresh.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "one\n", 4), 4);
    ASSERT_EQ(write(fd, "two\n", 4), 4);
    ASSERT_EQ(ftruncate(fd, 6), 0);
    ASSERT_EQ(write(fd, "!\n", 2), 2);
    close(fd);
    EXPECT_EQ(read_file(fresh), "one\ntw!\n");
    EXPECT_EQ(read_file(dir_ / "up/fresh"), "one\ntw!\n");
}

// The kernel passes every open of an inode through to one backing file, so a file open for
// reading from its lower layer cannot also be opened on its upper copy. laminafs then gives the
// name a new node: the open for writing succeeds (once it used to fail with ETXTBSY), and every
// open after it reads the upper copy. The reader opened before the copy-up goes on reading the
// lower copy, as it did on kernel overlayfs before Linux 4.19 (docs/architecture.md).
TEST_F(Passthrough, copy_up_under_an_open_lower_reader_gives_the_name_a_new_node) {
    start_passthrough();
    if (IsSkipped() || HasFatalFailure()) return;
    std::string path = dir_ / "mnt/small";
    int reader = open(path.c_str(), O_RDONLY);
    ASSERT_GE(reader, 0);
    int writer = open(path.c_str(), O_WRONLY | O_TRUNC);
    ASSERT_GE(writer, 0) << strerror(errno);
    ASSERT_EQ(write(writer, "upper\n", 6), 6);
    int second = open(path.c_str(), O_RDONLY);  // after the copy-up: the upper copy
    ASSERT_GE(second, 0) << strerror(errno);
    char buf[64] = {};
    EXPECT_EQ(pread(second, buf, sizeof buf, 0), 6);
    EXPECT_STREQ(buf, "upper\n");
    std::memset(buf, 0, sizeof buf);
    EXPECT_EQ(pread(reader, buf, sizeof buf, 0), 12);
    EXPECT_STREQ(buf, "lower small\n") << "the reader from before the copy-up";
    // Both descriptors are one file to stat(2): same inode number, the upper copy's size.
    struct stat old_fd, new_fd, by_path;
    ASSERT_EQ(fstat(reader, &old_fd), 0);
    ASSERT_EQ(fstat(second, &new_fd), 0);
    ASSERT_EQ(stat(path.c_str(), &by_path), 0);
    EXPECT_EQ(old_fd.st_ino, by_path.st_ino);
    EXPECT_EQ(new_fd.st_ino, by_path.st_ino);
    EXPECT_EQ(old_fd.st_size, 6);
    EXPECT_EQ(by_path.st_size, 6);
    // Changes through the old descriptor reach the file the name has.
    EXPECT_EQ(fchmod(reader, 0600), 0) << strerror(errno);
    ASSERT_EQ(stat(path.c_str(), &by_path), 0);
    EXPECT_EQ(by_path.st_mode & 07777, 0600u);
    close(reader);
    close(second);
    close(writer);
    EXPECT_EQ(read_file(path), "upper\n");
    EXPECT_EQ(read_file(dir_ / "up/small"), "upper\n");
    EXPECT_EQ(read_file(dir_ / "l1/small"), "lower small\n");
    // A link by path reaches the name's node, not the one the old descriptors keep.
    std::string alias = dir_ / "mnt/alias";
    EXPECT_EQ(link(path.c_str(), alias.c_str()), 0) << strerror(errno);
    EXPECT_EQ(read_file(alias), "upper\n");
}

// Writes to a file with several names stay with the daemon, which refreshes what the kernel
// caches for the other names.
TEST_F(Passthrough, hardlinked_files_stay_coherent) {
    start_passthrough();
    if (IsSkipped() || HasFatalFailure()) return;
    std::string a = dir_ / "mnt/a", b = dir_ / "mnt/b";
    write_file(a, "12345");
    ASSERT_EQ(link(a.c_str(), b.c_str()), 0);
    struct stat st;
    ASSERT_EQ(stat(b.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 5);
    int fd = open(a.c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "6789", 4), 4);
    close(fd);
    ASSERT_EQ(stat(b.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 9);
    EXPECT_EQ(read_file(b), "123456789");
}

}  // namespace
}  // namespace lamina::test
