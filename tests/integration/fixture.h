// Shared test fixtures: temp dirs, running commands, mounting laminafs and kernel overlayfs, always unmounting.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "needs.h"
#include "rng.h"

// Skips the current test, saying why, when this process cannot mount FUSE.
// (The reason carries the capability tag of needs.h.)
#define REQUIRE_FUSE()                                                                        \
    do {                                                                                      \
        if (!::lamina::test::can_mount_fuse()) GTEST_SKIP() << ::lamina::test::skip_reason(); \
    } while (0)

namespace lamina::test {

using lamina::Rng;

// Path of the built laminafs binary (meson passes LAMINAFS_BIN; falls back to build/fs/laminafs).
std::string laminafs_binary();

// True when this process may mount (root, /dev/fuse present). Tests GTEST_SKIP() with
// skip_reason() otherwise.
bool can_mount_fuse();
bool can_mount_kernel_overlay();
std::string skip_reason();

// A directory under $TMPDIR (or /tmp) removed with everything below it, after unmounting
// anything still mounted inside it.
class TempDir {
public:
    explicit TempDir(const std::string& tag = "lamina");
    // Under parent instead of $TMPDIR (e.g. /dev/shm for a second filesystem).
    TempDir(const std::string& tag, const std::string& parent);
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }
    std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

private:
    std::string path_;
};

struct CommandResult {
    int status = -1;  // exit code, or 128+signal
    std::string out;  // stdout
    std::string err;  // stderr
};

// Runs argv (no shell) and waits; stdin is /dev/null.
CommandResult run_command(const std::vector<std::string>& argv);
// The same, killing the child (status 128+SIGKILL) once timeout_seconds have passed; the
// one-argument form allows 120 s.
CommandResult run_command(const std::vector<std::string>& argv, int timeout_seconds);
// Runs a shell command line through /bin/sh -c.
// s as one word for sh, in single quotes.
inline std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

CommandResult run_shell(const std::string& cmdline);

// Mounts laminafs: `laminafs -o OPTIONS MOUNTPOINT` plus extra args; returns the command result
// (the daemon detaches once the mount is ready).
CommandResult mount_laminafs(const std::string& options, const std::string& mountpoint,
                             const std::vector<std::string>& extra_args = {});

// Mounts kernel overlayfs with mount(2); returns "" or an error string.
std::string mount_kernel_overlay(const std::string& options, const std::string& mountpoint);

// Unmounts (fusermount3 -u for FUSE, umount2 otherwise, lazily as a last resort) and waits
// until the mount is gone. Safe to call on a path that is not mounted.
void unmount(const std::string& mountpoint);

// True when a filesystem is mounted exactly at path (reads /proc/self/mountinfo).
bool is_mountpoint(const std::string& path);
// The fstype field of the mount at path, or "".
std::string mount_fstype(const std::string& path);

// Aborts the FUSE connection of the mount at mountpoint, as seen in the mount namespace of pid (0:
// this process), through the fusectl filesystem (mounted on /sys/fs/fuse/connections if it is
// not). The only way to free a walk that reached its own mount: a FUSE request the daemon has
// read cannot be given up, so neither the walker nor the daemon can be killed. Needs root.
void abort_fuse_connection(const std::string& mountpoint, pid_t pid = 0);

// RAII: unmounts on scope exit.
class MountGuard {
public:
    explicit MountGuard(std::string mountpoint) : mountpoint_(std::move(mountpoint)) {}
    ~MountGuard() { unmount(mountpoint_); }
    MountGuard(const MountGuard&) = delete;
    MountGuard& operator=(const MountGuard&) = delete;

private:
    std::string mountpoint_;
};

// The statistics line a daemon printed ("stats: k=v ..."), parsed. Reading a key the line
// lacks fails the current test and reads 0, so no assertion passes on a figure that never came.
class DaemonStats {
public:
    DaemonStats() = default;
    explicit DaemonStats(std::map<std::string, long> fields) : fields_(std::move(fields)) {}
    long operator[](const std::string& key) const;
    bool has(const std::string& key) const { return fields_.contains(key); }
    bool empty() const { return fields_.empty(); }

private:
    std::map<std::string, long> fields_;
};

// laminafs run in the foreground as the test's child (`laminafs -f -o OPTIONS MOUNTPOINT`, its
// stdout and stderr appended to a log file), so a test has its pid (to count descriptors, signal
// or kill it) and what it logged.
class ForegroundLaminafs {
public:
    ForegroundLaminafs(std::string options, std::string mountpoint, std::string log_path)
        : options_(std::move(options)), mnt_(std::move(mountpoint)), log_(std::move(log_path)) {}
    ForegroundLaminafs(const ForegroundLaminafs&) = delete;
    ForegroundLaminafs& operator=(const ForegroundLaminafs&) = delete;
    ~ForegroundLaminafs() { stop(); }

    // RLIMIT_NOFILE (soft and hard) for the daemon, set in its process before exec; 0: inherited.
    void limit_descriptors(unsigned long limit) { nofile_ = limit; }
    // Starts the daemon and waits until the mount is there. Returns "" or what went wrong.
    std::string start();
    pid_t pid() const { return pid_; }
    // "" while the daemon runs; otherwise how it ended and what it logged.
    std::string exit_report();
    // SIGKILL, as a crash or the OOM killer would; the mount stays behind, dead.
    void kill_now();
    // Unmounts; the daemon then exits by itself, or is killed after a grace period.
    void stop();
    std::string log_text() const;
    // Sends SIGUSR1 and returns the statistics line the daemon prints, parsed; fails the test and
    // returns no fields if none came within 5 s.
    DaemonStats stats();

private:
    std::string options_;
    std::string mnt_;
    std::string log_;
    pid_t pid_ = -1;
    unsigned long nofile_ = 0;
};

// Descriptors a process holds: all of them, and those on files and directories (libfuse's
// splice pipes come and go with its worker threads, so the file count is the one that must not
// drift). -1 when the process is gone.
struct FdCount {
    int total = -1;
    int files = -1;
};
FdCount count_fds(pid_t pid);

// The process's read(2) count (/proc/PID/io syscr). For a laminafs daemon, one per FUSE request
// it received: each costs it one read of /dev/fuse. Fails the test, and returns 0, without it.
long read_syscalls(pid_t pid);

// Polls pred every 10 ms until it holds or limit has passed; returns its last answer.
template <typename Pred>
bool poll_until(Pred pred, std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return pred();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

// Small file helpers that fail the current test on error.
void write_file(const std::string& path, const std::string& data, mode_t mode = 0644);
std::string read_file(const std::string& path);
void make_dirs(const std::string& path, mode_t mode = 0755);

}  // namespace lamina::test
