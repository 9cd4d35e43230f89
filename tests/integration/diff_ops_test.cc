// Differential operation fuzzer: one seeded random sequence of changes, applied through kernel overlayfs and laminafs, must give the same results and the same trees.
//
// For each depth (number of lower layers) random lower layers are written once -- files,
// directories, symlinks, hardlinks, fifos, whiteouts (char 0/0), opaque directories
// (trusted.overlay.opaque=y), user.* xattrs -- and copied with `cp -a --preserve=all` for each
// side, which then gets its own empty upper and work directory. Kernel overlayfs (the oracle,
// redirect_dir=on,index=off,metacopy=off) and laminafs (LAMINAFS_BIN) mount their copies. Random
// operations, chosen from the current merged tree plus some missing names, run through both mount
// points; every return code and errno must agree, and after every operation (or every few) the
// merged trees (names, types, modes, owners, sizes, contents, symlink targets, xattrs, nlink of
// non-directories) and the entries of the upper layers are compared. A "remount" operation
// unmounts both and mounts them again over the same layers, so state kept only in memory (or in a
// FUSE cache) shows. A "rotate" operation does the same after pushing each side's upper layer
// down as its new top lower layer (up to 8 lowers), with a fresh upper: redirects, whiteouts and
// opaque directories one implementation wrote are then read from below, as a committed container
// layer is. At the end of a depth each implementation mounts the other's upper layer and
// must show the same tree. The first divergence stops that depth's run and prints the operations
// leading to it.
//
// Dimensions beyond that (each a generator feature LAMINA_FUZZ_SKIP names):
// - callers: about a third of the operations run in a child process as uid 1000, 1001 or
//   65534 with a gid and supplementary groups of {0, 1000, 1001} (setgroups, setresgid,
//   setresuid: no capabilities), under the operation's umask; shared_dirs makes lower
//   directories sticky 1777 or setgid 2775. Results, EACCES/EPERM included, must agree.
// - layer shapes: xattr whiteouts (empty file with trusted.overlay.whiteout in a directory
//   marked opaque=x, as is the layer root) and opaque=x directories (xattr_whiteouts); OCI
//   ".wh.NAME" and ".wh..wh..opq" in laminafs's copy of the lowers where the kernel's copy has
//   char 0/0 and opaque=y (oci_whiteouts; converted back for the cross mount); char devices 1:3
//   and 1:5 (device_nodes); files with holes (sparse_files); one inode linked from two lower
//   layers (cross_layer_links). Redirects, origins and whiteouts written by the kernel reach
//   laminafs through rotate.
// - operations: fallocate (keep size, punch hole, zero range), copy_file_range, writes through a
//   shared mmap, SEEK_DATA/SEEK_HOLE (checked, not compared: what is skipped must read as
//   zeros), statvfs (f_namemax, read-only flag), flock and OFD locks seen from a second open,
//   openat with O_CREAT/O_TRUNC/O_EXCL on a held directory descriptor.
// - threads: a "concurrent" operation runs 2-4 operations at once, one thread each, on
//   overlapping names: one new name created by all, one entry removed by all, one file's
//   attributes set by all, or distinct names below one directory (whose copy-up they race for).
//   Its result is the sorted list of theirs, and the shapes are those whose sorted results and
//   final tree do not depend on the order the threads ran in.
// - long names and paths (long_paths): lower entries with names of 254 and 255 bytes (operations
//   also use 255 and 256), and in most layers a chain "deep/<250 bytes>/..." that merges across
//   layers and reaches past PATH_MAX through the mount point: operations on what lies beyond
//   answer ENAMETOOLONG on both sides, and the tree comparison reaches it through descriptors.
// - compared: which non-directories share an st_ino (inode_sharing; hard links must, nothing
//   else may), whether readdir's d_ino is the entry's st_ino (readdir_d_ino), and that st_ino
//   survives a remount (the remount's result).
// - mount options: each depth's seed picks laminafs's extra options among none, passthrough
//   (feature passthrough), dir_cache_entries=2 and both (mount_options); LAMINA_FUZZ_OPTIONS
//   fixes them. It also picks the atime option both mounts get: the default (relatime),
//   relatime, noatime, strictatime, nodiratime, or one with lazytime (atime_options);
//   LAMINA_FUZZ_ATIME fixes it.
// - O_TMPFILE: "tmpfile" opens an unnamed file in a directory (lower-only, opaque, missing or a
//   file too), writes it and links it into place through /proc/self/fd or with AT_EMPTY_PATH,
//   often over a name a whiteout hides or one that exists (EEXIST); with O_EXCL it can never be
//   linked. "fd_tmpfile" keeps one in a descriptor slot and "fd_link" links whatever a slot
//   holds later, after other operations (or after its name went: ENOENT).
// - atime: "atime" reads a file, lists a directory or only opens it, and answers whether that
//   moved the atime stat shows (its relation to before, never its value), sometimes after
//   setting atime to 1998 through the mount. Against laminafs it checks what the atime option
//   forbids and one thing it requires (atime_results_agree); with LAMINA_FUZZ_CANDIDATE=kernel
//   the answers must be equal, and accesses and tree walks wait for the coarse clock to tick
//   past the operation before them, so that they depend on the order of the operations and not
//   on their speed (ClockTicks). The walk choosing the operations opens the kernel's directories
//   with O_NOATIME.
// These later kinds draw from a random stream of their own: with tmpfile, fd_tmpfile, fd_link,
// atime and atime_options skipped, a seed gives the sequence it gave before they existed.
// kDefaultSkip lists the features left out by default, each for a known laminafs divergence.
//
//   LAMINA_FUZZ_SEED=S            base seed (printed; random when unset); a depth's run depends
//                                 only on S and the depth
//   LAMINA_FUZZ_OPS=N             operations per depth (default 1200, about two minutes in all)
//   LAMINA_FUZZ_DEPTHS=1,4        lower-layer counts to run (default 1,2,4,16)
//   LAMINA_FUZZ_CHECK_EVERY=K     compare whole trees after every K operations (default 1; trees
//                                 grow, so long runs go faster with 5 or 10)
//   LAMINA_FUZZ_SKIP=a,b          operation kinds not to generate (names as printed, e.g.
//                                 rename_exchange) and generator features to leave out
//                                 (lower_hardlinks, setgid_dirs, callers, ...), to get past a
//                                 known divergence; replaces kDefaultSkip ("none": skip nothing)
//   LAMINA_FUZZ_OPTIONS=o,p       laminafs's extra mount options for every depth ("none": none)
//   LAMINA_FUZZ_ATIME=o[,p]       the atime option(s) of both mounts for every depth ("none":
//                                 the default)
//   LAMINA_FUZZ_MINIMIZE=1        on a divergence, replay ever smaller subsets of the operations
//                                 on fresh copies and print the smallest sequence that still
//                                 diverges the same way, with the lower entries it touches
//   LAMINA_FUZZ_KEEP=DIR           on a divergence, copy both sides' layers (k/, f/) to DIR
//   LAMINA_FUZZ_CANDIDATE=kernel  mount the kernel on both sides: checks the harness (must pass)
//   LAMINA_FUZZ_DROP_CACHES=1     drop the kernel's caches before each tree comparison, which
//                                 tells a stale FUSE cache (laminafs did not invalidate) from
//                                 wrong state in the daemon; affects the whole machine
//
// Things the kernel does that shape this harness (found on 6.18):
// - readdir of a directory that merges with nothing below lists that layer's whiteouts, and
//   readdir anywhere lists the bottom layer's xattr whiteouts (its opaque="x" is never read);
//   lstat reports such phantom names as ENOENT. The readdir operation leaves them out on both
//   sides; the tree comparison lets the kernel have phantoms laminafs does not list, never the
//   reverse (laminafs lists only the second kind).
// - The kernel's emptiness check (rmdir, rename over a directory) reads no xattrs: a lower
//   xattr whiteout its readdir hides still makes the directory "not empty".
// - Upper layers differ in overlay-private xattrs (the kernel writes origin and impure, formats
//   of redirects may differ); those are summarised as notes, not failures.
// - Names starting with ".wh." are refused by laminafs on purpose and are never generated;
//   overlay-private xattrs are never set through the mounts.
// - Symlink targets are relative without "..", or absolute under a directory that does not
//   exist, so no operation that follows a link can leave the mount.

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fixture.h"

namespace lamina::test {
namespace {

constexpr size_t kHistoryShown = 20;
constexpr size_t kDifferencesShown = 12;
constexpr int kSlots = 4;              // descriptors an operation sequence may hold open
constexpr int kMaxLayerDepth = 3;      // directory depth of generated lower entries
constexpr unsigned kLatePercent = 12;  // operations of the late kinds (KindInfo::late)
constexpr auto kStepLimit = std::chrono::seconds(60);
const char* const kMissingRoot = "/nonexistent-lamina-fuzz/missing";

// ---------------------------------------------------------------------------------------------
// Randomness that is the same everywhere (std distributions are not), so a printed seed
// reproduces on any machine.

uint64_t mix_seed(uint64_t seed, uint64_t salt) {
    Rng rng(seed ^ (salt * 0xd1b54a32d192ed03ULL));
    return rng.next();
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() {
        if (fd_ >= 0) close(fd_);
    }
    int get() const { return fd_; }

private:
    int fd_;
};

class DirStream {
public:
    explicit DirStream(const std::string& path) : dir_(opendir(path.c_str())) {}
    DirStream(const DirStream&) = delete;
    DirStream& operator=(const DirStream&) = delete;
    ~DirStream() {
        if (dir_) closedir(dir_);
    }
    DIR* get() const { return dir_; }

private:
    DIR* dir_;
};

// Sets the umask for one operation, so both sides create with the same one.
class ScopedUmask {
public:
    explicit ScopedUmask(mode_t mask) : old_(umask(mask)) {}
    ~ScopedUmask() { umask(old_); }

private:
    mode_t old_;
};

std::string errno_name(int err) {
    const char* name = strerrorname_np(err);
    return name ? name : "errno" + std::to_string(err);
}

std::string failed(int err) {
    return "ERR " + errno_name(err);
}

std::string octal(unsigned long value) {
    char buf[32];
    snprintf(buf, sizeof buf, "0%lo", value);
    return buf;
}

std::string quoted(const std::string& text) {
    std::string out = "\"";
    for (unsigned char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c >= 0x7f) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

// Long values (file contents, big xattrs) shown by length and hash.
std::string shown(const std::string& value) {
    if (value.size() <= 64) return quoted(value);
    char buf[64];
    snprintf(buf, sizeof buf, "<%zu bytes, xxh3 %016llx>", value.size(),
             static_cast<unsigned long long>(XXH3_64bits(value.data(), value.size())));
    return buf;
}

std::string join_path(const std::string& dir, const std::string& name) {
    return dir.empty() ? name : dir + "/" + name;
}

std::string parent_of(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? "" : path.substr(0, slash);
}

int depth_of(const std::string& path) {
    return path.empty() ? 0 : 1 + static_cast<int>(std::count(path.begin(), path.end(), '/'));
}

std::vector<std::string> ancestors_of(const std::string& path) {
    std::vector<std::string> out;
    for (size_t pos = path.find('/'); pos != std::string::npos; pos = path.find('/', pos + 1)) {
        out.push_back(path.substr(0, pos));
    }
    return out;
}

bool is_under(const std::string& path, const std::string& dir) {
    return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                           path[dir.size()] == '/');
}

std::string random_bytes(Rng& rng, size_t length) {
    std::string out(length, '\0');
    for (auto& c : out) c = static_cast<char>('a' + rng.below(26));
    return out;
}

std::string read_all(int fd, std::string& out) {
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return failed(errno);
        }
        if (n == 0) return "";
        out.append(buf, static_cast<size_t>(n));
    }
}

std::optional<std::string> env_text(const char* name) {
    const char* value = getenv(name);
    if (!value || !*value) return std::nullopt;
    return std::string(value);
}

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');) {
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Lower layers, written straight to disk: l0 (top) .. lN-1. Names come from a small pool and
// paths are reused across layers, so directories merge, whiteouts and opaque directories hide
// something, and files shadow directories and the reverse.

const std::vector<std::string> kNames = {"a",  "b",  "c",  "d",   "e",    "f",   "g",       "h",
                                         "n0", "n1", "n2", "dir", "file", "x y", "\xc3\xbc"};
const std::vector<uint32_t> kIds = {0, 0, 0, 1000, 1001, 65534};

std::string random_symlink_target(Rng& rng) {
    uint64_t roll = rng.below(100);
    if (roll < 45) return rng.pick(kNames);
    if (roll < 75) return rng.pick(kNames) + "/" + rng.pick(kNames);
    if (roll < 82) return ".";
    if (roll < 90) return std::string(kMissingRoot) + "/" + rng.pick(kNames);
    if (roll < 95) return "self-loop";  // points at itself when named so; dangling otherwise
    return random_bytes(rng, rng.between(100, 300));
}

mode_t random_file_mode(Rng& rng) {
    static const std::vector<mode_t> modes = {0644, 0644,  0600,  0755, 0444,
                                              0000, 04755, 02755, 0666};
    if (rng.chance(8)) return static_cast<mode_t>(rng.below(07777 + 1));
    return rng.pick(modes);
}

mode_t random_dir_mode(Rng& rng) {
    static const std::vector<mode_t> modes = {0755, 0755, 0755, 0700, 0555, 01777, 02775, 0711};
    if (rng.chance(6)) return static_cast<mode_t>(rng.below(07777 + 1));
    return rng.pick(modes);
}

// Generator features LAMINA_FUZZ_SKIP may turn off (besides operation kinds), to get past a
// divergence already known.
struct Features {
    bool lower_hardlinks = true;      // hardlinks inside lower layers
    bool setgid_dirs = true;          // S_ISGID on directories, from the layers or from chmod
    bool callers = true;              // operations as unprivileged uids/gids with groups
    bool shared_dirs = true;          // sticky (1777) and setgid (2775) directories in the lowers
    bool xattr_whiteouts = true;      // xattr whiteouts under opaque=x parents, opaque=x dirs
    bool oci_whiteouts = true;        // laminafs's lowers hold .wh.NAME / .wh..wh..opq instead
    bool device_nodes = true;         // char devices other than 0/0 in the lowers
    bool sparse_files = true;         // lower files with holes
    bool cross_layer_links = true;    // one inode linked from two lower layers
    bool inode_sharing = true;        // compare which paths share st_ino; st_ino kept by remount
    bool readdir_d_ino = true;        // compare whether readdir's d_ino is the entry's st_ino
    bool ranges_into_links = true;    // fallocate / copy_file_range into a file with hard links
    bool caller_listxattr = true;     // listxattr by unprivileged callers
    bool caller_chown_noop = true;    // chown(-1, -1) by unprivileged callers
    bool passthrough = true;          // passthrough among the mount option variants
    bool mount_options = true;        // laminafs with passthrough / a tiny directory cache
    bool long_paths = true;           // names of 250-255 bytes; a chain of them past PATH_MAX
    bool atime_options = true;        // both mounts with an atime option other than the default
    bool caller_rename_links = true;  // rename between two names of one file by a non-root caller

    mode_t dir_mode(mode_t mode) const { return setgid_dirs ? mode : mode & ~S_ISGID; }
};
const std::vector<std::string> kFeatureNames = {
    "lower_hardlinks",    "setgid_dirs",      "callers",
    "shared_dirs",        "xattr_whiteouts",  "oci_whiteouts",
    "device_nodes",       "sparse_files",     "cross_layer_links",
    "inode_sharing",      "readdir_d_ino",    "mount_options",
    "ranges_into_links",  "caller_listxattr", "caller_chown_noop",
    "passthrough",        "long_paths",       "atime_options",
    "caller_rename_links"};

// Skipped unless LAMINA_FUZZ_SKIP says otherwise ("none": nothing), each for a known laminafs
// divergence not fixed yet (ranges_into_links and caller_listxattr were, and run by default):
// - readdir_d_ino: readdir of a directory whose child was forgotten gives the child's upper
//   inode number, while lookup gives the number it had in the lower layer (copied-up dirs).
// - cross_layer_links: one inode linked from two lower layers gets two st_ino in laminafs (the
//   layer index is part of the number, fs/lookup.cc), one in the kernel (same filesystem).
// - caller_chown_noop: chown(f, -1, -1) of a set-id file by someone not its owner is EPERM in
//   the kernel (clearing the bits is a mode change); laminafs clears them and succeeds. With
//   killpriv v2 the kernel sends it as a ctime-only SETATTR without the kill flag, the same
//   request a write by a non-owner sends (file_remove_privs), which must succeed.
// - passthrough: laminafs's default where it runs as root. A descriptor opened for reading
//   before its file's copy-up goes on reading the lower copy (the name gets a new node,
//   Overlay::supersede; docs/architecture.md), where the kernel's reads see the new data
//   (seed 101, depth 1: fd_open, truncate, fd_read). Skipped, laminafs runs with
//   passthrough=off.
// - caller_rename_links: rename(2) between two names of one file is a no-op in the VFS before
//   any permission check; laminafs gives each name its own FUSE inode, so the kernel checks the
//   caller's right to change both directories first and a non-writer gets EACCES (seeds 104,
//   depth 16; 33 and 86, depth 1). Skipped: such a rename runs as root instead.
const std::set<std::string> kDefaultSkip = {"readdir_d_ino", "cross_layer_links",
                                            "caller_chown_noop", "passthrough",
                                            "caller_rename_links"};

Features features_without(const std::set<std::string>& skip) {
    Features f;
    f.lower_hardlinks = !skip.count("lower_hardlinks");
    f.setgid_dirs = !skip.count("setgid_dirs");
    f.callers = !skip.count("callers");
    f.shared_dirs = !skip.count("shared_dirs");
    f.xattr_whiteouts = !skip.count("xattr_whiteouts");
    f.oci_whiteouts = !skip.count("oci_whiteouts");
    f.device_nodes = !skip.count("device_nodes");
    f.sparse_files = !skip.count("sparse_files");
    f.cross_layer_links = !skip.count("cross_layer_links");
    f.inode_sharing = !skip.count("inode_sharing");
    f.readdir_d_ino = !skip.count("readdir_d_ino");
    f.ranges_into_links = !skip.count("ranges_into_links");
    f.caller_listxattr = !skip.count("caller_listxattr");
    f.caller_chown_noop = !skip.count("caller_chown_noop");
    f.passthrough = !skip.count("passthrough");
    f.mount_options = !skip.count("mount_options");
    f.long_paths = !skip.count("long_paths");
    f.atime_options = !skip.count("atime_options");
    f.caller_rename_links = !skip.count("caller_rename_links");
    return f;
}

// A lower entry written in the kernel's form that laminafs's copy gets in OCI form: a char 0/0
// whiteout becomes an empty ".wh.NAME", an opaque=y directory gets ".wh..wh..opq" instead.
struct OciEntry {
    int layer = 0;
    std::string path;
    bool opaque = false;
};

class LayerWriter {
public:
    LayerWriter(uint64_t seed, const Features& features) : rng_(seed), features_(features) {}

    // Writes count layers under root/l0 .. root/l<count-1>. Returns "" or an error line.
    std::string write(const std::string& root, int count, int entries_per_layer) {
        for (int i = count - 1; i >= 0; --i) {  // bottom first, so upper layers cover it
            std::string dir = root + "/l" + std::to_string(i);
            if (mkdir(dir.c_str(), 0755) != 0) return "mkdir " + dir + ": " + strerror(errno);
            if (auto err = write_layer(dir, i, entries_per_layer); !err.empty()) return err;
        }
        return "";
    }

    // The entries laminafs's copy of the lowers gets in OCI form (oci_whiteouts).
    const std::vector<OciEntry>& oci_entries() const { return oci_; }

private:
    enum class Kind { File, Dir, Symlink, Hardlink, Whiteout, Opaque, Fifo, XattrWhiteout, Device };

    Kind random_kind() {
        static const std::vector<std::pair<Kind, int>> weights = {
            {Kind::File, 34},    {Kind::Dir, 18},          {Kind::Symlink, 10},
            {Kind::Hardlink, 7}, {Kind::Whiteout, 14},     {Kind::Opaque, 7},
            {Kind::Fifo, 3},     {Kind::XattrWhiteout, 6}, {Kind::Device, 2}};
        int total = 0;
        for (const auto& w : weights) total += w.second;
        int roll = static_cast<int>(rng_.below(static_cast<uint64_t>(total)));
        for (const auto& [kind, weight] : weights) {
            if (roll < weight) return kind;
            roll -= weight;
        }
        return Kind::File;
    }

    std::string random_target() {
        if (!seen_paths_.empty() && rng_.chance(55)) return rng_.pick(seen_paths_);
        std::string parent = !seen_dirs_.empty() && rng_.chance(60) ? rng_.pick(seen_dirs_) : "";
        if (depth_of(parent) >= kMaxLayerDepth) parent = "";
        if (features_.long_paths && rng_.chance(4))
            return join_path(parent, std::string(rng_.chance(50) ? 255 : 254, 'N'));
        return join_path(parent, rng_.pick(kNames));
    }

    // "deep" and below it directories of 250-byte names, the same in every layer so they
    // merge, down to level 16 at most: 4,020 bytes below the root, within PATH_MAX in the
    // layers (cp copies them by path) and past it through the mount points, whose paths are
    // over 230 bytes long; level 15 is just within. This layer takes the chain to a random level,
    // puts a file at some levels and now and then a whiteout or an opaque directory. Written
    // with *at calls.
    std::string write_deep_chain(const std::string& layer, int index) {
        Fd root(open(layer.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (root.get() < 0) return "open " + layer + ": " + strerror(errno);
        int levels = static_cast<int>(rng_.between(6, 17));
        int dirfd = root.get();
        std::vector<std::unique_ptr<Fd>> held;
        for (int level = 0; level < levels; ++level) {
            std::string name =
                level == 0 ? "deep" : std::string(250, static_cast<char>('a' + level));
            if (level > 0 && rng_.chance(4)) {
                if (mknodat(dirfd, name.c_str(), S_IFCHR, makedev(0, 0)) != 0)
                    return "mknod in the deep chain: " + std::string(strerror(errno));
                return "";
            }
            if (mkdirat(dirfd, name.c_str(), 0755) != 0 && errno != EEXIST)
                return "mkdir in the deep chain: " + std::string(strerror(errno));
            held.push_back(std::make_unique<Fd>(
                openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)));
            dirfd = held.back()->get();
            if (dirfd < 0) return "open in the deep chain: " + std::string(strerror(errno));
            if (level > 0 && rng_.chance(4)) fsetxattr(dirfd, "trusted.overlay.opaque", "y", 1, 0);
            if (rng_.chance(25) || level == levels - 1) {
                std::string file = "f" + std::to_string(index);
                Fd fd(openat(dirfd, file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
                std::string data = random_bytes(rng_, rng_.below(64));
                if (fd.get() < 0 || ::write(fd.get(), data.data(), data.size()) < 0)
                    return "file in the deep chain: " + std::string(strerror(errno));
            }
        }
        return "";
    }

    void remember(const std::string& path, bool is_dir) {
        if (std::find(seen_paths_.begin(), seen_paths_.end(), path) == seen_paths_.end())
            seen_paths_.push_back(path);
        if (is_dir && std::find(seen_dirs_.begin(), seen_dirs_.end(), path) == seen_dirs_.end())
            seen_dirs_.push_back(path);
    }

    void set_owner_and_mode(const std::string& abs, bool is_dir, bool is_symlink) {
        uid_t uid = rng_.pick(kIds);
        gid_t gid = rng_.pick(kIds);
        if (lchown(abs.c_str(), uid, gid) != 0) return;
        if (is_symlink) return;
        mode_t mode = is_dir ? features_.dir_mode(random_dir_mode(rng_)) : random_file_mode(rng_);
        if (is_dir && features_.shared_dirs && rng_.chance(20))
            mode = rng_.chance(60) ? 01777 : features_.dir_mode(02775);  // /tmp, a team directory
        chmod(abs.c_str(), mode);
    }

    // Holes: the file grows past its data, and sometimes gets a block far out.
    std::string make_sparse(int fd, const std::string& abs, size_t length) {
        off_t end = static_cast<off_t>(length + rng_.between(1, 4) * 65536);
        if (ftruncate(fd, end) != 0) return "ftruncate " + abs + ": " + strerror(errno);
        if (!rng_.chance(50)) return "";
        std::string block = random_bytes(rng_, rng_.between(1, 5000));
        if (pwrite(fd, block.data(), block.size(), end + 131072) < 0)
            return "pwrite " + abs + ": " + strerror(errno);
        return "";
    }

    void add_xattrs(const std::string& abs) {
        if (!rng_.chance(25)) return;
        int count = static_cast<int>(rng_.between(1, 2));
        for (int i = 0; i < count; ++i) {
            std::string name = "user.k" + std::to_string(rng_.below(4));
            std::string value = random_bytes(rng_, rng_.below(24));
            lsetxattr(abs.c_str(), name.c_str(), value.data(), value.size(), 0);
        }
    }

    // Missing ancestors become directories; false when a non-directory of this layer is in the way.
    bool make_parents(const std::string& layer, std::map<std::string, char>& kinds,
                      const std::string& path) {
        for (const auto& dir : ancestors_of(path)) {
            auto it = kinds.find(dir);
            if (it != kinds.end()) {
                if (it->second != 'd') return false;
                continue;
            }
            std::string abs = layer + "/" + dir;
            if (mkdir(abs.c_str(), 0755) != 0) return false;
            if (rng_.chance(30)) set_owner_and_mode(abs, true, false);
            kinds[dir] = 'd';
            remember(dir, true);
        }
        return true;
    }

    std::string write_layer(const std::string& layer, int index, int entries) {
        std::map<std::string, char> kinds{{"", 'd'}};
        std::set<std::string> opaque;
        std::vector<std::string> files;
        for (int i = 0; i < entries; ++i) {
            Kind kind = random_kind();
            std::string path = random_target();
            if (!make_parents(layer, kinds, path)) continue;
            std::string abs = layer + "/" + path;
            if (kinds.count(path)) {
                if (kind == Kind::Opaque && kinds[path] == 'd' && !xwhiteout_dirs_.count(path) &&
                    opaque.insert(path).second)
                    mark_opaque(abs, index, path);
                continue;
            }
            bool cross = features_.cross_layer_links && !lower_files_.empty() && rng_.chance(40);
            if (kind == Kind::Hardlink && !cross && (files.empty() || !features_.lower_hardlinks))
                kind = Kind::File;
            std::string parent = parent_of(path);
            if (kind == Kind::XattrWhiteout && (!features_.xattr_whiteouts || opaque.count(parent)))
                kind = Kind::Whiteout;
            if (kind == Kind::Device && !features_.device_nodes) kind = Kind::Fifo;
            char recorded = 'f';
            switch (kind) {
                case Kind::File: {
                    Fd fd(open(abs.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
                    if (fd.get() < 0) return "create " + abs + ": " + strerror(errno);
                    size_t length = rng_.chance(10) ? rng_.between(3000, 9000) : rng_.below(200);
                    std::string data = random_bytes(rng_, length);
                    if (::write(fd.get(), data.data(), data.size()) !=
                        static_cast<ssize_t>(data.size()))
                        return "write " + abs + ": " + strerror(errno);
                    if (features_.sparse_files && rng_.chance(10)) {
                        if (auto err = make_sparse(fd.get(), abs, length); !err.empty()) return err;
                    }
                    set_owner_and_mode(abs, false, false);
                    add_xattrs(abs);
                    files.push_back(path);
                    layer_files_.push_back(abs);
                    break;
                }
                case Kind::Dir:
                case Kind::Opaque:
                    if (mkdir(abs.c_str(), 0755) != 0)
                        return "mkdir " + abs + ": " + strerror(errno);
                    if (kind == Kind::Opaque) {
                        mark_opaque(abs, index, path);
                        opaque.insert(path);
                    }
                    set_owner_and_mode(abs, true, false);
                    add_xattrs(abs);
                    recorded = 'd';
                    break;
                case Kind::Symlink: {
                    std::string target = random_symlink_target(rng_);
                    if (target == "self-loop") target = path.substr(path.rfind('/') + 1);
                    if (symlink(target.c_str(), abs.c_str()) != 0)
                        return "symlink " + abs + ": " + strerror(errno);
                    set_owner_and_mode(abs, false, true);
                    recorded = 'l';
                    break;
                }
                case Kind::Hardlink: {
                    std::string source =
                        cross ? rng_.pick(lower_files_) : layer + "/" + rng_.pick(files);
                    if (link(source.c_str(), abs.c_str()) != 0)
                        return "link " + abs + ": " + strerror(errno);
                    break;
                }
                case Kind::Whiteout:
                    if (mknod(abs.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0)
                        return "mknod " + abs + ": " + strerror(errno);
                    // ".wh." and a name of more than 251 bytes is past NAME_MAX: OCI layers
                    // cannot delete such names.
                    if (features_.oci_whiteouts && rng_.chance(40) &&
                        path.size() - path.rfind('/') - 1 <= 251)
                        oci_.push_back({index, path, false});
                    recorded = 'w';
                    break;
                case Kind::XattrWhiteout: {
                    // An empty file marked trusted.overlay.whiteout, in a directory marked
                    // opaque=x (not opaque: it holds xattr whiteouts), as is the layer root.
                    Fd fd(open(abs.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
                    if (fd.get() < 0) return "create " + abs + ": " + strerror(errno);
                    lsetxattr(abs.c_str(), "trusted.overlay.whiteout", "", 0, 0);
                    std::string parent_abs = parent.empty() ? layer : layer + "/" + parent;
                    lsetxattr(parent_abs.c_str(), "trusted.overlay.opaque", "x", 1, 0);
                    lsetxattr(layer.c_str(), "trusted.overlay.opaque", "x", 1, 0);
                    xwhiteout_dirs_.insert(parent);
                    recorded = 'w';
                    break;
                }
                case Kind::Device:
                    if (mknod(abs.c_str(), S_IFCHR | 0644, makedev(1, rng_.chance(50) ? 3 : 5)) !=
                        0)
                        return "mknod " + abs + ": " + strerror(errno);
                    set_owner_and_mode(abs, false, false);
                    recorded = 'c';
                    break;
                case Kind::Fifo:
                    if (mknod(abs.c_str(), S_IFIFO | 0644, 0) != 0)
                        return "mkfifo " + abs + ": " + strerror(errno);
                    set_owner_and_mode(abs, false, false);
                    recorded = 'p';
                    break;
            }
            kinds[path] = recorded;
            remember(path, recorded == 'd');
        }
        if (features_.long_paths && rng_.chance(15)) {
            if (auto err = write_deep_chain(layer, index); !err.empty()) return err;
        }
        lower_files_.insert(lower_files_.end(), layer_files_.begin(), layer_files_.end());
        layer_files_.clear();
        xwhiteout_dirs_.clear();
        return "";
    }

    // opaque=y, or opaque=x (a directory that holds xattr whiteouts, not opaque) now and then.
    void mark_opaque(const std::string& abs, int index, const std::string& path) {
        if (features_.xattr_whiteouts && rng_.chance(25)) {
            lsetxattr(abs.c_str(), "trusted.overlay.opaque", "x", 1, 0);
            return;
        }
        lsetxattr(abs.c_str(), "trusted.overlay.opaque", "y", 1, 0);
        if (features_.oci_whiteouts && rng_.chance(40)) oci_.push_back({index, path, true});
    }

    Rng rng_;
    Features features_;
    std::vector<std::string> seen_paths_;
    std::vector<std::string> seen_dirs_;
    std::vector<std::string> layer_files_;  // regular files of the layer being written
    std::vector<std::string> lower_files_;  // of the layers below it, for links across layers
    std::set<std::string> xwhiteout_dirs_;  // of the layer being written: opaque=x, not y
    std::vector<OciEntry> oci_;
};

int entries_per_layer(int depth) {
    if (depth <= 1) return 45;
    if (depth <= 2) return 28;
    if (depth <= 4) return 16;
    return 6;
}

// ---------------------------------------------------------------------------------------------
// Trees as seen through a mount: every entry's attributes as named fields.

struct Entry {
    char type = '?';
    std::map<std::string, std::string> fields;
    ino_t ino = 0;  // compared only as "which paths share one", never by value
};
using Tree = std::map<std::string, Entry>;  // relative path -> entry; the root is ""

char type_char(mode_t mode) {
    switch (mode & S_IFMT) {
        case S_IFDIR:
            return 'd';
        case S_IFREG:
            return 'f';
        case S_IFLNK:
            return 'l';
        case S_IFIFO:
            return 'p';
        case S_IFCHR:
            return 'c';
        case S_IFBLK:
            return 'b';
        case S_IFSOCK:
            return 's';
    }
    return '?';
}

// The attributes both mounts must agree on; times, inode numbers and blocks are left out.
std::string stat_text(const struct stat& st) {
    std::ostringstream out;
    out << type_char(st.st_mode) << " mode=" << octal(st.st_mode & 07777) << " uid=" << st.st_uid
        << " gid=" << st.st_gid;
    if (!S_ISDIR(st.st_mode)) out << " size=" << st.st_size << " nlink=" << st.st_nlink;
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
        out << " rdev=" << major(st.st_rdev) << ":" << minor(st.st_rdev);
    return out.str();
}

// Every xattr of abs, value included ("" fields when listing fails are reported as such).
void read_xattrs(const std::string& abs, std::map<std::string, std::string>& fields,
                 const std::string& prefix_filter = "") {
    std::vector<char> names(65536);
    ssize_t n = llistxattr(abs.c_str(), names.data(), names.size());
    if (n < 0) {
        if (errno != ENOTSUP) fields["listxattr"] = failed(errno);
        return;
    }
    for (ssize_t pos = 0; pos < n;) {
        std::string name(names.data() + pos);
        pos += static_cast<ssize_t>(name.size()) + 1;
        if (!prefix_filter.empty() && name.rfind(prefix_filter, 0) != 0) continue;
        std::vector<char> value(65536);
        ssize_t got = lgetxattr(abs.c_str(), name.c_str(), value.data(), value.size());
        fields["xattr " + name] =
            got < 0 ? failed(errno) : std::string(value.data(), static_cast<size_t>(got));
    }
}

struct WalkOptions {
    bool full = true;  // contents and xattrs, not only names and types
    // Names readdir lists but lstat cannot find (kernel quirk) become type 'P' entries without
    // fields, which compare_trees lets the kernel have alone.
    bool drop_phantoms = false;
    bool inodes = false;  // which paths share an inode
    bool d_ino = false;   // whether readdir's d_ino is st_ino
    // Directories opened with O_NOATIME: a walk of one side only (the kernel's, to choose the
    // next operation) must leave its atimes as the other side's are.
    bool noatime = false;
};

// A path the system calls take for `abs`, however long: from 3,000 bytes on,
// "/proc/self/fd/N/NAME" through a descriptor of its parent opened one component at a time (N
// is `held`'s).
std::string reachable(const std::string& abs, std::unique_ptr<Fd>& held) {
    constexpr size_t kShort = 3000;
    if (abs.size() < kShort) return abs;
    size_t slash = abs.rfind('/');
    size_t cut = abs.rfind('/', kShort);
    int fd = open(abs.substr(0, cut).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    for (size_t at = cut + 1; fd >= 0 && at <= slash;) {
        size_t end = abs.find('/', at);
        int next = openat(fd, abs.substr(at, end - at).c_str(),
                          O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        fd = next;
        at = end + 1;
    }
    held = std::make_unique<Fd>(fd);
    return "/proc/self/fd/" + std::to_string(fd) + abs.substr(slash);
}

// Walks the directory open as dirfd (its path `rel`) through descriptors, one lookup per entry
// however deep: paths past PATH_MAX are compared too.
void walk_dir(int dirfd, const std::string& rel, const WalkOptions& opts, Tree& tree, int level) {
    struct Name {
        std::string name;
        unsigned char dtype;
        ino_t d_ino;
        bool operator<(const Name& other) const { return name < other.name; }
    };
    std::vector<Name> names;
    {
        int copy = dup(dirfd);
        DIR* dir = copy < 0 ? nullptr : fdopendir(copy);
        if (!dir) {
            tree[rel].fields["opendir"] = failed(errno);
            if (copy >= 0) close(copy);
            return;
        }
        errno = 0;
        while (struct dirent* de = readdir(dir)) {
            std::string name = de->d_name;
            if (name != "." && name != "..") names.push_back({name, de->d_type, de->d_ino});
            errno = 0;
        }
        if (errno != 0) tree[rel].fields["readdir"] = failed(errno);
        closedir(dir);
    }
    std::sort(names.begin(), names.end());
    const std::string here = "/proc/self/fd/" + std::to_string(dirfd) + "/";
    for (const auto& [name, dtype, d_ino] : names) {
        std::string child = join_path(rel, name);
        struct stat st;
        if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            int err = errno;
            if (err == ENOENT && opts.drop_phantoms) {
                tree[child].type = 'P';
                tree[child].fields["phantom"] = "listed, lstat ENOENT";
                continue;
            }
            tree[child].fields["lstat"] = failed(err);
            continue;
        }
        Entry& entry = tree[child];
        entry.type = type_char(st.st_mode);
        entry.fields["stat"] = stat_text(st);
        entry.fields["d_type"] = std::to_string(dtype);
        entry.ino = st.st_ino;
        if (opts.d_ino) entry.fields["d_ino"] = d_ino == st.st_ino ? "st_ino" : "not st_ino";
        if (opts.full) {
            if (S_ISREG(st.st_mode)) {
                Fd fd(openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
                std::string content;
                std::string err = fd.get() < 0 ? failed(errno) : read_all(fd.get(), content);
                entry.fields["content"] = err.empty() ? content : "read: " + err;
            } else if (S_ISLNK(st.st_mode)) {
                char buf[PATH_MAX + 1];
                ssize_t n = readlinkat(dirfd, name.c_str(), buf, sizeof buf);
                entry.fields["target"] =
                    n < 0 ? failed(errno) : std::string(buf, static_cast<size_t>(n));
            }
            read_xattrs(here + name, entry.fields);
        }
        if (S_ISDIR(st.st_mode) && level < 32) {
            Fd sub(openat(
                dirfd, name.c_str(),
                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | (opts.noatime ? O_NOATIME : 0)));
            if (sub.get() < 0)
                tree[child].fields["opendir"] = failed(errno);
            else
                walk_dir(sub.get(), child, opts, tree, level + 1);
        }
    }
}

Tree walk_tree(const std::string& root, const WalkOptions& opts) {
    Tree tree;
    struct stat st;
    Entry& top = tree[""];
    if (lstat(root.c_str(), &st) != 0) {
        top.fields["lstat"] = failed(errno);
        return tree;
    }
    top.type = type_char(st.st_mode);
    top.fields["stat"] = stat_text(st);
    if (opts.full) read_xattrs(root, top.fields);
    top.ino = st.st_ino;
    Fd dir(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (opts.noatime ? O_NOATIME : 0)));
    if (dir.get() < 0)
        top.fields["opendir"] = failed(errno);
    else
        walk_dir(dir.get(), "", opts, tree, 0);
    if (opts.inodes) {
        // Hard links must share an inode number and nothing else may: each non-directory names
        // the first path (in sorted order) with its st_ino. Directories are left out: the
        // kernel gives a merged directory without an upper the inode number of a lower one.
        std::map<ino_t, std::string> first;
        for (auto& [path, entry] : tree) {
            if (entry.ino == 0 || entry.type == 'd') continue;
            auto [it, fresh] = first.emplace(entry.ino, path);
            if (!fresh) entry.fields["same inode as"] = it->second;
        }
    }
    return tree;
}

// The upper layer as stored: type (and device numbers) of every entry, overlay xattrs apart.
Tree walk_upper(const std::string& upper) {
    Tree tree;
    std::vector<std::string> pending{""};
    while (!pending.empty()) {
        std::string rel = pending.back();
        pending.pop_back();
        std::unique_ptr<Fd> abs_parent;
        std::string abs = reachable(rel.empty() ? upper : upper + "/" + rel, abs_parent);
        std::vector<std::string> names;
        {
            DirStream dir(abs);
            if (!dir.get()) continue;
            while (struct dirent* de = readdir(dir.get())) {
                std::string name = de->d_name;
                if (name != "." && name != "..") names.push_back(name);
            }
        }
        for (const auto& name : names) {
            std::string child = join_path(rel, name);
            std::unique_ptr<Fd> child_parent;
            std::string child_abs = reachable(upper + "/" + child, child_parent);
            struct stat st;
            if (lstat(child_abs.c_str(), &st) != 0) continue;
            Entry& entry = tree[child];
            entry.type = type_char(st.st_mode);
            std::string kind(1, entry.type);
            if (S_ISCHR(st.st_mode))
                kind += " " + std::to_string(major(st.st_rdev)) + ":" +
                        std::to_string(minor(st.st_rdev));
            entry.fields["kind"] = kind;
            read_xattrs(child_abs, entry.fields, "trusted.overlay.");
            if (S_ISDIR(st.st_mode)) pending.push_back(child);
        }
    }
    return tree;
}

// Field by field; the messages name the path, the field and both values.
void compare_trees(const Tree& kernel, const Tree& lamina, const std::string& what,
                   std::vector<std::string>& differences, const std::string& kernel_name = "kernel",
                   const std::string& lamina_name = "laminafs") {
    auto field_text = [](const Entry& e, const std::string& field) {
        auto it = e.fields.find(field);
        return it == e.fields.end() ? std::string("<none>") : shown(it->second);
    };
    // What an entry is, for "only in" lines: its attributes, its upper kind, or why lstat failed.
    auto summary = [](const Entry& e) {
        for (const char* field : {"stat", "kind", "lstat", "opendir", "phantom"}) {
            if (auto it = e.fields.find(field); it != e.fields.end()) return it->second;
        }
        return std::string("?");
    };
    auto ki = kernel.begin();
    auto li = lamina.begin();
    while (ki != kernel.end() || li != lamina.end()) {
        if (li == lamina.end() || (ki != kernel.end() && ki->first < li->first)) {
            if (ki->second.type == 'P') {  // a phantom the kernel lists and laminafs need not
                ++ki;
                continue;
            }
            differences.push_back(what + " " + quoted(ki->first) + ": only in " + kernel_name +
                                  " (" + summary(ki->second) + ")");
            ++ki;
            continue;
        }
        if (ki == kernel.end() || li->first < ki->first) {
            differences.push_back(what + " " + quoted(li->first) + ": only in " + lamina_name +
                                  " (" + summary(li->second) + ")");
            ++li;
            continue;
        }
        std::set<std::string> fields;
        for (const auto& [name, value] : ki->second.fields) fields.insert(name);
        for (const auto& [name, value] : li->second.fields) fields.insert(name);
        for (const auto& field : fields) {
            auto kv = ki->second.fields.find(field);
            auto lv = li->second.fields.find(field);
            if (kv != ki->second.fields.end() && lv != li->second.fields.end() &&
                kv->second == lv->second)
                continue;
            differences.push_back(what + " " + quoted(ki->first) + ": " + field + ": " +
                                  kernel_name + " " + field_text(ki->second, field) + ", " +
                                  lamina_name + " " + field_text(li->second, field));
        }
        ++ki;
        ++li;
    }
}

// ---------------------------------------------------------------------------------------------
// Operations.

enum class OpKind {
    Create,
    OpenCreat,
    Write,
    Append,
    Truncate,
    OpenWrite,
    Unlink,
    Mkdir,
    Rmdir,
    Rename,
    RenameNoreplace,
    RenameExchange,
    RenameWhiteout,
    Link,
    Symlink,
    Mkfifo,
    Mknod,
    Chmod,
    Chown,
    Lchown,
    Utimens,
    SetXattr,
    RemoveXattr,
    GetXattr,
    ListXattr,
    Readdir,
    Stat,
    Read,
    Readlink,
    FdOpen,
    FdRead,
    FdWrite,
    FdStat,
    FdTruncate,
    FdClose,
    Remount,
    Rotate,
    Fallocate,
    CopyRange,
    MmapWrite,
    Seek,
    Statfs,
    Lock,
    OpenAt,
    Concurrent,
    Tmpfile,
    FdTmpfile,
    FdLink,
    Atime,
};

struct KindInfo {
    OpKind kind;
    const char* name;
    int weight;
    // Added after seeds were published: drawn from the generator's second stream, so that
    // skipping these gives the old sequences (OpGenerator::next).
    bool late = false;
};

const std::vector<KindInfo> kKinds = {
    {OpKind::Create, "create", 8},
    {OpKind::OpenCreat, "open_creat", 3},
    {OpKind::Write, "write", 8},
    {OpKind::Append, "append", 4},
    {OpKind::Truncate, "truncate", 5},
    {OpKind::OpenWrite, "open_write", 3},
    {OpKind::Unlink, "unlink", 7},
    {OpKind::Mkdir, "mkdir", 6},
    {OpKind::Rmdir, "rmdir", 5},
    {OpKind::Rename, "rename", 10},
    {OpKind::RenameNoreplace, "rename_noreplace", 3},
    {OpKind::RenameExchange, "rename_exchange", 4},
    {OpKind::RenameWhiteout, "rename_whiteout", 1},
    {OpKind::Link, "link", 4},
    {OpKind::Symlink, "symlink", 4},
    {OpKind::Mkfifo, "mkfifo", 2},
    {OpKind::Mknod, "mknod", 1},
    {OpKind::Chmod, "chmod", 4},
    {OpKind::Chown, "chown", 3},
    {OpKind::Lchown, "lchown", 2},
    {OpKind::Utimens, "utimens", 3},
    {OpKind::SetXattr, "setxattr", 5},
    {OpKind::RemoveXattr, "removexattr", 3},
    {OpKind::GetXattr, "getxattr", 2},
    {OpKind::ListXattr, "listxattr", 2},
    {OpKind::Readdir, "readdir", 4},
    {OpKind::Stat, "stat", 5},
    {OpKind::Read, "read", 3},
    {OpKind::Readlink, "readlink", 2},
    {OpKind::FdOpen, "fd_open", 3},
    {OpKind::FdRead, "fd_read", 2},
    {OpKind::FdWrite, "fd_write", 2},
    {OpKind::FdStat, "fd_stat", 2},
    {OpKind::FdTruncate, "fd_truncate", 1},
    {OpKind::FdClose, "fd_close", 1},
    {OpKind::Remount, "remount", 1},
    {OpKind::Rotate, "rotate", 1},
    {OpKind::Fallocate, "fallocate", 3},
    {OpKind::CopyRange, "copy_file_range", 2},
    {OpKind::MmapWrite, "mmap_write", 2},
    {OpKind::Seek, "seek", 2},
    {OpKind::Statfs, "statfs", 1},
    {OpKind::Lock, "lock", 2},
    {OpKind::OpenAt, "openat", 3},
    {OpKind::Concurrent, "concurrent", 2},
    {OpKind::Tmpfile, "tmpfile", 9, true},
    {OpKind::FdTmpfile, "fd_tmpfile", 2, true},
    {OpKind::FdLink, "fd_link", 3, true},
    {OpKind::Atime, "atime", 8, true},
};

const char* kind_name(OpKind kind) {
    for (const auto& info : kKinds) {
        if (info.kind == kind) return info.name;
    }
    return "?";
}

// How tmpfile and fd_link give a descriptor a name: none, linkat of "/proc/self/fd/N" with
// AT_SYMLINK_FOLLOW, or linkat(fd, "", ..., AT_EMPTY_PATH).
enum class LinkHow { None, ProcFd, EmptyPath };

// What the atime operation does to its path: read it (list it, for a directory) or only open it.
constexpr int kAtimeRead = 0;
constexpr int kAtimeOpenOnly = 1;
// Where it sets atime first (sometimes): before every time utimens chooses, so never newer than
// mtime, and more than a day old.
constexpr time_t kAgedAtime = 900000000;

struct Op {
    OpKind kind = OpKind::Stat;
    std::string path;
    std::string path2;  // rename/link destination
    std::string data;   // bytes to write, symlink target, xattr value
    std::string name;   // xattr name
    uint64_t offset = 0;
    uint64_t offset2 = 0;  // copy_file_range destination offset
    uint64_t length = 0;
    mode_t mode = 0;
    mode_t mask = 022;  // umask for creating operations
    int flags = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    dev_t rdev = 0;
    int slot = 0;
    LinkHow link = LinkHow::None;  // tmpfile, fd_link: how path2 is linked
    struct timespec times[2] = {};
    // The caller: 0/0 is the test itself (root); else a child process with these ids.
    uid_t as_uid = 0;
    gid_t as_gid = 0;
    std::vector<gid_t> groups;
    // Concurrent: what each of 2-4 threads runs, all at once (as root, under `mask`).
    std::vector<Op> parts;
};

// A rename by a non-root caller whose two names are one file on the kernel's side (see
// caller_rename_links).
bool renames_one_file_as_caller(const Op& op, const std::string& kernel_mnt) {
    bool rename = op.kind == OpKind::Rename || op.kind == OpKind::RenameNoreplace ||
                  op.kind == OpKind::RenameExchange || op.kind == OpKind::RenameWhiteout;
    if (!rename || op.as_uid == 0) return false;
    struct stat a, b;
    if (lstat((kernel_mnt + "/" + op.path).c_str(), &a) != 0 ||
        lstat((kernel_mnt + "/" + op.path2).c_str(), &b) != 0)
        return false;
    return !S_ISDIR(a.st_mode) && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

std::string open_flags_text(int flags) {
    std::string out;
    switch (flags & O_ACCMODE) {
        case O_RDONLY:
            out = "O_RDONLY";
            break;
        case O_WRONLY:
            out = "O_WRONLY";
            break;
        default:
            out = "O_RDWR";
            break;
    }
    if (flags & O_APPEND) out += "|O_APPEND";
    if (flags & O_TRUNC) out += "|O_TRUNC";
    if (flags & O_DIRECTORY) out += "|O_DIRECTORY";
    if (flags & O_EXCL) out += "|O_EXCL";
    return out;
}

std::string time_text(const struct timespec& ts) {
    if (ts.tv_nsec == UTIME_NOW) return "NOW";
    if (ts.tv_nsec == UTIME_OMIT) return "OMIT";
    return std::to_string(ts.tv_sec) + "." + std::to_string(ts.tv_nsec);
}

const char* link_how_text(LinkHow how) {
    switch (how) {
        case LinkHow::ProcFd:
            return "linkat /proc/self/fd";
        case LinkHow::EmptyPath:
            return "linkat AT_EMPTY_PATH";
        case LinkHow::None:
            break;
    }
    return "no link";
}

// Roughly the C call, with the values that matter for replaying it by hand.
std::string describe(const Op& op) {
    std::ostringstream out;
    out << kind_name(op.kind) << " ";
    const std::string p = quoted(op.path), q = quoted(op.path2);
    switch (op.kind) {
        case OpKind::Create:
        case OpKind::OpenCreat:
            out << p << " mode " << octal(op.mode) << " umask " << octal(op.mask)
                << (op.flags & O_TRUNC ? " O_TRUNC" : "") << " data " << op.data.size() << " bytes";
            break;
        case OpKind::Write:
            out << p << " at " << op.offset << ", " << op.data.size() << " bytes";
            break;
        case OpKind::Append:
            out << p << ", " << op.data.size() << " bytes";
            break;
        case OpKind::Truncate:
            out << p << " to " << op.length;
            break;
        case OpKind::OpenWrite:
            out << p << " " << open_flags_text(op.flags);
            break;
        case OpKind::Mkdir:
        case OpKind::Mkfifo:
            out << p << " mode " << octal(op.mode) << " umask " << octal(op.mask);
            break;
        case OpKind::Mknod:
            out << p << " char " << major(op.rdev) << ":" << minor(op.rdev) << " mode "
                << octal(op.mode);
            break;
        case OpKind::Rename:
        case OpKind::RenameNoreplace:
        case OpKind::RenameExchange:
        case OpKind::RenameWhiteout:
        case OpKind::Link:
            out << p << " -> " << q;
            break;
        case OpKind::Symlink:
            out << p << " -> target " << quoted(op.data);
            break;
        case OpKind::Chmod:
            out << p << " " << octal(op.mode);
            break;
        case OpKind::Chown:
        case OpKind::Lchown:
            out << p << " " << static_cast<int>(op.uid) << ":" << static_cast<int>(op.gid);
            break;
        case OpKind::Utimens:
            out << p << " atime " << time_text(op.times[0]) << " mtime " << time_text(op.times[1])
                << (op.flags & AT_SYMLINK_NOFOLLOW ? " AT_SYMLINK_NOFOLLOW" : "");
            break;
        case OpKind::SetXattr:
            out << p << " " << op.name << "=" << shown(op.data)
                << (op.flags == XATTR_CREATE    ? " XATTR_CREATE"
                    : op.flags == XATTR_REPLACE ? " XATTR_REPLACE"
                                                : "");
            break;
        case OpKind::RemoveXattr:
        case OpKind::GetXattr:
            out << p << " " << op.name;
            break;
        case OpKind::Stat:
            out << p << (op.flags ? " (follow)" : " (lstat)");
            break;
        case OpKind::Read:
            out << p << " at " << op.offset << ", " << op.length << " bytes";
            break;
        case OpKind::FdOpen:
            out << "slot " << op.slot << " " << p << " " << open_flags_text(op.flags);
            break;
        case OpKind::FdRead:
            out << "slot " << op.slot << " at " << op.offset << ", " << op.length << " bytes";
            break;
        case OpKind::FdWrite:
            out << "slot " << op.slot << " at " << op.offset << ", " << op.data.size() << " bytes";
            break;
        case OpKind::FdTruncate:
            out << "slot " << op.slot << " to " << op.length;
            break;
        case OpKind::FdStat:
        case OpKind::FdClose:
            out << "slot " << op.slot;
            break;
        case OpKind::Remount:
        case OpKind::Rotate:
            out << "(both mounts)";
            break;
        case OpKind::Fallocate:
            out << p << " mode " << op.flags << " at " << op.offset << ", " << op.length;
            break;
        case OpKind::CopyRange:
            out << p << " at " << op.offset << " -> " << q << " at " << op.offset2 << ", "
                << op.length << " bytes";
            break;
        case OpKind::MmapWrite:
            out << p << " at " << op.offset << ", " << op.data.size() << " bytes";
            break;
        case OpKind::Seek:
            out << p << (op.flags == SEEK_DATA ? " SEEK_DATA " : " SEEK_HOLE ") << op.offset;
            break;
        case OpKind::Lock:
            out << p << " " << open_flags_text(op.flags);
            break;
        case OpKind::OpenAt:
            out << "slot " << op.slot << " " << p << " mode " << octal(op.mode) << " umask "
                << octal(op.mask) << (op.flags & O_TRUNC ? " O_TRUNC" : "")
                << (op.flags & O_EXCL ? " O_EXCL" : "") << " data " << op.data.size() << " bytes";
            break;
        case OpKind::Tmpfile:
        case OpKind::FdTmpfile:
            if (op.kind == OpKind::FdTmpfile) out << "slot " << op.slot << " ";
            out << p << " O_TMPFILE|" << open_flags_text(op.flags) << " mode " << octal(op.mode)
                << " umask " << octal(op.mask) << " data " << op.data.size() << " bytes";
            if (op.link != LinkHow::None) out << " " << link_how_text(op.link) << " -> " << q;
            break;
        case OpKind::FdLink:
            out << "slot " << op.slot << " (" << p << ") " << link_how_text(op.link) << " -> " << q;
            break;
        case OpKind::Atime:
            out << p << (op.flags == kAtimeOpenOnly ? " open only" : " read")
                << (op.times[0].tv_nsec == UTIME_OMIT ? ""
                                                      : " after atime " + time_text(op.times[0]));
            break;
        case OpKind::Concurrent:
            out << "umask " << octal(op.mask) << " [";
            for (size_t i = 0; i < op.parts.size(); ++i)
                out << (i ? " | " : "") << describe(op.parts[i]);
            out << "]";
            break;
        default:
            out << p;
            break;
    }
    if (op.as_uid != 0 || op.as_gid != 0) {
        out << " as " << op.as_uid << ":" << op.as_gid;
        for (size_t i = 0; i < op.groups.size(); ++i) out << (i ? "," : " groups ") << op.groups[i];
    }
    return out.str();
}

// One mount under test and the descriptors its operation sequence holds.
constexpr size_t kMaxRotatedLowers = 8;

struct Side {
    std::string label;
    std::string mnt;
    std::string upper;
    std::string work;
    std::string lowerdirs;  // the lowerdir= value, top first
    std::string base;       // the directory holding this side's layers
    int rotations = 0;
    bool laminafs = false;  // mounted with laminafs, else with kernel overlayfs
    std::string options;    // more mount options for laminafs (passthrough, dir_cache_entries=)
    std::string atime;      // the atime option(s) both mounts get ("": the default, relatime)
    dev_t fuse_dev = 0;     // the FUSE connection, 0 for kernel overlayfs
    std::array<int, kSlots> slots{-1, -1, -1, -1};

    std::string at(const std::string& rel) const { return rel.empty() ? mnt : mnt + "/" + rel; }
    void close_slots() {
        for (int& fd : slots) {
            if (fd >= 0) close(fd);
            fd = -1;
        }
    }

    // Mounts this side's layers on mnt; "" or an error line.
    std::string mount() {
        std::string opts = "lowerdir=" + lowerdirs + ",upperdir=" + upper + ",workdir=" + work +
                           (atime.empty() ? "" : "," + atime);
        fuse_dev = 0;
        if (!laminafs)
            return mount_kernel_overlay(opts + ",redirect_dir=on,index=off,metacopy=off", mnt);
        CommandResult r =
            mount_laminafs(opts + ",redirect_dir=on" + (options.empty() ? "" : "," + options), mnt);
        if (r.status != 0)
            return "laminafs mount failed (" + std::to_string(r.status) + "): " + r.err;
        struct stat st;
        if (stat(mnt.c_str(), &st) == 0) fuse_dev = st.st_dev;
        return "";
    }
    // A fresh start over the same layers: descriptors closed, caches and daemon state gone.
    std::string remount() {
        close_slots();
        unmount(mnt);
        return mount();
    }
    // A container committed and used again: the upper layer is pushed down as the new top
    // lower layer and a fresh upper takes its place (up to kMaxRotatedLowers lowers in all;
    // then it is a remount). What one implementation wrote in a layer, it now reads below.
    std::string rotate() {
        close_slots();
        unmount(mnt);
        size_t lowers = std::count(lowerdirs.begin(), lowerdirs.end(), ':') + 1;
        if (lowers < kMaxRotatedLowers) {
            lowerdirs = upper + ":" + lowerdirs;
            ++rotations;
            upper = base + "/upper" + std::to_string(rotations);
            work = base + "/work" + std::to_string(rotations);
            for (const auto& d : {upper, work}) {
                if (mkdir(d.c_str(), 0755) != 0) return "mkdir " + d + ": " + strerror(errno);
            }
        }
        return mount();
    }
};

std::string write_result(ssize_t n, size_t wanted) {
    if (n < 0) return "write " + failed(errno);
    return n == static_cast<ssize_t>(wanted) ? "ok" : "ok short write " + std::to_string(n);
}

std::string read_result(int fd, uint64_t offset, uint64_t length) {
    std::string buf(length, '\0');
    ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0) return "read " + failed(errno);
    buf.resize(static_cast<size_t>(n));
    return "ok " + shown(buf);
}

std::string rc_result(int rc) {
    return rc == 0 ? "ok" : failed(errno);
}

// Gives the file open as fd the name `to`, as `how` says; then its link count and whether the
// name leads to the descriptor's inode.
std::string link_fd(int fd, LinkHow how, const std::string& to, bool& linked) {
    std::string proc = "/proc/self/fd/" + std::to_string(fd);
    int rc = how == LinkHow::ProcFd
                 ? linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, to.c_str(), AT_SYMLINK_FOLLOW)
                 : linkat(fd, "", AT_FDCWD, to.c_str(), AT_EMPTY_PATH);
    linked = rc == 0;
    if (rc != 0) return "link " + failed(errno);
    struct stat by_fd, by_name;
    if (fstat(fd, &by_fd) != 0) return "link ok, then fstat " + failed(errno);
    if (lstat(to.c_str(), &by_name) != 0) return "link ok, then lstat " + failed(errno);
    return "link ok nlink=" + std::to_string(by_fd.st_nlink) +
           (by_fd.st_ino == by_name.st_ino ? " same inode" : " another inode");
}

// The access the atime operation makes: a read of a file, a listing of a directory, or only an
// open of either (no exec: that needs a binary).
std::string atime_access(const std::string& path, const struct stat& st, int how) {
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return "neither file nor directory";
    int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0);
    Fd fd(open(path.c_str(), flags));
    if (fd.get() < 0) return "open " + failed(errno);
    if (how == kAtimeOpenOnly) return "opened";
    if (S_ISREG(st.st_mode)) {
        // Without passthrough laminafs's reads of cached pages never reach the daemon, which
        // alone moves the upper copy's atime (atime_results_agree): this read is to reach it,
        // on both sides alike.
        posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
        char buf[4096];
        return read(fd.get(), buf, sizeof buf) < 0 ? "read " + failed(errno) : "read";
    }
    int copy = dup(fd.get());
    DIR* dir = copy < 0 ? nullptr : fdopendir(copy);
    if (!dir) {
        if (copy >= 0) close(copy);
        return "opendir " + failed(errno);
    }
    errno = 0;
    while (readdir(dir)) {
    }
    std::string out = errno ? "readdir " + failed(errno) : "listed";
    closedir(dir);
    return out;
}

bool same_time(const struct timespec& a, const struct timespec& b) {
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

// Runs op on one side; the text is what both sides must agree on.
std::string run_op(const Op& op, Side& side) {
    const std::string p = side.at(op.path), q = side.at(op.path2);
    switch (op.kind) {
        case OpKind::Create:
        case OpKind::OpenCreat: {
            int flags = O_CREAT | O_WRONLY | O_NONBLOCK | O_CLOEXEC | (op.flags & O_TRUNC);
            if (op.kind == OpKind::Create) flags |= O_EXCL;
            int fd;
            {
                ScopedUmask mask(op.mask);
                fd = open(p.c_str(), flags, op.mode);
            }
            if (fd < 0) return failed(errno);
            Fd owner(fd);
            if (op.data.empty()) return "ok";
            return write_result(write(fd, op.data.data(), op.data.size()), op.data.size());
        }
        case OpKind::Write:
        case OpKind::Append: {
            int flags =
                O_WRONLY | O_NONBLOCK | O_CLOEXEC | (op.kind == OpKind::Append ? O_APPEND : 0);
            Fd fd(open(p.c_str(), flags));
            if (fd.get() < 0) return failed(errno);
            ssize_t n = op.kind == OpKind::Append ? write(fd.get(), op.data.data(), op.data.size())
                                                  : pwrite(fd.get(), op.data.data(), op.data.size(),
                                                           static_cast<off_t>(op.offset));
            return write_result(n, op.data.size());
        }
        case OpKind::Truncate:
            return rc_result(truncate(p.c_str(), static_cast<off_t>(op.length)));
        case OpKind::OpenWrite: {
            Fd fd(open(p.c_str(), op.flags | O_NONBLOCK | O_CLOEXEC));
            return fd.get() < 0 ? failed(errno) : "ok";
        }
        case OpKind::Unlink:
            return rc_result(unlink(p.c_str()));
        case OpKind::Rmdir:
            return rc_result(rmdir(p.c_str()));
        case OpKind::Mkdir: {
            ScopedUmask mask(op.mask);
            return rc_result(mkdir(p.c_str(), op.mode));
        }
        case OpKind::Mkfifo: {
            ScopedUmask mask(op.mask);
            return rc_result(mknod(p.c_str(), S_IFIFO | op.mode, 0));
        }
        case OpKind::Mknod:
            return rc_result(mknod(p.c_str(), S_IFCHR | op.mode, op.rdev));
        case OpKind::Rename:
            return rc_result(renameat2(AT_FDCWD, p.c_str(), AT_FDCWD, q.c_str(), 0));
        case OpKind::RenameNoreplace:
            return rc_result(renameat2(AT_FDCWD, p.c_str(), AT_FDCWD, q.c_str(), RENAME_NOREPLACE));
        case OpKind::RenameExchange:
            return rc_result(renameat2(AT_FDCWD, p.c_str(), AT_FDCWD, q.c_str(), RENAME_EXCHANGE));
        case OpKind::RenameWhiteout:
            return rc_result(renameat2(AT_FDCWD, p.c_str(), AT_FDCWD, q.c_str(), RENAME_WHITEOUT));
        case OpKind::Link:
            return rc_result(link(p.c_str(), q.c_str()));
        case OpKind::Symlink:
            return rc_result(symlink(op.data.c_str(), p.c_str()));
        case OpKind::Chmod:
            return rc_result(chmod(p.c_str(), op.mode));
        case OpKind::Chown:
            return rc_result(chown(p.c_str(), op.uid, op.gid));
        case OpKind::Lchown:
            return rc_result(lchown(p.c_str(), op.uid, op.gid));
        case OpKind::Utimens: {
            if (utimensat(AT_FDCWD, p.c_str(), op.times, op.flags) != 0) return failed(errno);
            struct stat st;
            int rc =
                (op.flags & AT_SYMLINK_NOFOLLOW) ? lstat(p.c_str(), &st) : stat(p.c_str(), &st);
            if (rc != 0) return "ok, then stat " + failed(errno);
            std::string out = "ok";
            auto set = [](const struct timespec& ts) {
                return ts.tv_nsec != UTIME_NOW && ts.tv_nsec != UTIME_OMIT;
            };
            if (set(op.times[0])) out += " atime " + time_text(st.st_atim);
            if (set(op.times[1])) out += " mtime " + time_text(st.st_mtim);
            return out;
        }
        case OpKind::SetXattr:
            return rc_result(
                lsetxattr(p.c_str(), op.name.c_str(), op.data.data(), op.data.size(), op.flags));
        case OpKind::RemoveXattr:
            return rc_result(lremovexattr(p.c_str(), op.name.c_str()));
        case OpKind::GetXattr: {
            std::vector<char> buf(65536);
            ssize_t n = lgetxattr(p.c_str(), op.name.c_str(), buf.data(), buf.size());
            return n < 0 ? failed(errno)
                         : "ok " + shown(std::string(buf.data(), static_cast<size_t>(n)));
        }
        case OpKind::ListXattr: {
            std::vector<char> buf(65536);
            ssize_t n = llistxattr(p.c_str(), buf.data(), buf.size());
            if (n < 0) return failed(errno);
            std::vector<std::string> names;
            for (ssize_t pos = 0; pos < n;) {
                names.emplace_back(buf.data() + pos);
                pos += static_cast<ssize_t>(names.back().size()) + 1;
            }
            std::sort(names.begin(), names.end());
            std::string out = "ok";
            for (const auto& name : names) out += " " + name;
            return out;
        }
        case OpKind::Readdir: {
            DirStream dir(p);
            if (!dir.get()) return failed(errno);
            std::vector<std::string> names;
            errno = 0;
            while (struct dirent* de = readdir(dir.get())) {
                std::string name = de->d_name;
                if (name == "." || name == "..") continue;
                struct stat st;
                if (lstat((p + "/" + name).c_str(), &st) != 0 && errno == ENOENT) {
                    errno = 0;
                    continue;
                }
                names.push_back(name + ":" + std::to_string(de->d_type));
                errno = 0;
            }
            if (errno != 0) return "readdir " + failed(errno);
            std::sort(names.begin(), names.end());
            std::string out = "ok";
            for (const auto& name : names) out += " " + quoted(name);
            return out;
        }
        case OpKind::Stat: {
            struct stat st;
            int rc = op.flags ? stat(p.c_str(), &st) : lstat(p.c_str(), &st);
            return rc != 0 ? failed(errno) : "ok " + stat_text(st);
        }
        case OpKind::Read: {
            Fd fd(open(p.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
            if (fd.get() < 0) return failed(errno);
            return read_result(fd.get(), op.offset, op.length);
        }
        case OpKind::Readlink: {
            char buf[PATH_MAX + 1];
            ssize_t n = readlink(p.c_str(), buf, sizeof buf);
            return n < 0 ? failed(errno) : "ok " + quoted(std::string(buf, static_cast<size_t>(n)));
        }
        case OpKind::Remount: {
            // Inode numbers survive a remount: a hard link, a cached handle or `find -inum`
            // relies on them. op.flags: compare them.
            Tree before;
            if (op.flags) before = walk_tree(side.mnt, {false, true});
            std::string err = side.remount();
            if (!err.empty()) return "remount failed: " + err;
            if (!op.flags) return "ok";
            Tree after = walk_tree(side.mnt, {false, true});
            std::string changed;
            for (const auto& [path, entry] : before) {
                auto it = after.find(path);
                if (it != after.end() && it->second.ino != entry.ino) {
                    changed = " st_ino of " + quoted(path) + " changed";
                    break;
                }
            }
            return "ok" + changed;
        }
        case OpKind::Fallocate: {
            Fd fd(open(p.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
            if (fd.get() < 0) return failed(errno);
            return rc_result(fallocate(fd.get(), op.flags, static_cast<off_t>(op.offset),
                                       static_cast<off_t>(op.length)));
        }
        case OpKind::CopyRange: {
            Fd in(open(p.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
            if (in.get() < 0) return "source " + failed(errno);
            Fd out(open(q.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
            if (out.get() < 0) return "destination " + failed(errno);
            auto off_in = static_cast<off_t>(op.offset), off_out = static_cast<off_t>(op.offset2);
            ssize_t n = copy_file_range(in.get(), &off_in, out.get(), &off_out, op.length, 0);
            return n < 0 ? failed(errno) : "ok " + std::to_string(n);
        }
        case OpKind::MmapWrite: {
            // A shared writable mapping of the file's first bytes, written and synced.
            Fd fd(open(p.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
            if (fd.get() < 0) return failed(errno);
            struct stat st;
            if (fstat(fd.get(), &st) != 0) return "fstat " + failed(errno);
            uint64_t end = std::min<uint64_t>(op.offset + op.data.size(), st.st_size);
            if (!S_ISREG(st.st_mode) || end <= op.offset) return "ok nothing mapped";
            void* map = mmap(nullptr, end, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
            if (map == MAP_FAILED) return "mmap " + failed(errno);
            memcpy(static_cast<char*>(map) + op.offset, op.data.data(), end - op.offset);
            int rc = msync(map, end, MS_SYNC);
            int err = errno;
            munmap(map, end);
            return rc == 0 ? "ok" : "msync " + failed(err);
        }
        case OpKind::Seek: {
            Fd fd(open(p.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
            if (fd.get() < 0) return failed(errno);
            // Where holes lie is copy-up's choice (the kernel copies whole chunks after the first
            // data), so the answer is checked, not compared: what SEEK_DATA skips, ENXIO's rest
            // of the file, and the block where SEEK_HOLE lands read as zeros.
            // FUSE serves lseek of a directory in the kernel (generic_file_llseek: the offset
            // back), where overlayfs refuses SEEK_DATA/SEEK_HOLE with EINVAL; laminafs never
            // sees it, so directories are not asked.
            struct stat st;
            if (fstat(fd.get(), &st) != 0) return "fstat " + failed(errno);
            if (S_ISDIR(st.st_mode)) return "a directory";
            auto offset = static_cast<off_t>(op.offset);
            off_t at = lseek(fd.get(), offset, op.flags);
            bool no_data = at < 0 && errno == ENXIO && op.flags == SEEK_DATA && offset < st.st_size;
            if (at < 0 && !no_data) return failed(errno);
            if (!no_data && (at < offset || at > st.st_size))
                return "ok " + std::to_string(at) + ", outside the file";
            off_t from = op.flags == SEEK_DATA ? offset : at;
            off_t to = no_data ? st.st_size : op.flags == SEEK_DATA ? at : (at / 4096 + 1) * 4096;
            to = std::min<off_t>(to, st.st_size);
            std::string skipped(static_cast<size_t>(std::max<off_t>(to - from, 0)), '\0');
            ssize_t n = pread(fd.get(), skipped.data(), skipped.size(), from);
            if (n < 0) return "read " + failed(errno);
            bool zeros =
                std::all_of(skipped.begin(), skipped.begin() + n, [](char c) { return c == 0; });
            return zeros ? "ok" : "ok " + std::to_string(at) + ", but data in the hole";
        }
        case OpKind::Statfs: {
            struct statvfs sv;
            if (statvfs(p.c_str(), &sv) != 0) return failed(errno);
            return "ok namemax=" + std::to_string(sv.f_namemax) +
                   " rdonly=" + std::to_string(sv.f_flag & ST_RDONLY);
        }
        case OpKind::Lock: {
            // A lock of each kind on one open, then what a second open of the file sees.
            Fd fd(open(p.c_str(), op.flags | O_NONBLOCK | O_CLOEXEC));
            if (fd.get() < 0) return failed(errno);
            bool writable = (op.flags & O_ACCMODE) != O_RDONLY;
            std::string out = "flock " + rc_result(flock(fd.get(), LOCK_EX | LOCK_NB));
            struct flock fl = {};
            fl.l_type = writable ? F_WRLCK : F_RDLCK;
            fl.l_whence = SEEK_SET;
            fl.l_len = 10;
            out += ", setlk " + rc_result(fcntl(fd.get(), F_OFD_SETLK, &fl));
            Fd other(open(p.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
            if (other.get() < 0) return out + ", second open " + failed(errno);
            out += ", second flock " + rc_result(flock(other.get(), LOCK_SH | LOCK_NB));
            struct flock probe = {};
            probe.l_type = F_WRLCK;
            probe.l_whence = SEEK_SET;
            probe.l_len = 1;
            if (fcntl(other.get(), F_OFD_GETLK, &probe) != 0)
                return out + ", getlk " + failed(errno);
            return out + ", getlk type " + std::to_string(probe.l_type);
        }
        case OpKind::Rotate: {
            std::string err = side.rotate();
            return err.empty() ? "ok" : "rotate failed: " + err;
        }
        case OpKind::FdOpen: {
            int& slot = side.slots[op.slot];
            if (slot >= 0) close(slot);
            slot = open(p.c_str(), op.flags | O_NONBLOCK | O_CLOEXEC);
            return slot < 0 ? failed(errno) : "ok";
        }
        case OpKind::Tmpfile:
        case OpKind::FdTmpfile: {
            int fd;
            {
                ScopedUmask mask(op.mask);
                fd = open(p.c_str(), O_TMPFILE | O_CLOEXEC | op.flags, op.mode);
            }
            if (op.kind == OpKind::FdTmpfile) {
                int& slot = side.slots[op.slot];
                if (slot >= 0) close(slot);
                slot = fd;
            }
            if (fd < 0) return failed(errno);
            Fd owner(op.kind == OpKind::Tmpfile ? fd : -1);  // a slot keeps it
            struct stat st;
            std::string out =
                fstat(fd, &st) != 0 ? "ok, fstat " + failed(errno) : "ok " + stat_text(st);
            if (!op.data.empty())
                out +=
                    ", " + write_result(write(fd, op.data.data(), op.data.size()), op.data.size());
            if (op.link == LinkHow::None) return out;
            bool linked = false;
            out += ", " + link_fd(fd, op.link, q, linked);
            // Written through the descriptor after the link: the name must show it.
            static const std::string more = "+linked";
            if (linked)
                out += ", " + write_result(pwrite(fd, more.data(), more.size(),
                                                  static_cast<off_t>(op.data.size())),
                                           more.size());
            return out;
        }
        case OpKind::Atime: {
            // Whether the access moved atime, not to what. Against laminafs only what the mount's
            // rule decides regardless of timing is held to (atime_results_agree); the kernel
            // against itself has ClockTicks make the rest exact too.
            bool aged = op.times[0].tv_nsec != UTIME_OMIT;
            std::string out;
            if (aged && utimensat(AT_FDCWD, p.c_str(), op.times, 0) != 0) {
                out = "age " + failed(errno) + ", ";
                aged = false;
            }
            struct stat before, after;
            if (stat(p.c_str(), &before) != 0) return out + "stat " + failed(errno);
            std::string access = atime_access(p, before, op.flags);
            out += std::string(S_ISDIR(before.st_mode) ? "directory " : "") + access;
            // What atime_results_agree needs: whether the access could reach the layer (a read
            // of data the cache was told to drop, atime far older than mtime) and whether the
            // entry has an upper copy (looked up in this side's upper layer).
            if (aged && access == "read" && before.st_size > 0) out += ", uncached read";
            struct stat up;
            std::unique_ptr<Fd> held;
            out += stat(reachable(join_path(side.upper, op.path), held).c_str(), &up) == 0
                       ? ", upper copy"
                       : ", lower only";
            if (stat(p.c_str(), &after) != 0) return out + ", then stat " + failed(errno);
            return out +
                   (same_time(before.st_atim, after.st_atim) ? ", atime kept" : ", atime moved");
        }
        default:
            break;
    }
    // Operations on a held descriptor.
    int fd = side.slots[op.slot];
    if (fd < 0) return "no descriptor";
    switch (op.kind) {
        case OpKind::FdRead:
            return read_result(fd, op.offset, op.length);
        case OpKind::FdWrite:
            return write_result(
                pwrite(fd, op.data.data(), op.data.size(), static_cast<off_t>(op.offset)),
                op.data.size());
        case OpKind::FdStat: {
            struct stat st;
            return fstat(fd, &st) != 0 ? failed(errno) : "ok " + stat_text(st);
        }
        case OpKind::FdTruncate:
            return rc_result(ftruncate(fd, static_cast<off_t>(op.length)));
        case OpKind::FdClose: {
            side.slots[op.slot] = -1;
            return rc_result(close(fd));
        }
        case OpKind::FdLink: {
            bool linked = false;
            return link_fd(fd, op.link, q, linked);
        }
        case OpKind::OpenAt: {
            // Creating through a held directory descriptor, not a path from the root.
            int flags = O_CREAT | O_WRONLY | O_NONBLOCK | O_CLOEXEC | op.flags;
            int created;
            {
                ScopedUmask mask(op.mask);
                created = openat(fd, op.name.c_str(), flags, op.mode);
            }
            if (created < 0) return failed(errno);
            Fd owner(created);
            if (op.data.empty()) return "ok";
            return write_result(write(created, op.data.data(), op.data.size()), op.data.size());
        }
        case OpKind::Concurrent: {
            // The threads start together; their results are compared as a sorted list, which
            // the generator's choice of parts makes independent of the order they ran in. The
            // umask is the process's: set once, and each part's ScopedUmask keeps it.
            ScopedUmask mask(op.mask);
            std::vector<std::string> results(op.parts.size());
            std::atomic<size_t> ready{0};
            std::vector<std::thread> threads;
            for (size_t i = 0; i < op.parts.size(); ++i) {
                threads.emplace_back([&, i] {
                    ready++;
                    while (ready.load() < op.parts.size()) std::this_thread::yield();
                    results[i] = run_op(op.parts[i], side);
                });
            }
            for (auto& t : threads) t.join();
            std::sort(results.begin(), results.end());
            std::string out = "done";
            for (const auto& r : results) out += " [" + r + "]";
            return out;
        }
        default:
            break;
    }
    return "unknown operation";
}

// Runs op as its caller: the test itself, or a child process that takes the caller's gid,
// supplementary groups and uid (losing every capability) and sends back its result.
std::string run_as_caller(const Op& op, Side& side) {
    if (op.as_uid == 0 && op.as_gid == 0) return run_op(op, side);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return "pipe " + failed(errno);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return "fork " + failed(errno);
    }
    if (pid == 0) {
        close(fds[0]);
        std::string out;
        if (setgroups(op.groups.size(), op.groups.data()) != 0)
            out = "setgroups " + failed(errno);
        else if (setresgid(op.as_gid, op.as_gid, op.as_gid) != 0)
            out = "setresgid " + failed(errno);
        else if (setresuid(op.as_uid, op.as_uid, op.as_uid) != 0)
            out = "setresuid " + failed(errno);
        else
            out = run_op(op, side);
        for (size_t done = 0; done < out.size();) {
            ssize_t n = write(fds[1], out.data() + done, out.size() - done);
            if (n <= 0) break;
            done += static_cast<size_t>(n);
        }
        _exit(0);
    }
    close(fds[1]);
    std::string out;
    read_all(fds[0], out);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status)) return "caller process died (status " + std::to_string(status) + ")";
    return out;
}

// ---------------------------------------------------------------------------------------------
// Choosing operations from the merged tree as the kernel shows it.

struct TreeView {
    std::vector<std::string> all;   // every path but the root
    std::vector<std::string> dirs;  // the root included
    std::vector<std::string> files;
    std::vector<std::string> symlinks;
    std::vector<std::string> single_files;  // regular files with one name
    std::map<std::string, off_t> sizes;

    explicit TreeView(const Tree& tree) {
        for (const auto& [path, entry] : tree) {
            if (!path.empty()) all.push_back(path);
            if (entry.type == 'd') dirs.push_back(path);
            if (entry.type == 'f') files.push_back(path);
            if (entry.type == 'l') symlinks.push_back(path);
            if (entry.type == 'f') {
                auto it = entry.fields.find("stat");
                size_t pos =
                    it == entry.fields.end() ? std::string::npos : it->second.find("size=");
                sizes[path] =
                    pos == std::string::npos ? 0 : std::atoll(it->second.c_str() + pos + 5);
                if (it != entry.fields.end() && it->second.find(" nlink=1") != std::string::npos)
                    single_files.push_back(path);
            }
        }
        if (dirs.empty()) dirs.push_back("");
    }
};

class OpGenerator {
public:
    OpGenerator(uint64_t seed, const std::set<std::string>& skip)
        : rng_(seed), late_rng_(mix_seed(seed, 1)), features_(features_without(skip)) {
        for (const auto& info : kKinds) {
            if (!skip.count(info.name)) (info.late ? late_kinds_ : kinds_).push_back(info);
        }
    }

    Op next(const TreeView& view) {
        // A late kind (KindInfo::late) now and then, chosen and filled from the second stream:
        // the first one goes on as it did before they existed.
        bool late = !late_kinds_.empty() && late_rng_.chance(kLatePercent);
        if (late) std::swap(rng_, late_rng_);
        Op op;
        op.kind = random_kind(late ? late_kinds_ : kinds_);
        switch (op.kind) {
            case OpKind::Create:
            case OpKind::OpenCreat:
                op.path = rng_.chance(80) ? new_path(view) : existing(view, view.all);
                op.mode = random_file_mode(rng_);
                op.mask = random_umask();
                if (op.kind == OpKind::OpenCreat && rng_.chance(50)) op.flags = O_TRUNC;
                if (rng_.chance(70)) op.data = random_bytes(rng_, data_length());
                break;
            case OpKind::Write:
                op.path = existing(view, view.files);
                op.offset = write_offset(view, op.path);
                op.data = random_bytes(rng_, data_length());
                break;
            case OpKind::Append:
                op.path = existing(view, view.files);
                op.data = random_bytes(rng_, data_length());
                break;
            case OpKind::Truncate:
                op.path = existing(view, rng_.chance(85) ? view.files : view.all);
                op.length = write_offset(view, op.path);
                break;
            case OpKind::OpenWrite: {
                op.path = existing(view, rng_.chance(85) ? view.files : view.all);
                static const std::vector<int> flags = {O_WRONLY, O_RDWR, O_WRONLY | O_TRUNC,
                                                       O_RDWR | O_APPEND};
                op.flags = rng_.pick(flags);
                break;
            }
            case OpKind::Unlink:
                op.path = existing(view, rng_.chance(85) ? nondirs(view) : view.all);
                break;
            case OpKind::Rmdir:
                op.path = existing(view, rng_.chance(85) ? view.dirs : view.all);
                break;
            case OpKind::Mkdir:
                op.path = rng_.chance(85) ? new_path(view) : existing(view, view.all);
                op.mode = features_.dir_mode(random_dir_mode(rng_));
                op.mask = random_umask();
                break;
            case OpKind::Mkfifo:
                op.path = new_path(view);
                op.mode = random_file_mode(rng_) & 0777;
                op.mask = random_umask();
                break;
            case OpKind::Mknod:
                op.path = new_path(view);
                op.mode = 0644;
                op.rdev = rng_.chance(50) ? makedev(0, 0) : makedev(1, 3);
                break;
            case OpKind::Rename:
            case OpKind::RenameNoreplace:
            case OpKind::RenameWhiteout:
                op.path = existing(view, view.all);
                op.path2 = rename_target(view, op.path, 40);
                break;
            case OpKind::RenameExchange:
                op.path = existing(view, view.all);
                op.path2 = rename_target(view, op.path, 85);
                break;
            case OpKind::Link:
                op.path = existing(view, rng_.chance(90) ? nondirs(view) : view.all);
                op.path2 = rng_.chance(85) ? new_path(view) : existing(view, view.all);
                break;
            case OpKind::Symlink:
                op.path = rng_.chance(90) ? new_path(view) : existing(view, view.all);
                op.data = random_symlink_target(rng_);
                if (op.data == "self-loop") op.data = op.path.substr(op.path.rfind('/') + 1);
                break;
            case OpKind::Chmod:
                op.path = existing(view, view.all);
                op.mode = features_.dir_mode(rng_.chance(50) ? random_file_mode(rng_)
                                                             : random_dir_mode(rng_));
                break;
            case OpKind::Chown:
            case OpKind::Lchown:
                op.path = existing(view, view.all);
                op.uid = rng_.chance(15) ? static_cast<uid_t>(-1) : rng_.pick(kIds);
                op.gid = rng_.chance(15) ? static_cast<gid_t>(-1) : rng_.pick(kIds);
                break;
            case OpKind::Utimens:
                op.path = existing(view, view.all);
                op.times[0] = random_time();
                op.times[1] = random_time();
                op.flags = rng_.chance(50) ? AT_SYMLINK_NOFOLLOW : 0;
                break;
            case OpKind::SetXattr: {
                op.path = existing(view, view.all);
                op.name = xattr_name();
                op.data =
                    random_bytes(rng_, rng_.chance(5) ? rng_.between(1000, 3000) : rng_.below(30));
                static const std::vector<int> flags = {0, 0, XATTR_CREATE, XATTR_REPLACE};
                op.flags = rng_.pick(flags);
                break;
            }
            case OpKind::RemoveXattr:
            case OpKind::GetXattr:
                op.path = existing(view, view.all);
                op.name = xattr_name();
                break;
            case OpKind::ListXattr:
                op.path = existing(view, view.all);
                break;
            case OpKind::Readdir:
                op.path = existing(view, rng_.chance(90) ? view.dirs : view.all);
                break;
            case OpKind::Stat:
                op.path = existing(view, view.all);
                op.flags = rng_.chance(40) ? 1 : 0;
                break;
            case OpKind::Read:
                op.path = existing(view, rng_.chance(90) ? view.files : view.all);
                op.offset = rng_.chance(70) ? 0 : write_offset(view, op.path);
                op.length = rng_.chance(80) ? 65536 : rng_.between(1, 100);
                break;
            case OpKind::Readlink:
                op.path = existing(view, rng_.chance(80) ? view.symlinks : view.all);
                break;
            case OpKind::FdOpen: {
                op.slot = static_cast<int>(rng_.below(kSlots));
                op.path = existing(view, rng_.chance(85) ? view.files : view.all);
                static const std::vector<int> flags = {O_RDONLY,
                                                       O_RDONLY,
                                                       O_WRONLY,
                                                       O_RDWR,
                                                       O_RDWR,
                                                       O_RDWR | O_APPEND,
                                                       O_RDONLY | O_DIRECTORY};
                op.flags = rng_.pick(flags);
                if ((op.flags & O_DIRECTORY) && rng_.chance(85))
                    op.path = existing(view, view.dirs);
                held_[op.slot] = op.path;
                break;
            }
            case OpKind::FdRead:
            case OpKind::FdWrite:
            case OpKind::FdStat:
            case OpKind::FdTruncate:
            case OpKind::FdClose:
                op.slot = static_cast<int>(rng_.below(kSlots));
                op.path = held_[op.slot];  // only for the record
                op.offset = write_offset(view, op.path);
                op.length = op.kind == OpKind::FdTruncate ? write_offset(view, op.path) : 4096;
                if (op.kind == OpKind::FdWrite) op.data = random_bytes(rng_, data_length());
                break;
            case OpKind::Remount:
            case OpKind::Rotate:
                for (auto& held : held_) held.clear();
                if (op.kind == OpKind::Remount && features_.inode_sharing) op.flags = 1;
                break;
            case OpKind::Fallocate: {
                op.path = existing(view, rng_.chance(90) ? view.files : view.all);
                static const std::vector<int> modes = {
                    0,
                    FALLOC_FL_KEEP_SIZE,
                    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    FALLOC_FL_ZERO_RANGE,
                    FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                    FALLOC_FL_PUNCH_HOLE};  // the last is EOPNOTSUPP: punching needs KEEP_SIZE
                op.flags = rng_.pick(modes);
                if (!features_.ranges_into_links) op.path = existing(view, view.single_files);
                op.offset = write_offset(view, op.path);
                op.length = rng_.chance(10) ? 0 : rng_.between(1, 20000);
                break;
            }
            case OpKind::CopyRange:
                op.path = existing(view, rng_.chance(90) ? view.files : view.all);
                op.path2 = rng_.chance(20) ? op.path : existing(view, view.files);
                if (!features_.ranges_into_links) op.path2 = existing(view, view.single_files);
                op.offset = write_offset(view, op.path);
                op.offset2 = write_offset(view, op.path2);
                op.length = data_length();
                break;
            case OpKind::MmapWrite:
                op.path = existing(view, rng_.chance(90) ? view.files : view.all);
                op.offset = write_offset(view, op.path);
                op.data = random_bytes(rng_, data_length());
                break;
            case OpKind::Seek:
                op.path = existing(view, rng_.chance(90) ? view.files : view.all);
                op.flags = rng_.chance(50) ? SEEK_DATA : SEEK_HOLE;
                op.offset = write_offset(view, op.path);
                break;
            case OpKind::Statfs:
                op.path = existing(view, view.all);
                break;
            case OpKind::Lock: {
                op.path = existing(view, rng_.chance(90) ? view.files : view.all);
                static const std::vector<int> flags = {O_RDONLY, O_WRONLY, O_RDWR};
                op.flags = rng_.pick(flags);
                break;
            }
            case OpKind::Concurrent:
                fill_concurrent(op, view);
                break;
            case OpKind::OpenAt:
                op.slot = static_cast<int>(rng_.below(kSlots));
                op.name = new_name();
                op.path = join_path(held_[op.slot], op.name);  // only for the record
                op.mode = random_file_mode(rng_);
                op.mask = random_umask();
                op.flags = (rng_.chance(50) ? O_TRUNC : 0) | (rng_.chance(20) ? O_EXCL : 0);
                if (rng_.chance(60)) op.data = random_bytes(rng_, data_length());
                break;
            case OpKind::Tmpfile:
            case OpKind::FdTmpfile:
                op.path = existing(view, rng_.chance(90) ? view.dirs : view.all);
                op.mode = random_file_mode(rng_);
                op.mask = random_umask();
                op.flags = (rng_.chance(70) ? O_RDWR : O_WRONLY) | (rng_.chance(15) ? O_EXCL : 0);
                if (rng_.chance(75)) op.data = random_bytes(rng_, data_length());
                if (op.kind == OpKind::FdTmpfile) {
                    op.slot = static_cast<int>(rng_.below(kSlots));
                    held_[op.slot] = op.path;
                } else if (rng_.chance(85)) {
                    op.link = rng_.chance(60) ? LinkHow::ProcFd : LinkHow::EmptyPath;
                    op.path2 = link_target(view, op.path);
                }
                break;
            case OpKind::FdLink: {
                op.slot = static_cast<int>(rng_.below(kSlots));
                op.path = held_[op.slot];  // only for the record
                op.link = rng_.chance(60) ? LinkHow::ProcFd : LinkHow::EmptyPath;
                bool dir = std::count(view.dirs.begin(), view.dirs.end(), op.path) > 0;
                op.path2 = link_target(view, dir ? op.path : parent_of(op.path));
                break;
            }
            case OpKind::Atime: {
                uint64_t roll = rng_.below(100);
                op.path = existing(view, roll < 55 ? view.files : roll < 95 ? view.dirs : view.all);
                op.flags = rng_.chance(70) ? kAtimeRead : kAtimeOpenOnly;
                op.times[0] = rng_.chance(35)
                                  ? timespec{kAgedAtime + static_cast<time_t>(rng_.below(1000)), 0}
                                  : timespec{0, UTIME_OMIT};
                op.times[1] = {0, UTIME_OMIT};
                break;
            }
        }
        if (features_.callers && op.kind != OpKind::Remount && op.kind != OpKind::Rotate &&
            op.kind != OpKind::Concurrent && op.kind != OpKind::FdOpen &&
            op.kind != OpKind::FdClose && op.kind != OpKind::FdTmpfile &&
            (op.kind != OpKind::ListXattr || features_.caller_listxattr) &&
            (features_.caller_chown_noop || !is_chown_noop(op)) && rng_.chance(35))
            choose_caller(op);
        if (late) std::swap(rng_, late_rng_);
        note_removed(op);
        return op;
    }

private:
    // 2-4 threads at once on overlapping names, in shapes whose final tree and sorted results do
    // not depend on the order the threads ran in: one new name created by all (one wins, the
    // others get EEXIST), one entry removed by all, one file's attributes set by all (distinct
    // xattrs, a mode), or distinct names below one directory changed by all (their parents
    // copied up at once).
    void fill_concurrent(Op& op, const TreeView& view) {
        size_t threads = rng_.between(2, 4);
        op.mask = random_umask();
        uint64_t shape = rng_.below(100);
        auto add = [&](Op part) {
            part.mask = op.mask;
            op.parts.push_back(std::move(part));
        };
        if (shape < 25) {
            Op part;
            part.kind = rng_.chance(50) ? OpKind::Create : OpKind::Mkdir;
            part.path = new_path(view);
            part.mode = part.kind == OpKind::Create ? random_file_mode(rng_)
                                                    : features_.dir_mode(random_dir_mode(rng_));
            if (part.kind == OpKind::Create && rng_.chance(50))
                part.data = random_bytes(rng_, data_length());
            for (size_t i = 0; i < threads; ++i) add(part);
        } else if (shape < 40) {
            Op part;
            part.path = existing(view, view.all);
            bool is_dir = std::count(view.dirs.begin(), view.dirs.end(), part.path) > 0;
            part.kind = is_dir ? OpKind::Rmdir : OpKind::Unlink;
            for (size_t i = 0; i < threads; ++i) add(part);
        } else if (shape < 65) {
            std::string file = existing(view, view.files);
            for (size_t i = 0; i < threads; ++i) {
                Op part;
                part.path = file;
                if (i == 0 && rng_.chance(40)) {
                    part.kind = OpKind::Chmod;
                    part.mode = random_file_mode(rng_);
                } else {
                    part.kind = OpKind::SetXattr;
                    part.name = "user.t" + std::to_string(i);
                    part.data = random_bytes(rng_, rng_.below(30));
                }
                add(std::move(part));
            }
        } else {
            std::string dir = rng_.pick(view.dirs);
            std::vector<std::string> below;
            // Files of one name: two names of one inode would make the order matter.
            for (const auto& f : view.single_files)
                if (dir.empty() || is_under(f, dir)) below.push_back(f);
            std::set<std::string> taken;
            for (size_t i = 0; i < threads; ++i) {
                Op part;
                if (below.empty() || rng_.chance(35)) {
                    part.kind = rng_.chance(60) ? OpKind::Create : OpKind::Mkdir;
                    part.path = join_path(dir, "t" + std::to_string(i));
                    part.mode = part.kind == OpKind::Create ? random_file_mode(rng_) : 0755;
                    if (part.kind == OpKind::Create) part.data = random_bytes(rng_, data_length());
                } else {
                    part.path = rng_.pick(below);
                    static const std::vector<OpKind> kinds = {OpKind::Write, OpKind::Append,
                                                              OpKind::Truncate, OpKind::SetXattr,
                                                              OpKind::Chmod};
                    part.kind = rng_.pick(kinds);
                    part.offset = write_offset(view, part.path);
                    part.length = write_offset(view, part.path);
                    part.data = random_bytes(rng_, data_length());
                    part.name = "user.t" + std::to_string(i);
                    part.mode = random_file_mode(rng_);
                }
                if (taken.insert(part.path).second) add(std::move(part));
            }
        }
    }

    // Where a descriptor gets a name: one lately removed (a whiteout may hide it now), one that
    // exists (EEXIST), a new one beside near_dir's entries, or any.
    std::string link_target(const TreeView& view, const std::string& near_dir) {
        uint64_t roll = rng_.below(100);
        if (roll < 25 && !removed_.empty()) return rng_.pick(removed_);
        if (roll < 40) return existing(view, view.all);
        if (roll < 80) return join_path(near_dir, new_name());
        return new_path(view);
    }

    void note_removed(const Op& op) {
        static const std::set<OpKind> removing = {OpKind::Unlink, OpKind::Rmdir, OpKind::Rename,
                                                  OpKind::RenameNoreplace, OpKind::RenameWhiteout};
        if (!removing.count(op.kind) || op.path.empty()) return;
        removed_.push_back(op.path);
        if (removed_.size() > 8) removed_.erase(removed_.begin());
    }

    static bool is_chown_noop(const Op& op) {
        return (op.kind == OpKind::Chown || op.kind == OpKind::Lchown) &&
               op.uid == static_cast<uid_t>(-1) && op.gid == static_cast<gid_t>(-1);
    }

    // An unprivileged caller, the owner of some generated entries or not, with some groups.
    void choose_caller(Op& op) {
        static const std::vector<uint32_t> ids = {1000, 1001, 65534};
        op.as_uid = rng_.pick(ids);
        op.as_gid = rng_.pick(ids);
        for (gid_t group : {0u, 1000u, 1001u}) {
            if (rng_.chance(25)) op.groups.push_back(group);
        }
    }

    OpKind random_kind(const std::vector<KindInfo>& kinds) {
        int total = 0;
        for (const auto& info : kinds) total += info.weight;
        int roll = static_cast<int>(rng_.below(static_cast<uint64_t>(total)));
        for (const auto& info : kinds) {
            if (roll < info.weight) return info.kind;
            roll -= info.weight;
        }
        return OpKind::Stat;
    }

    static std::vector<std::string> nondirs(const TreeView& view) {
        std::vector<std::string> out;
        std::set<std::string> dirs(view.dirs.begin(), view.dirs.end());
        for (const auto& path : view.all) {
            if (!dirs.count(path)) out.push_back(path);
        }
        return out;
    }

    std::string new_name() {
        uint64_t roll = rng_.below(1000);
        if (roll < 6) return std::string(255, 'L');   // the longest allowed
        if (roll < 10) return std::string(256, 'L');  // ENAMETOOLONG
        if (roll < 700) return rng_.pick(kNames);
        return "m" + std::to_string(rng_.below(8));
    }

    // A name in some directory; often one that exists or that a whiteout hides.
    std::string new_path(const TreeView& view) {
        std::string parent = rng_.pick(view.dirs);
        if (rng_.chance(4) && !view.files.empty()) parent = rng_.pick(view.files);  // ENOTDIR
        if (rng_.chance(3)) parent = join_path(parent, "missing");                  // ENOENT
        std::string path = join_path(parent, new_name());
        if (rng_.chance(2)) path += "/";
        return path;
    }

    // Mostly a path of the given list; sometimes a missing, ENOTDIR or trailing-slash variant.
    std::string existing(const TreeView& view, const std::vector<std::string>& from) {
        uint64_t roll = rng_.below(100);
        if (from.empty() || roll < 4)
            return join_path(rng_.pick(view.dirs), "gone" + std::to_string(rng_.below(3)));
        std::string path = rng_.pick(from);
        if (roll < 7) return path + "/a";  // through a non-directory, or a name that may exist
        if (roll < 9) return path + "/";
        return path;
    }

    std::string rename_target(const TreeView& view, const std::string& source,
                              unsigned existing_percent) {
        uint64_t roll = rng_.below(100);
        if (roll < 5 && !source.empty())
            return join_path(source, rng_.pick(kNames));  // into itself
        if (roll < 10 && !parent_of(source).empty())
            return join_path(parent_of(parent_of(source)), rng_.pick(kNames));
        if (rng_.chance(existing_percent) && !view.all.empty()) {
            // Prefer targets near the source: same directory or a sibling's child.
            std::vector<std::string> near;
            std::string parent = parent_of(source);
            for (const auto& path : view.all) {
                if (parent_of(path) == parent || is_under(path, parent_of(parent)))
                    near.push_back(path);
            }
            return existing(view, !near.empty() && rng_.chance(60) ? near : view.all);
        }
        return new_path(view);
    }

    uint64_t data_length() {
        if (rng_.chance(10)) return rng_.between(1000, 9000);
        return rng_.between(1, 64);
    }

    uint64_t write_offset(const TreeView& view, const std::string& path) {
        auto it = view.sizes.find(path);
        uint64_t size = it == view.sizes.end() ? 0 : static_cast<uint64_t>(it->second);
        uint64_t roll = rng_.below(100);
        if (roll < 55) return rng_.below(size + 1);
        if (roll < 75) return size + rng_.below(100);
        if (roll < 85) return 0;
        if (roll < 95) return 4096 * rng_.between(1, 4) + rng_.below(10);
        return (1u << 20) + rng_.below(100);
    }

    mode_t random_umask() {
        static const std::vector<mode_t> masks = {022, 022, 0, 077, 002, 027};
        return rng_.pick(masks);
    }

    struct timespec random_time() {
        uint64_t roll = rng_.below(100);
        if (roll < 10) return {0, UTIME_NOW};
        if (roll < 20) return {0, UTIME_OMIT};
        return {static_cast<time_t>(rng_.between(1000000000, 1900000000)),
                static_cast<long>(rng_.chance(30) ? 0 : rng_.below(1000000000))};
    }

    std::string xattr_name() {
        if (rng_.chance(5)) return "trusted.fuzz.t" + std::to_string(rng_.below(2));
        return "user.k" + std::to_string(rng_.below(5));
    }

    Rng rng_;
    Rng late_rng_;  // the late kinds' stream, swapped in while one is made
    Features features_;
    std::vector<KindInfo> kinds_;
    std::vector<KindInfo> late_kinds_;
    std::array<std::string, kSlots> held_;
    std::vector<std::string> removed_;  // paths lately unlinked or renamed away, oldest first
};

// ---------------------------------------------------------------------------------------------
// Whether the two sides' results agree: equal, or for the atime operation different only as
// laminafs may differ (docs/architecture.md, "Differences from kernel overlayfs, on purpose").
// laminafs moves an upper copy's atime only when an access reaches the daemon, and the kernel's
// caches answer many without it: the page cache (no passthrough), the readdir cache, reads at
// the end of a file. So laminafs may keep an atime the kernel moves, except on an uncached read
// of an aged file, which must reach the daemon. And it may show an upper copy's atime moved
// where the kernel keeps it: an access the caches answered left it older than mtime (relatime),
// or stat showed the kernel's cached atime until this access refreshed it. Never a lower-only
// entry's, and where the rule keeps it (any under noatime, a directory's under nodiratime) only
// after a refused open, which refreshes what stat shows.
bool atime_results_agree(const std::string& kernel, const std::string& lamina,
                         const std::string& atime_option) {
    static const std::string moved = ", atime moved", kept = ", atime kept";
    auto ends = [](const std::string& text, const std::string& tail) {
        return text.size() >= tail.size() &&
               text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
    };
    bool kernel_moved = ends(kernel, moved), lamina_moved = ends(lamina, moved);
    if (!(kernel_moved || ends(kernel, kept)) || !(lamina_moved || ends(lamina, kept)))
        return false;
    std::string access = kernel.substr(0, kernel.size() - (kernel_moved ? moved : kept).size());
    if (access != lamina.substr(0, lamina.size() - (lamina_moved ? moved : kept).size()))
        return false;
    if (kernel_moved) return access.find(", uncached read") == std::string::npos;
    if (access.find(", upper copy") == std::string::npos) return false;
    // A refused open has the kernel fetch attributes again (fuse_permission): it shows an upper
    // copy's atime that changed since the kernel cached it, whatever the option (seed 216).
    if (access.find("open ERR") != std::string::npos) return true;
    bool dir = access.find("directory ") != std::string::npos;
    return atime_option.find("noatime") == std::string::npos &&
           !(dir && atime_option.find("nodiratime") != std::string::npos);
}

// exact: the kernel on both sides (LAMINA_FUZZ_CANDIDATE=kernel), which must agree to the byte.
bool results_agree(const Op& op, const std::string& kernel, const std::string& lamina,
                   const std::string& atime_option, bool exact) {
    if (kernel == lamina) return true;
    return !exact && op.kind == OpKind::Atime && atime_results_agree(kernel, lamina, atime_option);
}

// ---------------------------------------------------------------------------------------------
// Under relatime an access moves atime when atime is not newer than mtime or ctime: stamped in
// the same tick of the coarse clock as a change just before it, atime equals the change's time
// and the next access moves it again; a tick later, it does not. Which of the two happened would
// hang on how fast each side ran. So before an operation that may read (and before the tree
// walks, which read everything) the run waits until that clock has ticked since the end of what
// came before: every atime stamped is then strictly newer than every change before it, and an
// access that moves atime gives it a value it did not have. Only the kernel-against-itself run
// (LAMINA_FUZZ_CANDIDATE=kernel) needs it: there results must agree to the byte, while against
// laminafs atime_results_agree accepts every outcome timing could change (a tick is 4 ms here,
// waited for on most operations).

class ClockTicks {
public:
    explicit ClockTicks(bool on) : on_(on) {}
    // What came before has ended (both sides).
    void mark() {
        if (on_) clock_gettime(CLOCK_REALTIME_COARSE, &last_);
    }
    void wait_past_mark() const {
        if (!on_) return;
        for (struct timespec now;;) {
            clock_gettime(CLOCK_REALTIME_COARSE, &now);
            if (now.tv_sec != last_.tv_sec || now.tv_nsec != last_.tv_nsec) return;
            usleep(200);
        }
    }

private:
    bool on_;
    struct timespec last_ = {};
};

// Operations that may move an atime: reads, listings, and the remount's walks.
bool may_stamp_atime(OpKind kind) {
    switch (kind) {
        case OpKind::Readdir:
        case OpKind::Read:
        case OpKind::FdRead:
        case OpKind::CopyRange:
        case OpKind::MmapWrite:
        case OpKind::Seek:
        case OpKind::Remount:
        case OpKind::Atime:
            return true;
        default:
            return false;
    }
}

// ---------------------------------------------------------------------------------------------
// A hung daemon must end the test, not hang it: past the deadline the FUSE connection is aborted,
// so the stuck call returns ENOTCONN and the run reports it.

class HangGuard {
public:
    HangGuard() : thread_([this] { watch(); }) {}
    ~HangGuard() {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    HangGuard(const HangGuard&) = delete;
    HangGuard& operator=(const HangGuard&) = delete;

    void arm(dev_t fuse_dev, std::string what) {
        std::lock_guard lock(mu_);
        fuse_dev_ = fuse_dev;
        what_ = std::move(what);
        armed_ = fuse_dev != 0;
        deadline_ = std::chrono::steady_clock::now() + kStepLimit;
        cv_.notify_all();
    }
    void disarm() {
        std::lock_guard lock(mu_);
        armed_ = false;
    }
    bool fired() const { return fired_; }

private:
    void watch() {
        std::unique_lock lock(mu_);
        while (!stop_) {
            if (!armed_) {
                cv_.wait(lock);
                continue;
            }
            if (cv_.wait_until(lock, deadline_) != std::cv_status::timeout) continue;
            if (!armed_ || std::chrono::steady_clock::now() < deadline_) continue;
            std::cout << "laminafs did not answer within " << kStepLimit.count()
                      << " s during: " << what_ << "; aborting its FUSE connection" << std::endl;
            std::ofstream(std::string("/sys/fs/fuse/connections/") +
                          std::to_string(minor(fuse_dev_)) + "/abort")
                << "1";
            fired_ = true;
            armed_ = false;
        }
    }

    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;
    bool armed_ = false;
    dev_t fuse_dev_ = 0;
    std::string what_;
    std::chrono::steady_clock::time_point deadline_;
    std::atomic<bool> fired_{false};
    std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// A pair of mounts over fresh copies of the same lower layers.

struct Config {
    uint64_t seed = 0;
    uint64_t ops = 1200;
    uint64_t check_every = 1;
    std::vector<int> depths = {1, 2, 4, 16};
    std::set<std::string> skip;
    bool minimize = false;
    bool candidate_is_kernel = false;
    bool drop_caches = false;
    std::optional<std::string> lamina_options;  // LAMINA_FUZZ_OPTIONS; else chosen per depth
    std::optional<std::string> atime;           // LAMINA_FUZZ_ATIME; else chosen per depth
};

// Rewrites the lower entries laminafs's copy holds in OCI form (to_oci), or back to the kernel's
// form for the cross mount, where the kernel reads that copy.
std::string convert_oci(const std::string& layers, const std::vector<OciEntry>& entries,
                        bool to_oci) {
    for (const auto& e : entries) {
        std::string dir = layers + "/l" + std::to_string(e.layer);
        std::string abs = dir + "/" + e.path;
        if (e.opaque) {
            std::string marker = abs + "/.wh..wh..opq";
            if (to_oci) {
                if (lremovexattr(abs.c_str(), "trusted.overlay.opaque") != 0)
                    return "removexattr " + abs + ": " + strerror(errno);
                Fd fd(open(marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
                if (fd.get() < 0) return "create " + marker + ": " + strerror(errno);
            } else {
                if (unlink(marker.c_str()) != 0) return "unlink " + marker + ": " + strerror(errno);
                lsetxattr(abs.c_str(), "trusted.overlay.opaque", "y", 1, 0);
            }
            continue;
        }
        std::string parent = parent_of(e.path);
        std::string name = e.path.substr(parent.empty() ? 0 : parent.size() + 1);
        std::string oci = (parent.empty() ? dir : dir + "/" + parent) + "/.wh." + name;
        const std::string& from = to_oci ? abs : oci;
        if (unlink(from.c_str()) != 0) return "unlink " + from + ": " + strerror(errno);
        if (to_oci) {
            Fd fd(open(oci.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
            if (fd.get() < 0) return "create " + oci + ": " + strerror(errno);
        } else if (mknod(abs.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0) {
            return "mknod " + abs + ": " + strerror(errno);
        }
    }
    return "";
}

// laminafs's extra mount options for a depth: LAMINA_FUZZ_OPTIONS, or one of the variants
// chosen by the depth's seed (a tiny directory cache evicts on nearly every lookup).
std::string lamina_options_for(const Config& cfg, uint64_t seed) {
    if (cfg.lamina_options) return *cfg.lamina_options;
    if (cfg.skip.count("mount_options"))
        return cfg.skip.count("passthrough") ? "passthrough=off" : "";
    static const std::vector<std::string> variants = {"", "", "passthrough", "dir_cache_entries=2",
                                                      "passthrough,dir_cache_entries=3"};
    Rng rng(mix_seed(seed, 3));
    std::string options = rng.pick(variants);
    // Passthrough is on by default: skipping it means turning it off.
    if (cfg.skip.count("passthrough")) {
        if (options.rfind("passthrough", 0) == 0)
            options = options == "passthrough" ? "" : "dir_cache_entries=3";
        options = "passthrough=off" + std::string(options.empty() ? "" : ",") + options;
    }
    return options;
}

// The atime option(s) both mounts get for a depth: LAMINA_FUZZ_ATIME, or one chosen by the
// depth's seed, the default (relatime) half the time.
std::string atime_option_for(const Config& cfg, uint64_t seed) {
    if (cfg.atime) return *cfg.atime;
    if (cfg.skip.count("atime_options")) return "";
    static const std::vector<std::string> variants = {"",
                                                      "",
                                                      "",
                                                      "",
                                                      "",
                                                      "relatime",
                                                      "noatime",
                                                      "strictatime",
                                                      "nodiratime",
                                                      "strictatime,nodiratime",
                                                      "relatime,lazytime"};
    Rng rng(mix_seed(seed, 4));
    return rng.pick(variants);
}

class Session {
public:
    Session(const std::string& pristine, int depth, bool candidate_is_kernel,
            const std::vector<OciEntry>& oci, const std::string& options, const std::string& atime)
        : dir_("lamina-fuzz-run"), oci_(candidate_is_kernel ? std::vector<OciEntry>{} : oci) {
        chmod(dir_.path().c_str(), 0755);  // unprivileged callers reach the mounts
        kernel_.label = "kernel";
        lamina_.label = candidate_is_kernel ? "kernel (as candidate)" : "laminafs";
        lamina_.laminafs = !candidate_is_kernel;
        kernel_.atime = lamina_.atime = atime;
        if (!candidate_is_kernel) lamina_.options = options;
        error_ = prepare(pristine, depth, kernel_, "k");
        if (error_.empty()) error_ = prepare(pristine, depth, lamina_, "f");
        if (error_.empty()) error_ = convert_oci(lamina_.base + "/layers", oci_, true);
        if (error_.empty()) error_ = kernel_.mount();
        if (error_.empty()) error_ = lamina_.mount();
    }
    ~Session() {
        kernel_.close_slots();
        lamina_.close_slots();
        unmount(lamina_.mnt);
        unmount(kernel_.mnt);
    }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    const std::string& error() const { return error_; }
    const std::string& dir() const { return dir_.path(); }
    Side& kernel() { return kernel_; }
    Side& lamina() { return lamina_; }

    // Each implementation reads the other's upper layer: the kernel mounts laminafs's layers on
    // the laminafs side's mount point and the reverse, each with a fresh work directory.
    std::string cross_mount() {
        for (Side* side : {&kernel_, &lamina_}) {
            side->close_slots();
            unmount(side->mnt);
            side->work += "-cross";
            if (mkdir(side->work.c_str(), 0755) != 0)
                return "mkdir " + side->work + ": " + strerror(errno);
        }
        if (auto err = convert_oci(lamina_.base + "/layers", oci_, false); !err.empty()) return err;
        std::swap(kernel_.options, lamina_.options);
        std::swap(kernel_.laminafs, lamina_.laminafs);
        kernel_.label =
            std::string(kernel_.laminafs ? "laminafs" : "kernel") + " reading the kernel's upper";
        lamina_.label =
            std::string(lamina_.laminafs ? "laminafs" : "kernel") + " reading laminafs's upper";
        std::string err = kernel_.mount();
        return err.empty() ? lamina_.mount() : err;
    }

private:
    std::string prepare(const std::string& pristine, int depth, Side& side,
                        const std::string& sub) {
        std::string base = dir_ / sub;
        if (mkdir(base.c_str(), 0755) != 0) return "mkdir " + base + ": " + strerror(errno);
        chmod(base.c_str(), 0755);
        CommandResult r = run_command({"cp", "-a", "--preserve=all", pristine, base + "/layers"});
        if (r.status != 0) return "cp -a " + pristine + ": " + r.err;
        side.base = base;
        // A mount point path over 200 bytes long: the deep chain (long_paths) then passes
        // PATH_MAX through it and stays within it in the layers, which cp copies by path.
        side.mnt = base + "/mnt" + std::string(200, 'm');
        side.upper = base + "/upper";
        side.work = base + "/work";
        for (const auto& d : {side.mnt, side.upper, side.work}) {
            if (mkdir(d.c_str(), 0755) != 0) return "mkdir " + d + ": " + strerror(errno);
        }
        side.lowerdirs.clear();
        for (int i = 0; i < depth; ++i)
            side.lowerdirs += (i ? ":" : "") + base + "/layers/l" + std::to_string(i);
        return "";
    }

    TempDir dir_;
    std::vector<OciEntry> oci_;
    Side kernel_;
    Side lamina_;
    std::string error_;
};

struct Divergence {
    size_t index = 0;      // the operation after which it showed
    std::string category;  // what kind of difference: the minimizer keeps to the same one
    std::vector<std::string> details;
};

struct Step {
    Op op;
    std::string kernel;
    std::string lamina;
};

// Notes on overlay-private xattrs in the upper layers: expected to differ in format (the kernel
// also writes origin and impure, and relative redirects), so counted and shown once per run
// rather than failed; the cross mount at the end checks that each side reads the other's.
struct UpperNotes {
    std::map<std::string, std::pair<size_t, std::string>> by_field;  // field -> count, example
    void add(const std::string& field, const std::string& example) {
        auto& [count, first] = by_field[field];
        if (count++ == 0) first = example;
    }
};

std::optional<Divergence> compare_state(Session& session, size_t index, UpperNotes& notes,
                                        bool drop_caches, std::pair<bool, bool> inodes) {
    Side& k = session.kernel();
    Side& f = session.lamina();
    if (drop_caches) {
        sync();
        std::ofstream("/proc/sys/vm/drop_caches") << "3";
    }
    Tree kernel = walk_tree(k.mnt, {true, true, inodes.first, inodes.second});
    Tree lamina = walk_tree(f.mnt, {true, true, inodes.first, inodes.second});
    std::vector<std::string> differences;
    compare_trees(kernel, lamina, "merged", differences);
    if (!differences.empty()) {
        // "merged content", "merged only in laminafs": the field, without path or values.
        std::string first = differences.front();
        size_t colon = first.find(": ");
        std::string category = "merged";
        if (colon != std::string::npos) {
            std::string rest = first.substr(colon + 2);
            rest = rest.substr(0, rest.find_first_of(":("));
            while (!rest.empty() && rest.back() == ' ') rest.pop_back();
            category += " " + rest;
        }
        return Divergence{index, category, differences};
    }
    // Upper layers: entries and their types must agree; overlay xattrs only get noted.
    Tree kernel_upper = walk_upper(k.upper);
    Tree lamina_upper = walk_upper(f.upper);
    std::vector<std::string> upper_diffs;
    compare_trees(kernel_upper, lamina_upper, "upper", upper_diffs);
    for (const auto& diff : upper_diffs) {
        size_t xattr = diff.find(": xattr trusted.overlay.");
        if (xattr != std::string::npos) {
            std::string field = diff.substr(xattr + 8);  // "trusted.overlay.NAME: ..."
            notes.add(field.substr(0, field.find(':')), diff.substr(0, xattr));
        } else {
            differences.push_back(diff);
        }
    }
    // The work directories hold nothing between operations but a whiteout kept for linking to
    // (the kernel makes one the first time it needs a whiteout).
    for (Side* side : {&k, &f}) {
        Tree work = walk_upper(side->work + "/work");
        for (const auto& [path, entry] : work) {
            if (path.empty() || entry.fields.at("kind") == "c 0:0") continue;
            differences.push_back("work of " + side->label + ": leftover " + quoted(path) + " (" +
                                  entry.fields.at("kind") + ")");
        }
    }
    if (!differences.empty()) return Divergence{index, "upper", differences};
    return std::nullopt;
}

// After a run: each implementation must read the other's upper layer as the tree both showed.
std::optional<Divergence> cross_check(Session& session, size_t index) {
    Tree expected = walk_tree(session.kernel().mnt, {true, true});
    if (auto err = session.cross_mount(); !err.empty())
        return Divergence{index, "cross mount", {err}};
    std::vector<std::string> differences;
    std::string category;
    for (Side* side : {&session.kernel(), &session.lamina()}) {
        Tree seen = walk_tree(side->mnt, {true, true});
        size_t before = differences.size();
        compare_trees(expected, seen, side->label + ":", differences, "expected", "seen");
        if (category.empty() && differences.size() > before) category = "cross " + side->label;
    }
    if (differences.empty()) return std::nullopt;
    return Divergence{index, category, differences};
}

void print_divergence(const Divergence& d, const std::vector<Step>& steps, size_t shown_from) {
    std::cout << "DIVERGENCE after operation #" << d.index << " (" << d.category << ")\n";
    for (size_t i = 0; i < d.details.size() && i < kDifferencesShown; ++i)
        std::cout << "  " << d.details[i] << "\n";
    if (d.details.size() > kDifferencesShown)
        std::cout << "  ... " << d.details.size() - kDifferencesShown << " more differences\n";
    std::cout << "operations (kernel result | laminafs result):\n";
    for (size_t i = shown_from; i < steps.size(); ++i) {
        const Step& s = steps[i];
        std::cout << "  #" << i << " " << describe(s.op) << "  ->  " << s.kernel;
        if (s.lamina != s.kernel) std::cout << "  |  " << s.lamina;
        std::cout << "\n";
    }
    std::cout.flush();
}

// Runs ops on a fresh pair of mounts; the first divergence, if any. check_every 0: only at the end.
// What a depth's run needs besides the lower layers and the operations.
struct DepthSetup {
    std::vector<OciEntry> oci;  // lower entries laminafs's copy holds in OCI form
    std::string options;        // laminafs's extra mount options
    std::string atime;          // both mounts' atime option(s)
};

std::optional<Divergence> replay(const std::string& pristine, int depth, const DepthSetup& setup,
                                 const Config& cfg, const std::vector<Op>& ops,
                                 std::vector<Step>* steps_out, HangGuard& guard) {
    Session session(pristine, depth, cfg.candidate_is_kernel, setup.oci, setup.options,
                    setup.atime);
    if (!session.error().empty()) return Divergence{0, "setup", {session.error()}};
    std::pair<bool, bool> inodes{!cfg.skip.count("inode_sharing"),
                                 !cfg.skip.count("readdir_d_ino")};
    UpperNotes notes;
    std::vector<Step> steps;
    bool check_each = ops.size() <= 60;
    ClockTicks ticks(cfg.candidate_is_kernel && !cfg.skip.count("atime"));
    // As in the first run: the walk before anything fills laminafs's attribute caches.
    if (auto d = compare_state(session, 0, notes, cfg.drop_caches, inodes)) return d;
    ticks.mark();
    for (size_t i = 0; i < ops.size(); ++i) {
        guard.arm(session.lamina().fuse_dev, describe(ops[i]));
        if (may_stamp_atime(ops[i].kind)) ticks.wait_past_mark();
        Step step{ops[i], run_as_caller(ops[i], session.kernel()),
                  run_as_caller(ops[i], session.lamina())};
        ticks.mark();
        steps.push_back(step);
        std::optional<Divergence> d;
        if (!results_agree(ops[i], step.kernel, step.lamina, setup.atime,
                           cfg.candidate_is_kernel)) {
            d = Divergence{
                i,
                std::string("result ") + kind_name(ops[i].kind),
                {describe(ops[i]) + ": kernel " + step.kernel + ", laminafs " + step.lamina}};
        } else if (check_each || (i + 1) % cfg.check_every == 0 || i + 1 == ops.size()) {
            ticks.wait_past_mark();
            d = compare_state(session, i, notes, cfg.drop_caches, inodes);
            ticks.mark();
        }
        guard.disarm();
        if (d) {
            if (steps_out) *steps_out = steps;
            return d;
        }
    }
    if (steps_out) *steps_out = steps;
    return cross_check(session, ops.empty() ? 0 : ops.size() - 1);
}

// The lower entries at, above or below any path the operations name.
void print_lowers(const std::string& pristine, int depth, const std::vector<Op>& ops) {
    std::set<std::string> named;
    for (const auto& op : ops) {
        for (const auto& p : {op.path, op.path2}) {
            std::string clean = p;
            while (!clean.empty() && clean.back() == '/') clean.pop_back();
            if (!clean.empty()) named.insert(clean);
        }
    }
    std::cout << "lower layers (top first), entries related to those paths:\n";
    for (int i = 0; i < depth; ++i) {
        std::string layer = pristine + "/l" + std::to_string(i);
        Tree tree = walk_tree(layer, {true, false});
        for (const auto& [path, entry] : tree) {
            if (path.empty()) continue;
            bool related = false;
            for (const auto& n : named) related = related || is_under(path, n) || is_under(n, path);
            if (!related) continue;
            std::cout << "  l" << i << " " << quoted(path) << " ";
            auto it = entry.fields.find("stat");
            std::cout << (it == entry.fields.end() ? "?" : it->second);
            for (const auto& [field, value] : entry.fields) {
                if (field == "target" || field.rfind("xattr ", 0) == 0)
                    std::cout << " " << field << "=" << shown(value);
            }
            std::cout << "\n";
        }
    }
}

// Removes ever smaller chunks of the sequence while it still diverges the same way.
std::vector<Op> minimize(const std::string& pristine, int depth, const DepthSetup& setup,
                         const Config& cfg, std::vector<Op> ops, const std::string& category,
                         HangGuard& guard) {
    auto start = std::chrono::steady_clock::now();
    size_t trials = 0;
    auto still_fails = [&](std::vector<Op>& candidate) {
        ++trials;
        std::optional<Divergence> d =
            replay(pristine, depth, setup, cfg, candidate, nullptr, guard);
        if (!d || d->category != category) return false;
        candidate.resize(d->index + 1);
        return true;
    };
    size_t chunk = std::max<size_t>(1, ops.size() / 2);
    while (chunk >= 1 && trials < 600 &&
           std::chrono::steady_clock::now() - start < std::chrono::minutes(10)) {
        bool removed = false;
        for (size_t from = 0; from < ops.size() && trials < 600;) {
            std::vector<Op> candidate;
            for (size_t i = 0; i < ops.size(); ++i) {
                if (i < from || i >= from + chunk) candidate.push_back(ops[i]);
            }
            if (!candidate.empty() && still_fails(candidate)) {
                ops = candidate;
                removed = true;
            } else {
                from += chunk;
            }
        }
        if (!removed) {
            if (chunk == 1) break;
            chunk /= 2;
        }
    }
    std::cout << "minimized to " << ops.size() << " operations in " << trials << " replays\n";
    return ops;
}

// One depth: layers, mounts, the operation loop. Returns false on a divergence.
bool run_depth(const Config& cfg, int depth, HangGuard& guard) {
    uint64_t seed = mix_seed(cfg.seed, static_cast<uint64_t>(depth));
    auto start = std::chrono::steady_clock::now();
    TempDir layers("lamina-fuzz-layers");
    std::string pristine = layers / "layers";
    if (mkdir(pristine.c_str(), 0755) != 0) {
        ADD_FAILURE() << "mkdir " << pristine << ": " << strerror(errno);
        return false;
    }
    LayerWriter writer(mix_seed(seed, 1), features_without(cfg.skip));
    if (auto err = writer.write(pristine, depth, entries_per_layer(depth)); !err.empty()) {
        ADD_FAILURE() << "writing layers: " << err;
        return false;
    }
    // cp reads what it copies, which under relatime moves the atimes of entries just written,
    // so the kernel's copy of the lowers would keep the old ones and laminafs's, made second, get
    // the moved ones (seed 216, depth 1). One copy thrown away first moves them once and for all
    // (they are then newer than mtime and ctime).
    CommandResult warm = run_command({"cp", "-a", pristine, layers / "warm"});
    if (warm.status != 0 || run_command({"rm", "-rf", layers / "warm"}).status != 0) {
        ADD_FAILURE() << "copying the layers once: " << warm.err;
        return false;
    }
    DepthSetup setup{writer.oci_entries(), lamina_options_for(cfg, seed),
                     atime_option_for(cfg, seed)};
    std::pair<bool, bool> inodes{!cfg.skip.count("inode_sharing"),
                                 !cfg.skip.count("readdir_d_ino")};
    Session session(pristine, depth, cfg.candidate_is_kernel, setup.oci, setup.options,
                    setup.atime);
    if (!session.error().empty()) {
        ADD_FAILURE() << session.error();
        return false;
    }
    OpGenerator generator(mix_seed(seed, 2), cfg.skip);
    std::vector<Step> steps;
    UpperNotes notes;
    ClockTicks ticks(cfg.candidate_is_kernel && !cfg.skip.count("atime"));
    std::optional<Divergence> divergence =
        compare_state(session, 0, notes, cfg.drop_caches, inodes);  // before anything
    ticks.mark();
    for (size_t i = 0; !divergence && i < cfg.ops; ++i) {
        TreeView view(walk_tree(session.kernel().mnt, {false, true, false, false, true}));
        Op op = generator.next(view);
        if (cfg.skip.count("caller_rename_links") &&
            renames_one_file_as_caller(op, session.kernel().mnt)) {
            op.as_uid = 0;
            op.as_gid = 0;
            op.groups.clear();
        }
        guard.arm(session.lamina().fuse_dev, describe(op));
        if (may_stamp_atime(op.kind)) ticks.wait_past_mark();
        Step step{op, run_as_caller(op, session.kernel()), run_as_caller(op, session.lamina())};
        ticks.mark();
        steps.push_back(step);
        if (!results_agree(op, step.kernel, step.lamina, setup.atime, cfg.candidate_is_kernel)) {
            divergence = Divergence{
                i,
                std::string("result ") + kind_name(op.kind),
                {describe(op) + ": kernel " + step.kernel + ", laminafs " + step.lamina}};
        } else if ((i + 1) % cfg.check_every == 0 || i + 1 == cfg.ops) {
            ticks.wait_past_mark();
            divergence = compare_state(session, i, notes, cfg.drop_caches, inodes);
            ticks.mark();
        }
        guard.disarm();
    }
    if (divergence) {
        if (auto keep = env_text("LAMINA_FUZZ_KEEP")) {
            // Both sides' layers as they were at the divergence (unmounted first), to look at.
            session.kernel().close_slots();
            session.lamina().close_slots();
            unmount(session.kernel().mnt);
            unmount(session.lamina().mnt);
            run_command({"cp", "-a", session.dir(), *keep});
            std::cout << "layers kept in " << *keep << "\n";
        }
    }
    if (!divergence) divergence = cross_check(session, steps.empty() ? 0 : steps.size() - 1);
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "depth " << depth << ": " << steps.size() << " operations in " << seconds
              << " s, laminafs options \"" << setup.options << "\", atime \"" << setup.atime
              << "\", " << setup.oci.size() << " OCI whiteouts\n";
    for (const auto& [field, info] : notes.by_field) {
        std::cout << "  note: " << field << " differs " << info.first
                  << " times in the uppers, first at " << info.second << "\n";
    }
    if (!divergence) return true;

    size_t from = steps.size() > kHistoryShown ? steps.size() - kHistoryShown : 0;
    print_divergence(*divergence, steps, from);
    std::cout << "reproduce: LAMINA_FUZZ_SEED=" << cfg.seed << " LAMINA_FUZZ_DEPTHS=" << depth
              << " LAMINA_FUZZ_OPS=" << steps.size()
              << " LAMINA_FUZZ_CHECK_EVERY=" << cfg.check_every;
    std::cout << " LAMINA_FUZZ_SKIP=" << (cfg.skip.empty() ? "none" : "");
    for (auto it = cfg.skip.begin(); it != cfg.skip.end(); ++it)
        std::cout << (it == cfg.skip.begin() ? "" : ",") << *it;
    if (cfg.drop_caches) std::cout << " LAMINA_FUZZ_DROP_CACHES=1";
    std::cout << " LAMINA_FUZZ_OPTIONS=" << (setup.options.empty() ? "none" : setup.options);
    std::cout << " LAMINA_FUZZ_ATIME=" << (setup.atime.empty() ? "none" : setup.atime);
    if (cfg.candidate_is_kernel) std::cout << " LAMINA_FUZZ_CANDIDATE=kernel";
    std::cout << " (add LAMINA_FUZZ_MINIMIZE=1 to shrink it)\n";
    if (cfg.minimize && divergence->category != "setup") {
        std::vector<Op> ops;
        for (const auto& s : steps) ops.push_back(s.op);
        ops = minimize(pristine, depth, setup, cfg, ops, divergence->category, guard);
        std::vector<Step> replayed;
        if (auto d = replay(pristine, depth, setup, cfg, ops, &replayed, guard)) {
            std::cout << "minimal sequence:\n";
            print_divergence(*d, replayed, 0);
            print_lowers(pristine, depth, ops);
        }
    }
    if (guard.fired()) std::cout << "(the laminafs connection was aborted after a hang)\n";
    ADD_FAILURE() << "depth " << depth << ": " << divergence->category
                  << " diverges after operation #" << divergence->index << ": "
                  << divergence->details.front() << " (seed " << cfg.seed << ")";
    return false;
}

// A whole number in [min, max] from the environment, or std::nullopt when the variable is unset;
// anything else is refused in `refused` (the knob would otherwise run nothing, or not what was
// asked, and pass).
std::optional<uint64_t> env_count(const char* name, uint64_t min, uint64_t max,
                                  std::string& refused) {
    auto text = env_text(name);
    if (!text) return std::nullopt;
    char* end = nullptr;
    errno = 0;
    uint64_t n = std::strtoull(text->c_str(), &end, 0);
    if (errno != 0 || *end != '\0' || text->front() == '-' || n < min || n > max) {
        if (refused.empty())
            refused =
                std::string(name) + "=" + *text + ": want a whole number " +
                (max == UINT64_MAX ? "of at least " + std::to_string(min)
                                   : "from " + std::to_string(min) + " to " + std::to_string(max));
        return std::nullopt;
    }
    return n;
}

// The run the environment asks for; `refused` says which knob it cannot honour.
Config config_from_env(std::string& refused) {
    Config cfg;
    if (auto seed = env_count("LAMINA_FUZZ_SEED", 0, UINT64_MAX, refused)) {
        cfg.seed = *seed;
    } else {
        cfg.seed =
            static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) ^
            (static_cast<uint64_t>(getpid()) << 32);
        cfg.seed %= 1000000000000ULL;  // short enough to type
    }
    if (auto ops = env_count("LAMINA_FUZZ_OPS", 1, UINT64_MAX, refused)) cfg.ops = *ops;
    if (auto every = env_count("LAMINA_FUZZ_CHECK_EVERY", 1, UINT64_MAX, refused))
        cfg.check_every = *every;
    if (auto depths = env_text("LAMINA_FUZZ_DEPTHS")) {
        cfg.depths.clear();
        for (const auto& d : split_list(*depths)) {
            char* end = nullptr;
            long n = std::strtol(d.c_str(), &end, 10);
            if (*end != '\0' || n < 1 || n > 100) {
                if (refused.empty())
                    refused = "LAMINA_FUZZ_DEPTHS=" + *depths + ": " + quoted(d) +
                              " is not a layer count from 1 to 100";
                continue;
            }
            cfg.depths.push_back(static_cast<int>(n));
        }
        if (cfg.depths.empty() && refused.empty())
            refused = "LAMINA_FUZZ_DEPTHS=" + *depths + " names no layer count";
    }
    cfg.skip = kDefaultSkip;
    if (auto skip = env_text("LAMINA_FUZZ_SKIP")) {
        cfg.skip.clear();
        for (const auto& name : split_list(*skip)) {
            if (name != "none") cfg.skip.insert(name);
        }
    }
    cfg.minimize = env_text("LAMINA_FUZZ_MINIMIZE").value_or("0") != "0";
    cfg.candidate_is_kernel = env_text("LAMINA_FUZZ_CANDIDATE").value_or("") == "kernel";
    cfg.drop_caches = env_text("LAMINA_FUZZ_DROP_CACHES").value_or("0") != "0";
    if (auto options = env_text("LAMINA_FUZZ_OPTIONS"))
        cfg.lamina_options = *options == "none" ? "" : *options;
    if (auto atime = env_text("LAMINA_FUZZ_ATIME")) cfg.atime = *atime == "none" ? "" : *atime;
    return cfg;
}

TEST(DiffOpsTest, random_operations_match_kernel_overlayfs) {
    std::string refused;
    Config cfg = config_from_env(refused);
    if (!refused.empty()) GTEST_FAIL() << "refused: " << refused;
    if (!can_mount_fuse() || !can_mount_kernel_overlay()) GTEST_SKIP() << skip_reason();
    for (const auto& name : cfg.skip) {
        bool known = std::any_of(kKinds.begin(), kKinds.end(),
                                 [&](const KindInfo& k) { return name == k.name; }) ||
                     std::count(kFeatureNames.begin(), kFeatureNames.end(), name);
        if (!known) ADD_FAILURE() << "LAMINA_FUZZ_SKIP: unknown operation kind " << quoted(name);
    }
    std::cout << "lamina fuzz: LAMINA_FUZZ_SEED=" << cfg.seed << ", " << cfg.ops
              << " operations per depth, depths";
    for (int d : cfg.depths) std::cout << " " << d;
    std::cout << (cfg.candidate_is_kernel ? ", kernel as candidate" : "") << std::endl;
    HangGuard guard;
    for (int depth : cfg.depths) {
        SCOPED_TRACE("depth " + std::to_string(depth) +
                     ", LAMINA_FUZZ_SEED=" + std::to_string(cfg.seed));
        run_depth(cfg, depth, guard);
    }
}

}  // namespace
}  // namespace lamina::test
