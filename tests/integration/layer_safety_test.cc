// laminafs as root reaches its layers as the kernel's overlayfs does: no symlink planted in a
// layer is followed, paths deeper than PATH_MAX work, and redirects chain through every layer
// as layers are pushed down (kernel overlayfs on the same layers is the oracle throughout).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "fixture.h"
#include "needs.h"

namespace lamina::test {
namespace {

namespace fs = std::filesystem;

// Which overlay serves a mount: laminafs, or the kernel's overlayfs as the oracle.
enum class Impl { Laminafs, Kernel };

const char* impl_name(Impl impl) {
    return impl == Impl::Laminafs ? "laminafs" : "kernel";
}

// Mounts `options` with impl at mnt; "" or what failed.
std::string mount_with(Impl impl, const std::string& options, const std::string& mnt) {
    if (impl == Impl::Kernel) return mount_kernel_overlay(options, mnt);
    CommandResult r = mount_laminafs(options, mnt);
    return r.status == 0 ? "" : "laminafs: " + r.err;
}

#define REQUIRE_BOTH_MOUNTS()                                            \
    do {                                                                 \
        REQUIRE_FUSE();                                                  \
        if (!can_mount_kernel_overlay())                                 \
            SKIP_NEEDING("overlay") << "kernel overlayfs is the oracle"; \
    } while (0)

// Runs a shell script as an ordinary user (nobody), with no supplementary groups.
CommandResult run_as_nobody(const std::string& script) {
    return run_command(
        {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script}, 60);
}

// The planted-symlink attack of issue 15, against one implementation. The ordinary user may
// write the 1777 tmp directory of the upper layer directly, as on any host where the upper
// lies in a place users reach; the daemon (root) must still never go through what they plant.
struct AttackResult {
    std::string output;         // what the user's commands printed
    bool wrote_target = false;  // the root-owned directory gained the user's file
    bool read_secret = false;   // the root-only file's content reached the user
};

AttackResult planted_symlink_attack(Impl impl) {
    AttackResult result;
    TempDir dir("lamina-safety");
    chmod(dir.path().c_str(), 0755);
    std::string lo = dir / "lo", up = dir / "up", wk = dir / "wk", m = dir / "m";
    make_dirs(lo + "/tmp");
    chmod((lo + "/tmp").c_str(), 01777);
    for (const auto& d : {up, wk, m}) make_dirs(d);
    // The targets: a root-owned directory others may not write, and a root-only secret.
    std::string rootdir = dir / "rootdir", rootonly = dir / "rootonly";
    make_dirs(rootdir, 0755);
    make_dirs(rootonly, 0700);
    write_file(rootonly + "/secret", "root secret\n", 0600);

    std::string err = mount_with(impl, "lowerdir=" + lo + ",upperdir=" + up + ",workdir=" + wk, m);
    if (!err.empty()) {
        ADD_FAILURE() << impl_name(impl) << " mount: " << err;
        return result;
    }
    MountGuard guard(m);
    // Both overlays copy tmp up on the first mkdir; the user then swaps the new upper directory
    // for a symlink and uses the name the kernel already knows.
    std::string script =
        "cd " + dir.path() +
        " || exit 9\n"
        "mkdir m/tmp/x && mv up/tmp/x up/tmp/x_old && ln -s " +
        rootdir +
        " up/tmp/x\n"
        "touch m/tmp/x/pwned; echo \"touch=$?\"\n"
        "ls up/tmp/x_old\n"
        "mkdir m/tmp/y && echo mine > m/tmp/y/secret && mv up/tmp/y up/tmp/y_old && ln -s " +
        rootonly +
        " up/tmp/y\n"
        "cat m/tmp/y/secret; echo \"cat=$?\"\n";
    CommandResult r = run_as_nobody(script);
    result.output = r.out;
    result.wrote_target = fs::exists(rootdir + "/pwned");
    result.read_secret = r.out.find("root secret") != std::string::npos;
    return result;
}

TEST(LayerSafety, a_symlink_planted_in_the_upper_layer_is_never_followed) {
    REQUIRE_BOTH_MOUNTS();
    if (run_command({"which", "setpriv"}).status != 0)
        SKIP_NEEDING("program:setpriv") << "util-linux";
    AttackResult lamina = planted_symlink_attack(Impl::Laminafs);
    AttackResult kernel = planted_symlink_attack(Impl::Kernel);
    EXPECT_FALSE(lamina.wrote_target) << "laminafs wrote into the root-owned directory";
    EXPECT_FALSE(lamina.read_secret) << "laminafs showed the root-only file:\n" << lamina.output;
    EXPECT_FALSE(kernel.wrote_target);
    EXPECT_FALSE(kernel.read_secret);
    // The kernel reaches the directories it looked up: the file lands in x_old, "mine" is read.
    EXPECT_EQ(lamina.output, kernel.output);
    EXPECT_NE(kernel.output.find("touch=0"), std::string::npos) << kernel.output;
}

TEST(LayerSafety, a_symlink_planted_as_a_lower_directory_is_never_followed) {
    REQUIRE_FUSE();
    // A lower directory replaced by a symlink while the kernel still holds the names below it:
    // the daemon must not read through the symlink (the kernel's overlay keeps reading the old
    // directory; laminafs, which reaches lower layers by path, refuses instead).
    TempDir dir("lamina-safety");
    std::string lo = dir / "lo", m = dir / "m", target = dir / "target";
    make_dirs(lo + "/d/sub");
    write_file(lo + "/d/sub/g", "lower\n");
    make_dirs(target + "/sub");
    write_file(target + "/sub/g", "target secret\n");
    make_dirs(m);
    ASSERT_EQ(mount_laminafs("lowerdir=" + lo, m).status, 0);
    MountGuard guard(m);
    struct stat st;
    ASSERT_EQ(::stat((m + "/d/sub/g").c_str(), &st), 0);  // the kernel now holds d, sub and g
    ASSERT_EQ(::rename((lo + "/d").c_str(), (lo + "/d_old").c_str()), 0);
    ASSERT_EQ(::symlink(target.c_str(), (lo + "/d").c_str()), 0);
    CommandResult r = run_command({"cat", m + "/d/sub/g"});
    // The kernel still holds g's size, so a read through the symlink shows its first bytes.
    EXPECT_EQ(r.out.find("target"), std::string::npos) << r.out;
}

// Makes `depth` nested directories named "a" below root with *at() calls (the path is longer
// than PATH_MAX), and a file "f" holding `content` at the bottom.
void make_deep(const std::string& root, int depth, const std::string& content) {
    int fd = ::open(root.c_str(), O_PATH | O_DIRECTORY);
    ASSERT_GE(fd, 0) << root << ": " << strerror(errno);
    for (int i = 0; i < depth; ++i) {
        if (mkdirat(fd, "a", 0755) != 0 && errno != EEXIST)
            FAIL() << "mkdirat: " << strerror(errno);
        int next = openat(fd, "a", O_PATH | O_DIRECTORY);
        ::close(fd);
        ASSERT_GE(next, 0) << strerror(errno);
        fd = next;
    }
    int f = openat(fd, "f", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(f, 0) << strerror(errno);
    ASSERT_EQ(::write(f, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    ::close(f);
    ::close(fd);
}

// In a child (so the test's cwd stays put): chdir down `depth` "a"s below mnt, read f, make g
// and h/x there; returns what it did, or where it failed. Relative *at() calls only: the path
// from the root is longer than PATH_MAX (a shell's cd keeps a path string and gives up).
std::string deep_walk(const std::string& mnt, int depth) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return "pipe failed";
    pid_t pid = fork();
    if (pid == 0) {
        ::close(pipefd[0]);
        std::string out;
        auto finish = [&](const std::string& last) {
            out += last;
            (void)!::write(pipefd[1], out.data(), out.size());
            _exit(0);
        };
        if (chdir(mnt.c_str()) != 0) finish("chdir mnt failed");
        for (int i = 0; i < depth; ++i)
            if (chdir("a") != 0)
                finish("chdir failed at " + std::to_string(i) + ": " + strerror(errno));
        char buf[64] = {};
        int fd = ::open("f", O_RDONLY);
        if (fd < 0 || ::read(fd, buf, sizeof buf - 1) < 0)
            finish(std::string("read f: ") + strerror(errno));
        ::close(fd);
        out += std::string("read=") + buf + " ";
        fd = ::open("g", O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 || ::write(fd, "made", 4) != 4)
            finish(std::string("make g: ") + strerror(errno));
        ::close(fd);
        out += "made=0 ";
        if (mkdir("h", 0755) != 0) finish(std::string("mkdir h: ") + strerror(errno));
        fd = ::open("h/x", O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 || ::write(fd, "deeper", 6) != 6)
            finish(std::string("make h/x: ") + strerror(errno));
        ::close(fd);
        struct stat st;
        if (stat("h/x", &st) != 0 || st.st_size != 6) finish("stat h/x failed");
        finish("deeper");
    }
    ::close(pipefd[1]);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(pipefd[0]);
    waitpid(pid, nullptr, 0);
    return out;
}

TEST(LayerSafety, paths_deeper_than_path_max_work_as_on_the_kernel) {
    REQUIRE_BOTH_MOUNTS();
    const int depth = 2500;  // "a/" x 2500: 5,000 bytes, past PATH_MAX
    std::string outputs[2];
    for (Impl impl : {Impl::Laminafs, Impl::Kernel}) {
        TempDir dir("lamina-deep");
        std::string lo = dir / "lo", up = dir / "up", wk = dir / "wk", m = dir / "m";
        for (const auto& d : {lo, up, wk, m}) make_dirs(d);
        make_deep(lo, depth, "bottom");
        ASSERT_EQ(mount_with(impl, "lowerdir=" + lo + ",upperdir=" + up + ",workdir=" + wk, m), "");
        MountGuard guard(m);
        outputs[impl == Impl::Kernel] = deep_walk(m, depth);
    }
    EXPECT_EQ(outputs[0], outputs[1]);
    EXPECT_NE(outputs[1].find("read=bottom made=0"), std::string::npos) << outputs[1];
    EXPECT_NE(outputs[0].find("deeper"), std::string::npos) << outputs[0];
}

// ---- a directory replaced under the mount

// Past its descriptor budget (a quarter of RLIMIT_NOFILE, at least 64) the daemon holds no
// descriptor for an upper directory and finds it again by path per request. If something else
// stands there now (the directory was replaced in the upper layer under the mount), a request
// fails with ESTALE rather than act on the newcomer.
TEST(LayerSafety, an_upper_directory_replaced_past_the_descriptor_budget_answers_estale) {
    REQUIRE_FUSE();
    TempDir dir("lamina-estale");
    std::string lower = dir / "lower", upper = dir / "upper", work = dir / "work",
                mnt = dir / "mnt";
    for (const auto& d : {lower, upper, work, mnt}) make_dirs(d);
    constexpr int kDirs = 100;
    for (int i = 0; i < kDirs; ++i) make_dirs(upper + "/d" + std::to_string(i));
    ForegroundLaminafs fs("lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work, mnt,
                          dir / "log");
    fs.limit_descriptors(256);  // a budget of 64 upper directories
    std::string started = fs.start();
    ASSERT_EQ(started, "");
    for (int i = 0; i < kDirs; ++i) {
        struct stat st;
        ASSERT_EQ(stat((mnt + "/d" + std::to_string(i) + "/.").c_str(), &st), 0) << i;
    }
    DaemonStats stats = fs.stats();
    EXPECT_EQ(stats["dir_fd_limit"], 64);
    EXPECT_LE(stats["dir_fds"], 64);  // not vacuous: d99 is one of those not held

    std::string last = "/d" + std::to_string(kDirs - 1);
    ASSERT_EQ(rename((upper + last).c_str(), (upper + last + ".old").c_str()), 0);
    make_dirs(upper + last);
    errno = 0;
    int fd = open((mnt + last + "/x").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    int err = errno;
    if (fd >= 0) close(fd);
    EXPECT_EQ(fd, -1);
    EXPECT_EQ(err, ESTALE) << strerror(err);
    EXPECT_FALSE(std::filesystem::exists(upper + last + "/x"));
    EXPECT_FALSE(std::filesystem::exists(upper + last + ".old/x"));
}

// ---- redirects across layer rotations

// One line per entry below root, sorted: path, type, and the content of a file or the target
// of a symlink. Overlay-private details (xattrs, inode numbers) are not part of what users see.
std::string tree_of(const std::string& root) {
    std::vector<std::string> lines;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const fs::path& p = it->path();
        std::string rel = fs::relative(p, root).string();
        auto st = fs::symlink_status(p);
        std::string line = rel;
        if (fs::is_directory(st)) {
            line += "/";
        } else if (fs::is_symlink(st)) {
            line += " -> " + fs::read_symlink(p).string();
        } else if (fs::is_regular_file(st)) {
            line += " = " + read_file(p.string());
        }
        lines.push_back(line);
    }
    if (ec) lines.push_back("error: " + ec.message());
    std::sort(lines.begin(), lines.end());
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
}

// A base layer and a series of steps, each run in a fresh mount whose lowers are every earlier
// step's upper (newest on top) over the base: a container committed and used again.
class Rotation {
public:
    Rotation(Impl impl, const std::string& base) : impl_(impl), base_(base) {}

    // Mounts, runs `script` in the mount (cd'ed into it), unmounts; the upper becomes a lower.
    // Returns the tree the mount showed after the step, or "" after a failure.
    std::string step(const std::string& script) {
        int n = static_cast<int>(uppers_.size());
        std::string up = dir_ / ("u" + std::to_string(n)), wk = dir_ / ("w" + std::to_string(n));
        std::string m = dir_ / "m";
        make_dirs(up);
        make_dirs(wk);
        make_dirs(m);
        std::string err = mount_with(
            impl_,
            "lowerdir=" + lowers() + ",upperdir=" + up + ",workdir=" + wk + ",redirect_dir=on", m);
        if (!err.empty()) {
            ADD_FAILURE() << impl_name(impl_) << ": " << err;
            return "";
        }
        std::string tree;
        {
            MountGuard guard(m);
            CommandResult r = run_command({"sh", "-ec", "cd " + m + "\n" + script});
            EXPECT_EQ(r.status, 0) << impl_name(impl_) << " step " << n << ": " << r.err;
            tree = tree_of(m);
        }
        uppers_.push_back(up);
        return tree;
    }
    // Every layer so far, newest first, as lowerdir= takes them.
    std::string lowers() const {
        std::string out;
        for (auto it = uppers_.rbegin(); it != uppers_.rend(); ++it) out += *it + ":";
        return out + base_;
    }

private:
    Impl impl_;
    std::string base_;
    TempDir dir_{"lamina-rotation"};
    std::vector<std::string> uppers_;
};

// Runs the steps with laminafs and with the kernel, each writing its own layers, and compares
// the trees after every step; then mounts laminafs's layers with the kernel and the kernel's
// layers with laminafs: each must read the other's redirects the same way.
void expect_rotations_match(const std::function<void(const std::string&)>& make_base,
                            const std::vector<std::string>& steps) {
    TempDir base("lamina-rotation-base");
    make_base(base.path());
    Rotation lamina(Impl::Laminafs, base.path()), kernel(Impl::Kernel, base.path());
    std::string final_tree;
    for (size_t i = 0; i < steps.size(); ++i) {
        std::string a = lamina.step(steps[i]);
        std::string b = kernel.step(steps[i]);
        ASSERT_EQ(a, b) << "after step " << i << ": " << steps[i];
        final_tree = a;
    }
    TempDir cross("lamina-rotation-cross");
    std::string m = cross / "m";
    make_dirs(m);
    for (Impl impl : {Impl::Laminafs, Impl::Kernel}) {
        const Rotation& written_by_other = impl == Impl::Kernel ? lamina : kernel;
        ASSERT_EQ(
            mount_with(impl, "lowerdir=" + written_by_other.lowers() + ",redirect_dir=follow", m),
            "");
        std::string seen = tree_of(m);
        unmount(m);
        EXPECT_EQ(seen, final_tree) << impl_name(impl) << " reading the layers the other wrote";
    }
}

void base_with_a_dir(const std::string& root) {
    make_dirs(root + "/a");
    write_file(root + "/a/keep", "base\n");
}

TEST(LayerSafety, a_directory_renamed_in_two_committed_layers_keeps_its_content) {
    REQUIRE_BOTH_MOUNTS();
    expect_rotations_match(base_with_a_dir, {
                                                "mkdir a/d; echo aaaa > a/d/f",
                                                "mv a/d a/e",
                                                "mv a/e a/d; ls a/d",
                                            });
}

}  // namespace
}  // namespace lamina::test
