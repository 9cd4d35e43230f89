// Shared test fixtures: temp dirs, running commands, mounting laminafs and kernel overlayfs, always unmounting.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

// Skips the current test, saying why, when this process cannot mount FUSE.
#define REQUIRE_FUSE()                                                                        \
    do {                                                                                      \
        if (!::lamina::test::can_mount_fuse()) GTEST_SKIP() << ::lamina::test::skip_reason(); \
    } while (0)

namespace lamina::test {

// splitmix64: seeded randomness that gives the same sequence on every platform, so a printed
// seed reproduces a generated stack or operation sequence anywhere.
class Rng {
public:
    explicit Rng(uint64_t seed) : state_(seed) {}
    uint64_t next() {
        uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
    uint64_t between(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }
    bool chance(unsigned percent) { return below(100) < percent; }
    template <class T>
    const T& pick(const std::vector<T>& from) {
        return from[below(from.size())];
    }

private:
    uint64_t state_;
};

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

// Small file helpers that fail the current test on error.
void write_file(const std::string& path, const std::string& data, mode_t mode = 0644);
std::string read_file(const std::string& path);
void make_dirs(const std::string& path, mode_t mode = 0755);

}  // namespace lamina::test
