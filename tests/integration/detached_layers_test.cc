// Layers whose paths are gone once laminafs runs (umount -l of a bind mount, containers/storage's
// detached idmapped lowers): every operation must still reach them through their descriptors.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
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
    EXPECT_EQ(redirect, "/src");

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

}  // namespace
}  // namespace lamina::test
