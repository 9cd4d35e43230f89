// Rootless laminafs: a plain user mounting through fusermount3, a user namespace mounting
// directly, uid/gid mappings and squash options (against fuse-overlayfs), and owners kept in
// user.containers.override_stat. What an unprivileged mount writes is read back by root mounts.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "fixture.h"
#include "layers.h"
#include "options.h"
#include "overlay.h"
#include "test_user.h"

namespace lamina::test {
namespace {

#define REQUIRE_ROOTLESS_SETUP()                                                             \
    do {                                                                                     \
        REQUIRE_FUSE();                                                                      \
        if (!test_user()) SKIP_NEEDING("user") << "cannot make the test user " << kTestUser; \
        let_everyone_open_dev_fuse();                                                        \
        if (run_command({"which", "setpriv"}).status != 0)                                   \
            SKIP_NEEDING("program:setpriv") << "no setpriv";                                 \
    } while (0)

std::string describe(const CommandResult& r) {
    return "status " + std::to_string(r.status) + "\nstdout:\n" + r.out + "stderr:\n" + r.err;
}

// The test user's own copy of laminafs, in a directory it may enter: the build directory may be
// where it cannot (a clone under root's home, mode 0700 on Debian).
const std::string& user_laminafs() {
    static const std::string path = [] {
        static TempDir dir("lamina-rootless-bin");
        chmod(dir.path().c_str(), 0755);
        std::string copy = dir / "laminafs";
        CommandResult r = run_command({"install", "-m", "0755", laminafs_binary(), copy});
        if (r.status != 0) ADD_FAILURE() << "copying " << laminafs_binary() << ": " << r.err;
        return copy;
    }();
    return path;
}

// Runs a shell script as the test user (no supplementary groups), from /: the test's own working
// directory (the build directory) may be one the user cannot enter.
CommandResult run_as_user(const std::string& script) {
    const TestUser* u = test_user();
    return run_command({"env", "--chdir=/", "setpriv", "--reuid=" + std::to_string(u->uid),
                        "--regid=" + std::to_string(u->gid), "--clear-groups", "sh", "-c", script},
                       60);
}

void chown_tree(const std::string& path, uid_t uid, gid_t gid) {
    run_command({"chown", "-R", std::to_string(uid) + ":" + std::to_string(gid), path});
}

// A layout the test user can reach: DIR/{lower,upper,work,mnt}, the upper side owned by it.
struct Layout {
    TempDir dir{"lamina-rootless"};
    std::string lower = dir / "lower", upper = dir / "upper", work = dir / "work",
                mnt = dir / "mnt";
    Layout() {
        chmod(dir.path().c_str(), 0755);
        for (const auto& d : {lower, upper, work, mnt}) make_dirs(d);
        chown_tree(upper, test_user()->uid, test_user()->gid);
        chown_tree(work, test_user()->uid, test_user()->gid);
        chown_tree(mnt, test_user()->uid, test_user()->gid);
    }
    std::string options() const {
        return "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work;
    }
};

// The image-like lower layer every case starts from, owned by root.
void fill_lower(const std::string& lower) {
    make_dirs(lower + "/etc");
    write_file(lower + "/etc/motd", "welcome\n", 0666);
    write_file(lower + "/etc/deleteme", "delete me\n");
    make_dirs(lower + "/data/dir/sub");
    write_file(lower + "/data/dir/sub/file", "lower\n");
    write_file(lower + "/data/dir/top", "top\n");
    make_dirs(lower + "/data/moveme/inner");
    write_file(lower + "/data/moveme/inner/file", "moved along\n");
    write_file(lower + "/data/rename-src", "renamed\n");
    write_file(lower + "/data/shared", "shared\n", 0666);
    // Writable by anyone, so the plain user may change what is inside.
    for (const char* d : {"", "/etc", "/data", "/data/dir", "/data/dir/sub", "/data/moveme"})
        chmod((lower + d).c_str(), 0777);
}

// What a plain user does in the mount: delete, replace a directory (opaque), rename a lower
// directory (redirect) and a lower file, write new files and append to a lower one.
const char* kUserChanges = R"(
set -e
cd "$1"
rm etc/deleteme
echo changed >> etc/motd
rm -r data/dir
mkdir data/dir
echo fresh > data/dir/new
mv data/moveme data/moved
mv data/rename-src data/rename-dst
echo more >> data/shared
mkdir -p new/deep
echo made > new/deep/file
)";

// path → "kind perm [content|target]", owners left out (the mounts differ on purpose there).
using Tree = std::map<std::string, std::string>;

void walk(const std::string& root, const std::string& rel, Tree& out) {
    std::string dir_path = rel.empty() ? root : root + "/" + rel;
    DIR* d = opendir(dir_path.c_str());
    ASSERT_NE(d, nullptr) << dir_path << ": " << strerror(errno);
    std::vector<std::string> names;
    while (dirent* de = readdir(d)) {
        std::string n = de->d_name;
        if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
    for (const auto& n : names) {
        std::string r = rel.empty() ? n : rel + "/" + n;
        std::string p = root + "/" + r;
        struct stat st;
        if (lstat(p.c_str(), &st) != 0) {
            out[r] = std::string("error ") + strerror(errno);
            continue;
        }
        char perm[8];
        snprintf(perm, sizeof perm, "%o", st.st_mode & 07777);
        if (S_ISDIR(st.st_mode)) {
            out[r] = std::string("d ") + perm;
            walk(root, r, out);
        } else if (S_ISREG(st.st_mode)) {
            out[r] = std::string("f ") + perm + " " + read_file(p);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t len = readlink(p.c_str(), target, sizeof target);
            out[r] = "l " + std::string(target, len > 0 ? static_cast<size_t>(len) : 0);
        } else {
            out[r] = "other " + std::to_string(st.st_mode);
        }
    }
}

Tree tree_of(const std::string& root) {
    Tree t;
    walk(root, "", t);
    return t;
}

std::string tree_text(const Tree& t) {
    std::ostringstream s;
    for (const auto& [k, v] : t) s << k << ": " << v << "\n";
    return s.str();
}

std::string get_xattr(const std::string& path, const std::string& name) {
    char buf[256];
    ssize_t n = lgetxattr(path.c_str(), name.c_str(), buf, sizeof buf);
    return n < 0 ? std::string("<") + strerror(errno) + ">" : std::string(buf, n);
}

// Every xattr name on every entry below root that starts with `prefix`.
std::vector<std::string> xattrs_with_prefix(const std::string& root, const std::string& prefix) {
    std::vector<std::string> found;
    auto r = run_command({"getfattr", "-R", "-h", "-d", "-m", "-", "--absolute-names", root});
    std::istringstream in(r.out);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(prefix, 0) == 0) found.push_back(line);
    }
    return found;
}

// For a test that runs laminafs inside `unshare -Urm` as the test user.
#define REQUIRE_USERNS_SETUP()                               \
    do {                                                     \
        REQUIRE_ROOTLESS_SETUP();                            \
        if (run_command({"which", "unshare"}).status != 0)   \
            SKIP_NEEDING("program:unshare") << "no unshare"; \
    } while (0)

// A layout whose image (fill_lower) belongs to the test user, so to root inside its namespace:
// the VFS refuses to delete or rename what belongs to an id the namespace does not map
// (EOVERFLOW), on any filesystem.
struct UserOwnedImage : Layout {
    UserOwnedImage() {
        fill_lower(lower);
        chown_tree(lower, test_user()->uid, test_user()->gid);
    }
};

TEST(Rootless, plain_user_mounts_writes_and_unmounts_through_fusermount3) {
    REQUIRE_ROOTLESS_SETUP();
    Layout l;
    fill_lower(l.lower);
    std::string script = user_laminafs() + " -o " + l.options() + " " + l.mnt +
                         " || exit 10\n"
                         "grep ' " +
                         l.mnt +
                         " ' /proc/self/mounts\n"
                         "sh -c '" +
                         std::string(kUserChanges) + "' - " + l.mnt +
                         " || exit 11\n"
                         "find " +
                         l.mnt +
                         " | sort\n"
                         "fusermount3 -u " +
                         l.mnt + " || exit 12\n";
    auto r = run_as_user(script);
    ASSERT_EQ(r.status, 0) << describe(r);
    MountGuard guard(l.mnt);
    // Mounted by the user through the setuid helper, which forces nosuid,nodev.
    EXPECT_NE(r.out.find("fuse.laminafs"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("user_id=" + std::to_string(test_user()->uid)), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("nosuid"), std::string::npos) << r.out;
    EXPECT_FALSE(is_mountpoint(l.mnt));

    // Unprivileged metadata: user.overlay.* only, and whiteouts the kernel lets a user make.
    EXPECT_TRUE(xattrs_with_prefix(l.upper, "trusted.overlay").empty());
    EXPECT_EQ(get_xattr(l.upper + "/data/dir", "user.overlay.opaque"), "y");
    // Renamed within its directory: the old name, relative, as the kernel writes it.
    EXPECT_EQ(get_xattr(l.upper + "/data/moved", "user.overlay.redirect"), "moveme");
    struct stat st;
    ASSERT_EQ(lstat((l.upper + "/etc/deleteme").c_str(), &st), 0);
    bool chardev = S_ISCHR(st.st_mode) && st.st_rdev == 0;
    bool xattr_whiteout = S_ISREG(st.st_mode) && st.st_size == 0;
    EXPECT_TRUE(chardev || xattr_whiteout) << std::oct << st.st_mode;

    // Read back by root, laminafs and the kernel, over the user's upper. (As an upper layer:
    // redirects on directories of lower layers are not followed yet, see "Known gaps".)
    Tree want;
    {
        make_dirs(l.dir / "mnt2");
        ASSERT_EQ(mount_laminafs(l.options(), l.dir / "mnt2").status, 0);
        MountGuard g2(l.dir / "mnt2");
        want = tree_of(l.dir / "mnt2");
    }
    EXPECT_EQ(want.count("etc/deleteme"), 0u);
    EXPECT_EQ(want.count("data/dir/sub"), 0u);
    EXPECT_EQ(want.count("data/dir/top"), 0u);
    EXPECT_EQ(want["data/dir/new"], "f 644 fresh\n");
    EXPECT_EQ(want["data/moved/inner/file"], "f 644 moved along\n");
    EXPECT_EQ(want.count("data/moveme"), 0u);
    EXPECT_EQ(want["data/rename-dst"], "f 644 renamed\n");
    EXPECT_EQ(want["etc/motd"], "f 666 welcome\nchanged\n");
    EXPECT_EQ(want["data/shared"], "f 666 shared\nmore\n");
    EXPECT_EQ(want["new/deep/file"], "f 644 made\n");
    // The user saw the same names.
    const std::string& user_view = r.out;
    for (const auto& [path, _] : want)
        EXPECT_NE(user_view.find(l.mnt + "/" + path + "\n"), std::string::npos) << path;

    if (can_mount_kernel_overlay()) {
        // The kernel reads user.overlay.* with userxattr; its redirects need redirect_dir.
        make_dirs(l.dir / "kmnt");
        make_dirs(l.dir / "kwork");
        std::string err = mount_kernel_overlay("lowerdir=" + l.lower + ",upperdir=" + l.upper +
                                                   ",workdir=" + (l.dir / "kwork") + ",userxattr",
                                               l.dir / "kmnt");
        if (err.empty()) {
            MountGuard g3(l.dir / "kmnt");
            Tree kernel = tree_of(l.dir / "kmnt");
            // With userxattr the kernel does not follow redirects (it forces redirect_dir=
            // nofollow), so the moved directory is the one thing it cannot show.
            EXPECT_EQ(kernel["data/moved"].rfind("error", 0), 0u) << kernel["data/moved"];
            for (Tree* t : {&kernel, &want})
                std::erase_if(*t,
                              [](const auto& kv) { return kv.first.rfind("data/moved", 0) == 0; });
            EXPECT_EQ(tree_text(kernel), tree_text(want));
        } else {
            ADD_FAILURE() << "kernel overlay with userxattr: " << err;
        }
    }
}

TEST(Rootless, user_namespace_mounts_directly_and_root_reads_it_back) {
    REQUIRE_USERNS_SETUP();
    UserOwnedImage l;
    std::string script =
        "unshare -Urm sh -c '"
        "cat /proc/self/uid_map; " +
        user_laminafs() + " -o " + l.options() + " " + l.mnt + " || exit 10; grep \" " + l.mnt +
        " \" /proc/self/mounts; "
        "sh -c \"$0\" - " +
        l.mnt +
        " || exit 11; "
        "stat -c \"%u:%g %a\" " +
        l.mnt + "/new/deep/file " + l.mnt + "/etc/motd; umount " + l.mnt + " || exit 12' '" +
        std::string(kUserChanges) + "'";
    auto r = run_as_user(script);
    ASSERT_EQ(r.status, 0) << describe(r);
    // Mounted by root of the namespace itself (no fusermount3: its mount belongs to user 0 there).
    EXPECT_NE(r.out.find("fuse.laminafs"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("user_id=0"), std::string::npos) << r.out;
    // New files and copied-up ones belong to the namespace's root.
    EXPECT_NE(r.out.find("0:0 644\n0:0 666\n"), std::string::npos) << r.out;
    // Written with the userxattr convention although the daemon ran as (namespaced) root.
    EXPECT_TRUE(xattrs_with_prefix(l.upper, "trusted.overlay").empty());
    // Renamed within its directory: the old name, relative, as the kernel writes it.
    EXPECT_EQ(get_xattr(l.upper + "/data/moved", "user.overlay.redirect"), "moveme");
    EXPECT_EQ(get_xattr(l.upper + "/data/dir", "user.overlay.opaque"), "y");

    make_dirs(l.dir / "mnt2");
    ASSERT_EQ(mount_laminafs(l.options(), l.dir / "mnt2").status, 0);
    MountGuard g2(l.dir / "mnt2");
    Tree t = tree_of(l.dir / "mnt2");
    EXPECT_EQ(t.count("etc/deleteme"), 0u);
    EXPECT_EQ(t.count("data/dir/sub"), 0u);
    EXPECT_EQ(t["data/moved/inner/file"], "f 644 moved along\n");
    EXPECT_EQ(t["data/rename-dst"], "f 644 renamed\n");
    EXPECT_EQ(t["new/deep/file"], "f 644 made\n");
}

// Refuses device nodes to this process and all it starts: mknod of any kind and rename with
// RENAME_WHITEOUT fail with EPERM, as on a host whose seccomp profile or upper filesystem allows
// no whiteout devices. (Native system calls only: the test binary and what it runs are native.)
bool refuse_whiteout_devices() {
#ifdef __NR_mknod
    constexpr unsigned kOtherMknod = __NR_mknod;
#else
    constexpr unsigned kOtherMknod = __NR_mknodat;
#endif
    struct sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mknodat, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kOtherMknod, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_renameat2, 0, 2),
        // renameat2's flags, the fifth argument: its low word on a little-endian machine.
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[4])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, RENAME_WHITEOUT, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    };
    struct sock_fprog fprog = {static_cast<unsigned short>(sizeof prog / sizeof prog[0]), prog};
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) == 0;
}

// run_as_user(script) from a child that refuses whiteout devices first; its output passes
// through files in `scratch`.
CommandResult run_as_user_without_whiteout_devices(const std::string& script,
                                                   const std::string& scratch) {
    pid_t pid = fork();
    if (pid == 0) {
        if (!refuse_whiteout_devices()) _exit(97);
        CommandResult r = run_as_user(script);
        write_file(scratch + "/out", r.out);
        write_file(scratch + "/err", r.err);
        _exit(r.status & 0xff);
    }
    CommandResult r;
    int ws = 0;
    if (pid < 0 || waitpid(pid, &ws, 0) != pid) return r;
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    if (r.status == 97) r.err = "cannot install the seccomp filter";
    if (access((scratch + "/out").c_str(), F_OK) == 0) r.out = read_file(scratch + "/out");
    if (access((scratch + "/err").c_str(), F_OK) == 0) r.err = read_file(scratch + "/err");
    return r;
}

// Where whiteout devices are refused, unlink, rmdir and rename all fall back to the kernel's
// xattr whiteout: rmdir of a lower directory the daemon has copied up works as unlink does, and
// laminafs and the kernel (userxattr) read what it left the same.
TEST(Rootless, rmdir_of_a_lower_dir_leaves_an_xattr_whiteout_where_devices_are_refused) {
    REQUIRE_USERNS_SETUP();
    UserOwnedImage l;
    const std::string& m = l.mnt;
    std::string script = "unshare -Urm sh -c '" + user_laminafs() + " -o " + l.options() + " " + m +
                         " || exit 10; rm " + m + "/data/dir/sub/file || exit 11; rmdir " + m +
                         "/data/dir/sub || exit 12; mv " + m + "/data/rename-src " + m +
                         "/data/rename-dst || exit 13; ls " + m + "/data/dir; umount " + m +
                         " || exit 14'";
    TempDir scratch("lamina-rootless-out");
    auto r = run_as_user_without_whiteout_devices(script, scratch.path());
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(r.out, "top\n");

    for (const char* gone : {"/data/dir/sub", "/data/rename-src"}) {
        struct stat st;
        ASSERT_EQ(lstat((l.upper + gone).c_str(), &st), 0) << gone;
        EXPECT_TRUE(S_ISREG(st.st_mode) && st.st_size == 0)
            << gone << " " << std::oct << st.st_mode;
        EXPECT_EQ(get_xattr(l.upper + gone, "user.overlay.whiteout"), "y") << gone;
    }
    EXPECT_EQ(get_xattr(l.upper + "/data/dir", "user.overlay.opaque"), "x");
    EXPECT_EQ(get_xattr(l.upper + "/data", "user.overlay.opaque"), "x");

    auto expect_removed = [](const std::string& root, const char* who) {
        struct stat st;
        for (const char* gone : {"/data/dir/sub", "/data/dir/sub/file", "/data/rename-src"}) {
            errno = 0;
            EXPECT_NE(lstat((root + gone).c_str(), &st), 0) << who << ": " << gone;
            EXPECT_EQ(errno, ENOENT) << who << ": " << gone;
        }
        EXPECT_EQ(read_file(root + "/data/rename-dst"), "renamed\n") << who;
        EXPECT_EQ(read_file(root + "/data/dir/top"), "top\n") << who;
    };
    make_dirs(l.dir / "mnt2");
    {
        ASSERT_EQ(mount_laminafs(l.options(), l.dir / "mnt2").status, 0);
        MountGuard g2(l.dir / "mnt2");
        expect_removed(l.dir / "mnt2", "laminafs");
        Tree t = tree_of(l.dir / "mnt2");
        EXPECT_EQ(t.count("data/dir/sub"), 0u);
        EXPECT_EQ(t.count("data/rename-src"), 0u);
    }
    if (!can_mount_kernel_overlay())
        SKIP_NEEDING("overlay") << "laminafs checked; the kernel's reading of the same upper not";
    make_dirs(l.dir / "kmnt");
    make_dirs(l.dir / "kwork");
    // Read-only, with the user's upper as the top lower layer: the kernel writes nothing to it.
    std::string err =
        mount_kernel_overlay("lowerdir=" + l.upper + ":" + l.lower + ",userxattr", l.dir / "kmnt");
    ASSERT_TRUE(err.empty()) << "kernel overlay with userxattr: " << err;
    MountGuard g3(l.dir / "kmnt");
    expect_removed(l.dir / "kmnt", "kernel");
}

// Registering a backing file needs CAP_SYS_ADMIN in the initial namespace, which a daemon in a
// user namespace lacks: with -o passthrough it must still serve reads and writes itself. Nor can
// it turn on the fuse module's enable_uring: with -o io_uring and the parameter off, the mount
// works over /dev/fuse and the parameter stays off.
TEST(Rootless, passthrough_without_privilege_falls_back_to_the_daemon) {
    REQUIRE_USERNS_SETUP();
    const char* kEnableUring = "/sys/module/fuse/parameters/enable_uring";
    std::string uring_before = read_file(kEnableUring);
    if (!uring_before.empty()) write_file(kEnableUring, "N\n");
    struct Restore {
        std::string path, value;
        ~Restore() {
            if (!value.empty()) write_file(path, value);
        }
    } restore{kEnableUring, uring_before};
    UserOwnedImage l;
    std::string m = l.mnt;
    std::string script =
        "unshare -Urm sh -c '" + user_laminafs() + " -o " + l.options() + ",passthrough,io_uring " +
        m + " || exit 10; cat " + m + "/etc/motd || exit 11; " + "echo appended >> " + m +
        "/etc/motd || exit 12; cat " + m + "/etc/motd; umount " + m + " || exit 13'";
    auto r = run_as_user(script);
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(r.out, "welcome\nwelcome\nappended\n") << describe(r);
    EXPECT_EQ(read_file(l.upper + "/etc/motd"), "welcome\nappended\n");
    if (!uring_before.empty()) {
        EXPECT_EQ(read_file(kEnableUring), "N\n");
    }
}

TEST(Rootless, unprivileged_copy_up_keeps_the_owner_in_the_override_xattr) {
    REQUIRE_ROOTLESS_SETUP();
    Layout l;
    fill_lower(l.lower);
    std::string m = l.mnt;
    auto r = run_as_user(user_laminafs() + " -o " + l.options() + " " + m + " || exit 10\n" +
                         "echo more >> " + m + "/data/shared || exit 11\n" + "mkdir " + m +
                         "/data/dir/made || exit 12\n" + "stat -c '%n %u:%g %a' " + m +
                         "/data/shared " + m + "/data/dir " + m + "/data/dir/made\n" +
                         "getfattr -d -m - " + m + "/data/shared 2>&1\n" + "fusermount3 -u " + m);
    ASSERT_EQ(r.status, 0) << describe(r);
    MountGuard guard(l.mnt);
    std::string u = std::to_string(test_user()->uid) + ":" + std::to_string(test_user()->gid);
    // Through the mount the copies still belong to root; what the user made is the user's.
    EXPECT_NE(r.out.find(m + "/data/shared 0:0 666\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(m + "/data/dir 0:0 777\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(m + "/data/dir/made " + u + " 755\n"), std::string::npos) << r.out;
    // The override is the mount's business: not listed through it.
    EXPECT_EQ(r.out.find("override_stat"), std::string::npos) << r.out;
    // On the host the user owns the copies, and the override says who should.
    struct stat st;
    ASSERT_EQ(lstat((l.upper + "/data/shared").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, test_user()->uid);
    EXPECT_EQ(get_xattr(l.upper + "/data/shared", "user.containers.override_stat"),
              "0:0:0666:file");
    EXPECT_EQ(get_xattr(l.upper + "/data/dir", "user.containers.override_stat"), "0:0:0777:dir");
    EXPECT_EQ(get_xattr(l.upper + "/data/dir/made", "user.containers.override_stat"),
              "<No data available>");
}

TEST(Rootless, override_xattrs_on_lower_layers_are_shown) {
    REQUIRE_ROOTLESS_SETUP();
    Layout l;
    // As containers/storage leaves them when it unpacks an image without privilege.
    write_file(l.lower + "/null", "");
    write_file(l.lower + "/suid", "#!/bin/sh\n", 0755);
    write_file(l.lower + "/old-form", "x", 0644);
    make_dirs(l.lower + "/root-home");
    auto set = [](const std::string& p, const std::string& v) {
        ASSERT_EQ(lsetxattr(p.c_str(), "user.containers.override_stat", v.data(), v.size(), 0), 0)
            << p;
    };
    set(l.lower + "/null", "0:0:0666:char-1-3");
    set(l.lower + "/suid", "0:0:4755:file");
    set(l.lower + "/old-form", "7:8:0100640");  // the three-field form, type bits in the mode
    set(l.lower + "/root-home", "0:0:0700:dir");
    std::string m = l.mnt;
    auto r = run_as_user(user_laminafs() + " -o " + l.options() + " " + m + " || exit 10\n" +
                         "stat -c '%n %F %t:%T %u:%g %a' " + m + "/null " + m + "/suid " + m +
                         "/old-form " + m + "/root-home\nfusermount3 -u " + m);
    ASSERT_EQ(r.status, 0) << describe(r);
    MountGuard guard(l.mnt);
    EXPECT_NE(r.out.find(m + "/null character special file 1:3 0:0 666\n"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find(m + "/suid regular file 0:0 0:0 4755\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(m + "/old-form regular file 0:0 7:8 640\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(m + "/root-home directory 0:0 0:0 700\n"), std::string::npos) << r.out;
}

// The daemon's own calls, run in a child that has dropped root: devices it may not make and
// owners it may not give end up in the override, and stat shows them. (Through FUSE these reach
// the daemon only from a caller with more privilege than the daemon, e.g. with allow_root.)
TEST(Rootless, devices_and_foreign_owners_go_into_the_override_without_privilege) {
    REQUIRE_ROOTLESS_SETUP();
    Layout l;
    write_file(l.lower + "/file", "data", 0644);
    chmod(l.lower.c_str(), 0777);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        auto check = [](bool ok, int code) {
            if (!ok) _exit(code);
        };
        check(setgroups(0, nullptr) == 0 &&
                  setresgid(test_user()->gid, test_user()->gid, test_user()->gid) == 0 &&
                  setresuid(test_user()->uid, test_user()->uid, test_user()->uid) == 0,
              2);
        MountOptions opts;
        opts.lowerdirs = {l.lower};
        opts.upperdir = l.upper;
        opts.workdir = l.work;
        opts.mountpoint = l.mnt;
        check(validate_mount_options(opts).empty(), 3);
        LayerStack stack;
        check(stack.open(opts).empty() && stack.prepare_work_dir().empty(), 4);
        Overlay ov(opts, stack);
        check(ov.init().empty(), 5);
        EntryReply e;
        Credentials root{0, 0};
        check(ov.mknod(ov.root(), "null", S_IFCHR | 0666, makedev(1, 3), root, e) == 0, 6);
        check(S_ISCHR(e.st.st_mode) && e.st.st_rdev == makedev(1, 3) && e.st.st_uid == 0 &&
                  (e.st.st_mode & 07777) == 0666,
              7);
        EntryReply f;
        check(ov.lookup(ov.root(), "file", f) == 0, 8);
        struct stat attr {};
        attr.st_uid = 123;
        attr.st_gid = 456;
        attr.st_mode = 04755;
        struct stat out;
        check(ov.setattr(f.node, nullptr, attr, kSetUid | kSetGid, root, out) == 0, 9);
        check(out.st_uid == 123 && out.st_gid == 456 && (out.st_mode & 07777) == 0644, 10);
        check(ov.setattr(f.node, nullptr, attr, kSetMode, root, out) == 0, 11);
        check(out.st_uid == 123 && (out.st_mode & 07777) == 04755, 12);
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0) << "the child failed at step " << WEXITSTATUS(status);
    // On the host: regular files owned by the user, with the truth in the override.
    struct stat st;
    ASSERT_EQ(lstat((l.upper + "/null").c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(get_xattr(l.upper + "/null", "user.containers.override_stat"), "0:0:020666:char-1-3");
    ASSERT_EQ(lstat((l.upper + "/file").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, test_user()->uid);
    EXPECT_EQ(st.st_mode & 07000, 0u);  // no set-id bit on the host copy
    EXPECT_EQ(get_xattr(l.upper + "/file", "user.containers.override_stat"), "123:456:4755:file");
}

TEST(Rootless, plain_user_mount_with_squash_and_mapping_options) {
    REQUIRE_ROOTLESS_SETUP();
    Layout l;
    fill_lower(l.lower);
    std::string m = l.mnt;
    std::string u = std::to_string(test_user()->uid), g = std::to_string(test_user()->gid);
    // Mounts with `extra`, makes data/NAME, and stats etc/motd, data and data/NAME.
    auto mount_and_stat = [&](const std::string& extra, const std::string& name,
                              const std::string& format) {
        std::string file = m + "/data/" + name;
        return run_as_user(user_laminafs() + " -o " + l.options() + "," + extra + " " + m +
                           " || exit 10\necho new > " + file + " || exit 11\nstat -c '" + format +
                           "' " + m + "/etc/motd " + m + "/data " + file + "\nfusermount3 -u " + m);
    };
    // (Squashed to root, the upper root dir, 0755, is no longer the user's: it writes in /data.)
    auto r = mount_and_stat("squash_to_root,static_nlink", "a", "%n %u:%g %h");
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(r.out, m + "/etc/motd 0:0 1\n" + m + "/data 0:0 1\n" + m + "/data/a 0:0 1\n");
    MountGuard guard(l.mnt);

    // Disk id 0 shown as the user, as fuse-overlayfs does under a namespace mapping root to it.
    // The user's new file gets disk owner 0, which the host refuses it: the override keeps it.
    r = mount_and_stat("squash_to_uid=" + u + ",uidmapping=0:" + u + ":1,gidmapping=0:" + g + ":1",
                       "b", "%n %u:%g");
    ASSERT_EQ(r.status, 0) << describe(r);
    std::string owner = " " + u + ":" + g + "\n";
    EXPECT_EQ(r.out, m + "/etc/motd" + owner + m + "/data" + owner + m + "/data/b" + owner);
    EXPECT_EQ(get_xattr(l.upper + "/data/b", "user.containers.override_stat"), "0:0:0644:file");
}

// stat lines for a few entries through a mount made by `program` with `options`.
std::string ownership_transcript(const std::string& program, const std::string& options) {
    TempDir dir("lamina-idmap");
    for (const char* d : {"lower", "upper", "work", "mnt"}) make_dirs(dir / d);
    std::string lower = dir / "lower";
    write_file(lower + "/root-file", "a");
    write_file(lower + "/one-file", "b");
    write_file(lower + "/far-file", "c");
    make_dirs(lower + "/dir/sub");
    chown((lower + "/one-file").c_str(), 1, 1);
    chown((lower + "/far-file").c_str(), 70000, 70000);
    std::string mnt = dir / "mnt";
    auto r = run_command({program, "-o",
                          "lowerdir=" + lower + ",upperdir=" + (dir / "upper") +
                              ",workdir=" + (dir / "work") + "," + options,
                          mnt});
    if (r.status != 0) return "mount failed: " + describe(r);
    MountGuard guard(mnt);
    auto out = run_shell("cd " + mnt +
                         " && stat -c '%n %u:%g %h' root-file one-file far-file dir && "
                         "touch new && mkdir newdir && chown 110005:1000 new one-file && "
                         "stat -c '%n %u:%g' new newdir one-file && cd " +
                         (dir / "upper") + " && stat -c 'upper %n %u:%g' new newdir one-file");
    return out.out + out.err;
}

TEST(Rootless, id_mappings_and_squash_options_match_fuse_overlayfs) {
    REQUIRE_FUSE();
    if (run_command({"which", "fuse-overlayfs"}).status != 0)
        SKIP_NEEDING("program:fuse-overlayfs") << "no fuse-overlayfs";
    for (std::string options : {
             "uidmapping=0:1000:1:1:110000:65536,gidmapping=0:1000:1:1:110000:65536",
             // containers/storage's spelling, with a ':' before the first range.
             "uidmapping=:0:1000:1:1:110000:65536,gidmapping=:0:2000:1:1:120000:65536",
             "squash_to_root",
             "squash_to_root,squash_to_gid=7",
             "squash_to_uid=5,squash_to_gid=6",
             "static_nlink",
             "uidmapping=0:1000:1:1:110000:65536,gidmapping=0:1000:1:1:110000:65536,static_nlink",
         }) {
        SCOPED_TRACE(options);
        std::string ours = ownership_transcript(laminafs_binary(), options);
        std::string theirs = ownership_transcript("fuse-overlayfs", options);
        EXPECT_EQ(ours, theirs);
    }
    // A spot check, so that both agreeing on nonsense cannot pass.
    std::string mapped = ownership_transcript(
        laminafs_binary(), "uidmapping=0:1000:1:1:110000:65536,gidmapping=0:1000:1:1:110000:65536");
    EXPECT_NE(mapped.find("root-file 1000:1000"), std::string::npos) << mapped;
    EXPECT_NE(mapped.find("one-file 110000:110000"), std::string::npos) << mapped;
    EXPECT_NE(mapped.find("far-file 65534:65534"), std::string::npos) << mapped;
    EXPECT_NE(mapped.find("upper one-file 6:0"), std::string::npos) << mapped;
}

// A layout whose mount point lies inside its own lower, the mount point the user's.
struct NestedMountPoint : Layout {
    std::string inner = lower + "/inner";
    NestedMountPoint() {
        make_dirs(inner);
        write_file(inner + "/under", "under\n");
        chown_tree(inner, test_user()->uid, test_user()->gid);
    }
};

// A plain user cannot clone mounts (open_tree: EPERM), so the layer would be reached through
// its own mount, where the laminafs mount made later would show inside itself: refused.
TEST(Rootless, plain_user_mount_point_inside_its_own_lower_is_refused) {
    REQUIRE_ROOTLESS_SETUP();
    NestedMountPoint l;
    MountGuard guard(l.inner);
    for (const std::string& lower : {l.lower, std::string("/")}) {
        auto r = run_as_user(laminafs_binary() + " -o lowerdir=" + lower + " " + l.inner);
        EXPECT_EQ(r.status, 1) << describe(r);
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
        EXPECT_NE(r.err.find("is inside lowerdir '" + lower + "'"), std::string::npos) << r.err;
        EXPECT_FALSE(is_mountpoint(l.inner));
        EXPECT_NE(run_command({"pgrep", "-f", l.inner}).status, 0) << "a daemon is left";
    }
}

// In its own user namespace the user may clone mounts: the mount point shows what lies under it.
TEST(Rootless, user_namespace_mount_point_inside_its_own_lower_shows_what_lies_underneath) {
    REQUIRE_USERNS_SETUP();
    NestedMountPoint l;
    std::string script = "unshare -Urm sh -c '" + laminafs_binary() + " -o lowerdir=" + l.lower +
                         " " + l.inner + " || exit 10; ls -A " + l.inner + " " + l.inner +
                         "/inner; umount " + l.inner + "'";
    auto r = run_as_user(script);
    if (r.status == 128 + SIGKILL) {
        // The walk reached the mount itself; free it, to end the test.
        std::istringstream pids(run_command({"pgrep", "-f", l.inner}).out);
        for (pid_t pid; pids >> pid;) {
            abort_fuse_connection(l.inner, pid);
            kill(pid, SIGKILL);
        }
    }
    EXPECT_EQ(r.status, 0) << describe(r);
    EXPECT_EQ(r.out, l.inner + ":\ninner\n\n" + l.inner + "/inner:\nunder\n") << describe(r);
}

// A plain user's daemon killed with SIGKILL leaves a dead mount the user made; the next
// laminafs clears it with fusermount3 -u -z and mounts in its place, not on top of it.
TEST(Rootless, plain_user_remount_over_a_dead_mount_replaces_it) {
    REQUIRE_ROOTLESS_SETUP();
    Layout l;
    fill_lower(l.lower);
    MountGuard guard(l.mnt);
    std::string m = l.mnt;
    auto r = run_as_user(laminafs_binary() + " -o " + l.options() + " " + m + " || exit 10\n" +
                         "cat " + m + "/etc/motd >/dev/null || exit 11\n" +
                         "kill -KILL $(pgrep -f -- ' " + m + "$') || exit 12\n" + "while cat " + m +
                         "/etc/motd >/dev/null 2>&1; do sleep 0.05; done\n" + laminafs_binary() +
                         " -o " + l.options() + " " + m + " || exit 13\n" + "cat " + m +
                         "/etc/motd || exit 14\n" + "fusermount3 -u " + m + " || exit 15\n" +
                         "grep -c ' " + m + " ' /proc/self/mountinfo\n");
    EXPECT_EQ(r.out, "welcome\n0\n") << describe(r);
    EXPECT_FALSE(is_mountpoint(m));
}

TEST(Rootless, malformed_mapping_is_one_clear_error) {
    TempDir dir("lamina-idmap-bad");
    for (const char* d : {"lower", "mnt"}) make_dirs(dir / d);
    for (std::string bad : {"uidmapping=0:1000", "gidmapping=0:1000:1:5", "uidmapping=a:b:c",
                            "uidmapping=0:1000:0"}) {
        auto r = run_command(
            {laminafs_binary(), "-o", "lowerdir=" + (dir / "lower") + "," + bad, dir / "mnt"});
        EXPECT_EQ(r.status, 1) << bad;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
        EXPECT_NE(r.err.find(bad.substr(0, bad.find('='))), std::string::npos) << r.err;
        EXPECT_FALSE(is_mountpoint(dir / "mnt"));
    }
}

}  // namespace
}  // namespace lamina::test
