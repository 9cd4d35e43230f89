// Clearing a dead FUSE mount at the mount point: a killed daemon leaves its mount behind, and a
// new mount on top of it would be uncovered again by the next unmount.
#include "dead_mount.h"

#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>

#include "mount_table.h"
#include "path_util.h"
#include "unique_fd.h"

extern char** environ;

namespace lamina {

namespace {

// Each start of laminafs on a dead mount before this one stacked another.
constexpr int kMaxDeadMounts = 8;

// The ID of the mount fd lies on, from /proc/self/fdinfo: statx would ask the dead daemon.
int fd_mount_id(int fd) {
    std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("mnt_id:")) return std::atoi(line.c_str() + 7);
    }
    return -1;
}

// The mount whose root path names, when it is a FUSE mount whose daemon is gone. Opening with
// O_PATH asks the daemon nothing; statfs always asks it (stat may be answered from the kernel's
// attribute cache), and the kernel answers ENOTCONN once the daemon's end of the connection is
// closed; ECONNABORTED or ECANCELED while it is still ending the requests the daemon's io_uring
// queues held.
std::optional<MountEntry> dead_fuse_mount(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
    if (!fd) return std::nullopt;
    struct statfs sf;
    if (fstatfs(fd.get(), &sf) == 0) return std::nullopt;
    if (errno != ENOTCONN && errno != ECONNABORTED && errno != ECANCELED) {
        spdlog::debug("{}: not a dead FUSE mount: statfs says {}", path, std::strerror(errno));
        return std::nullopt;
    }
    char where[PATH_MAX];
    std::string link = proc_fd_link(fd.get());
    ssize_t n = readlink(link.c_str(), where, sizeof where - 1);
    if (n < 0) return std::nullopt;
    std::string mount_point(where, static_cast<size_t>(n));
    int id = fd_mount_id(fd.get());
    for (auto& e : read_mount_table()) {
        if (e.id == id && e.mount_point == mount_point && e.fstype.starts_with("fuse")) return e;
    }
    return std::nullopt;
}

// fusermount3 -u -z: without CAP_SYS_ADMIN a user may unmount the FUSE mounts it made.
bool fusermount_lazily(const std::string& mount_point) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    const char* argv[] = {"fusermount3", "-u", "-z", "--", mount_point.c_str(), nullptr};
    pid_t pid = -1;
    int err =
        posix_spawnp(&pid, "fusermount3", &actions, nullptr, const_cast<char**>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) return false;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return false;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

std::string clear_dead_mount(const std::string& mountpoint) {
    for (int round = 0; round < kMaxDeadMounts; ++round) {
        auto dead = dead_fuse_mount(mountpoint);
        if (!dead) return "";
        const std::string& at = dead->mount_point;
        // Both act on the mount at exactly that path, the dead one: it holds nothing.
        if (umount2(at.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && !fusermount_lazily(at)) {
            return "mountpoint '" + mountpoint + "': the daemon of the " + dead->fstype +
                   " mount there is gone (" + std::strerror(ENOTCONN) +
                   ") and it cannot be unmounted here: run 'fusermount3 -u -z " + at + "'";
        }
        spdlog::info("unmounted the dead {} mount at {}", dead->fstype, at);
    }
    return "mountpoint '" + mountpoint + "': more than " + std::to_string(kMaxDeadMounts) +
           " dead FUSE mounts are stacked there";
}

}  // namespace lamina
