// Set-id bits after writes, truncation and chown, as kernel overlayfs leaves them: laminafs
// clears them itself since it takes FUSE_HANDLE_KILLPRIV_V2 (fs/setid.cc), with and without
// passthrough. And the reason it takes it: a write no longer costs a GETXATTR request.
//
// Each case is a file in the lower layer owned by another user; an unprivileged caller (a
// forked child that drops to kCaller) or root changes it through the mount, and the mode the
// mount then shows, and the upper copy has, is compared with kernel overlayfs and with the
// kernel's rules (setattr_should_drop_suidgid, chown_common).
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fixture.h"
#include "needs.h"

namespace lamina::test {
namespace {

constexpr uid_t kOwner = 1234;   // owns the files
constexpr uid_t kCaller = 4321;  // writes them: uid and gid 4321, supplementary group kGroup
constexpr gid_t kGroup = 5555;

enum class Who { User, Root };

struct Case {
    const char* name;
    mode_t mode;  // in the lower layer
    gid_t gid;
    Who who;
    std::function<bool(const std::string& path)> change;  // true on success
    mode_t expected;                                      // kernel's rules
    bool in_upper = false;  // the file is in the upper layer already: no copy-up on open
    uid_t owner = kOwner;
};

bool append(const std::string& path) {
    int fd = open(path.c_str(), O_WRONLY | O_APPEND);
    if (fd < 0) return false;
    bool ok = write(fd, "more\n", 5) == 5;
    return close(fd) == 0 && ok;
}

bool random_write(const std::string& path) {
    int fd = open(path.c_str(), O_RDWR);
    if (fd < 0) return false;
    bool ok = pwrite(fd, "x", 1, 3) == 1;
    return close(fd) == 0 && ok;
}

bool open_truncating(const std::string& path) {
    int fd = open(path.c_str(), O_WRONLY | O_TRUNC);
    return fd >= 0 && close(fd) == 0;
}

bool ftruncate_open(const std::string& path) {
    int fd = open(path.c_str(), O_RDWR);
    if (fd < 0) return false;
    bool ok = ftruncate(fd, 2) == 0;
    return close(fd) == 0 && ok;
}

// A plain file beside the cases, for copy_file_range to copy from within the mount (across
// filesystems the kernel would fall back to write).
constexpr const char* kCopySource = "copy_source";

// Changes the file as a write does, without write(2).
bool copy_range_into(const std::string& path) {
    std::string source = path.substr(0, path.rfind('/') + 1) + kCopySource;
    int in = open(source.c_str(), O_RDONLY);
    int out = open(path.c_str(), O_WRONLY);
    off_t off_in = 0;
    off_t off_out = 2;
    bool ok = in >= 0 && out >= 0 && copy_file_range(in, &off_in, out, &off_out, 4, 0) == 4;
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    return ok;
}

bool allocate(const std::string& path) {
    int fd = open(path.c_str(), O_WRONLY);
    if (fd < 0) return false;
    bool ok = posix_fallocate(fd, 0, 1 << 16) == 0;
    return close(fd) == 0 && ok;
}

// fallocate(2) modes that change data without changing the size: the kernel then has no size
// change to refresh its cached attributes by, so a daemon that clears the bits must say so.
// The mode is looked at at once: a reply that left the kernel's cached mode stale shows here,
// before any later request happens to refresh it.
bool fallocate_mode(const std::string& path, int mode) {
    int fd = open(path.c_str(), O_RDWR);
    if (fd < 0) return false;
    bool ok = fallocate(fd, mode, 0, 2) == 0;
    struct stat st;
    ok = ok && fstat(fd, &st) == 0 && !(st.st_mode & S_ISUID);
    return close(fd) == 0 && ok;
}

// The owner sets the bits through the mount (the kernel then holds the mode the daemon
// replied), then changes the data without write(2).
bool chmod_then_fallocate(const std::string& path, int mode) {
    return chmod(path.c_str(), 06666) == 0 && fallocate_mode(path, mode);
}

const std::vector<Case>& cases() {
    static const std::vector<Case> all = {
        // An unprivileged write clears set-user-ID and, group-executable, set-group-ID.
        {"user_append", 06777, kOwner, Who::User, append, 0777},
        {"user_pwrite", 06777, kOwner, Who::User, random_write, 0777},
        {"user_truncate", 06777, kOwner, Who::User,
         [](const std::string& p) { return truncate(p.c_str(), 1) == 0; }, 0777},
        {"user_ftruncate", 06777, kOwner, Who::User, ftruncate_open, 0777},
        {"user_open_trunc", 06777, kOwner, Who::User, open_truncating, 0777},
        {"user_copy_file_range", 06777, kOwner, Who::User, copy_range_into, 0777},
        {"user_fallocate", 06777, kOwner, Who::User, allocate, 0777},
        {"user_punch_hole", 06666, kOwner, Who::User,
         [](const std::string& p) {
             return fallocate_mode(p, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
         },
         0666},
        {"user_zero_range", 06666, kOwner, Who::User,
         [](const std::string& p) { return fallocate_mode(p, FALLOC_FL_ZERO_RANGE); }, 0666},
        // The same on upper files: no copy-up tells the kernel its cached mode is stale.
        {"upper_user_fallocate", 06777, kOwner, Who::User, allocate, 0777, true},
        {"upper_user_punch_hole", 06666, kOwner, Who::User,
         [](const std::string& p) {
             return fallocate_mode(p, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
         },
         0666, true},
        {"upper_user_zero_range", 06666, kOwner, Who::User,
         [](const std::string& p) { return fallocate_mode(p, FALLOC_FL_ZERO_RANGE); }, 0666, true},
        {"upper_user_copy_file_range", 06777, kOwner, Who::User, copy_range_into, 0777, true},
        {"own_upper_zero_range", 0644, kOwner, Who::User,
         [](const std::string& p) { return chmod_then_fallocate(p, FALLOC_FL_ZERO_RANGE); }, 0666,
         true, kCaller},
        {"own_upper_punch_hole", 0644, kOwner, Who::User,
         [](const std::string& p) {
             return chmod_then_fallocate(p, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
         },
         0666, true, kCaller},
        // Set-group-ID without group execute stays for a caller in the file's group (primary or
        // supplementary) and goes for one outside it.
        {"user_sgid_not_in_group", 02666, kOwner, Who::User, append, 0666},
        {"user_sgid_primary_group", 02666, kCaller, Who::User, append, 02666},
        {"user_sgid_supplementary_group", 02666, kGroup, Who::User, append, 02666},
        {"user_sgid_group_exec", 02676, kGroup, Who::User, append, 0676},
        // With set-user-ID too, the kernel's file_remove_privs() sends a ctime-only SETATTR
        // first; set-group-ID without group execute still stays for a group member (the fuzzer
        // found it cleared: seed 692124552694).
        {"user_suid_sgid_in_group_append", 06666, kGroup, Who::User, append, 02666},
        {"user_suid_sgid_in_group_zero_range", 07766, kGroup, Who::User,
         [](const std::string& p) {
             return fallocate_mode(p, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE);
         },
         03766},
        // Root keeps them on a write and a truncation.
        {"root_append", 06777, kOwner, Who::Root, append, 06777},
        {"root_truncate", 06777, kOwner, Who::Root,
         [](const std::string& p) { return truncate(p.c_str(), 1) == 0; }, 06777},
        {"root_open_trunc", 06777, kOwner, Who::Root, open_truncating, 06777},
        // A chown clears set-user-ID whoever asks; set-group-ID only with group execute.
        {"root_chown", 06755, kOwner, Who::Root,
         [](const std::string& p) { return chown(p.c_str(), kOwner + 1, -1) == 0; }, 0755},
        {"root_chown_sgid_no_exec", 02644, kOwner, Who::Root,
         [](const std::string& p) { return chown(p.c_str(), kOwner + 1, -1) == 0; }, 02644},
        // chown(-1, -1) changes no owner and still clears them, as any chown does.
        {"root_chown_nothing", 06755, kOwner, Who::Root,
         [](const std::string& p) { return chown(p.c_str(), -1, -1) == 0; }, 0755},
        // Clearing them is a mode change the owner may make. (Anyone else gets EPERM from the
        // kernel and keeps them; laminafs cannot tell that SETATTR from the one a write sends,
        // see kDefaultSkip in diff_ops_test.cc.)
        {"user_chown_nothing_as_owner", 06755, kOwner, Who::User,
         [](const std::string& p) { return chown(p.c_str(), -1, -1) == 0; }, 0755, false, kCaller},
    };
    return all;
}

// Runs the cases of one kind against the tree at mnt; the unprivileged ones in a child that
// drops to kCaller. Returns the names of cases whose change failed.
std::vector<std::string> run_cases(const std::string& mnt, Who who) {
    std::vector<std::string> failed;
    if (who == Who::Root) {
        for (const Case& c : cases())
            if (c.who == Who::Root && !c.change(mnt + "/" + c.name)) failed.push_back(c.name);
        return failed;
    }
    int pipefd[2];
    if (pipe(pipefd) != 0) return {"pipe"};
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        gid_t groups[] = {kGroup};
        if (setgroups(1, groups) != 0 || setresgid(kCaller, kCaller, kCaller) != 0 ||
            setresuid(kCaller, kCaller, kCaller) != 0)
            _exit(2);
        std::string bad;
        for (const Case& c : cases())
            if (c.who == Who::User && !c.change(mnt + "/" + c.name))
                bad += std::string(c.name) + " ";
        if (write(pipefd[1], bad.data(), bad.size()) < 0) _exit(3);
        _exit(0);
    }
    close(pipefd[1]);
    std::string bad;
    char buf[256];
    ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof buf)) > 0) bad.append(buf, static_cast<size_t>(n));
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return {"child status " + std::to_string(status)};
    size_t at = 0;
    while (at < bad.size()) {
        size_t sp = bad.find(' ', at);
        failed.push_back(bad.substr(at, sp - at));
        at = sp + 1;
    }
    return failed;
}

mode_t mode_of(const std::string& path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return static_cast<mode_t>(-1);
    return st.st_mode & 07777;
}

std::string octal(mode_t m) {
    char buf[16];
    snprintf(buf, sizeof buf, "0%o", m);
    return buf;
}

class Setid : public ::testing::Test {
protected:
    void SetUp() override {
        REQUIRE_FUSE();
        // The unprivileged caller must reach the mount points.
        ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
    }

    // A fresh tree: the lower layer with every case's file, an empty upper layer.
    void make_tree(const std::string& tag) {
        for (const char* d : {"l", "u", "w", "m"}) make_dirs(dir_ / (tag + "/" + d));
        ASSERT_EQ(chmod((dir_ / tag).c_str(), 0755), 0);
        write_file(dir_ / (tag + "/l/" + kCopySource), "source data\n", 0644);
        for (const Case& c : cases()) {
            std::string p = dir_ / (tag + (c.in_upper ? "/u/" : "/l/") + c.name);
            write_file(p, "some data\n");
            ASSERT_EQ(chown(p.c_str(), c.owner, c.gid), 0);
            ASSERT_EQ(chmod(p.c_str(), c.mode), 0);
        }
    }

    // Runs every case on the tree mounted at tag/m and returns the modes the mount shows.
    std::map<std::string, mode_t> run_all(const std::string& tag) {
        std::string mnt = dir_ / (tag + "/m");
        for (Who who : {Who::User, Who::Root}) {
            auto failed = run_cases(mnt, who);
            EXPECT_TRUE(failed.empty())
                << tag << ": the change itself failed for " << ::testing::PrintToString(failed);
        }
        std::map<std::string, mode_t> modes;
        for (const Case& c : cases()) modes[c.name] = mode_of(mnt + "/" + c.name);
        return modes;
    }

    // Mounts laminafs (with `extra` options) on a fresh tree, runs the cases, and checks the
    // modes against the kernel's rules and the upper layer.
    std::map<std::string, mode_t> run_laminafs(const std::string& tag, const std::string& extra) {
        make_tree(tag);
        std::string opts =
            "lowerdir=" + (dir_ / (tag + "/l")) + ",upperdir=" + (dir_ / (tag + "/u")) +
            ",workdir=" + (dir_ / (tag + "/w")) + ",allow_other,log_level=info" + extra;
        daemon_ =
            std::make_unique<ForegroundLaminafs>(opts, dir_ / (tag + "/m"), dir_ / (tag + ".log"));
        std::string err = daemon_->start();
        EXPECT_EQ(err, "");
        if (!err.empty()) return {};
        auto modes = run_all(tag);
        for (const Case& c : cases()) {
            EXPECT_EQ(octal(modes[c.name]), octal(c.expected)) << tag << ": " << c.name;
            EXPECT_EQ(octal(mode_of(dir_ / (tag + "/u/" + c.name))), octal(c.expected))
                << tag << ": " << c.name << " in the upper layer";
        }
        return modes;
    }

    TempDir dir_{"setid"};
    std::unique_ptr<ForegroundLaminafs> daemon_;
};

TEST_F(Setid, writes_truncation_and_chown_clear_set_id_bits_as_on_kernel_overlayfs) {
    std::map<std::string, mode_t> kernel;
    if (can_mount_kernel_overlay()) {
        make_tree("kernel");
        std::string err = mount_kernel_overlay("lowerdir=" + (dir_ / "kernel/l") +
                                                   ",upperdir=" + (dir_ / "kernel/u") +
                                                   ",workdir=" + (dir_ / "kernel/w"),
                                               dir_ / "kernel/m");
        ASSERT_EQ(err, "");
        MountGuard guard(dir_ / "kernel/m");
        kernel = run_all("kernel");
        // The expectations are the kernel's: check them against the kernel first.
        for (const Case& c : cases())
            EXPECT_EQ(octal(kernel[c.name]), octal(c.expected)) << "kernel overlayfs: " << c.name;
    }
    // The defaults (passthrough and io_uring where this machine has them), then neither.
    for (const char* extra : {"", ",passthrough=off,io_uring=off"}) {
        std::string tag = *extra ? "cached" : "plain";
        auto modes = run_laminafs(tag, extra);
        if (!kernel.empty()) {
            for (const Case& c : cases())
                EXPECT_EQ(octal(modes[c.name]), octal(kernel[c.name])) << tag << ": " << c.name;
        }
        daemon_->stop();
        EXPECT_NE(daemon_->log_text().find("killpriv: "), std::string::npos) << daemon_->log_text();
    }
}

TEST_F(Setid, with_passthrough_set_id_files_are_written_through_the_daemon) {
    // Requests are counted as read(2) calls on /dev/fuse, which io_uring would bypass.
    run_laminafs("pt", ",passthrough,io_uring=off");
    std::string log = daemon_->log_text();
    if (log.find("passthrough: on") == std::string::npos) {
        daemon_->stop();
        SKIP_NEEDING("passthrough")
            << "FUSE passthrough is not available here, so this was the plain case: " << log;
    }
    // root_append kept its bits: root's writes to it still reach the daemon, one request each.
    std::string kept = dir_ / "pt/m/root_append";
    int fd = open(kept.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0) << strerror(errno);
    long before = read_syscalls(daemon_->pid());
    for (int i = 0; i < 16; ++i) ASSERT_EQ(pwrite(fd, "y", 1, i), 1);
    long requests = read_syscalls(daemon_->pid()) - before;
    close(fd);
    EXPECT_GE(requests, 16) << "writes to a set-id file were passed through";
    // Opened for reading it passes through, and the kernel will not mix that with the cached
    // open a write needs: the name gets a new node for the writer (docs/architecture.md,
    // differences from kernel overlayfs), whose writes reach the daemon.
    std::string other = dir_ / "pt/m/root_truncate";
    int reader = open(other.c_str(), O_RDONLY);
    ASSERT_GE(reader, 0) << strerror(errno);
    int writer = open(other.c_str(), O_WRONLY);
    EXPECT_GE(writer, 0) << "beside a reader: " << strerror(errno);
    if (writer >= 0) {
        before = read_syscalls(daemon_->pid());
        for (int i = 0; i < 16; ++i) EXPECT_EQ(pwrite(writer, "z", 1, i), 1);
        EXPECT_GE(read_syscalls(daemon_->pid()) - before, 16) << "writes were passed through";
        close(writer);
    }
    close(reader);
    daemon_->stop();
}

// The point of killpriv v2: the kernel stops asking for security.capability before each
// write. Random writes to a copied-up file, counted in requests reaching the daemon.
TEST_F(Setid, writes_cost_no_getxattr_request) {
    for (const char* tag : {"plain", "pt"}) {
        SCOPED_TRACE(tag);
        bool pt = std::string(tag) == "pt";
        for (const char* d : {"l", "u", "w", "m"}) make_dirs(dir_ / (std::string(tag) + "/" + d));
        write_file(dir_ / (std::string(tag) + "/l/f"), std::string(1 << 20, 'a'));
        std::string opts = "lowerdir=" + (dir_ / (std::string(tag) + "/l")) +
                           ",upperdir=" + (dir_ / (std::string(tag) + "/u")) +
                           ",workdir=" + (dir_ / (std::string(tag) + "/w")) + ",log_level=info" +
                           (pt ? ",passthrough" : "");
        ForegroundLaminafs daemon(opts, dir_ / (std::string(tag) + "/m"),
                                  dir_ / (std::string(tag) + ".log"));
        ASSERT_EQ(daemon.start(), "");
        std::string path = dir_ / (std::string(tag) + "/m/f");
        struct stat st;
        ASSERT_EQ(stat(path.c_str(), &st), 0);  // INIT is answered by now
        std::string log = daemon.log_text();
        if (log.find("killpriv: on") == std::string::npos) {
            daemon.stop();
            SKIP_NEEDING("killpriv-v2")
                << "this kernel does not offer FUSE_HANDLE_KILLPRIV_V2: " << log;
        }
        if (pt && log.find("passthrough: on") == std::string::npos) {
            daemon.stop();
            SKIP_NEEDING("passthrough") << "FUSE passthrough is not available here: " << log;
        }
        int fd = open(path.c_str(), O_RDWR);  // copies up
        ASSERT_GE(fd, 0);
        ASSERT_EQ(pwrite(fd, "x", 1, 0), 1);  // the kernel asks once per inode
        constexpr int kWrites = 256;
        long before = read_syscalls(daemon.pid());
        char block[4096] = {};
        for (int i = 0; i < kWrites; ++i)
            ASSERT_EQ(pwrite(fd, block, sizeof block, (i * 37 % 256) * 4096), 4096);
        long requests = read_syscalls(daemon.pid()) - before;
        close(fd);
        daemon.stop();
        // Without killpriv v2 a write was two requests (GETXATTR, WRITE), one with passthrough.
        if (pt)
            EXPECT_LT(requests, 8) << requests << " requests for " << kWrites << " writes";
        else
            EXPECT_LE(requests, kWrites + 8)
                << requests << " requests for " << kWrites << " writes";
        std::printf("%s: %ld requests for %d random 4 KiB writes\n", tag, requests, kWrites);
    }
}

// The owner of a new file sets both bits and changes it with each fallocate(2) mode; the mode
// is looked at at once. With killpriv v2 the daemon clears the bits, so its reply must drop the
// kernel's cached mode (a reply that did not left -rwSrwSrw- in view).
TEST_F(Setid, fallocate_by_the_owner_clears_set_user_id_as_on_kernel_overlayfs) {
    if (!can_mount_kernel_overlay()) SKIP_NEEDING("overlay") << "kernel overlayfs is the oracle";
    if (run_command({"which", "setpriv"}).status != 0)
        SKIP_NEEDING("program:setpriv") << "util-linux";
    std::string out[2];
    for (int kernel = 0; kernel < 2; ++kernel) {
        std::string tag = kernel ? "kfa" : "ffa";
        for (const char* d : {"l/tmp", "u", "w", "m"}) make_dirs(dir_ / (tag + "/" + d));
        ASSERT_EQ(chmod((dir_ / tag).c_str(), 0755), 0);
        ASSERT_EQ(chmod((dir_ / (tag + "/l/tmp")).c_str(), 01777), 0);
        std::string opts = "lowerdir=" + (dir_ / (tag + "/l")) +
                           ",upperdir=" + (dir_ / (tag + "/u")) +
                           ",workdir=" + (dir_ / (tag + "/w"));
        std::string mnt = dir_ / (tag + "/m");
        if (kernel) {
            ASSERT_EQ(mount_kernel_overlay(opts, mnt), "");
        } else {
            daemon_ = std::make_unique<ForegroundLaminafs>(opts + ",allow_other", mnt,
                                                           dir_ / (tag + ".log"));
            ASSERT_EQ(daemon_->start(), "");
        }
        MountGuard guard(mnt);
        std::string script = "cd " + mnt +
                             "/tmp || exit 9\n"
                             "for mode in '-l 64k' '-p -o 0 -l 4k' '-z -o 0 -l 4096'; do\n"
                             "  rm -f f; echo data > f; chmod 6666 f\n"
                             "  fallocate $mode f && stat -c \"$mode %A\" f\n"
                             "done\n";
        CommandResult r = run_command({"setpriv", "--reuid=" + std::to_string(kCaller),
                                       "--regid=" + std::to_string(kCaller), "--clear-groups", "sh",
                                       "-c", script});
        out[kernel] = r.out + r.err;
        if (!kernel) daemon_->stop();
    }
    EXPECT_EQ(out[0], out[1]);
    EXPECT_NE(out[1].find("-z -o 0 -l 4096 -rw-rwSrw-"), std::string::npos) << out[1];
}

}  // namespace
}  // namespace lamina::test
