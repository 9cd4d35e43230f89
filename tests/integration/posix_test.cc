// POSIX behaviours a filesystem conformance suite checks, compared with kernel overlayfs on the
// same layers: each scenario runs against both mounts and writes a transcript of what every
// call returned; the transcripts must be equal.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>

#include "fixture.h"
#include "needs.h"

namespace lamina::test {
namespace {

// What a call gave: "ok", or the errno's name.
std::string rc(int result) {
    if (result >= 0) return "ok";
    return std::string("ERR ") + strerrorname_np(errno);
}

std::string stat_line(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return "fstat " + rc(-1);
    char buf[128];
    snprintf(buf, sizeof buf, "fstat ok mode=%o nlink=%lu uid=%u", st.st_mode & 07777,
             static_cast<unsigned long>(st.st_nlink), st.st_uid);
    return buf;
}

// Entries getdents gives on an open directory, besides "." and "..".
std::string listing(int fd) {
    int dup_fd = dup(fd);
    DIR* d = fdopendir(dup_fd);
    if (!d) return "opendir " + rc(-1);
    rewinddir(d);
    int n = 0;
    while (dirent* e = readdir(d))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) ++n;
    closedir(d);
    return "getdents entries=" + std::to_string(n);
}

using Scenario = std::function<std::string(const std::string& mnt)>;

// Runs `scenario` on a fresh lower (made by `make_lower`) mounted by laminafs and by the
// kernel, and expects the same transcript from both.
void expect_same_as_kernel(const std::function<void(const std::string&)>& make_lower,
                           const Scenario& scenario, const std::string& extra = "") {
    if (!can_mount_fuse() || !can_mount_kernel_overlay())
        SKIP_NEEDING(can_mount_fuse() ? "overlay" : "fuse")
            << "needs both FUSE and kernel overlayfs: " << skip_reason();
    std::string transcript[2];
    for (int kernel = 0; kernel < 2; ++kernel) {
        TempDir dir("lamina-posix");
        std::string lo = dir / "lo", up = dir / "up", wk = dir / "wk", m = dir / "m";
        for (const auto& d : {lo, up, wk, m}) make_dirs(d);
        make_lower(lo);
        std::string opts = "lowerdir=" + lo + ",upperdir=" + up + ",workdir=" + wk;
        if (!extra.empty()) opts += "," + extra;
        if (kernel) {
            ASSERT_EQ(mount_kernel_overlay(opts, m), "");
        } else {
            CommandResult r = mount_laminafs(opts, m);
            ASSERT_EQ(r.status, 0) << r.err;
        }
        MountGuard guard(m);
        transcript[kernel] = scenario(m);
    }
    EXPECT_EQ(transcript[0], transcript[1]) << "laminafs first, kernel overlayfs second";
    if (getenv("LAMINA_SHOW_TRANSCRIPT"))
        printf("%s\n---\n%s\n", transcript[0].c_str(), transcript[1].c_str());
}

void nothing(const std::string&) {}

void lower_dirs_and_files(const std::string& lo) {
    make_dirs(lo + "/ld1/sub");
    make_dirs(lo + "/ld2/sub");
    write_file(lo + "/lf1", "one\n");
    write_file(lo + "/lf2", "two\n");
}

// Every call on a descriptor whose name was replaced by rename: fstat, fchmod, fchown,
// fsetxattr, getdents.
std::string calls_on(int fd, bool is_dir) {
    std::string out = stat_line(fd) + "\n";
    out += "fchmod " + rc(fchmod(fd, is_dir ? 0711 : 0600)) + "\n";
    out += "fchown " + rc(fchown(fd, 1234, 1234)) + "\n";
    out += "fsetxattr " + rc(fsetxattr(fd, "user.k", "v", 1, 0)) + "\n";
    char value[8] = {};
    out += "fgetxattr " + rc(static_cast<int>(fgetxattr(fd, "user.k", value, sizeof value))) + " " +
           value + "\n";
    out += stat_line(fd) + "\n";
    if (is_dir) out += listing(fd) + "\n";
    return out;
}

TEST(Posix, an_open_directory_replaced_by_rename_answers_as_on_the_kernel) {
    expect_same_as_kernel(
        lower_dirs_and_files,
        [](const std::string& m) {
            std::string out;
            // Made through the mount (upper only), and from the lower layer.
            for (const char* pair : {"d", "ld"}) {
                std::string a = m + "/" + pair + "1", b = m + "/" + pair + "2";
                if (std::string(pair) == "d") {
                    mkdir(a.c_str(), 0755);
                    mkdir(b.c_str(), 0755);
                } else {
                    out += "rmdir sub " + rc(rmdir((a + "/sub").c_str())) + "\n";
                    out += "rmdir sub " + rc(rmdir((b + "/sub").c_str())) + "\n";
                }
                int fd = open(b.c_str(), O_RDONLY | O_DIRECTORY);
                out += std::string(pair) + ": open " + rc(fd) + "\n";
                out += "rename " + rc(rename(a.c_str(), b.c_str())) + "\n";
                if (fd >= 0) {
                    out += calls_on(fd, true);
                    close(fd);
                }
            }
            return out;
        },
        "redirect_dir=on");
}

TEST(Posix, an_open_file_replaced_by_rename_answers_as_on_the_kernel) {
    expect_same_as_kernel(lower_dirs_and_files, [](const std::string& m) {
        std::string out;
        for (const char* pair : {"f", "lf"}) {
            std::string a = m + "/" + pair + "1", b = m + "/" + pair + "2";
            if (std::string(pair) == "f") {
                write_file(a, "one\n");
                write_file(b, "two\n");
            }
            int fd = open(b.c_str(), O_RDWR);
            out += std::string(pair) + ": open " + rc(fd) + "\n";
            out += "rename " + rc(rename(a.c_str(), b.c_str())) + "\n";
            if (fd >= 0) {
                out += calls_on(fd, false);
                close(fd);
            }
        }
        return out;
    });
}

TEST(Posix, directory_link_counts_are_the_kernels) {
    expect_same_as_kernel(lower_dirs_and_files, [](const std::string& m) {
        std::string out;
        mkdir((m + "/ld1/new").c_str(), 0755);  // ld1 merges an upper copy with the lower
        mkdir((m + "/fresh").c_str(), 0755);    // upper only
        mkdir((m + "/fresh/sub").c_str(), 0755);
        for (const char* d : {"", "/ld1", "/ld2", "/ld2/sub", "/fresh", "/ld1/new"}) {
            struct stat st;
            int r = stat((m + d).c_str(), &st);
            out += std::string(d) + " " + rc(r) + " nlink=" + std::to_string(r ? 0 : st.st_nlink) +
                   "\n";
        }
        return out;
    });
}

// New entries under a default ACL take their mode and ACLs from it and not the umask; elsewhere
// the umask applies (the daemon applies it itself since it takes FUSE_DONT_MASK).
TEST(Posix, default_acls_are_inherited_as_on_the_kernel) {
    if (run_command({"which", "setfacl"}).status != 0)
        SKIP_NEEDING("program:setfacl") << "the acl package";
    expect_same_as_kernel(lower_dirs_and_files, [](const std::string& m) {
        std::string out;
        std::string d = m + "/ld1";
        auto r = run_command({"setfacl", "-d", "-m", "u::rwx,g::r-x,o::---,u:1000:rwx", d});
        out += "setfacl " + std::to_string(r.status) + r.err + "\n";
        auto shell = [&](const std::string& script) {
            CommandResult c = run_command({"sh", "-c", script});
            out += c.out + c.err;
        };
        shell("cd " + m +
              " && umask 0 && touch ld1/f && mkdir ld1/new && mkdir ld1/new/deeper && "
              "umask 077 && touch g ld1/h && umask 022 && mkdir e && "
              "stat -c '%n %A' ld1/f ld1/new ld1/new/deeper g ld1/h e && "
              "getfacl -cp ld1/f ld1/new ld1/new/deeper ld1/h e");
        // Not vacuous: the default ACL, not the umask, made these.
        EXPECT_NE(out.find("ld1/f -rw-rw----"), std::string::npos) << out;
        EXPECT_NE(out.find("ld1/h -rw-rw----"), std::string::npos) << out;
        EXPECT_NE(out.find("g -rw-------"), std::string::npos) << out;
        return out;
    });
}

// chattr and lsattr through the mount: the flags of the copy that shows, set on the upper copy,
// and enforced there (immutable, append-only).
TEST(Posix, file_attributes_work_as_on_the_kernel) {
    if (run_command({"which", "chattr"}).status != 0) SKIP_NEEDING("program:chattr") << "e2fsprogs";
    expect_same_as_kernel(lower_dirs_and_files, [](const std::string& m) {
        CommandResult c =
            run_command({"sh", "-c",
                         "cd " + m +
                             " && lsattr -d lf1 ld1 && chattr +i lf1 && chattr +a ld2 && "
                             "lsattr -d lf1 ld2; echo more >> lf1; echo \"append $?\"; rm lf1; "
                             "echo \"rm $?\"; touch ld2/new; echo \"create $?\"; rm ld2/new; "
                             "echo \"unlink $?\"; chattr -i lf1 && chattr -a ld2 && rm ld2/new && "
                             "lsattr -d lf1 ld2"});
        std::string out = c.out + c.err;
        EXPECT_NE(out.find("----i"), std::string::npos) << out;  // not vacuous
        return out;
    });
}

// Whether reading moves atime, under each atime option, for a lower file, an upper file (twice),
// a lower directory and an upper directory. Kernel overlayfs reads its real files with
// O_NOATIME and updates only upper copies, by its own mount's rule and then the upper
// filesystem's.
std::string atime_transcript(const std::string& m) {
    const timespec days_ago[2] = {{time(nullptr) - 3 * 86400, 0}, {0, UTIME_OMIT}};
    auto age = [&](const std::string& path) {
        return rc(utimensat(AT_FDCWD, path.c_str(), days_ago, AT_SYMLINK_NOFOLLOW));
    };
    auto atime = [](const std::string& path) {
        struct stat st {};
        stat(path.c_str(), &st);
        return st.st_atim;
    };
    auto moved = [&](const std::string& path, const std::function<void()>& touch) {
        timespec before = atime(path);
        touch();
        timespec after = atime(path);
        bool same = before.tv_sec == after.tv_sec && before.tv_nsec == after.tv_nsec;
        return std::string(same ? "kept" : "moved");
    };
    auto read_all = [](const std::string& path) { (void)read_file(path); };
    auto list = [](const std::string& path) {
        DIR* d = opendir(path.c_str());
        if (!d) return;
        while (readdir(d)) {
        }
        closedir(d);
    };
    std::string out;
    write_file(m + "/uf", "upper\n");
    make_dirs(m + "/ud");
    write_file(m + "/ud/x", "");
    out += "age uf " + age(m + "/uf") + " ud " + age(m + "/ud") + "\n";
    out += "lower file read: " + moved(m + "/lf1", [&] { read_all(m + "/lf1"); }) + "\n";
    out += "upper file read: " + moved(m + "/uf", [&] { read_all(m + "/uf"); }) + "\n";
    out += "upper file read again: " + moved(m + "/uf", [&] { read_all(m + "/uf"); }) + "\n";
    out += "lower dir listed: " + moved(m + "/ld1", [&] { list(m + "/ld1"); }) + "\n";
    out += "upper dir listed: " + moved(m + "/ud", [&] { list(m + "/ud"); }) + "\n";
    return out;
}

void aged_lower(const std::string& lo) {
    lower_dirs_and_files(lo);
    const timespec days_ago[2] = {{time(nullptr) - 3 * 86400, 0}, {0, UTIME_OMIT}};
    for (const char* name : {"/lf1", "/ld1"})
        utimensat(AT_FDCWD, (lo + name).c_str(), days_ago, AT_SYMLINK_NOFOLLOW);
}

TEST(Posix, atime_options_are_honoured_as_on_the_kernel) {
    for (const char* option : {"", "relatime", "noatime", "nodiratime", "strictatime"}) {
        SCOPED_TRACE(option);
        expect_same_as_kernel(aged_lower, atime_transcript, option);
    }
}

}  // namespace
}  // namespace lamina::test
