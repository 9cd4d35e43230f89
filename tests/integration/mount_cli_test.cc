// The laminafs command line for real: mounting as users, mount(8) and podman do; clean refusals.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>

#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <filesystem>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "fixture.h"
#include "mount_table.h"
#include "needs.h"

namespace lamina::test {
namespace {

// Waits until pred() holds or limit passes; returns pred()'s last value.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return pred();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
}

// Processes whose command line mentions text (mountpoints are unique temp paths).
std::vector<pid_t> processes_mentioning(const std::string& text) {
    std::vector<pid_t> pids;
    std::istringstream out(run_command({"pgrep", "-f", text}).out);
    for (pid_t pid; out >> pid;) pids.push_back(pid);
    return pids;
}

// The daemon is not our child, so a zombie of it may linger until init reaps it.
bool process_gone(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    size_t paren = line.rfind(')');
    return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

bool no_process_mentions(const std::string& text) {
    for (pid_t pid : processes_mentioning(text)) {
        if (!process_gone(pid)) return false;
    }
    return true;
}

std::string absolute(const std::string& path) {
    char buf[PATH_MAX];
    return realpath(path.c_str(), buf) ? buf : path;
}

std::vector<std::string> nonempty_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (!line.empty()) lines.push_back(line);
    }
    return lines;
}

std::string describe(const CommandResult& r) {
    return "status " + std::to_string(r.status) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

// A temp dir with two lower layers (top first), an upper, a work dir and a mountpoint.
struct Layers {
    TempDir dir{"lamina-cli"};
    std::string top = dir / "lower_top";
    std::string bottom = dir / "lower_bottom";
    std::string upper = dir / "upper";
    std::string work = dir / "work";
    std::string mnt = dir / "mountpoint";

    Layers() {
        for (const auto& d : {top, bottom, upper, work, mnt}) make_dirs(d);
        write_file(top + "/shared.txt", "from top\n");
        write_file(bottom + "/shared.txt", "from bottom\n");
        write_file(bottom + "/only_bottom.txt", "bottom\n");
        write_file(top + "/only_top.txt", "top\n");
    }
    std::string lowerdir() const { return "lowerdir=" + top + ":" + bottom; }
    std::string writable() const { return lowerdir() + ",upperdir=" + upper + ",workdir=" + work; }
};

// Puts the built binary on mount.fuse3's PATH for the duration of a test, unless one is there.
class LaminafsOnPath {
public:
    static constexpr const char* kLink = "/usr/local/bin/laminafs";
    LaminafsOnPath() {
        struct stat st;
        if (lstat(kLink, &st) == 0) {
            preexisting_ = true;
            return;
        }
        std::string target = absolute(laminafs_binary());
        if (symlink(target.c_str(), kLink) != 0) {
            error_ = std::string("symlink ") + kLink + ": " + strerror(errno);
        } else {
            created_ = true;
        }
    }
    ~LaminafsOnPath() {
        if (created_) unlink(kLink);
    }
    LaminafsOnPath(const LaminafsOnPath&) = delete;
    LaminafsOnPath& operator=(const LaminafsOnPath&) = delete;
    const std::string& error() const { return error_; }
    bool preexisting() const { return preexisting_; }

private:
    bool created_ = false;
    bool preexisting_ = false;
    std::string error_;
};

// A refused mount: non-zero exit, one line on stderr naming the problem, nothing mounted and no
// daemon left behind.
void expect_refused(const CommandResult& r, const std::string& mnt, const std::string& mentions) {
    EXPECT_NE(r.status, 0) << describe(r);
    auto lines = nonempty_lines(r.err);
    ASSERT_EQ(lines.size(), 1u) << describe(r);
    EXPECT_EQ(lines[0].rfind("laminafs: ", 0), 0u) << lines[0];
    EXPECT_NE(lines[0].find(mentions), std::string::npos)
        << "stderr should mention '" << mentions << "': " << lines[0];
    EXPECT_FALSE(is_mountpoint(mnt));
    EXPECT_TRUE(eventually([&] { return no_process_mentions(mnt); }, std::chrono::seconds(2)))
        << "a laminafs process is left for " << mnt;
}

std::string find_mount_source(const std::string& mnt) {
    auto r = run_command({"findmnt", "-n", "-o", "SOURCE", "--mountpoint", mnt});
    std::string s = r.out;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

TEST(MountCli, ReadOnlyTwoLayerMountIsReadyWhenTheCommandReturns) {
    REQUIRE_FUSE();
    Layers layers;
    MountGuard guard(layers.mnt);
    auto r = mount_laminafs(layers.lowerdir(), layers.mnt);
    ASSERT_EQ(r.status, 0) << describe(r);
    // No waiting: the daemon may only detach once the kernel has the mount.
    EXPECT_TRUE(is_mountpoint(layers.mnt));
    EXPECT_EQ(read_file(layers.mnt + "/shared.txt"), "from top\n");
    EXPECT_EQ(mount_fstype(layers.mnt).rfind("fuse", 0), 0u) << mount_fstype(layers.mnt);

    auto ls = run_command({"ls", "-1", layers.mnt});
    ASSERT_EQ(ls.status, 0) << describe(ls);
    EXPECT_EQ(ls.out, "only_bottom.txt\nonly_top.txt\nshared.txt\n");
    EXPECT_EQ(read_file(layers.mnt + "/only_bottom.txt"), "bottom\n");
}

TEST(MountCli, SourceMountpointOptionsFormAsMountFuseCallsIt) {
    REQUIRE_FUSE();
    Layers layers;
    MountGuard guard(layers.mnt);
    auto r = run_command({laminafs_binary(), "lamina-src", layers.mnt, "-o", layers.lowerdir()});
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(is_mountpoint(layers.mnt));
    EXPECT_EQ(read_file(layers.mnt + "/shared.txt"), "from top\n");
    EXPECT_EQ(find_mount_source(layers.mnt), "lamina-src");
}

TEST(MountCli, MountTypeFuseLaminafsWorks) {
    REQUIRE_FUSE();
    LaminafsOnPath on_path;
    ASSERT_EQ(on_path.error(), "");
    Layers layers;
    MountGuard guard(layers.mnt);
    auto r = run_command(
        {"mount", "-t", "fuse.laminafs", "laminafs", layers.mnt, "-o", layers.lowerdir()});
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(is_mountpoint(layers.mnt));
    EXPECT_EQ(read_file(layers.mnt + "/only_top.txt"), "top\n");
}

// The mount's own options (ro,nosuid,...) at exactly mnt, the newest mount there.
std::string mount_options_of(const std::string& mnt) {
    std::string options;
    for (const auto& e : read_mount_table())
        if (e.mount_point == mnt) options = e.options + ",";
    return options;
}

// Writes a file, remounts read-only and writes again, remounts read-write and writes again,
// all through mount(8); the transcript of what each step gave.
std::string remount_transcript(const std::string& mnt) {
    std::string out;
    auto try_write = [&](const char* name) {
        int fd = ::open((mnt + "/" + name).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        out +=
            std::string(name) + (fd >= 0 ? " written" : std::string(" ") + strerrorname_np(errno));
        out += "\n";
        if (fd >= 0) ::close(fd);
    };
    auto remount = [&](const char* how) {
        auto r = run_command({"mount", "-o", std::string("remount,") + how, mnt});
        out += std::string("remount,") + how + " status " + std::to_string(r.status) + r.err + "\n";
    };
    try_write("before");
    remount("ro");
    try_write("while_ro");
    out +=
        "mount shows " + std::string(mount_options_of(mnt).find("ro,") == 0 ? "ro" : "rw") + "\n";
    remount("rw");
    try_write("after");
    out +=
        "mount shows " + std::string(mount_options_of(mnt).find("ro,") == 0 ? "ro" : "rw") + "\n";
    out += "shared.txt " + read_file(mnt + "/shared.txt");
    return out;
}

TEST(MountCli, RemountReadOnlyAndBackAsOnTheKernel) {
    REQUIRE_FUSE();
    if (!can_mount_kernel_overlay()) SKIP_NEEDING("overlay") << "kernel overlayfs is the oracle";
    LaminafsOnPath on_path;
    ASSERT_EQ(on_path.error(), "");
    std::string seen[2];
    for (int kernel = 0; kernel < 2; ++kernel) {
        Layers layers;
        MountGuard guard(layers.mnt);
        auto r =
            run_command({"mount", "-t", kernel ? "overlay" : "fuse.laminafs",
                         kernel ? "overlay" : "laminafs", layers.mnt, "-o", layers.writable()});
        ASSERT_EQ(r.status, 0) << describe(r);
        seen[kernel] = remount_transcript(layers.mnt);
        EXPECT_FALSE(std::filesystem::exists(layers.upper + "/while_ro"));
    }
    EXPECT_EQ(seen[0], seen[1]) << "laminafs first, the kernel second";
    EXPECT_NE(seen[1].find("while_ro EROFS"), std::string::npos) << seen[1];
}

TEST(MountCli, RemountOfSomethingElseIsRefused) {
    TempDir dir("lamina-cli");
    auto r = run_command({laminafs_binary(), "laminafs", dir.path(), "-o", "remount,ro"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("not a mount point"), std::string::npos) << r.err;
}

// Only root may remount (mount(2) needs CAP_SYS_ADMIN, and fusermount3 has no remount): a plain
// user gets one line saying so, and the mount stays as it was.
TEST(MountCli, RemountByAPlainUserIsRefusedWithOneLine) {
    REQUIRE_FUSE();
    if (run_command({"which", "setpriv"}).status != 0)
        SKIP_NEEDING("program:setpriv") << "util-linux's setpriv runs the command as nobody";
    Layers layers;
    chmod(layers.dir.path().c_str(), 0755);  // nobody resolves the mount point
    MountGuard guard(layers.mnt);
    auto mounted = mount_laminafs(layers.writable(), layers.mnt);
    ASSERT_EQ(mounted.status, 0) << describe(mounted);
    // The binary where nobody may run it: the build directory may be where it cannot.
    TempDir bin("lamina-cli-bin");
    chmod(bin.path().c_str(), 0755);
    std::string copy = bin / "laminafs";
    ASSERT_EQ(run_command({"install", "-m", "0755", laminafs_binary(), copy}).status, 0);
    auto r = run_command({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", copy,
                          "laminafs", layers.mnt, "-o", "remount,ro"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("remount '" + layers.mnt +
                         "': Operation not permitted (remounting "
                         "needs CAP_SYS_ADMIN; fusermount3 cannot remount)"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    write_file(layers.mnt + "/still_writable", "yes\n");
}

TEST(MountCli, MountFromFstabLineWorks) {
    REQUIRE_FUSE();
    LaminafsOnPath on_path;
    ASSERT_EQ(on_path.error(), "");
    Layers layers;
    std::string fstab = layers.dir / "fstab";
    write_file(fstab, "# lamina test\nlaminafs " + layers.mnt + " fuse.laminafs " +
                          layers.writable() + ",noauto,nofail,x-test.option=1 0 0\n");
    MountGuard guard(layers.mnt);
    auto r = run_command({"mount", "--fstab", fstab, layers.mnt});
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_TRUE(is_mountpoint(layers.mnt));
    EXPECT_EQ(read_file(layers.mnt + "/shared.txt"), "from top\n");
}

TEST(MountCli, TooManyLayersRefusedWithOneLine) {
    REQUIRE_FUSE();
    Layers layers;
    std::string lowerdir = "lowerdir=";
    for (int i = 0; i < 129; ++i) {
        std::string d = layers.dir / ("l" + std::to_string(i));
        make_dirs(d);
        lowerdir += (i ? ":" : "") + d;
    }
    MountGuard guard(layers.mnt);
    expect_refused(mount_laminafs(lowerdir, layers.mnt), layers.mnt, "128");
}

TEST(MountCli, MissingLowerdirRefusedNamingIt) {
    REQUIRE_FUSE();
    Layers layers;
    std::string missing = layers.dir / "no_such_layer";
    MountGuard guard(layers.mnt);
    expect_refused(mount_laminafs("lowerdir=" + layers.top + ":" + missing, layers.mnt), layers.mnt,
                   missing);
}

TEST(MountCli, NoLowerdirOptionRefused) {
    REQUIRE_FUSE();
    Layers layers;
    MountGuard guard(layers.mnt);
    expect_refused(mount_laminafs("ro", layers.mnt), layers.mnt, "lowerdir");
}

TEST(MountCli, UpperdirInsideLowerdirRefused) {
    REQUIRE_FUSE();
    Layers layers;
    std::string nested_upper = layers.top + "/upper";
    make_dirs(nested_upper);
    MountGuard guard(layers.mnt);
    expect_refused(
        mount_laminafs(layers.lowerdir() + ",upperdir=" + nested_upper + ",workdir=" + layers.work,
                       layers.mnt),
        layers.mnt, nested_upper);
}

// Each layer set the kernel refuses as overlapping is refused in one line, before anything is
// mounted; the kernel, where it can mount, refuses the same set. An upper or work dir inside a
// lower the kernel mounts and then fails lookups there (ELOOP); laminafs refuses it at start.
TEST(MountCli, OverlappingLayersRefusedAsTheKernelRefusesThem) {
    REQUIRE_FUSE();
    Layers layers;
    const std::string d = layers.dir.path();
    for (const auto& sub : {"l/inner", "u/lo", "u/wk", "w/lo", "w/up", "l/up", "l/wk", "alias"})
        make_dirs(d + "/" + sub);
    // The same directory under a second name: a bind mount.
    MountGuard alias_guard(d + "/alias");
    bool have_alias =
        run_command({"mount", "--bind", "--make-private", d + "/l", d + "/alias"}).status == 0;
    struct Case {
        std::string options;
        std::string mentions;
        bool kernel_refuses;
    };
    const std::string rw = ",upperdir=" + d + "/u,workdir=" + d + "/w";
    std::vector<Case> cases = {
        {"lowerdir=" + d + "/l:" + d + "/l", "is the same directory as", true},
        {"lowerdir=" + d + "/l:" + d + "/l/inner", "contains lowerdir", true},
        {"lowerdir=" + d + "/l/inner:" + d + "/l", "is inside lowerdir", true},
        {"lowerdir=" + d + "/u/lo" + rw, "contains lowerdir '" + d + "/u/lo'", true},
        {"lowerdir=" + d + "/u" + rw, "is the same directory as", true},
        {"lowerdir=" + d + "/w" + rw, "is the same directory as", true},
        {"lowerdir=" + d + "/w/lo" + rw, "contains lowerdir '" + d + "/w/lo'", true},
        {"lowerdir=" + d + "/l2,upperdir=" + d + "/u,workdir=" + d + "/u/wk", "is inside upperdir",
         true},
        {"lowerdir=" + d + "/l2,upperdir=" + d + "/w/up,workdir=" + d + "/w", "contains upperdir",
         true},
        {"lowerdir=" + d + "/l,upperdir=" + d + "/l/up,workdir=" + d + "/w", "is inside lowerdir",
         false},
        {"lowerdir=" + d + "/l,upperdir=" + d + "/u,workdir=" + d + "/l/wk", "is inside lowerdir",
         false},
    };
    if (have_alias)
        cases.push_back({"lowerdir=" + d + "/l:" + d + "/alias", "is the same directory as", true});
    // Upper and work on one filesystem but two mounts: a copy-up could not rename across them.
    make_dirs(d + "/rw/u");
    make_dirs(d + "/rw_bind");
    MountGuard rw_guard(d + "/rw_bind");
    if (run_command({"mount", "--bind", "--make-private", d + "/rw", d + "/rw_bind"}).status == 0)
        cases.push_back({"lowerdir=" + d + "/l,upperdir=" + d + "/rw_bind/u,workdir=" + d + "/w",
                         "is not on the mount of upperdir", true});
    make_dirs(d + "/l2");
    for (const auto& c : cases) {
        SCOPED_TRACE(c.options);
        MountGuard guard(layers.mnt);
        expect_refused(mount_laminafs(c.options, layers.mnt), layers.mnt, c.mentions);
        if (!can_mount_kernel_overlay()) continue;
        // The kernel wants two lowers without an upper: an empty extra one changes nothing.
        std::string kernel_options = c.options;
        if (c.options.find("upperdir=") == std::string::npos &&
            c.options.find(':') == std::string::npos)
            kernel_options += ":" + d + "/l2";
        std::string err = mount_kernel_overlay(kernel_options, layers.mnt);
        EXPECT_EQ(!err.empty(), c.kernel_refuses) << "kernel overlayfs: " << err;
        unmount(layers.mnt);
    }
}

TEST(MountCli, WorkdirOnAnotherFilesystemRefused) {
    REQUIRE_FUSE();
    Layers layers;  // under $TMPDIR or /tmp
    TempDir shm_dir("lamina-cli-shm", "/dev/shm");
    std::string work = shm_dir / "work";
    make_dirs(work);
    struct stat upper_st, work_st;
    ASSERT_EQ(stat(layers.upper.c_str(), &upper_st), 0);
    ASSERT_EQ(stat(work.c_str(), &work_st), 0);
    if (upper_st.st_dev == work_st.st_dev) {
        SKIP_NEEDING("separate-shm")
            << "/dev/shm and " << layers.dir.path() << " share a filesystem";
    }
    MountGuard guard(layers.mnt);
    expect_refused(
        mount_laminafs(layers.lowerdir() + ",upperdir=" + layers.upper + ",workdir=" + work,
                       layers.mnt),
        layers.mnt, "another filesystem");
}

TEST(MountCli, MissingMountpointRefused) {
    REQUIRE_FUSE();
    Layers layers;
    std::string missing = layers.dir / "no_such_mountpoint";
    expect_refused(mount_laminafs(layers.lowerdir(), missing), missing, missing);
}

TEST(MountCli, UnknownOptionRefusedNamingIt) {
    REQUIRE_FUSE();
    Layers layers;
    MountGuard guard(layers.mnt);
    expect_refused(mount_laminafs(layers.lowerdir() + ",frobnicate_xyz", layers.mnt), layers.mnt,
                   "frobnicate_xyz");
}

TEST(MountCli, SigtermToDaemonUnmountsAndExits) {
    REQUIRE_FUSE();
    Layers layers;
    MountGuard guard(layers.mnt);
    auto r = mount_laminafs(layers.lowerdir(), layers.mnt);
    ASSERT_EQ(r.status, 0) << describe(r);
    ASSERT_TRUE(is_mountpoint(layers.mnt));
    auto pids = processes_mentioning(layers.mnt);
    ASSERT_EQ(pids.size(), 1u) << "expected one daemon for " << layers.mnt;
    ASSERT_EQ(kill(pids[0], SIGTERM), 0) << strerror(errno);
    EXPECT_TRUE(eventually([&] { return !is_mountpoint(layers.mnt); }))
        << "still mounted after SIGTERM";
    EXPECT_TRUE(eventually([&] { return process_gone(pids[0]); })) << "daemon still running";
}

// Once detached the daemon has no stderr: with log_file= its log lines and the statistics
// SIGUSR1 asks for go to that file; a log file that cannot be written fails the start in one
// line, before anything is mounted.
TEST(MountCli, DetachedDaemonLogsToTheLogFile) {
    REQUIRE_FUSE();
    Layers layers;
    std::string log = layers.dir / "laminafs.log";
    {
        MountGuard guard(layers.mnt);
        auto r = mount_laminafs(layers.writable() + ",log_level=info,log_file=" + log, layers.mnt);
        ASSERT_EQ(r.status, 0) << describe(r);
        EXPECT_EQ(read_file(layers.mnt + "/shared.txt"), "from top\n");
        auto pids = processes_mentioning(layers.mnt);
        ASSERT_EQ(pids.size(), 1u);
        ASSERT_EQ(kill(pids[0], SIGUSR1), 0) << strerror(errno);
        EXPECT_TRUE(eventually([&] {
            return read_file(log).find("stats: nodes=") != std::string::npos;
        })) << read_file(log);
        // What the daemon says after detaching (INIT comes after the fork) is there too.
        EXPECT_NE(read_file(log).find("killpriv: "), std::string::npos) << read_file(log);
        struct stat st;
        ASSERT_EQ(stat(log.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 0777, 0600u);
    }
    for (const std::string& bad : {layers.dir / "missing/x.log", layers.dir.path()}) {
        auto r = mount_laminafs(layers.writable() + ",log_file=" + bad, layers.mnt);
        EXPECT_EQ(r.status, 1) << describe(r);
        EXPECT_EQ(nonempty_lines(r.err).size(), 1u) << describe(r);
        EXPECT_NE(r.err.find("log_file '" + bad + "'"), std::string::npos) << describe(r);
        EXPECT_FALSE(is_mountpoint(layers.mnt));
        EXPECT_TRUE(no_process_mentions(layers.mnt));
    }
    EXPECT_FALSE(std::filesystem::exists(layers.dir / "missing"));
}

TEST(MountCli, FusermountUnmountMakesDaemonExit) {
    REQUIRE_FUSE();
    Layers layers;
    MountGuard guard(layers.mnt);
    auto r = mount_laminafs(layers.lowerdir(), layers.mnt);
    ASSERT_EQ(r.status, 0) << describe(r);
    auto pids = processes_mentioning(layers.mnt);
    ASSERT_EQ(pids.size(), 1u) << "expected one daemon for " << layers.mnt;
    auto u = run_command({"fusermount3", "-u", layers.mnt});
    ASSERT_EQ(u.status, 0) << describe(u);
    EXPECT_FALSE(is_mountpoint(layers.mnt));
    EXPECT_TRUE(eventually([&] { return process_gone(pids[0]); })) << "daemon still running";
}

// How many mounts sit exactly at path.
int mounts_at(const std::string& path) {
    int n = 0;
    for (const auto& e : lamina::read_mount_table()) n += e.mount_point == path;
    return n;
}

// A daemon killed with SIGKILL leaves its mount behind, dead (ENOTCONN). A new laminafs on that
// mount point takes the dead mount away first and never stacks on it: one umount leaves nothing.
// Once with the dead mount's root attributes in the kernel's cache (stat still works) and once
// without (stat fails).
TEST(MountCli, RemountOverADeadMountReplacesIt) {
    REQUIRE_FUSE();
    Layers layers;
    std::string mnt = absolute(layers.mnt);
    MountGuard guard(mnt);
    auto kill_daemon = [&] {
        auto pids = processes_mentioning(mnt);
        ASSERT_EQ(pids.size(), 1u) << "expected one daemon for " << mnt;
        ASSERT_EQ(kill(pids[0], SIGKILL), 0) << strerror(errno);
        ASSERT_TRUE(eventually([&] { return process_gone(pids[0]); }));
        bool dead = eventually([&] {
            return ::open((mnt + "/shared.txt").c_str(), O_RDONLY | O_CLOEXEC) < 0 &&
                   errno == ENOTCONN;
        });
        ASSERT_TRUE(dead) << "the mount should be dead";
    };
    for (bool cached : {true, false}) {
        SCOPED_TRACE(cached ? "root attributes cached" : "nothing cached");
        auto r = mount_laminafs(layers.lowerdir(), mnt);
        ASSERT_EQ(r.status, 0) << describe(r);
        if (cached) {
            EXPECT_EQ(read_file(mnt + "/shared.txt"), "from top\n");
        }
        kill_daemon();
        struct stat st;
        EXPECT_EQ(stat(mnt.c_str(), &st) == 0, cached) << strerror(errno);

        r = mount_laminafs(layers.writable(), mnt);
        ASSERT_EQ(r.status, 0) << describe(r);
        EXPECT_EQ(mounts_at(mnt), 1) << "stacked on the dead mount";
        EXPECT_EQ(read_file(mnt + "/shared.txt"), "from top\n");
        auto u = run_command({"umount", mnt});
        EXPECT_EQ(u.status, 0) << describe(u);
        EXPECT_EQ(mounts_at(mnt), 0) << "one umount should leave nothing";
        EXPECT_TRUE(eventually([&] { return no_process_mentions(mnt); }));
    }
}

TEST(MountCli, VersionPrintsAVersionAndExitsZero) {
    auto r = run_command({laminafs_binary(), "--version"});
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_NE(r.out.find_first_of("0123456789"), std::string::npos) << describe(r);
#ifdef LAMINA_VERSION
    EXPECT_NE(r.out.find(LAMINA_VERSION), std::string::npos) << describe(r);
#endif
}

TEST(MountCli, PodmanStyleTrailingCommaMountsWritable) {
    REQUIRE_FUSE();
    Layers layers;
    MountGuard guard(layers.mnt);
    auto r = mount_laminafs(layers.writable() + ",", layers.mnt);
    ASSERT_EQ(r.status, 0) << describe(r);
    ASSERT_TRUE(is_mountpoint(layers.mnt));
    write_file(layers.mnt + "/new.txt", "new\n");
    EXPECT_EQ(read_file(layers.upper + "/new.txt"), "new\n");
    EXPECT_EQ(read_file(layers.mnt + "/shared.txt"), "from top\n");
}

// The mount's readahead window, from its bdi in sysfs ("" when it cannot be read).
std::string readahead_kib(const std::string& mnt) {
    std::string device;
    for (const auto& e : lamina::read_mount_table())
        if (e.mount_point == mnt) device = e.device;
    if (device.empty()) return "";
    std::string kib = read_file("/sys/class/bdi/" + device + "/read_ahead_kb");
    while (!kib.empty() && kib.back() == '\n') kib.pop_back();
    return kib;
}

// The kernel starts a FUSE mount at 128 KiB of readahead and INIT cannot raise it; laminafs
// writes its bdi once mounted, so page faults read ahead 1 MiB (docs/perf.md, mmap reads).
TEST(MountCli, ReadaheadWindowIsSetOnTheMountsBdi) {
    REQUIRE_FUSE();
    if (geteuid() != 0) SKIP_NEEDING("root") << "only root may write /sys/class/bdi";
    Layers layers;
    for (auto [option, want] : {std::pair<std::string, std::string>{"", "1024"},
                                {",readahead=512", "512"},
                                {",readahead=4096", "4096"}}) {
        MountGuard guard(layers.mnt);
        auto r = mount_laminafs(layers.lowerdir() + option, layers.mnt);
        ASSERT_EQ(r.status, 0) << describe(r);
        EXPECT_EQ(readahead_kib(layers.mnt), want) << "options " << option;
        // The window holds after INIT, which the first request completes.
        EXPECT_EQ(read_file(layers.mnt + "/shared.txt"), "from top\n");
        EXPECT_EQ(readahead_kib(layers.mnt), want) << "options " << option;
        unmount(layers.mnt);
    }
    // readahead=0 leaves the kernel's own window, which is smaller.
    MountGuard guard(layers.mnt);
    auto r = mount_laminafs(layers.lowerdir() + ",readahead=0", layers.mnt);
    ASSERT_EQ(r.status, 0) << describe(r);
    std::string kernels = readahead_kib(layers.mnt);
    ASSERT_FALSE(kernels.empty());
    EXPECT_LT(std::stoul(kernels), 512u) << kernels;
    unmount(layers.mnt);

    auto bad = mount_laminafs(layers.lowerdir() + ",readahead=lots", layers.mnt);
    expect_refused(bad, layers.mnt, "readahead=lots");
}

TEST(MountCli, MountWithoutUpperdirRefusesWritesWithErofs) {
    REQUIRE_FUSE();
    Layers layers;
    MountGuard guard(layers.mnt);
    auto r = mount_laminafs(layers.lowerdir(), layers.mnt);
    ASSERT_EQ(r.status, 0) << describe(r);
    std::string path = layers.mnt + "/touched";
    int fd = open(path.c_str(), O_WRONLY | O_CREAT, 0644);
    int err = errno;
    if (fd >= 0) close(fd);
    EXPECT_LT(fd, 0);
    EXPECT_EQ(err, EROFS) << strerror(err);
    auto touch = run_command({"touch", path});
    EXPECT_NE(touch.status, 0);
    EXPECT_NE(touch.err.find("Read-only file system"), std::string::npos) << describe(touch);
}

}  // namespace
}  // namespace lamina::test
