// laminafs's side of lazy layers (fs/lazy.cc), with a scripted helper in place of
// lamina-lazy-fetch: the first open of a file in a lazy lower runs the helper and reads only once
// it succeeded; a failing or silent helper gives EIO and a log line within the bound; files of
// other layers and files already complete never run it; stat never does.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>

#include "fixture.h"

namespace lamina::test {
namespace {

// A helper that logs each call (LAYER PATH) to calls.log, then does what the file named by its
// PATH argument's basename says in behaviour/: "fill" writes the real content into the
// placeholder, "fail" exits 1, "hang" sleeps; a file without instructions is complete already.
void write_helper(const std::string& dir) {
    write_file(dir + "/helper",
               "#!/bin/sh\n"
               "echo \"$1 $2\" >> " +
                   dir +
                   "/calls.log\n"
                   "b=$(basename \"$2\")\n"
                   "case \"$(cat " +
                   dir +
                   "/behaviour/$b 2>/dev/null)\" in\n"
                   "fill) printf 'real %s\\n' \"$b\" > \"$1/$2\" ;;\n"
                   "fail) exit 1 ;;\n"
                   "hang) sleep 30 ;;\n"
                   "esac\n"
                   "exit 0\n",
               0755);
}

std::pair<std::string, int> read_through(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {"", errno};
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    int err = n < 0 ? errno : 0;
    ::close(fd);
    return {n > 0 ? std::string(buf, static_cast<size_t>(n)) : "", err};
}

size_t lines(const std::string& text) {
    return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

TEST(LazyOpen, first_open_runs_the_helper_and_failures_are_eio_within_the_bound) {
    REQUIRE_FUSE();
    TempDir dir("lazy-open");
    std::string top = dir.path() + "/top", lazy = dir.path() + "/lazy", mnt = dir.path() + "/mnt";
    for (const auto& d :
         {top, lazy, mnt, dir.path() + "/behaviour", dir.path() + "/upper", dir.path() + "/work"})
        make_dirs(d);
    write_file(top + "/plain", "plain\n");
    // Placeholders: the right size, zeros. A reader must never see these zeros.
    for (const char* name : {"good", "bad", "slow", "later"})
        write_file(lazy + "/" + name, std::string(strlen("real \n") + strlen(name), '\0'));
    write_file(dir.path() + "/behaviour/good", "fill");
    write_file(dir.path() + "/behaviour/bad", "fail");
    write_file(dir.path() + "/behaviour/slow", "hang");
    write_file(dir.path() + "/behaviour/later", "fill");
    write_helper(dir.path());

    ForegroundLaminafs fs("lowerdir=" + top + ":" + lazy + ",upperdir=" + dir.path() +
                              "/upper,workdir=" + dir.path() + "/work,lazy_fetch=" + dir.path() +
                              "/helper,lazy_layers=2,lazy_timeout=1",
                          mnt, dir.path() + "/laminafs.log");
    ASSERT_EQ(fs.start(), "");
    std::string calls = dir.path() + "/calls.log";
    auto calls_text = [&] { return access(calls.c_str(), F_OK) == 0 ? read_file(calls) : ""; };

    // stat and listing never fetch; a file of a layer that is not lazy never asks.
    struct stat st;
    ASSERT_EQ(::stat((mnt + "/good").c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 10);
    EXPECT_EQ(read_through(mnt + "/plain").first, "plain\n");
    EXPECT_EQ(calls_text(), "");

    // The first open runs the helper with the layer's path and the file's; then the content.
    EXPECT_EQ(read_through(mnt + "/good"), std::make_pair(std::string("real good\n"), 0));
    EXPECT_EQ(calls_text(), lazy + " good\n");
    // Known complete from then on: the helper is not run again.
    EXPECT_EQ(read_through(mnt + "/good").first, "real good\n");
    EXPECT_EQ(lines(calls_text()), 1u);

    // A helper that fails: EIO, and a line in the daemon's log; the next open asks again.
    EXPECT_EQ(read_through(mnt + "/bad").second, EIO);
    EXPECT_EQ(read_through(mnt + "/bad").second, EIO);
    EXPECT_EQ(lines(calls_text()), 3u);
    EXPECT_NE(fs.log_text().find("fetching bad failed"), std::string::npos) << fs.log_text();

    // A helper that does not answer: EIO after the bound (1 s), not a hang.
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(read_through(mnt + "/slow").second, EIO);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    EXPECT_NE(fs.log_text().find("slow not fetched within 1 s"), std::string::npos)
        << fs.log_text();

    // Copy-up of a lazy file asks first too; the upper copy holds the fetched bytes.
    ASSERT_EQ(::chmod((mnt + "/later").c_str(), 0600), 0) << strerror(errno);
    EXPECT_EQ(read_file(dir.path() + "/upper/later"), "real later\n");
    EXPECT_NE(calls_text().find(lazy + " later\n"), std::string::npos) << calls_text();
    fs.stop();
}

}  // namespace
}  // namespace lamina::test
