// Shared test fixtures: temp dirs, child processes with captured output, mounts that go away.
#include "fixture.h"

#include <dirent.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "mount_table.h"

namespace lamina::test {

namespace {

// Closes a descriptor once; the fixture cannot depend on the daemon's headers.
class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_;
};

std::string errno_text(int err) {
    return strerror(err);
}

// The path as mountinfo spells it: the parent resolved (it is not the mount itself, so resolving
// it cannot hang on a dead FUSE daemon), the last component kept.
std::string canonical_mount_path(const std::string& path) {
    std::string p = path;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    if (p == "/") return p;
    size_t slash = p.rfind('/');
    std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
    std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
    char resolved[PATH_MAX];
    if (!realpath(parent.c_str(), resolved)) return p;
    std::string out = resolved;
    if (out != "/") out += '/';
    return out + base;
}

bool is_under(const std::string& path, const std::string& dir) {
    return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                           path[dir.size()] == '/');
}

// Runs argv with a deadline; the child is killed when it passes it.
CommandResult run_with_deadline(const std::vector<std::string>& argv, int timeout_seconds) {
    CommandResult result;
    if (argv.empty()) {
        result.status = 127;
        result.err = "run_command: empty argv";
        return result;
    }
    int out_pipe[2], err_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) != 0) {
        result.err = "pipe: " + errno_text(errno);
        return result;
    }
    if (pipe2(err_pipe, O_CLOEXEC) != 0) {
        result.err = "pipe: " + errno_text(errno);
        close(out_pipe[0]);
        close(out_pipe[1]);
        return result;
    }
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);

    pid_t pid = fork();
    if (pid < 0) {
        result.err = "fork: " + errno_text(errno);
        for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
        return result;
    }
    if (pid == 0) {
        // Only async-signal-safe calls from here on.
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, STDIN_FILENO);
        dup2(out_pipe[1], STDOUT_FILENO);
        dup2(err_pipe[1], STDERR_FILENO);
        execvp(cargv[0], cargv.data());
        const char* msg = "exec failed: ";
        ssize_t ignored = write(STDERR_FILENO, msg, strlen(msg));
        const char* why = strerror(errno);
        ignored = write(STDERR_FILENO, why, strlen(why));
        ignored = write(STDERR_FILENO, "\n", 1);
        (void)ignored;
        _exit(127);
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    Fd out_fd(out_pipe[0]), err_fd(err_pipe[0]);

    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
    bool reaped = false, out_open = true, err_open = true, timed_out = false;
    int wstatus = 0;
    // Once the child is gone, a daemon it left behind may still hold the pipes: read what is
    // already buffered and stop at the first quiet moment instead of waiting for EOF.
    while (out_open || err_open) {
        if (!reaped) {
            pid_t r = waitpid(pid, &wstatus, WNOHANG);
            if (r == pid) reaped = true;
        }
        if (!reaped && std::chrono::steady_clock::now() > deadline) {
            kill(pid, SIGKILL);
            timed_out = true;
            waitpid(pid, &wstatus, 0);
            reaped = true;
        }
        pollfd fds[2];
        int n = 0;
        int out_idx = -1, err_idx = -1;
        if (out_open) {
            out_idx = n;
            fds[n++] = {out_fd.get(), POLLIN, 0};
        }
        if (err_open) {
            err_idx = n;
            fds[n++] = {err_fd.get(), POLLIN, 0};
        }
        int ready = poll(fds, n, reaped ? 50 : 100);
        if (ready < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (ready == 0) {
            if (reaped) break;
            continue;
        }
        auto drain = [](int idx, pollfd* set, int fd, std::string& sink, bool& open_flag) {
            if (idx < 0 || !(set[idx].revents & (POLLIN | POLLHUP | POLLERR))) return;
            char buf[4096];
            ssize_t got = read(fd, buf, sizeof buf);
            if (got > 0) {
                sink.append(buf, static_cast<size_t>(got));
            } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
                open_flag = false;
            }
        };
        drain(out_idx, fds, out_fd.get(), result.out, out_open);
        drain(err_idx, fds, err_fd.get(), result.err, err_open);
    }
    if (!reaped) {
        while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
        }
    }
    if (WIFEXITED(wstatus)) {
        result.status = WEXITSTATUS(wstatus);
    } else if (WIFSIGNALED(wstatus)) {
        result.status = 128 + WTERMSIG(wstatus);
    }
    if (timed_out)
        result.err += "run_command: killed after " + std::to_string(timeout_seconds) + " s\n";
    return result;
}

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
    remove(path);  // best effort: a leftover is better than a failing destructor
    return 0;
}

bool fuse_fstype(const std::string& fstype) {
    return fstype.rfind("fuse", 0) == 0;
}

void wait_until_unmounted(const std::string& path, std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (is_mountpoint(path) && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

// Problems carry the "[needs CAPABILITY]" tag of tests/needs.h, since they end up in skips.
std::string fuse_problem() {
    if (geteuid() != 0) return "[needs root] not root (euid " + std::to_string(geteuid()) + ")";
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) return "[needs fuse] cannot open /dev/fuse: " + errno_text(errno);
    close(fd);
    return "";
}

// Tries one real overlay mount, so kernels without overlay (or sandboxes forbidding it) skip.
std::string kernel_overlay_problem() {
    if (geteuid() != 0) return "[needs root] kernel overlayfs needs root";
    TempDir dir("lamina-probe");
    for (const char* sub : {"lower", "upper", "work", "mnt"}) mkdir((dir / sub).c_str(), 0755);
    std::string opts = "lowerdir=" + (dir / "lower") + ",upperdir=" + (dir / "upper") +
                       ",workdir=" + (dir / "work");
    std::string err = mount_kernel_overlay(opts, dir / "mnt");
    if (!err.empty()) return "[needs overlay] cannot mount kernel overlayfs: " + err;
    unmount(dir / "mnt");
    return "";
}

const std::string& cached_kernel_overlay_problem() {
    static const std::string problem = kernel_overlay_problem();
    return problem;
}

}  // namespace

namespace {

std::string built_laminafs() {
    if (const char* bin = getenv("LAMINAFS_BIN"); bin && *bin) return bin;
    if (const char* root = getenv("LAMINA_SOURCE_ROOT"); root && *root) {
        return std::string(root) + "/build/fs/laminafs";
    }
    return "build/fs/laminafs";
}

}  // namespace

// With $LAMINAFS_EXTRA_OPTIONS (say "io_uring=off,passthrough=off"), a wrapper that gives every
// mount those options before the test's own, so a suite runs again in another mode and an option
// a test sets itself still wins.
std::string laminafs_binary() {
    static const std::string bin = [] {
        const char* extra = getenv("LAMINAFS_EXTRA_OPTIONS");
        std::string real = built_laminafs();
        if (!extra || !*extra) return real;
        static TempDir dir("lamina-extra-options");
        ::chmod(dir.path().c_str(), 0755);
        std::string wrapper = dir / "laminafs";
        write_file(wrapper, "#!/bin/sh\nexec " + shell_quote(real) + " -o " + shell_quote(extra) +
                                " \"$@\"\n");
        ::chmod(wrapper.c_str(), 0755);
        return wrapper;
    }();
    return bin;
}

bool can_mount_fuse() {
    return fuse_problem().empty();
}

bool can_mount_kernel_overlay() {
    return cached_kernel_overlay_problem().empty();
}

std::string skip_reason() {
    std::string reason = fuse_problem();
    if (geteuid() == 0) {
        const std::string& overlay = cached_kernel_overlay_problem();
        if (!overlay.empty()) reason += (reason.empty() ? "" : "; ") + overlay;
    }
    return reason.empty() ? "nothing missing" : reason;
}

TempDir::TempDir(const std::string& tag) : TempDir(tag, "") {}

TempDir::TempDir(const std::string& tag, const std::string& parent) {
    std::string base = parent;
    if (base.empty()) {
        const char* tmp = getenv("TMPDIR");
        base = tmp && *tmp ? tmp : "/tmp";
    }
    std::string templ = base + "/" + tag + ".XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) {
        ADD_FAILURE() << "mkdtemp " << templ << ": " << strerror(errno);
        return;
    }
    // Resolved, so paths built from it match what mountinfo reports.
    char resolved[PATH_MAX];
    path_ = realpath(buf.data(), resolved) ? resolved : buf.data();
}

TempDir::~TempDir() {
    if (path_.empty()) return;
    std::vector<std::string> mounted;
    for (const auto& entry : lamina::read_mount_table()) {
        if (is_under(entry.mount_point, path_)) mounted.push_back(entry.mount_point);
    }
    std::sort(mounted.begin(), mounted.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    mounted.erase(std::unique(mounted.begin(), mounted.end()), mounted.end());
    for (const auto& mp : mounted) unmount(mp);
    // FTW_MOUNT: never delete through a mount that refused to go away.
    nftw(path_.c_str(), remove_entry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

CommandResult run_command(const std::vector<std::string>& argv) {
    return run_with_deadline(argv, 120);
}

CommandResult run_command(const std::vector<std::string>& argv, int timeout_seconds) {
    return run_with_deadline(argv, timeout_seconds);
}

CommandResult run_shell(const std::string& cmdline) {
    return run_command({"/bin/sh", "-c", cmdline});
}

CommandResult mount_laminafs(const std::string& options, const std::string& mountpoint,
                             const std::vector<std::string>& extra_args) {
    std::vector<std::string> argv{laminafs_binary()};
    if (!options.empty()) {
        argv.push_back("-o");
        argv.push_back(options);
    }
    argv.push_back(mountpoint);
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    return run_command(argv, 60);
}

std::string mount_kernel_overlay(const std::string& options, const std::string& mountpoint) {
    // The atime options are mount flags, which mount(8) would take out of the data string.
    static const std::pair<const char*, unsigned long> kFlags[] = {{"noatime", MS_NOATIME},
                                                                   {"relatime", MS_RELATIME},
                                                                   {"strictatime", MS_STRICTATIME},
                                                                   {"nodiratime", MS_NODIRATIME}};
    unsigned long flags = 0;
    std::string data;
    std::stringstream items(options);
    for (std::string item; std::getline(items, item, ',');) {
        bool flag = false;
        for (const auto& [name, bit] : kFlags) {
            if (item == name) {
                flags |= bit;
                flag = true;
            }
        }
        if (!flag) data += (data.empty() ? "" : ",") + item;
    }
    if (mount("overlay", mountpoint.c_str(), "overlay", flags, data.c_str()) != 0) {
        return "mount overlay on " + mountpoint + ": " + errno_text(errno);
    }
    return "";
}

void unmount(const std::string& mountpoint) {
    std::string path = canonical_mount_path(mountpoint);
    // Several mounts may be stacked on one path; peel them off, bounded.
    for (int attempt = 0; attempt < 8 && is_mountpoint(path); ++attempt) {
        if (fuse_fstype(mount_fstype(path))) {
            run_command({"fusermount3", "-u", path}, 15);
            wait_until_unmounted(path, std::chrono::milliseconds(500));
        }
        if (is_mountpoint(path) && umount2(path.c_str(), 0) == 0) continue;
        if (is_mountpoint(path)) umount2(path.c_str(), MNT_DETACH);
    }
    wait_until_unmounted(path, std::chrono::seconds(10));
}

void abort_fuse_connection(const std::string& mountpoint, pid_t pid) {
    const std::string fusectl = "/sys/fs/fuse/connections";
    bool mounted = false;
    for (const auto& e : lamina::read_mount_table()) mounted = mounted || e.mount_point == fusectl;
    if (!mounted) mount("fusectl", fusectl.c_str(), "fusectl", 0, nullptr);
    std::ifstream in(pid ? "/proc/" + std::to_string(pid) + "/mountinfo" : "/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        std::istringstream fields(line);
        std::string id, parent, device, root, at;
        if (!(fields >> id >> parent >> device >> root >> at)) continue;
        if (lamina::unescape_mountinfo(at) != mountpoint ||
            line.find(" - fuse") == std::string::npos)
            continue;
        // A FUSE connection is named by its device number: the minor, as the major is 0.
        std::string conn = fusectl + "/" + device.substr(device.find(':') + 1) + "/abort";
        int fd = open(conn.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "1", 1) != 1)
                ADD_FAILURE() << "abort " << conn << ": " << strerror(errno);
            close(fd);
        }
    }
}

bool is_mountpoint(const std::string& path) {
    std::string want = canonical_mount_path(path);
    for (const auto& entry : lamina::read_mount_table()) {
        if (entry.mount_point == want) return true;
    }
    return false;
}

std::string mount_fstype(const std::string& path) {
    std::string want = canonical_mount_path(path);
    std::string fstype;
    for (const auto& entry : lamina::read_mount_table()) {
        if (entry.mount_point == want) fstype = entry.fstype;
    }
    return fstype;
}

void write_file(const std::string& path, const std::string& data, mode_t mode) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        ADD_FAILURE() << "open " << path << ": " << strerror(errno);
        return;
    }
    Fd owner(fd);
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            ADD_FAILURE() << "write " << path << ": " << strerror(errno);
            return;
        }
        done += static_cast<size_t>(n);
    }
    // The umask may have narrowed the mode; tests state the mode they mean.
    if (fchmod(fd, mode) != 0) ADD_FAILURE() << "chmod " << path << ": " << strerror(errno);
}

std::string read_file(const std::string& path) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ADD_FAILURE() << "open " << path << ": " << strerror(errno);
        return "";
    }
    Fd owner(fd);
    std::string data;
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            ADD_FAILURE() << "read " << path << ": " << strerror(errno);
            return data;
        }
        if (n == 0) break;
        data.append(buf, static_cast<size_t>(n));
    }
    return data;
}

void make_dirs(const std::string& path, mode_t mode) {
    if (path.empty()) return;
    size_t pos = 0;
    while (pos != std::string::npos) {
        pos = path.find('/', pos + 1);
        std::string prefix = path.substr(0, pos);
        if (prefix.empty()) continue;
        if (mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
            ADD_FAILURE() << "mkdir " << prefix << ": " << strerror(errno);
            return;
        }
    }
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        ADD_FAILURE() << "make_dirs " << path << ": not a directory";
    }
}

std::string ForegroundLaminafs::start() {
    std::vector<std::string> argv{laminafs_binary(), "-f", "-o", options_, mnt_};
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return "open " + log_ + ": " + strerror(errno);
    pid_ = fork();
    if (pid_ < 0) {
        ::close(log_fd);
        return std::string("fork: ") + strerror(errno);
    }
    if (pid_ == 0) {
        int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, STDIN_FILENO);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        struct rlimit limit = {nofile_, nofile_};
        if (nofile_ && setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(126);
        execv(cargv[0], cargv.data());
        _exit(127);
    }
    ::close(log_fd);
    bool exited = false;
    bool up = poll_until(
        [&] {
            int status;
            if (waitpid(pid_, &status, WNOHANG) == pid_) {
                exited = true;
                return true;
            }
            return is_mountpoint(mnt_);
        },
        std::chrono::seconds(15));
    if (exited) {
        pid_ = -1;
        return "laminafs exited before mounting: " + log_text();
    }
    if (!up) return "laminafs did not mount " + mnt_ + " within 15 s: " + log_text();
    return "";
}

std::string ForegroundLaminafs::exit_report() {
    if (pid_ <= 0) return "not running";
    int status;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return "";
    pid_ = -1;
    std::string how = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                          : "exited with " + std::to_string(WEXITSTATUS(status));
    std::string log = log_text();
    if (log.size() > 4000) log = "...\n" + log.substr(log.size() - 4000);
    return "laminafs " + how + "; its log:\n" + log;
}

void ForegroundLaminafs::kill_now() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

void ForegroundLaminafs::stop() {
    unmount(mnt_);
    if (pid_ <= 0) return;
    int status;
    bool gone = poll_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; },
                           std::chrono::seconds(5));
    if (!gone) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
    }
    pid_ = -1;
}

std::string ForegroundLaminafs::log_text() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

long DaemonStats::operator[](const std::string& key) const {
    auto it = fields_.find(key);
    if (it != fields_.end()) return it->second;
    ADD_FAILURE() << "the daemon's stats line has no " << key << " (it has " << fields_.size()
                  << " fields)";
    return 0;
}

DaemonStats ForegroundLaminafs::stats() {
    std::map<std::string, long> fields;
    size_t before = log_text().size();
    kill(pid_, SIGUSR1);
    bool arrived = poll_until(
        [&] {
            std::string text = log_text();
            size_t at = text.find("stats: ", before);
            size_t end = at == std::string::npos ? at : text.find('\n', at);
            if (end == std::string::npos) return false;
            std::istringstream line(text.substr(at + 7, end - at - 7));
            std::string field;
            while (line >> field) {
                size_t eq = field.find('=');
                if (eq != std::string::npos)
                    fields[field.substr(0, eq)] = std::stol(field.substr(eq + 1));
            }
            return true;
        },
        std::chrono::seconds(5));
    if (!arrived) ADD_FAILURE() << "no stats line from laminafs (pid " << pid_ << ") within 5 s";
    return DaemonStats(std::move(fields));
}

long read_syscalls(pid_t pid) {
    std::ifstream io("/proc/" + std::to_string(pid) + "/io");
    std::string key;
    long value = 0;
    while (io >> key >> value)
        if (key == "syscr:") return value;
    ADD_FAILURE() << "no syscr in /proc/" << pid << "/io";
    return 0;
}

FdCount count_fds(pid_t pid) {
    std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
    FdCount c;
    DIR* d = opendir(fd_dir.c_str());
    if (!d) return c;
    c.total = c.files = 0;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        ++c.total;
        char target[4096];
        ssize_t n = readlink((fd_dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
        if (n > 0 && target[0] == '/') ++c.files;
    }
    closedir(d);
    return c;
}

}  // namespace lamina::test
