// laminafs: parse the options, open the layers, mount, and serve FUSE requests until unmounted.
#include <dirent.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dead_mount.h"
#include "device.h"
#include "fuse_ops.h"
#include "layers.h"
#include "mount_table.h"
#include "options.h"
#include "overlay.h"
#include "ownership.h"
#include "remount.h"

namespace {

using namespace lamina;

constexpr double kCacheTimeout = 86400.0;

// The kernel starts a FUSE mount's readahead at 128 KiB and the INIT reply can only lower it. A
// page fault reads ahead one window, and a reader that faults pages backwards (glibc's memcpy of
// large blocks does) then costs one request per 4 KiB page; a 1 MiB window makes them 1 MiB
// requests, the most one request carries (max_write). Only root in the first user namespace may
// write the mount's bdi, so elsewhere this quietly keeps the kernel's window.
void set_readahead(const std::string& mountpoint, uint32_t kib) {
    if (kib == 0) return;
    std::string device;
    for (const auto& e : read_mount_table())  // the newest mount on the path is ours
        if (e.mount_point == mountpoint && e.fstype.starts_with("fuse")) device = e.device;
    if (device.empty()) return;
    std::string knob = "/sys/class/bdi/" + device + "/read_ahead_kb";
    int fd = ::open(knob.c_str(), O_WRONLY | O_CLOEXEC);
    std::string value = std::to_string(kib);
    if (fd < 0 || ::write(fd, value.data(), value.size()) != static_cast<ssize_t>(value.size()))
        spdlog::debug("readahead stays the kernel's: {}: {}", knob, strerror(errno));
    if (fd >= 0) ::close(fd);
}

// Every file the kernel holds open (a linker's thousands of mmaps) is a descriptor here, so the
// soft limit goes to the hard one; root (CAP_SYS_RESOURCE) lifts the hard limit to fs.nr_open.
void raise_fd_limit() {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t nr_open = 0;
    if (FILE* f = fopen("/proc/sys/fs/nr_open", "re")) {
        unsigned long value = 0;
        if (fscanf(f, "%lu", &value) == 1) nr_open = value;
        fclose(f);
    }
    if (nr_open > rl.rlim_max) {
        struct rlimit wide = {nr_open, nr_open};
        if (setrlimit(RLIMIT_NOFILE, &wide) == 0) return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void setup_logging(const MountOptions& opts) {
    auto logger = spdlog::stderr_color_mt("laminafs");
    logger->set_pattern("laminafs: [%l] %v");
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::from_str(opts.log_level));
}

// Where log lines go once the daemon detaches, which closes its stderr: the log_file (opened
// here, before the mount, so that a path that cannot be written fails the start), or syslog.
// Returns "" or the error; `sink` is left null in the foreground.
std::string open_background_log(const MountOptions& opts, spdlog::sink_ptr& sink) {
    if (!opts.log_file.empty()) {
        // Opened here first: the file must be writable and its directory must exist (spdlog
        // would make missing directories).
        int fd = ::open(opts.log_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) return "log_file '" + opts.log_file + "': " + strerror(errno);
        ::close(fd);
        try {
            sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(opts.log_file, false);
        } catch (const spdlog::spdlog_ex&) {
            return "log_file '" + opts.log_file + "': " + strerror(errno);
        }
        sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e laminafs[%P]: [%l] %v");
    } else if (!opts.foreground && !opts.debug) {
        sink =
            std::make_shared<spdlog::sinks::syslog_sink_mt>("laminafs", LOG_PID, LOG_DAEMON, false);
        sink->set_pattern("[%l] %v");
    }
    return "";
}

// Sends the log to `sink` from now on (after the daemon has detached). With a log_file in the
// foreground, lines go to both.
void use_background_log(const MountOptions& opts, const spdlog::sink_ptr& sink) {
    if (!sink) return;
    auto& sinks = spdlog::default_logger()->sinks();
    if (!opts.foreground && !opts.debug) sinks.clear();
    sinks.push_back(sink);
    spdlog::flush_on(spdlog::level::info);
}

// A line shown whatever the log level (the user asked for it, as with SIGUSR1): on stderr, and
// in the log file or syslog when the daemon has one.
void log_always(const std::string& line) {
    fprintf(stderr, "laminafs: %s\n", line.c_str());
    fflush(stderr);
    for (const auto& sink : spdlog::default_logger()->sinks()) {
        if (std::dynamic_pointer_cast<spdlog::sinks::stderr_color_sink_mt>(sink)) continue;
        spdlog::details::log_msg msg("laminafs", spdlog::level::info, line);
        sink->log(msg);
        sink->flush();
    }
}

// The libfuse mount options: ours translated, the kernel-facing ones passed on.
std::string fuse_mount_options(const MountOptions& opts, bool read_only) {
    std::string o = "fsname=" + opts.source + ",subtype=laminafs,default_permissions";
    // A privileged daemon's mount is open to every user, as a kernel overlay mount is (the
    // kernel checks permissions, default_permissions): a container in a user namespace
    // (podman --uidmap) runs as ids that are not the daemon's.
    if (opts.allow_other || (daemon_is_privileged() && !opts.allow_root)) o += ",allow_other";
    if (opts.allow_root) o += ",allow_root";
    if (read_only) o += ",ro";
    if (opts.noatime) o += ",noatime";
    // libfuse mounts nodev,nosuid unless told otherwise; a container's /dev/null and setuid
    // binaries must work as on the kernel overlay. (fusermount3 forces both for plain users.)
    bool privileged = geteuid() == 0;
    if (opts.nodev)
        o += ",nodev";
    else if (privileged)
        o += ",dev";
    if (opts.nosuid)
        o += ",nosuid";
    else if (privileged)
        o += ",suid";
    if (opts.noexec) o += ",noexec";
    return o;
}

int fail(const std::string& msg) {
    fprintf(stderr, "laminafs: %s\n", msg.c_str());
    return 1;
}

// One thread for the daemon's upkeep: it prints the cache statistics each time SIGUSR1 arrives
// (the signal is blocked in every thread and read from a signalfd here, so nothing runs in a signal
// handler), and gives freed memory back to the system once many nodes were forgotten: glibc keeps
// freed memory in its per-thread arenas, so after a walk of a million files the daemon would
// otherwise stay at its peak RSS for good.
class Housekeeper {
public:
    // Blocks SIGUSR1 in the calling thread (threads started later inherit the mask) and opens the
    // signalfd; call before any thread exists. The signalfd survives fuse_daemonize's fork.
    bool block_signal() {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) return false;
        signal_fd_.reset(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
        return static_cast<bool>(signal_fd_);
    }

    // Starts the reader thread; after the daemon has forked.
    void start(Overlay& overlay, const FuseDevice& device) {
        stop_fd_.reset(eventfd(0, EFD_CLOEXEC));
        if (!signal_fd_ || !stop_fd_) return;
        thread_ = std::thread([this, &overlay, &device] { run(overlay, device); });
    }

    ~Housekeeper() {
        if (!thread_.joinable()) return;
        uint64_t one = 1;
        if (write(stop_fd_.get(), &one, sizeof one) != sizeof one) thread_.detach();
        if (thread_.joinable()) thread_.join();
    }

private:
    // Nodes and index entries released before memory is trimmed, and how often that is checked.
    static constexpr uint64_t kTrimAfterReleases = 4096;
    static constexpr int kTickMs = 2000;

    void run(Overlay& overlay, const FuseDevice& device) {
        pollfd fds[2] = {{signal_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
        uint64_t trimmed_at = 0;
        for (;;) {
            int ready = poll(fds, 2, kTickMs);
            if (ready < 0) {
                if (errno == EINTR) continue;
                return;
            }
            if (ready > 0 && fds[1].revents) return;
            uint64_t released = overlay.table().released_count();
            if (released - trimmed_at >= kTrimAfterReleases) {
                malloc_trim(0);
                trimmed_at = released;
            }
            if (ready == 0) continue;
            signalfd_siginfo info;
            bool got = false;
            while (read(signal_fd_.get(), &info, sizeof info) == sizeof info) got = true;
            if (!got) continue;
            CacheStats stats = overlay.cache_stats();
            stats.uring_requests = device.uring_requests_served();
            log_always("stats: " + format_cache_stats(stats));
        }
    }

    UniqueFd signal_fd_;
    UniqueFd stop_fd_;
    std::thread thread_;
};

// Lets go of every descriptor on a file or directory (layer roots, nodes, open files, pooled
// read descriptors) at once, as soon as the loop has ended and before the teardown, which takes
// a while for a large node table: `umount MERGED` returns before the daemon sees the connection
// end, and until then the layers' mounts are busy for an unmount of their own. Each is replaced
// by a descriptor of an eventfd, so the objects that own them close that one later and no
// number is closed twice. Kept: stdin, stdout, stderr, /dev/fuse (its close, in
// fuse_session_unmount, next, ends the kernel's hold on passthrough backing files) and the
// anonymous ones (eventfds, signalfds, io_uring, pipes, sockets).
void release_layer_descriptors(int fuse_fd) {
    UniqueFd placeholder(eventfd(0, EFD_CLOEXEC));
    DIR* dir = opendir("/proc/self/fd");
    if (!placeholder || !dir) {
        if (dir) closedir(dir);
        return;
    }
    std::vector<int> files;
    while (dirent* e = readdir(dir)) {
        int fd = atoi(e->d_name);
        if (fd <= STDERR_FILENO || fd == fuse_fd || fd == dirfd(dir) || fd == placeholder.get())
            continue;
        char target[64];
        std::string link = proc_fd_link(fd);
        ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
        if (n < 0) continue;
        std::string_view t(target, static_cast<size_t>(n));
        if (t == "/dev/fuse" || t.starts_with("anon_inode:") || t.starts_with("pipe:") ||
            t.starts_with("socket:"))
            continue;
        files.push_back(fd);
    }
    closedir(dir);
    for (int fd : files) dup3(placeholder.get(), fd, O_CLOEXEC);
    spdlog::debug("let go of {} layer descriptors", files.size());
}

struct SessionDeleter {
    void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};

}  // namespace

int main(int argc, char** argv) {
    MountOptions opts;
    if (auto err = parse_command_line(argc, argv, opts); !err.empty()) return fail(err);
    if (opts.show_help) {
        fputs(usage_text(argv[0]).c_str(), stdout);
        return 0;
    }
    if (opts.show_version) {
        printf("laminafs %s (libfuse %s)\n", LAMINA_VERSION, fuse_pkgversion());
        return 0;
    }
    setup_logging(opts);
    if (auto err = clear_dead_mount(opts.mountpoint); !err.empty()) return fail(err);
    if (opts.remount) {
        // The mount's daemon goes on serving it; nothing else to start.
        if (auto err = remount_laminafs(opts); !err.empty()) return fail(err);
        return 0;
    }
    if (auto err = validate_mount_options(opts); !err.empty()) return fail(err);
    spdlog::sink_ptr background_log;
    if (auto err = open_background_log(opts, background_log); !err.empty()) return fail(err);
    umask(0);  // modes of new entries come from the caller, already masked by the kernel
    raise_fd_limit();

    LayerStack stack;
    if (auto err = stack.open(opts); !err.empty()) return fail(err);
    if (stack.has_upper()) {
        if (auto err = stack.prepare_work_dir(); !err.empty()) return fail(err);
    }
    Overlay overlay(opts, stack);
    if (auto err = overlay.init(); !err.empty()) return fail(err);
    Housekeeper housekeeper;
    if (!housekeeper.block_signal())
        return fail("cannot set up SIGUSR1: " + std::string(strerror(errno)));

    std::string mount_opts = fuse_mount_options(opts, overlay.read_only());
    std::vector<const char*> fargv = {argv[0], "-o", mount_opts.c_str()};
    fuse_args args =
        FUSE_ARGS_INIT(static_cast<int>(fargv.size()), const_cast<char**>(fargv.data()));
    // libfuse may allocate while parsing them: free them on every way out.
    std::unique_ptr<fuse_args, void (*)(fuse_args*)> args_owner(&args, fuse_opt_free_args);
    fuse_lowlevel_ops ops = make_fuse_ops();
    // The fast paths, on by default where this kernel and the daemon's privileges allow them.
    // The kernel offers io_uring in the INIT request it sends while mounting: decide before.
    bool admin = daemon_is_privileged();
    bool use_uring = opts.io_uring != Want::Off &&
                     (uring::allowed_on_this_machine(admin) || opts.io_uring == Want::On);
    bool passthrough = opts.passthrough == Want::On || (opts.passthrough == Want::Auto && admin);
    // Beneath libfuse: killpriv v2 (laminafs clears set-id bits, so the kernel stops asking for
    // security.capability on every write), passthrough and FUSE over io_uring, which libfuse 3.14
    // cannot negotiate. It outlives the session, whose I/O it serves.
    FuseDevice device(FuseDevice::Wanted{.killpriv = true,
                                         .passthrough = passthrough,
                                         .insist_passthrough = opts.passthrough == Want::On,
                                         .io_uring = use_uring,
                                         .insist_io_uring = opts.io_uring == Want::On});
    overlay.use_passthrough(&device.passthrough());
    FuseContext glue;
    glue.overlay = &overlay;
    glue.device = &device;
    glue.config.timeout = kCacheTimeout;
    glue.config.posix_acl = !opts.noacl;
    glue.config.export_support = opts.nfs_export;
    // The INIT reply lowers the window to what it offers, so it offers at least as much.
    glue.config.max_readahead = std::max<uint32_t>(1 << 20, opts.readahead_kib * 1024);
    std::unique_ptr<fuse_session, SessionDeleter> se(
        fuse_session_new(&args, &ops, sizeof ops, &glue));
    if (!se) return fail("cannot create the FUSE session");
    glue.se = se.get();
    if (fuse_set_signal_handlers(se.get()) != 0) return fail("cannot install signal handlers");
    if (fuse_session_mount(se.get(), opts.mountpoint.c_str()) != 0) {
        fuse_remove_signal_handlers(se.get());
        return fail("cannot mount on '" + opts.mountpoint + "'");
    }
    set_readahead(opts.mountpoint, opts.readahead_kib);
    if (!device.install(se.get()))
        spdlog::warn(
            "cannot wrap the FUSE device I/O: no passthrough or io_uring, and the kernel asks for "
            "security.capability before every write");
    // The mount exists now, so the parent returns only once `ls MOUNTPOINT` works.
    if (!opts.foreground && !opts.debug) fuse_daemonize(0);
    use_background_log(opts, background_log);
    housekeeper.start(overlay, device);

    int rc;
    if (opts.threads == 1) {
        rc = fuse_session_loop(se.get());
    } else {
        fuse_loop_config* cfg = fuse_loop_cfg_create();
        fuse_loop_cfg_set_clone_fd(cfg, 0);
        if (opts.threads) fuse_loop_cfg_set_max_threads(cfg, opts.threads);
        rc = fuse_session_loop_mt(se.get(), cfg);
        fuse_loop_cfg_destroy(cfg);
    }
    device.stop();
    // The connection is over (or ending, on SIGTERM): no request needs a layer any more.
    release_layer_descriptors(fuse_session_fd(se.get()));
    fuse_session_unmount(se.get());
    fuse_remove_signal_handlers(se.get());
    return rc == 0 ? 0 : 1;
}
