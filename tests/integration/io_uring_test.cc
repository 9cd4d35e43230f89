// laminafs -o io_uring: requests travel over per-CPU io_uring queues (Linux 6.14+) with the same
// results as over /dev/fuse, and a kernel that does not offer it leaves a working mount.
//
// The kernel offers FUSE over io_uring only while the fuse module parameter enable_uring is Y;
// the tests set it and put back what was there. Whether requests really went through the rings
// is read from the daemon's own count (uring_requests= in its SIGUSR1 statistics line).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fixture.h"

namespace lamina::test {
namespace {

constexpr const char* kEnableUring = "/sys/module/fuse/parameters/enable_uring";

std::string random_data(size_t n, uint64_t seed) {
    Rng rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng.below(256));
    return s;
}

// Sets the fuse module's enable_uring for the life of the object, then puts the old value back.
class EnableUring {
public:
    explicit EnableUring(bool on) {
        std::ifstream in(kEnableUring);
        if (!(in >> old_)) return;
        set_ = write(on ? "Y" : "N");
    }
    ~EnableUring() {
        if (set_) write(old_);
    }
    EnableUring(const EnableUring&) = delete;
    EnableUring& operator=(const EnableUring&) = delete;
    bool ok() const { return set_; }

private:
    static bool write(const std::string& value) {
        std::ofstream out(kEnableUring);
        out << value << '\n';
        out.flush();
        return static_cast<bool>(out);
    }
    std::string old_;
    bool set_ = false;
};

std::vector<std::string> list_dir(const std::string& path) {
    std::vector<std::string> names;
    DIR* d = opendir(path.c_str());
    if (!d) return {"opendir failed: " + std::string(strerror(errno))};
    while (dirent* e = readdir(d)) names.emplace_back(e->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

// A fixed mix of operations through the mount, written down as text so two mounts can be
// compared: lookups, creates, writes and reads of small and large files, readdir, rename,
// unlink, mkdir, rmdir, xattrs, and the errors some of them must give.
std::string exercise(const std::string& mnt) {
    std::ostringstream log;
    auto result = [&](const std::string& what, int rc) {
        log << what << " -> " << (rc == 0 ? "ok" : strerror(errno)) << '\n';
    };
    struct stat st;
    result("stat lower/file", stat((mnt + "/lower/file").c_str(), &st));
    log << "size " << st.st_size << " mode " << std::oct << st.st_mode << std::dec << '\n';
    result("stat missing", stat((mnt + "/missing").c_str(), &st));
    log << "read lower/file: " << read_file(mnt + "/lower/file") << '\n';
    log << "big lower file intact: " << (read_file(mnt + "/lower/big") == random_data(3 << 20, 11))
        << '\n';

    // Writes of every size up to more than max_write, read back after the cache is dropped.
    std::string big = random_data(5 << 20, 12);
    write_file(mnt + "/new-big", big);
    for (int i = 0; i < 64; i++)
        write_file(mnt + "/small-" + std::to_string(i), std::string(i * 97, char('a' + i % 26)));
    std::ofstream(std::string("/proc/sys/vm/drop_caches")) << "3\n";
    log << "new-big reads back: " << (read_file(mnt + "/new-big") == big) << '\n';
    for (int i = 0; i < 64; i += 9)
        log << "small-" << i << " size " << read_file(mnt + "/small-" + std::to_string(i)).size()
            << '\n';

    int fd = open((mnt + "/lower/file").c_str(), O_WRONLY | O_APPEND);
    log << "append-open lower file: " << (fd >= 0) << '\n';
    if (fd >= 0) {
        log << "append wrote " << ::write(fd, "more\n", 5) << '\n';
        close(fd);
    }
    log << "lower/file now: " << read_file(mnt + "/lower/file") << '\n';

    result("mkdir dir", mkdir((mnt + "/dir").c_str(), 0755));
    result("mkdir dir again", mkdir((mnt + "/dir").c_str(), 0755));
    result("rename small-1 into dir",
           rename((mnt + "/small-1").c_str(), (mnt + "/dir/moved").c_str()));
    result("rename lower/file", rename((mnt + "/lower/file").c_str(), (mnt + "/renamed").c_str()));
    result("unlink small-2", unlink((mnt + "/small-2").c_str()));
    result("unlink small-2 again", unlink((mnt + "/small-2").c_str()));
    result("unlink lower/gone", unlink((mnt + "/lower/gone").c_str()));
    result("rmdir non-empty dir", rmdir((mnt + "/dir").c_str()));
    result("symlink", symlink("renamed", (mnt + "/link").c_str()));
    char target[64] = {};
    log << "readlink: " << readlink((mnt + "/link").c_str(), target, sizeof target - 1) << ' '
        << target << '\n';
    result("setxattr", setxattr((mnt + "/renamed").c_str(), "user.k", "v1", 2, 0));
    char value[16] = {};
    log << "getxattr user.k: "
        << getxattr((mnt + "/renamed").c_str(), "user.k", value, sizeof value) << ' ' << value
        << '\n';
    errno = 0;
    log << "getxattr user.nope: " << getxattr((mnt + "/renamed").c_str(), "user.nope", value, 0)
        << ' ' << strerror(errno) << '\n';
    for (const std::string& dir : {mnt, mnt + "/dir", mnt + "/lower"}) {
        log << "readdir " << dir.substr(mnt.size()) << ":";
        for (const auto& name : list_dir(dir)) log << ' ' << name;
        log << '\n';
    }
    return log.str();
}

class IoUring : public ::testing::Test {
protected:
    // A fresh layer stack under dir_/NAME, mounted with these extra options; returns what
    // exercise() saw and the daemon's stats afterwards.
    std::string run(const std::string& name, const std::string& extra, DaemonStats& stats,
                    std::string& log) {
        std::string root = dir_ / name;
        for (const char* sub : {"", "/l0", "/l0/lower", "/up", "/wk", "/mnt"})
            make_dirs(root + sub);
        write_file(root + "/l0/lower/file", "lower file\n");
        write_file(root + "/l0/lower/gone", "x");
        write_file(root + "/l0/lower/big", random_data(3 << 20, 11));
        std::string opts = "lowerdir=" + root + "/l0,upperdir=" + root + "/up,workdir=" + root +
                           "/wk,log_level=info" + extra;
        ForegroundLaminafs daemon(opts, root + "/mnt", root + "/daemon.log");
        std::string err = daemon.start();
        EXPECT_EQ(err, "");
        if (!err.empty()) return "";
        std::string seen = exercise(root + "/mnt");
        stats = daemon.stats();
        // The ring threads end when the kernel ends their commands: the daemon exits by itself
        // (stop() would kill it after 5 s).
        auto before = std::chrono::steady_clock::now();
        daemon.stop();
        EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(4))
            << name << ": the daemon did not exit after the unmount";
        log = daemon.log_text();
        return seen;
    }

    // The same exercise on a plain mount and on one that asks for io_uring.
    struct Both {
        std::string plain, ring, plain_log, ring_log;
        DaemonStats plain_stats, ring_stats;
    };
    Both run_both() {
        Both b;
        b.plain = run("plain", ",io_uring=off", b.plain_stats, b.plain_log);
        b.ring = run("ring", ",io_uring", b.ring_stats, b.ring_log);
        return b;
    }

    TempDir dir_{"io_uring"};
};

TEST_F(IoUring, requests_go_through_the_rings_with_the_same_results) {
    REQUIRE_FUSE();
    EnableUring enable(true);
    if (!enable.ok())
        SKIP_NEEDING("uring") << "cannot set " << kEnableUring
                              << " (kernel without io_uring FUSE?)";
    Both b = run_both();
    ASSERT_FALSE(b.plain.empty());
    EXPECT_EQ(b.ring, b.plain);
    EXPECT_NE(b.ring_log.find("io_uring: on"), std::string::npos) << b.ring_log;
    EXPECT_EQ(b.plain_stats["uring_requests"], 0);
    // Well over a hundred requests: lookups, creates, writes, reads, renames...
    EXPECT_GT(b.ring_stats["uring_requests"], 100) << b.ring_log;
    std::printf("requests served through io_uring: %ld\n", b.ring_stats["uring_requests"]);
    std::printf("%s", b.ring.c_str());
}

// enable_uring only lets FUSE daemons ask for io_uring. A root daemon in the initial namespace
// turns it on itself and uses io_uring by default; -o io_uring=off leaves both alone. (A daemon
// that cannot set it falls back to /dev/fuse: rootless_test.)
TEST_F(IoUring, a_root_daemon_turns_it_on_by_default_and_io_uring_off_refuses) {
    REQUIRE_FUSE();
    EnableUring disable(false);
    if (!disable.ok()) SKIP_NEEDING("uring") << "cannot set " << kEnableUring;
    auto parameter = [] {
        std::ifstream in(kEnableUring);
        std::string v;
        in >> v;
        return v;
    };
    DaemonStats stats;
    std::string log;
    std::string refused = run("refused", ",io_uring=off", stats, log);
    ASSERT_FALSE(refused.empty());
    EXPECT_EQ(parameter(), "N") << log;
    EXPECT_EQ(stats["uring_requests"], 0);
    std::string by_default = run("default", "", stats, log);
    EXPECT_EQ(by_default, refused);
    EXPECT_EQ(parameter(), "Y");
    EXPECT_NE(log.find("to Y, which lets FUSE daemons ask for io_uring"), std::string::npos) << log;
    EXPECT_NE(log.find("io_uring: on"), std::string::npos) << log;
    EXPECT_GT(stats["uring_requests"], 100) << log;
}

bool pin_to_cpu0() {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0;
}

// Each CPU's queue has several rings: a handler that waits (here on a lower layer that is itself
// a FUSE mount whose daemon is stopped) holds up only its own, and another caller on the same CPU
// is still served. With one ring per CPU the second call would wait for the first.
TEST_F(IoUring, a_request_that_waits_does_not_hold_up_its_cpu) {
    REQUIRE_FUSE();
    EnableUring enable(true);
    if (!enable.ok())
        SKIP_NEEDING("uring") << "cannot set " << kEnableUring
                              << " (kernel without io_uring FUSE?)";
    std::string root = dir_ / "stall";
    for (const char* sub : {"", "/inner_l0", "/inner_mnt", "/up", "/wk", "/mnt"})
        make_dirs(root + sub);
    write_file(root + "/inner_l0/slow", "slow\n");
    ForegroundLaminafs inner("lowerdir=" + root + "/inner_l0", root + "/inner_mnt",
                             root + "/inner.log");
    ASSERT_EQ(inner.start(), "");
    ForegroundLaminafs outer("lowerdir=" + root + "/inner_mnt,upperdir=" + root +
                                 "/up,workdir=" + root + "/wk,io_uring,log_level=info",
                             root + "/mnt", root + "/outer.log");
    ASSERT_EQ(outer.start(), "");
    std::string mnt = root + "/mnt";
    // Touches only the upper layer, and never cached by the kernel: always a round trip.
    ASSERT_EQ(getxattr(mnt.c_str(), "user.absent", nullptr, 0), -1);
    ASSERT_EQ(errno, ENODATA);
    ASSERT_NE(outer.log_text().find("io_uring: on"), std::string::npos) << outer.log_text();

    ASSERT_EQ(kill(inner.pid(), SIGSTOP), 0);
    std::atomic<bool> stalled_done{false};
    std::atomic<bool> pinned{true};
    std::thread stalled([&] {
        pinned = pin_to_cpu0();
        // The lookup makes the outer daemon list its lower layer: it waits on the stopped one.
        std::string data = read_file(mnt + "/slow");
        stalled_done = true;
        EXPECT_EQ(data, "slow\n");
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    bool stalled_early = stalled_done;

    std::atomic<bool> second_done{false};
    std::atomic<int> second_errno{0};
    std::thread second([&] {
        if (!pin_to_cpu0()) pinned = false;
        if (getxattr(mnt.c_str(), "user.absent", nullptr, 0) == -1) second_errno = errno;
        second_done = true;
    });
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (!second_done && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    bool second_in_time = second_done;

    kill(inner.pid(), SIGCONT);
    stalled.join();
    second.join();
    if (!pinned) SKIP_NEEDING("cpu0") << "cannot pin the callers to CPU 0";
    EXPECT_FALSE(stalled_early) << "the read did not wait on the stopped lower daemon";
    EXPECT_TRUE(second_in_time)
        << "a request from the same CPU waited for the stalled one to finish";
    EXPECT_EQ(second_errno, ENODATA);
    EXPECT_TRUE(stalled_done);
    outer.stop();
    inner.stop();
}

}  // namespace
}  // namespace lamina::test
