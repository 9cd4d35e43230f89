// How laminafs reaches its layers: through private clones of their mounts, so a mount point
// inside a layer (or lowerdir=/) shows what lies underneath, as kernel overlayfs does, and the
// layers' own mounts are free again once the union is unmounted.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fixture.h"
#include "mount_table.h"
#include "needs.h"

namespace lamina::test {
namespace {

constexpr int kWalkSeconds = 20;

std::string describe(const CommandResult& r) {
    return "status " + std::to_string(r.status) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

// Runs argv for at most seconds; past that, aborts the FUSE connection at mnt (the only way to
// free a walk that reached its own mount) and reports status -1.
CommandResult run_or_abort(const std::vector<std::string>& argv, const std::string& mnt,
                           int seconds = kWalkSeconds) {
    CommandResult result;
    std::string out_path = "/tmp/lamina-walk-" + std::to_string(getpid()) + ".out";
    pid_t pid = fork();
    if (pid == 0) {
        int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        dup2(null, STDIN_FILENO);
        dup2(out, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        std::vector<char*> cargv;
        for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
        cargv.push_back(nullptr);
        execvp(cargv[0], cargv.data());
        _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            abort_fuse_connection(mnt);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            unlink(out_path.c_str());
            result.status = -1;
            return result;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    result.out = read_file(out_path);
    unlink(out_path.c_str());
    return result;
}

// Every entry below dir, sorted: type, relative path, and a file's size.
std::string walk(const std::string& dir, const std::string& mnt) {
    auto r = run_or_abort({"find", dir, "-mindepth", "1", "(", "-type", "f", "-printf",
                           "f %P %s\\n", ")", "-o", "-printf", "%y %P\\n"},
                          mnt);
    if (r.status == -1) return "find did not finish in " + std::to_string(kWalkSeconds) + " s";
    std::vector<std::string> lines;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::sort(lines.begin(), lines.end());
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    if (r.status != 0) out += "find: status " + std::to_string(r.status) + "\n";
    return out;
}

// How many mounts sit exactly at path.
int mounts_at(const std::string& path) {
    int n = 0;
    for (const auto& e : read_mount_table()) n += e.mount_point == path;
    return n;
}

// One layout, made twice (for laminafs and for the kernel): l holds the mount point l/inner,
// which holds a file and a directory of its own; l2 is a second lower.
struct Nested {
    std::string l, l2, u, w;
    explicit Nested(const std::string& base) {
        l = base + "/l", l2 = base + "/l2", u = base + "/u", w = base + "/w";
        for (const auto& d : {l + "/inner/deep", l2 + "/dir", u + "/inner/own", w}) make_dirs(d);
        write_file(l + "/top", "top\n");
        write_file(l + "/inner/under", "under the mount point\n");
        write_file(l + "/inner/deep/x", "x\n");
        write_file(l2 + "/dir/g", "g\n");
        write_file(u + "/inner/own/y", "yy\n");
    }
};

TEST(LayerReach, mount_point_inside_its_own_lower_shows_what_lies_underneath_as_the_kernel) {
    REQUIRE_FUSE();
    TempDir dir("lamina-reach");
    Nested fs(dir / "fs"), kernel(dir / "kernel");
    std::string mnt = fs.l + "/inner";
    MountGuard guard(mnt);
    auto r = mount_laminafs("lowerdir=" + fs.l + ":" + fs.l2, mnt);
    ASSERT_EQ(r.status, 0) << describe(r);
    std::string through_laminafs = walk(mnt, mnt);
    EXPECT_EQ(read_file(mnt + "/inner/under"), "under the mount point\n");
    unmount(mnt);
    EXPECT_EQ(through_laminafs,
              "d dir\nd inner\nd inner/deep\nf dir/g 2\nf inner/deep/x 2\n"
              "f inner/under 22\nf top 4\n");

    if (!can_mount_kernel_overlay()) SKIP_NEEDING("overlay") << skip_reason();
    std::string kmnt = kernel.l + "/inner";
    MountGuard kguard(kmnt);
    ASSERT_EQ(mount_kernel_overlay("lowerdir=" + kernel.l + ":" + kernel.l2, kmnt), "");
    EXPECT_EQ(through_laminafs, walk(kmnt, kmnt));
}

TEST(LayerReach, mount_point_inside_its_own_upper_shows_what_lies_underneath_as_the_kernel) {
    REQUIRE_FUSE();
    TempDir dir("lamina-reach");
    Nested fs(dir / "fs"), kernel(dir / "kernel");
    // Writes through the mount land in the upper, beside the mount point, and show.
    auto session = [](const std::string& mnt) {
        auto r = run_or_abort(
            {"sh", "-c", "echo new >" + mnt + "/new && mkdir " + mnt + "/inner/made"}, mnt);
        return (r.status == 0 ? "" : "writes: status " + std::to_string(r.status) + "\n") +
               walk(mnt, mnt);
    };
    std::string mnt = fs.u + "/inner";
    std::string through_laminafs;
    {
        MountGuard guard(mnt);
        auto r = mount_laminafs(
            "lowerdir=" + fs.l + ":" + fs.l2 + ",upperdir=" + fs.u + ",workdir=" + fs.w, mnt);
        ASSERT_EQ(r.status, 0) << describe(r);
        through_laminafs = session(mnt);
    }
    EXPECT_EQ(through_laminafs,
              "d dir\nd inner\nd inner/deep\nd inner/made\nd inner/own\nf dir/g 2\n"
              "f inner/deep/x 2\nf inner/own/y 3\nf inner/under 22\nf new 4\nf top 4\n");
    EXPECT_EQ(read_file(fs.u + "/new"), "new\n");

    if (!can_mount_kernel_overlay()) SKIP_NEEDING("overlay") << skip_reason();
    std::string kmnt = kernel.u + "/inner";
    MountGuard kguard(kmnt);
    ASSERT_EQ(mount_kernel_overlay("lowerdir=" + kernel.l + ":" + kernel.l2 +
                                       ",upperdir=" + kernel.u + ",workdir=" + kernel.w,
                                   kmnt),
              "");
    EXPECT_EQ(through_laminafs, session(kmnt));
}

// The mount ID of path's mount.
uint64_t mount_id_of(const std::string& path) {
    struct statx stx;
    if (statx(AT_FDCWD, path.c_str(), 0, STATX_MNT_ID, &stx) != 0) return 0;
    return stx.stx_mnt_id;
}

// lowerdir=/ with the mount point somewhere below /: the walk down to the mount point must stop
// at the directory underneath, and the mounts below / (here /proc) are not crossed. The kernel
// takes / only with a second lower on another filesystem (one on / would lie inside it).
TEST(LayerReach, lowerdir_root_shows_the_directory_under_its_own_mount_point) {
    REQUIRE_FUSE();
    TempDir dir("lamina-reach-root");
    if (mount_id_of(dir.path()) != mount_id_of("/"))
        SKIP_NEEDING("separate-shm") << dir.path() << " is not on the mount of /";
    TempDir shm("lamina-reach-shm", "/dev/shm");
    std::string mnt = dir / "mnt", other = shm / "other";
    make_dirs(mnt);
    make_dirs(dir / "empty");
    make_dirs(other);
    write_file(other + "/from_other", "other\n");
    write_file(dir / "beside", "beside\n");
    struct stat root_st, shm_st;
    ASSERT_EQ(stat("/", &root_st), 0);
    ASSERT_EQ(stat(shm.path().c_str(), &shm_st), 0);
    std::string lowers = "lowerdir=/";
    if (shm_st.st_dev != root_st.st_dev) lowers += ":" + other;
    auto look = [&](const std::string& m) {
        std::string seen = "own mount point:\n" + walk(m + mnt, m);
        seen += "its parent:\n" + walk(m + dir.path(), m);
        seen += "/proc:\n" + walk(m + "/proc", m);
        return seen;
    };
    std::string through_laminafs;
    {
        MountGuard guard(mnt);
        auto r = mount_laminafs(lowers, mnt);
        ASSERT_EQ(r.status, 0) << describe(r);
        through_laminafs = look(mnt);
        if (lowers != "lowerdir=/") {
            EXPECT_EQ(read_file(mnt + "/from_other"), "other\n");
        }
    }
    EXPECT_EQ(through_laminafs,
              "own mount point:\nits parent:\nd empty\nd mnt\nf beside 7\n/proc:\n");

    if (!can_mount_kernel_overlay()) SKIP_NEEDING("overlay") << skip_reason();
    if (lowers == "lowerdir=/")
        SKIP_NEEDING("separate-shm") << "/dev/shm is on the filesystem of /";
    MountGuard kguard(mnt);
    ASSERT_EQ(mount_kernel_overlay(lowers, mnt), "");
    EXPECT_EQ(through_laminafs, look(mnt));
}

// A private bind mount of a directory: the filesystem a layer lives on, for the unmount test.
std::string bind_privately(const std::string& from, const std::string& to) {
    if (mount(from.c_str(), to.c_str(), nullptr, MS_BIND, nullptr) != 0)
        return "bind " + from + " at " + to + ": " + strerror(errno);
    if (mount(nullptr, to.c_str(), nullptr, MS_PRIVATE, nullptr) != 0)
        return "make " + to + " private: " + strerror(errno);
    return "";
}

// `umount MERGED && umount LOWER_FS`: the kernel's unmount of an overlay is synchronous, so the
// second never finds the lower busy. laminafs's daemon sees the end of its connection only
// after umount has returned; its descriptors are on private clones, which keep no mount of the
// layers' busy. Under load: a large node table to tear down and every core busy.
TEST(LayerReach, umount_merged_then_the_layers_mount_never_finds_it_busy) {
    REQUIRE_FUSE();
    if (geteuid() != 0) SKIP_NEEDING("root") << "binds the layers' filesystem";
    TempDir dir("lamina-reach-umount");
    std::string source = dir / "source", lowerfs = dir / "lowerfs", mnt = dir / "mnt",
                rw = dir / "rw";
    for (const auto& d : {source + "/l", lowerfs, mnt, rw + "/u", rw + "/w"}) make_dirs(d);
    constexpr int kDirs = 40, kFiles = 100;
    for (int d = 0; d < kDirs; ++d) {
        std::string sub = source + "/l/d" + std::to_string(d);
        make_dirs(sub);
        for (int f = 0; f < kFiles; ++f) write_file(sub + "/f" + std::to_string(f), "x");
    }
    std::vector<pid_t> hogs;
    for (unsigned i = 0; i < std::max(2u, std::thread::hardware_concurrency()); ++i) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) {
            }
        }
        hogs.push_back(pid);
    }
    constexpr int kRounds = 40;
    int busy = 0;
    std::string failure;
    for (int round = 0; round < kRounds && failure.empty(); ++round) {
        if (auto err = bind_privately(source, lowerfs); !err.empty()) {
            failure = err;
            break;
        }
        auto r = mount_laminafs(
            "lowerdir=" + lowerfs + "/l,upperdir=" + rw + "/u,workdir=" + rw + "/w", mnt);
        if (r.status != 0) {
            failure = describe(r);
            break;
        }
        // Every file looked up and a few opened: nodes, descriptors, copies up.
        run_or_abort({"sh", "-c",
                      "find " + mnt + " -type f | head -n 400 | xargs cat >/dev/null; touch " +
                          mnt + "/d1/f1"},
                     mnt, 60);
        if (umount(mnt.c_str()) != 0) {
            failure = "umount " + mnt + ": " + strerror(errno);
            break;
        }
        if (umount(lowerfs.c_str()) != 0) {
            if (errno != EBUSY) failure = "umount " + lowerfs + ": " + strerror(errno);
            ++busy;
            // The daemon lets go in the end; wait for it, to go on.
            for (int i = 0; i < 500 && umount(lowerfs.c_str()) != 0; ++i)
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    for (pid_t pid : hogs) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
    }
    unmount(mnt);
    if (mounts_at(lowerfs) > 0) umount2(lowerfs.c_str(), MNT_DETACH);
    EXPECT_EQ(failure, "");
    EXPECT_EQ(busy, 0)
        << "umount of the layers' mount right after umount of the union found it busy " << busy
        << " times in " << kRounds;
}

}  // namespace
}  // namespace lamina::test
