// Layers whose paths are gone once laminafs runs (umount -l of a bind mount, containers/storage's
// detached idmapped lowers): every operation must still reach them through their descriptors.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fixture.h"

namespace lamina::test {
namespace {

std::optional<std::string> xattr_of(const std::string& path, const char* name) {
    char buf[4096];
    ssize_t n = lgetxattr(path.c_str(), name, buf, sizeof buf);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
}

std::vector<std::string> xattr_names(const std::string& path) {
    char buf[4096];
    ssize_t n = llistxattr(path.c_str(), buf, sizeof buf);
    std::vector<std::string> out;
    for (ssize_t at = 0; at < n;) {
        std::string name(buf + at);
        at += static_cast<ssize_t>(name.size()) + 1;
        out.push_back(std::move(name));
    }
    std::sort(out.begin(), out.end());
    return out;
}

bool has_name(const std::vector<std::string>& names, const std::string& name) {
    return std::find(names.begin(), names.end(), name) != names.end();
}

std::vector<std::string> entries_of(const std::string& dir) {
    auto r = run_command({"ls", "-A", dir});
    std::vector<std::string> out;
    size_t at = 0;
    while (at < r.out.size()) {
        size_t nl = r.out.find('\n', at);
        if (nl == std::string::npos) nl = r.out.size();
        if (nl > at) out.push_back(r.out.substr(at, nl - at));
        at = nl + 1;
    }
    return out;
}

// A private bind mount of `from` at `to`, detached with umount -l when asked (or at scope exit).
class BindMount {
public:
    BindMount(const std::string& from, std::string to) : to_(std::move(to)) {
        if (mount(from.c_str(), to_.c_str(), nullptr, MS_BIND, nullptr) != 0) {
            error_ = "bind " + from + " at " + to_ + ": " + strerror(errno);
            return;
        }
        mounted_ = true;
        // Nothing done here must reach the mount namespace's peers.
        if (mount(nullptr, to_.c_str(), nullptr, MS_PRIVATE, nullptr) != 0)
            error_ = "make " + to_ + " private: " + strerror(errno);
    }
    ~BindMount() { detach(); }
    BindMount(const BindMount&) = delete;
    BindMount& operator=(const BindMount&) = delete;

    const std::string& error() const { return error_; }
    // umount -l: whoever holds a descriptor below keeps the mount; its path is gone.
    bool detach() {
        if (!mounted_) return true;
        if (umount2(to_.c_str(), MNT_DETACH) != 0) return false;
        mounted_ = false;
        return true;
    }

private:
    std::string to_;
    std::string error_;
    bool mounted_ = false;
};

TEST(DetachedLayers, copy_up_whiteouts_opaque_redirect_and_xattrs_work_after_umount_l) {
    REQUIRE_FUSE();
    TempDir dir("lamina-detached");
    // upper and work share one bind mount: a copy-up renames from one into the other.
    std::string lower = dir / "lower", rw = dir / "rw", lower_bind = dir / "lower_bind",
                rw_bind = dir / "rw_bind", mnt = dir / "mnt";
    for (const auto& d : {lower, rw, rw + "/upper", rw + "/work", lower_bind, rw_bind, mnt})
        make_dirs(d);
    write_file(lower + "/file", "lower\n");
    ASSERT_EQ(lsetxattr((lower + "/file").c_str(), "user.color", "blue", 4, 0), 0)
        << "user xattrs on " << lower << ": " << strerror(errno);
    write_file(lower + "/gone", "gone\n");
    make_dirs(lower + "/olddir");
    write_file(lower + "/olddir/inner", "inner\n");
    make_dirs(lower + "/src/sub");
    write_file(lower + "/src/sub/deep", "deep\n");
    write_file(lower + "/xf", "xf\n");
    ASSERT_EQ(lsetxattr((lower + "/xf").c_str(), "user.old", "1", 1, 0), 0) << strerror(errno);
    ASSERT_EQ(lsetxattr((lower + "/xf").c_str(), "user.kept", "2", 1, 0), 0) << strerror(errno);
    make_dirs(lower + "/xd");
    ASSERT_EQ(::symlink("file", (lower + "/link").c_str()), 0) << strerror(errno);
    // An xattr on the symlink itself (trusted.*: user.* is not allowed on symlinks), to show
    // that the xattr calls act on a final symlink and not on its target.
    bool link_xattr =
        lsetxattr((lower + "/link").c_str(), "trusted.lamina.test", "on-link", 7, 0) == 0;

    BindMount lower_mount(lower, lower_bind);
    ASSERT_EQ(lower_mount.error(), "");
    BindMount rw_mount(rw, rw_bind);
    ASSERT_EQ(rw_mount.error(), "");
    ForegroundLaminafs fs(
        "lowerdir=" + lower_bind + ",upperdir=" + rw_bind + "/upper,workdir=" + rw_bind + "/work",
        mnt, dir / "laminafs.log");
    ASSERT_EQ(fs.start(), "");
    ASSERT_TRUE(lower_mount.detach()) << strerror(errno);
    ASSERT_TRUE(rw_mount.detach()) << strerror(errno);
    struct stat st;
    ASSERT_NE(lstat((lower_bind + "/file").c_str(), &st), 0) << "the lower path still works";
    ASSERT_NE(lstat((rw_bind + "/upper").c_str(), &st), 0) << "the upper path still works";

    // Copy-up of a lower file keeps its xattrs.
    {
        int fd = ::open((mnt + "/file").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
        ASSERT_GE(fd, 0) << "open for writing: " << strerror(errno) << "\n" << fs.log_text();
        EXPECT_EQ(::write(fd, "more\n", 5), 5) << strerror(errno);
        ::close(fd);
    }
    EXPECT_EQ(read_file(mnt + "/file"), "lower\nmore\n");
    EXPECT_EQ(xattr_of(mnt + "/file", "user.color"), "blue");
    EXPECT_EQ(read_file(rw + "/upper/file"), "lower\nmore\n");
    EXPECT_EQ(xattr_of(rw + "/upper/file", "user.color"), "blue");
    EXPECT_EQ(read_file(lower + "/file"), "lower\n");

    // Removing a lower file leaves a whiteout.
    EXPECT_EQ(::unlink((mnt + "/gone").c_str()), 0) << strerror(errno);
    EXPECT_NE(lstat((mnt + "/gone").c_str(), &st), 0);
    ASSERT_EQ(lstat((rw + "/upper/gone").c_str(), &st), 0) << "no whiteout in the upper layer";
    EXPECT_TRUE((S_ISCHR(st.st_mode) && st.st_rdev == 0) ||
                xattr_of(rw + "/upper/gone", "user.overlay.whiteout") ||
                xattr_of(rw + "/upper/gone", "trusted.overlay.whiteout"));

    // A directory made where a lower one was deleted is opaque.
    EXPECT_EQ(::unlink((mnt + "/olddir/inner").c_str()), 0) << strerror(errno);
    EXPECT_EQ(::rmdir((mnt + "/olddir").c_str()), 0) << strerror(errno);
    EXPECT_EQ(::mkdir((mnt + "/olddir").c_str(), 0755), 0) << strerror(errno);
    EXPECT_EQ(entries_of(mnt + "/olddir"), std::vector<std::string>{});
    auto opaque = xattr_of(rw + "/upper/olddir", "trusted.overlay.opaque");
    if (!opaque) opaque = xattr_of(rw + "/upper/olddir", "user.overlay.opaque");
    EXPECT_EQ(opaque, "y");

    // A renamed lower directory takes its lower content along through a redirect.
    EXPECT_EQ(::rename((mnt + "/src").c_str(), (mnt + "/moved").c_str()), 0) << strerror(errno);
    EXPECT_EQ(read_file(mnt + "/moved/sub/deep"), "deep\n");
    EXPECT_NE(lstat((mnt + "/src").c_str(), &st), 0);
    auto redirect = xattr_of(rw + "/upper/moved", "trusted.overlay.redirect");
    if (!redirect) redirect = xattr_of(rw + "/upper/moved", "user.overlay.redirect");
    EXPECT_EQ(redirect, "src");  // within one directory: the old name, as the kernel writes it

    // setxattr, getxattr, listxattr and removexattr on lower entries and on the root.
    EXPECT_EQ(lsetxattr((mnt + "/xd").c_str(), "user.new", "v", 1, 0), 0) << strerror(errno);
    EXPECT_EQ(xattr_of(mnt + "/xd", "user.new"), "v");
    EXPECT_TRUE(has_name(xattr_names(mnt + "/xd"), "user.new"));
    EXPECT_EQ(xattr_of(rw + "/upper/xd", "user.new"), "v");
    EXPECT_EQ(xattr_names(mnt + "/xf"), (std::vector<std::string>{"user.kept", "user.old"}));
    EXPECT_EQ(lremovexattr((mnt + "/xf").c_str(), "user.old"), 0) << strerror(errno);
    EXPECT_EQ(xattr_names(mnt + "/xf"), std::vector<std::string>{"user.kept"});
    EXPECT_EQ(xattr_of(mnt + "/xf", "user.kept"), "2");
    EXPECT_EQ(xattr_of(lower + "/xf", "user.old"), "1") << "the lower layer changed";
    EXPECT_EQ(lsetxattr(mnt.c_str(), "user.root", "r", 1, 0), 0) << strerror(errno);
    EXPECT_EQ(xattr_of(mnt, "user.root"), "r");
    EXPECT_EQ(xattr_of(rw + "/upper", "user.root"), "r");

    // A new file, and a symlink's own xattr before and after its copy-up.
    write_file(mnt + "/new", "new\n");
    EXPECT_EQ(read_file(rw + "/upper/new"), "new\n");
    if (link_xattr) {
        EXPECT_EQ(xattr_of(mnt + "/link", "trusted.lamina.test"), "on-link");
        EXPECT_EQ(lchown((mnt + "/link").c_str(), 0, 0), 0) << strerror(errno);
        EXPECT_EQ(xattr_of(mnt + "/link", "trusted.lamina.test"), "on-link");
        EXPECT_EQ(xattr_of(rw + "/upper/link", "trusted.lamina.test"), "on-link");
        EXPECT_EQ(xattr_of(mnt + "/file", "trusted.lamina.test"), std::nullopt);
    }
    EXPECT_EQ(fs.exit_report(), "");
}

// A descriptor of a fresh user namespace mapping 0..65535 to host_base..host_base+65535, for
// MOUNT_ATTR_IDMAP; a child made it and is gone once the descriptor is open. -1 on failure.
int user_namespace_fd(unsigned host_base) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) return -1;
    pid_t child = fork();
    if (child < 0) {
        ::close(ready[0]);
        ::close(ready[1]);
        return -1;
    }
    if (child == 0) {
        if (unshare(CLONE_NEWUSER) != 0) _exit(1);
        (void)!write(ready[1], "u", 1);
        pause();  // until the parent, done with its namespace, kills it
        _exit(0);
    }
    char c;
    int fd = -1;
    ::close(ready[1]);
    if (read(ready[0], &c, 1) == 1) {
        std::string map = "0 " + std::to_string(host_base) + " 65536\n";
        std::string proc = "/proc/" + std::to_string(child);
        bool mapped = true;
        for (const char* file : {"/uid_map", "/gid_map"}) {
            int m = ::open((proc + file).c_str(), O_WRONLY | O_CLOEXEC);
            mapped = mapped && m >= 0 && ::write(m, map.data(), map.size()) == ssize_t(map.size());
            if (m >= 0) ::close(m);
        }
        if (mapped) fd = ::open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC);
    }
    ::close(ready[0]);
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    return fd;
}

// Mounts an idmapped copy of `from` at `to` (disk id n shows as host_base+n), as
// containers/storage does for podman --uidmap. Returns "" or what failed.
std::string mount_idmapped(const std::string& from, const std::string& to, unsigned host_base) {
    int userns = user_namespace_fd(host_base);
    if (userns < 0) return "cannot make a user namespace with a mapping";
    int tree = open_tree(AT_FDCWD, from.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0) {
        ::close(userns);
        return "open_tree " + from + ": " + strerror(errno);
    }
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(userns);
    std::string err;
    if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0)
        err = "idmap " + from + ": " + strerror(errno);
    else if (move_mount(tree, "", AT_FDCWD, to.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
        err = "move_mount to " + to + ": " + strerror(errno);
    ::close(tree);
    ::close(userns);
    return err;
}

std::string owner_of(const std::string& path) {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return std::string("lstat: ") + strerror(errno);
    return std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid);
}

// podman --uidmap on podman 4.3: idmapped lowers, uidmapping= as well, and the idmapped mount
// detached once laminafs runs. The mount must show what it shows over the plain lower.
TEST(DetachedLayers, idmapped_lower_under_uidmapping_is_mapped_once) {
    REQUIRE_FUSE();
    TempDir dir("lamina-idmapped");
    std::string lower = dir / "lower", mapped = dir / "mapped";
    for (const auto& d : {lower, mapped}) make_dirs(d);
    write_file(lower + "/file", "lower\n");
    write_file(lower + "/owned", "owned\n");
    ASSERT_EQ(lchown((lower + "/owned").c_str(), 5, 6), 0) << strerror(errno);
    make_dirs(lower + "/d");
    ASSERT_EQ(lchown((lower + "/d").c_str(), 7, 8), 0) << strerror(errno);
    const std::string mapping = ",uidmapping=0:100000:65536,gidmapping=0:100000:65536";

    std::string err = mount_idmapped(lower, mapped, 100000);
    if (!err.empty()) SKIP_NEEDING("idmap") << "no idmapped mount here: " << err;
    BindMount held(mapped, mapped);  // only to detach it at scope exit if a step fails
    ASSERT_EQ(owner_of(mapped + "/owned"), "100005:100006") << "the idmapped mount maps nothing";

    // name → owner through the mount; then the same after a copy-up and a chown.
    auto transcript = [&](const std::string& lowerdir, const std::string& tag,
                          bool detach) -> std::map<std::string, std::string> {
        std::string rw = dir / (tag + "-rw"), mnt = dir / (tag + "-mnt");
        for (const auto& d : {rw + "/upper", rw + "/work", mnt}) make_dirs(d);
        ForegroundLaminafs fs(
            "lowerdir=" + lowerdir + ",upperdir=" + rw + "/upper,workdir=" + rw + "/work" + mapping,
            mnt, dir / (tag + ".log"));
        std::map<std::string, std::string> out;
        if (auto e = fs.start(); !e.empty()) {
            ADD_FAILURE() << tag << ": " << e;
            return out;
        }
        if (detach) {
            EXPECT_EQ(umount2(lowerdir.c_str(), MNT_DETACH), 0) << strerror(errno);
        }
        for (const char* name : {"file", "owned", "d"}) out[name] = owner_of(mnt + "/" + name);
        int fd = ::open((mnt + "/owned").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
        EXPECT_GE(fd, 0) << tag << ": copy-up: " << strerror(errno) << "\n" << fs.log_text();
        if (fd >= 0) ::close(fd);
        EXPECT_EQ(::chown((mnt + "/d").c_str(), 100009, 100010), 0)
            << tag << ": " << strerror(errno);
        EXPECT_EQ(::mkdir((mnt + "/d/sub").c_str(), 0755), 0) << tag << ": " << strerror(errno);
        for (const char* name : {"owned", "d"}) {
            out[std::string(name) + " after"] = owner_of(mnt + "/" + name);
            out[std::string(name) + " upper"] = owner_of(rw + "/upper/" + name);
        }
        EXPECT_EQ(fs.exit_report(), "") << tag;
        return out;
    };
    auto over_plain = transcript(lower, "plain", false);
    auto over_mapped = transcript(mapped, "idmapped", true);
    EXPECT_EQ(over_plain["file"], "100000:100000");
    EXPECT_EQ(over_plain["owned"], "100005:100006");
    EXPECT_EQ(over_plain["owned upper"], "5:6") << "the upper holds container ids";
    EXPECT_EQ(over_plain["d upper"], "9:10");
    EXPECT_EQ(over_mapped, over_plain);
}

}  // namespace
}  // namespace lamina::test
