// Mount options: parsing the command line and the -o string the way mount(8), fuse-overlayfs and podman pass them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lamina {

// The most lower layers one mount accepts.
inline constexpr size_t kMaxLowerLayers = 128;

enum class RedirectDir { On, Follow, NoFollow, Off };
enum class Xino { Auto, On, Off };

// A fast path the kernel may or may not offer. Auto: used where the kernel and the daemon's
// privileges allow it, silently left off elsewhere. On: also asked for, with a warning when it
// cannot be had. Off: never.
enum class Want { Auto, On, Off };

// One CONTAINER:HOST:SIZE range of a uidmapping=/gidmapping= option.
struct IdMapRange {
    uint32_t container = 0;
    uint32_t host = 0;
    uint32_t size = 0;
};

struct MountOptions {
    std::vector<std::string> lowerdirs;  // top layer first, absolute after validate()
    std::string upperdir;                // empty: read-only mount
    std::string workdir;
    std::string mountpoint;
    std::string source = "laminafs";  // fsname shown in /proc/mounts

    bool foreground = false;
    bool debug = false;
    bool read_only = false;  // "ro", or no upperdir
    bool userxattr = false;  // write user.overlay.* instead of trusted.overlay.*
    RedirectDir redirect_dir = RedirectDir::On;
    bool allow_other = false;
    bool allow_root = false;
    bool default_permissions = true;
    bool noatime = false;
    bool strictatime = false;
    bool nodiratime = false;
    // "remount": mount(8) asks to change a laminafs mount's flags (ro/rw, nosuid...): the
    // helper applies them with mount(2) and exits; no daemon is started (remount.cc).
    bool remount = false;
    bool nodev = false;
    bool nosuid = false;
    bool noexec = false;
    std::string log_level = "warn";  // spdlog level name; -d sets "debug"
    // Where log lines go once the daemon has detached: this file (appended to), or syslog when
    // empty. In the foreground they go to stderr.
    std::string log_file;
    uint32_t threads = 0;  // 0: libfuse default
    // The mount's readahead window in KiB, written to its bdi once mounted (the FUSE protocol
    // cannot raise it above the kernel's 128 KiB start); 0 leaves the kernel's choice.
    uint32_t readahead_kib = 1024;
    // Lower directory listings cached, counted in entries over all directories (0: none kept).
    uint32_t dir_cache_entries = 1'000'000;
    // File handles (name_to_handle_at, NFS re-export): the kernel may ask the daemon for a file
    // it forgot by the handle's id ("nfs_export", as the kernel's overlay calls it), and
    // handle_cache is how many forgotten files stay reachable so (NodeTable::set_retired_limit).
    bool nfs_export = true;
    uint32_t handle_cache = 16384;
    bool show_help = false;
    bool show_version = false;

    // Lazy lower layers (lazy.h): the fetcher that completes a placeholder, which lowers (1 is
    // the top) hold placeholders, and how long a first open waits for the fetcher. Besides the
    // lowers lazy_layers= names, validate_mount_options finds the store layers that are lazy
    // (lazy_detect; lazy_layers=none turns it off and names none) and, when there are any, the
    // fetcher if lazy_fetch= gave none.
    std::string lazy_fetch;
    std::vector<uint32_t> lazy_layers;
    bool lazy_detect = true;
    uint32_t lazy_timeout = 30;

    // fuse-overlayfs/podman options (ownership.h applies the mappings and squash options).
    std::string uidmapping;  // as given; parsed into uid_map
    std::string gidmapping;
    std::vector<IdMapRange> uid_map;
    std::vector<IdMapRange> gid_map;
    bool squash_to_root = false;
    std::optional<uint32_t> squash_to_uid;
    std::optional<uint32_t> squash_to_gid;
    bool static_nlink = false;
    bool noacl = false;
    Xino xino = Xino::Auto;
    bool fsync = true;  // fsync=0: skip fsync on the upper layer
    // FUSE passthrough (Linux 6.9+, CAP_SYS_ADMIN): reads, writes and mmap of open files go
    // straight to the layer file (passthrough.h). On by default where it can be had.
    Want passthrough = Want::Auto;
    // FUSE over io_uring (Linux 6.14+): per-CPU request queues served by pinned threads
    // (uring.h). On by default where the kernel offers it; a root daemon turns the fuse module's
    // enable_uring on for it (uring::allowed_on_this_machine).
    Want io_uring = Want::Auto;
    bool volatile_mount = false;
};

// Splits a lowerdir value on ':' honouring "\:" (and "\\") escapes.
std::vector<std::string> split_lowerdir(std::string_view value);

// Parses a uidmapping=/gidmapping= value, CONTAINER:HOST:SIZE[:CONTAINER:HOST:SIZE...], with
// the leading ':' containers/storage puts before the first range. Returns "" or a one-line error; ranges receives the parsed ranges.
std::string parse_id_mapping(std::string_view value, std::vector<IdMapRange>& ranges);

// Applies one comma-separated -o string. Empty items (a trailing comma) are ignored.
// Returns "" or a one-line error naming the bad option.
std::string apply_mount_options(std::string_view optstr, MountOptions& opts);

// Parses argv: [-f] [-d] [-h] [-V|--version] [-o OPTS]... [SOURCE] MOUNTPOINT.
// Returns "" or a one-line error.
std::string parse_command_line(int argc, char** argv, MountOptions& opts);

// The --help text.
std::string usage_text(std::string_view program);

// Whether the resolved path lies strictly beneath the resolved directory dir.
bool is_inside(const std::string& path, const std::string& dir);

// Resolves relative paths against the cwd and checks the layer set: count <= kMaxLowerLayers,
// every directory exists and is a directory, no two of the lowers, the upper and the work dir
// the same or one inside another, workdir on the same filesystem as upperdir, mountpoint a
// usable directory; then the lazy layers (find_lazy_layers).
// Returns "" or a one-line error naming the problem and the path.
std::string validate_mount_options(MountOptions& opts);

// The lazy lower layers of resolved lowerdirs: those lazy_layers= names, and (unless
// lazy_layers=none) every lower that is the tree of a lazy store layer, LAYER/diff with
// LAYER/lazy/source.json beside it (lazy_record.h), added to lazy_layers. When there are any and
// lazy_fetch= is not given, the fetcher is lamina-lazy-fetch beside the running binary, else on
// PATH. Returns "" or a one-line error: a number past the last lower, or no fetcher to be found
// (naming the first lazy layer).
std::string find_lazy_layers(MountOptions& opts);

}  // namespace lamina
