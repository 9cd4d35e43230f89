// Differential read test: laminafs must show random layer stacks exactly as kernel overlayfs does.
//
// Every case generates seeded random layers and mounts them read-only (lowerdir only) twice: with
// kernel overlayfs, the oracle, and with laminafs (LAMINAFS_BIN), the candidate. Both merged trees
// are walked in full and compared; each difference is reported with the seed that reproduces it.
// Compared: the set of paths, type, permission bits, uid, gid, mtime, and for non-directories
// size and st_nlink; st_rdev of devices; content (xxh3) and st_blocks of regular files; symlink
// targets; xattrs other than the overlay-private trusted.overlay.* and user.overlay.*; which
// paths share an inode. Within each mount: readdir's d_type and d_ino agree with lstat, one
// st_dev throughout, no name listed twice, and only hardlinks (never directories) share st_ino.
//
//   LAMINA_DIFF_SEED=S            run seed S (instead of the case's own seeds); use --gtest_filter
//                                 to pick the case, whose shape (layer count, formats) goes with it
//   LAMINA_DIFF_ITERATIONS=N      run N consecutive seeds per case, from S or from the case's base
//   LAMINA_DIFF_CANDIDATE=kernel  mount the kernel twice: checks the harness itself (must be clean)
//
// Things the kernel does that shape this harness (found on 6.18):
// - A lowerdir-only mount needs two layers; a one-layer stack gets an empty layer beneath it on
//   the kernel side only, which changes nothing visible.
// - readdir of a directory that merges with nothing below (it exists in one layer only, or is
//   opaque) lists that layer's whiteouts, which lstat then reports as ENOENT. So does readdir
//   of the bottom layer's xattr whiteouts (its opaque="x" is never read). Such "phantom" names
//   are ignored on the kernel side; on the laminafs side a listed name lstat cannot find is a
//   difference unless the kernel lists it too.
// - lookup honours an xattr whiteout in any directory, readdir only in a directory marked
//   opaque=x; the generator therefore puts xattr whiteouts only in opaque=x directories.
// - In a directory it does not merge, readdir's ".." carries the lower directory's real parent
//   inode, not the merged parent's st_ino; that check is held against laminafs only.
// - The kernel knows nothing of OCI whiteouts (.wh.NAME, .wh..wh..opq): for stacks with them
//   the kernel mounts a converted copy of the layers (see LayerWriter), laminafs the originals.

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fixture.h"

namespace lamina::test {
namespace {

constexpr size_t kMaxReportedDifferences = 20;
constexpr int kMaxDepth = 14;

// ---------------------------------------------------------------------------------------------
// Randomness that is the same on every platform (std distributions are not), so a seed printed
// here reproduces anywhere.

// ---------------------------------------------------------------------------------------------
// What a stack looks like: a model of every layer, written to disk afterwards.

enum class OverlayPrefix { Trusted, User };

std::string prefix_text(OverlayPrefix prefix) {
    return prefix == OverlayPrefix::Trusted ? "trusted.overlay." : "user.overlay.";
}

struct StackShape {
    int layers = 2;
    int entries_per_layer = 40;
    bool chardev_whiteouts = true;
    bool xattr_whiteouts = true;  // empty file with overlay.whiteout in an opaque=x directory
    bool opaque_dirs = true;      // overlay.opaque=y
    bool oci_forms = false;       // .wh.NAME and .wh..wh..opq
    OverlayPrefix prefix = OverlayPrefix::Trusted;
};

std::string describe(const StackShape& shape) {
    std::ostringstream out;
    out << shape.layers << " layers x " << shape.entries_per_layer << " entries; whiteouts:";
    if (shape.chardev_whiteouts) out << " chardev";
    if (shape.xattr_whiteouts) out << " xattr";
    if (shape.opaque_dirs) out << " opaque";
    if (shape.oci_forms) out << " oci";
    out << "; prefix " << prefix_text(shape.prefix);
    return out.str();
}

enum class Kind {
    Dir,
    File,
    Symlink,
    Hardlink,
    Fifo,
    Device,
    CharWhiteout,
    XattrWhiteout,
    OciWhiteout,  // stored at dir/.wh.NAME
    OciOpaque,    // stored at dir/.wh..wh..opq
};

struct Node {
    Kind kind = Kind::File;
    mode_t perm = 0644;
    uid_t uid = 0;
    gid_t gid = 0;
    uint64_t size = 0;
    bool sparse = false;
    uint64_t content_seed = 0;
    std::string target;  // symlink target, or the hardlink's source path in the same layer
    bool block_device = false;
    dev_t rdev = 0;
    char opaque = 0;  // directories: 'y', 'x' or none
    std::vector<std::pair<std::string, std::string>> xattrs;
    timespec mtime{};  // set last, and the same in a layer's converted copy
};

// Paths relative to the layer root, "" being the root; std::map puts parents before children.
using Layer = std::map<std::string, Node>;

std::string join_path(const std::string& dir, const std::string& name) {
    return dir.empty() ? name : dir + "/" + name;
}

std::string parent_of(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::string base_of(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
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

constexpr std::string_view kOciWhiteoutPrefix = ".wh.";
constexpr std::string_view kOciOpaqueMarker = ".wh..wh..opq";

// Builds random layers, bottom first. Names are drawn from a small pool and earlier paths are
// reused on purpose, so directories merge, files shadow each other, whiteouts hit something and
// files sit over directories and directories over files.
class StackGenerator {
public:
    StackGenerator(const StackShape& shape, uint64_t seed) : shape_(shape), rng_(seed) {}

    std::vector<Layer> generate() {
        std::vector<Layer> layers;
        for (int i = 0; i < shape_.layers; ++i) layers.push_back(generate_layer());
        return layers;
    }

private:
    enum class Op {
        File,
        Dir,
        Symlink,
        Hardlink,
        Fifo,
        Device,
        CharWhiteout,
        XattrWhiteout,
        OpaqueDir,
        OciWhiteout,
        OciOpaque
    };

    Layer generate_layer() {
        Layer layer;
        layer[""] = random_dir();
        for (int i = 0; i < shape_.entries_per_layer; ++i) add_random_entry(layer);
        return layer;
    }

    Op random_op() {
        std::vector<std::pair<Op, int>> weights = {{Op::File, 30},    {Op::Dir, 14},
                                                   {Op::Symlink, 10}, {Op::Hardlink, 5},
                                                   {Op::Fifo, 3},     {Op::Device, 2}};
        if (shape_.chardev_whiteouts) weights.push_back({Op::CharWhiteout, 9});
        if (shape_.xattr_whiteouts) weights.push_back({Op::XattrWhiteout, 9});
        if (shape_.opaque_dirs) weights.push_back({Op::OpaqueDir, 5});
        if (shape_.oci_forms) {
            weights.push_back({Op::OciWhiteout, 10});
            weights.push_back({Op::OciOpaque, 4});
        }
        int total = 0;
        for (const auto& w : weights) total += w.second;
        int roll = static_cast<int>(rng_.below(static_cast<uint64_t>(total)));
        for (const auto& [op, weight] : weights) {
            if (roll < weight) return op;
            roll -= weight;
        }
        return Op::File;
    }

    static bool hides_something(Op op) {
        return op == Op::CharWhiteout || op == Op::XattrWhiteout || op == Op::OpaqueDir ||
               op == Op::OciWhiteout || op == Op::OciOpaque;
    }

    void add_random_entry(Layer& layer) {
        Op op = random_op();
        for (int attempt = 0; attempt < 8; ++attempt) {
            if (try_add(layer, op, pick_target(hides_something(op) ? 75 : 50))) return;
        }
    }

    std::string pick_target(unsigned reuse_percent) {
        if (!known_paths_.empty() && rng_.chance(reuse_percent)) return rng_.pick(known_paths_);
        std::string parent = known_dirs_.empty() || rng_.chance(20) ? "" : rng_.pick(known_dirs_);
        if (depth_of(parent) >= kMaxDepth) parent = "";
        std::string path = join_path(parent, random_name(parent.size()));
        if (rng_.chance(6)) {  // a deep chain of new directories
            int extra = static_cast<int>(rng_.between(2, 9));
            for (int i = 0; i < extra && depth_of(path) < kMaxDepth; ++i) {
                path = join_path(path, random_name(path.size()));
            }
        }
        return path;
    }

    std::string random_name(size_t path_length) {
        static const std::vector<std::string> common = {
            "a", "b", "c", "d", "e", "f", "g", "etc", "usr", "bin", "lib", "var", "data", "x", "y"};
        static const std::vector<std::string> odd = {"with space", "\303\274n\303\257c\303\266de",
                                                     ".hidden",    "...",
                                                     "-dash",      "semi;colon",
                                                     "colon:name", "comma,name",
                                                     "eq=name",    "quote'\"",
                                                     "star*",      "back\\slash",
                                                     "UPPER",      "a.b.c"};
        uint64_t roll = rng_.below(100);
        if (roll < 60) return rng_.pick(common);
        if (roll < 82) return "n" + std::to_string(rng_.below(40));
        if (roll < 95 || path_length > 1200) return rng_.pick(odd);
        std::string longname;
        // Room for the ".wh." an OCI whiteout of it puts in front, within NAME_MAX.
        size_t length = rng_.between(100, NAME_MAX - kOciWhiteoutPrefix.size());
        for (size_t i = 0; i < length; ++i) longname += static_cast<char>('a' + rng_.below(26));
        return longname;
    }

    void remember(const std::string& path, bool is_dir) {
        if (seen_.insert(path).second) known_paths_.push_back(path);
        if (is_dir && seen_dirs_.insert(path).second) known_dirs_.push_back(path);
    }

    // Every ancestor this layer already has must be a directory; missing ones are created.
    static bool parents_usable(const Layer& layer, const std::string& path) {
        for (const auto& dir : ancestors_of(path)) {
            auto it = layer.find(dir);
            if (it != layer.end() && it->second.kind != Kind::Dir) return false;
        }
        return true;
    }

    void make_parents(Layer& layer, const std::string& path) {
        for (const auto& dir : ancestors_of(path)) {
            if (layer.count(dir)) continue;
            layer[dir] = rng_.chance(70) ? plain_dir() : random_dir();
            remember(dir, true);
        }
    }

    // The directory at path in this layer, created if missing; nullptr when something else is there.
    Node* ensure_dir(Layer& layer, const std::string& path) {
        auto it = layer.find(path);
        if (it != layer.end()) return it->second.kind == Kind::Dir ? &it->second : nullptr;
        make_parents(layer, path);
        Node& node = layer[path] = random_dir();
        remember(path, true);
        return &node;
    }

    bool try_add(Layer& layer, Op op, const std::string& target) {
        if (target.empty() || !parents_usable(layer, target)) return false;
        switch (op) {
            case Op::OpaqueDir: {
                auto it = layer.find(target);
                if (it != layer.end() && (it->second.kind != Kind::Dir || it->second.opaque != 0))
                    return false;
                Node* dir = ensure_dir(layer, target);
                dir->opaque = 'y';
                return true;
            }
            case Op::OciOpaque: {
                std::string marker = join_path(target, std::string(kOciOpaqueMarker));
                if (layer.count(marker)) return false;
                auto it = layer.find(target);
                if (it != layer.end() && it->second.kind != Kind::Dir) return false;
                ensure_dir(layer, target);
                Node node;
                node.kind = Kind::OciOpaque;
                layer[marker] = node;
                return true;
            }
            case Op::OciWhiteout: {
                std::string marker =
                    join_path(parent_of(target), std::string(kOciWhiteoutPrefix) + base_of(target));
                if (layer.count(marker)) return false;
                make_parents(layer, target);
                Node node;
                node.kind = Kind::OciWhiteout;
                node.perm = rng_.chance(50) ? 0644 : 0;
                layer[marker] = node;
                remember(target, false);
                return true;
            }
            default:
                break;
        }
        if (layer.count(target)) return false;
        if (op == Op::XattrWhiteout) {
            // The kernel honours an xattr whiteout only in a directory marked opaque=x.
            auto parent = layer.find(parent_of(target));
            if (parent != layer.end() && parent->second.opaque == 'y') return false;
        }
        std::vector<std::string> files;
        if (op == Op::Hardlink) {
            for (const auto& [path, node] : layer) {
                if (node.kind == Kind::File) files.push_back(path);
            }
            if (files.empty()) op = Op::File;
        }
        make_parents(layer, target);
        Node node;
        switch (op) {
            case Op::File:
                node = random_file();
                break;
            case Op::Dir:
                node = random_dir();
                break;
            case Op::Symlink:
                node = random_symlink();
                break;
            case Op::Hardlink:
                node.kind = Kind::Hardlink;
                node.target = rng_.pick(files);
                break;
            case Op::Fifo:
                node.kind = Kind::Fifo;
                node.perm = random_file_perm();
                random_owner(node);
                break;
            case Op::Device:
                node.kind = Kind::Device;
                node.perm = random_file_perm() & 0777;
                random_owner(node);
                node.block_device = rng_.chance(30);
                node.rdev = rng_.pick(std::vector<dev_t>{
                    makedev(1, 3), makedev(0, 1), makedev(8, 0), makedev(4, 64), makedev(1, 0)});
                break;
            case Op::CharWhiteout:
                node.kind = Kind::CharWhiteout;
                node.perm = 0;
                break;
            case Op::XattrWhiteout:
                node.kind = Kind::XattrWhiteout;
                node.perm = 0644;
                layer[parent_of(target)].opaque = 'x';
                break;
            default:
                return false;
        }
        layer[target] = node;
        remember(target, node.kind == Kind::Dir);
        return true;
    }

    mode_t random_file_perm() {
        static const std::vector<mode_t> perms = {0644, 0644,  0600,  0755,  0444,  0000,
                                                  0640, 04755, 02755, 06711, 01644, 0777};
        if (rng_.chance(10)) return static_cast<mode_t>(rng_.below(07777 + 1));
        return rng_.pick(perms);
    }

    mode_t random_dir_perm() {
        static const std::vector<mode_t> perms = {0755,  0755,  0755, 0700, 0555,
                                                  01777, 02775, 0711, 0000};
        if (rng_.chance(8)) return static_cast<mode_t>(rng_.below(07777 + 1));
        return rng_.pick(perms);
    }

    void random_owner(Node& node) {
        static const std::vector<uint32_t> ids = {0, 0, 0, 1, 1000, 65534};
        node.uid = rng_.chance(20) ? static_cast<uid_t>(rng_.below(200000)) : rng_.pick(ids);
        node.gid = rng_.chance(20) ? static_cast<gid_t>(rng_.below(200000)) : rng_.pick(ids);
        random_mtime(node);
    }

    // Mostly recent, sometimes before 1970 or after 2038, always with nanoseconds.
    void random_mtime(Node& node) {
        uint64_t roll = rng_.below(100);
        if (roll < 80) {
            node.mtime.tv_sec = static_cast<time_t>(1500000000 + rng_.below(300000000));
        } else if (roll < 90) {
            node.mtime.tv_sec = -static_cast<time_t>(rng_.between(1, 2000000000));
        } else {
            node.mtime.tv_sec = static_cast<time_t>(rng_.between(2200000000, 8000000000));
        }
        node.mtime.tv_nsec = static_cast<long>(rng_.below(1000000000));
    }

    void random_xattrs(Node& node, unsigned percent) {
        if (!rng_.chance(percent)) return;
        int count = static_cast<int>(rng_.between(1, 3));
        bool large_value_given = false;  // ext4 keeps all of an inode's xattrs in one block
        for (int i = 0; i < count; ++i) {
            std::string name = rng_.chance(85) ? "user.lamina.k" + std::to_string(rng_.below(6))
                                               : "trusted.lamina.t" + std::to_string(rng_.below(3));
            std::string value;
            bool large = !large_value_given && rng_.chance(10);
            large_value_given |= large;
            size_t length = large ? rng_.between(500, 2000) : rng_.below(64);
            for (size_t j = 0; j < length; ++j) value += static_cast<char>(rng_.below(256));
            bool duplicate = std::any_of(node.xattrs.begin(), node.xattrs.end(),
                                         [&](const auto& xattr) { return xattr.first == name; });
            if (!duplicate) node.xattrs.emplace_back(name, value);
        }
    }

    Node plain_dir() {
        Node node;
        node.kind = Kind::Dir;
        node.perm = 0755;
        random_mtime(node);
        return node;
    }

    Node random_dir() {
        Node node;
        node.kind = Kind::Dir;
        node.perm = random_dir_perm();
        random_owner(node);
        random_xattrs(node, 20);
        return node;
    }

    Node random_file() {
        Node node;
        node.kind = Kind::File;
        node.perm = random_file_perm();
        random_owner(node);
        uint64_t roll = rng_.below(100);
        if (roll < 15) {
            node.size = 0;
        } else if (roll < 45) {
            node.size = rng_.between(1, 512);
        } else if (roll < 75) {
            node.size = rng_.between(513, 8192);
        } else {
            node.size = rng_.between(8193, 65536);
        }
        node.sparse = node.size >= 8192 && rng_.chance(35);
        node.content_seed = rng_.next();
        random_xattrs(node, 25);
        return node;
    }

    Node random_symlink() {
        Node node;
        node.kind = Kind::Symlink;
        node.perm = 0777;
        random_owner(node);
        uint64_t roll = rng_.below(100);
        if (roll < 35 && !known_paths_.empty()) {
            std::string up;
            for (uint64_t i = rng_.below(3); i > 0; --i) up += "../";
            node.target = up + rng_.pick(known_paths_);
        } else if (roll < 50 && !known_paths_.empty()) {
            node.target = "/" + rng_.pick(known_paths_);
        } else if (roll < 60) {
            node.target = "/etc/hostname";
        } else if (roll < 75) {
            node.target = "/nonexistent/" + random_name(0);
        } else if (roll < 85) {
            node.target = "dangling-" + std::to_string(rng_.below(1000));
        } else if (roll < 92) {
            node.target = std::string(rng_.between(300, 1000), 'L');
        } else {
            node.target = ".";
        }
        return node;
    }

    StackShape shape_;
    Rng rng_;
    std::vector<std::string> known_paths_;
    std::vector<std::string> known_dirs_;
    std::set<std::string> seen_;
    std::set<std::string> seen_dirs_;
};

// ---------------------------------------------------------------------------------------------
// Writing layers to disk.

class FdOwner {
public:
    explicit FdOwner(int fd) : fd_(fd) {}
    FdOwner(const FdOwner&) = delete;
    FdOwner& operator=(const FdOwner&) = delete;
    ~FdOwner() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const { return fd_; }

private:
    int fd_;
};

std::string file_bytes(uint64_t seed, size_t length) {
    Rng rng(seed);
    std::string out(length, '\0');
    for (size_t i = 0; i < length; i += 8) {
        uint64_t word = rng.next();
        for (size_t j = 0; j < 8 && i + j < length; ++j)
            out[i + j] = static_cast<char>(word >> (8 * j));
    }
    return out;
}

bool write_all(int fd, const std::string& data, off_t offset) {
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n =
            pwrite(fd, data.data() + done, data.size() - done, offset + static_cast<off_t>(done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        done += static_cast<size_t>(n);
    }
    return true;
}

class LayerWriter {
public:
    // AsGenerated writes the model as it is. KernelForm is the oracle's copy of a layer with OCI
    // forms: the kernel does not know them, so each is converted to what it means in kernel terms:
    //   dir/.wh..wh..opq   -> dir gets overlay.opaque=y (entries of this layer stay, lower ones go);
    //   dir/.wh.NAME       -> a 0/0 char device NAME when this layer has no NAME; when it has a
    //                         directory NAME, that directory becomes opaque (the lower NAME is
    //                         gone, this layer's is new); when it has any other NAME, nothing,
    //                         since that entry shadows the lower NAME anyway.
    // The .wh.* files themselves never reach the copy, as they never appear in the merged view.
    enum class Form { AsGenerated, KernelForm };

    LayerWriter(const StackShape& shape, Form form)
        : prefix_(prefix_text(shape.prefix)), form_(form) {}

    void write(const Layer& layer, const std::string& root) {
        if (mkdir(root.c_str(), 0755) != 0) return fail("mkdir", root);
        std::map<std::string, char> opaque;
        for (const auto& [path, node] : layer) {
            if (node.kind == Kind::Dir && node.opaque) opaque[path] = node.opaque;
            create(layer, path, node, root, opaque);
        }
        for (const auto& [path, node] : layer) {
            if (node.kind != Kind::Hardlink) continue;
            if (link((root + "/" + node.target).c_str(), (root + "/" + path).c_str()) != 0)
                fail("link", root + "/" + path);
        }
        // Attributes last and children first, so no mode set here gets in the way of writing.
        for (auto it = layer.rbegin(); it != layer.rend(); ++it)
            apply_attributes(it->first, it->second, root);
        for (const auto& [path, value] : opaque) {
            std::string full = path.empty() ? root : root + "/" + path;
            if (lsetxattr(full.c_str(), (prefix_ + "opaque").c_str(), &value, 1, 0) != 0)
                fail("setxattr opaque", full);
        }
    }

private:
    void fail(const char* what, const std::string& path) {
        ADD_FAILURE() << "building layer: " << what << " " << path << ": " << strerror(errno);
    }

    void create(const Layer& layer, const std::string& path, const Node& node,
                const std::string& root, std::map<std::string, char>& opaque) {
        if (path.empty()) return;
        std::string full = root + "/" + path;
        switch (node.kind) {
            case Kind::Dir:
                if (mkdir(full.c_str(), 0700) != 0) fail("mkdir", full);
                break;
            case Kind::File:
                create_file(full, node);
                break;
            case Kind::Symlink:
                if (symlink(node.target.c_str(), full.c_str()) != 0) fail("symlink", full);
                break;
            case Kind::Hardlink:
                break;  // after every file exists
            case Kind::Fifo:
                if (mknod(full.c_str(), S_IFIFO | 0600, 0) != 0) fail("mkfifo", full);
                break;
            case Kind::Device:
                if (mknod(full.c_str(), (node.block_device ? S_IFBLK : S_IFCHR) | 0600,
                          node.rdev) != 0) {
                    fail("mknod", full);
                }
                break;
            case Kind::CharWhiteout:
                if (mknod(full.c_str(), S_IFCHR | node.perm, makedev(0, 0)) != 0)
                    fail("mknod whiteout", full);
                break;
            case Kind::XattrWhiteout: {
                create_empty(full, node.perm);
                // The kernel only asks whether the xattr exists; any value will do.
                std::string value = path.size() % 2 ? "y" : "";
                if (lsetxattr(full.c_str(), (prefix_ + "whiteout").c_str(), value.data(),
                              value.size(), 0) != 0) {
                    fail("setxattr whiteout", full);
                }
                break;
            }
            case Kind::OciWhiteout: {
                if (form_ == Form::AsGenerated) {
                    create_empty(full, node.perm);
                    break;
                }
                std::string hidden =
                    join_path(parent_of(path), base_of(path).substr(kOciWhiteoutPrefix.size()));
                auto same_layer = layer.find(hidden);
                if (same_layer == layer.end()) {
                    std::string hidden_full = root + "/" + hidden;
                    if (mknod(hidden_full.c_str(), S_IFCHR, makedev(0, 0)) != 0)
                        fail("mknod whiteout", hidden_full);
                } else if (same_layer->second.kind == Kind::Dir) {
                    opaque[hidden] = 'y';
                }
                break;
            }
            case Kind::OciOpaque:
                if (form_ == Form::AsGenerated) {
                    create_empty(full, node.perm);
                } else {
                    opaque[parent_of(path)] = 'y';
                }
                break;
        }
    }

    void create_empty(const std::string& full, mode_t perm) {
        int fd = open(full.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, perm);
        if (fd < 0) return fail("create", full);
        close(fd);
    }

    void create_file(const std::string& full, const Node& node) {
        int raw = open(full.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (raw < 0) return fail("create", full);
        FdOwner fd(raw);
        if (!node.sparse) {
            if (!write_all(fd.get(), file_bytes(node.content_seed, node.size), 0))
                fail("write", full);
            return;
        }
        // Holes with a few islands of data; the size is set first so the tail may be a hole too.
        if (ftruncate(fd.get(), static_cast<off_t>(node.size)) != 0) return fail("ftruncate", full);
        Rng rng(node.content_seed);
        for (uint64_t islands = rng.between(1, 3); islands > 0; --islands) {
            uint64_t offset = rng.below(node.size);
            uint64_t length = std::min<uint64_t>(node.size - offset, rng.between(1, 4096));
            if (!write_all(fd.get(), file_bytes(rng.next(), length), static_cast<off_t>(offset)))
                fail("write", full);
        }
    }

    void apply_attributes(const std::string& path, const Node& node, const std::string& root) {
        switch (node.kind) {
            case Kind::Hardlink:
            case Kind::CharWhiteout:
            case Kind::XattrWhiteout:
            case Kind::OciWhiteout:
            case Kind::OciOpaque:
                return;
            default:
                break;
        }
        std::string full = path.empty() ? root : root + "/" + path;
        if (lchown(full.c_str(), node.uid, node.gid) != 0) fail("lchown", full);
        // After chown, which clears setuid and setgid.
        if (node.kind != Kind::Symlink && chmod(full.c_str(), node.perm) != 0) fail("chmod", full);
        for (const auto& [name, value] : node.xattrs) {
            if (lsetxattr(full.c_str(), name.c_str(), value.data(), value.size(), 0) != 0)
                fail("setxattr", full);
        }
        // Children come first in this pass, so nothing written later touches this mtime.
        const timespec times[2] = {node.mtime, node.mtime};
        if (utimensat(AT_FDCWD, full.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
            fail("utimensat", full);
    }

    std::string prefix_;
    Form form_;
};

// ---------------------------------------------------------------------------------------------
// Walking a mounted tree.

struct Seen {
    struct stat st {};
    unsigned char d_type = DT_UNKNOWN;  // as the parent's readdir listed it
    ino_t d_ino = 0;
    std::string link_target;
    uint64_t content_hash = 0;
    size_t content_length = 0;
    int content_errno = 0;
    std::map<std::string, std::string> xattrs;
    int xattr_errno = 0;
};

struct TreeView {
    std::map<std::string, Seen> entries;  // "" is the mount root
    std::vector<std::string> phantoms;    // listed by readdir, but lstat says ENOENT
    std::vector<std::string> violations;  // the mount contradicting itself
    // ".." whose d_ino is not the parent's st_ino. The kernel gives the lower directory's real
    // parent in a directory it does not merge, so this is held against laminafs only.
    std::vector<std::string> dotdot_mismatches;
    // Set when the filesystem stopped answering (ENOTCONN, ECONNABORTED: a FUSE daemon that died):
    // the first call that failed so. The walk stops there.
    std::string disconnected;
};

bool is_disconnect(int err) {
    return err == ENOTCONN || err == ECONNABORTED;
}

const char* type_name(mode_t mode) {
    switch (mode & S_IFMT) {
        case S_IFREG:
            return "regular file";
        case S_IFDIR:
            return "directory";
        case S_IFLNK:
            return "symlink";
        case S_IFIFO:
            return "fifo";
        case S_IFCHR:
            return "char device";
        case S_IFBLK:
            return "block device";
        case S_IFSOCK:
            return "socket";
        default:
            return "unknown type";
    }
}

const char* dtype_name(unsigned char d_type) {
    switch (d_type) {
        case DT_REG:
            return "DT_REG";
        case DT_DIR:
            return "DT_DIR";
        case DT_LNK:
            return "DT_LNK";
        case DT_FIFO:
            return "DT_FIFO";
        case DT_CHR:
            return "DT_CHR";
        case DT_BLK:
            return "DT_BLK";
        case DT_SOCK:
            return "DT_SOCK";
        default:
            return "DT_UNKNOWN";
    }
}

std::string shown(const std::string& path) {
    return path.empty() ? "/" : "/" + path;
}

std::string octal(mode_t mode) {
    std::ostringstream out;
    out << "0" << std::oct << mode;
    return out.str();
}

bool is_private_xattr(const std::string& name) {
    return name.rfind("trusted.overlay.", 0) == 0 || name.rfind("user.overlay.", 0) == 0;
}

std::map<std::string, std::string> read_xattrs(const std::string& full, int& err) {
    std::map<std::string, std::string> out;
    err = 0;
    ssize_t size = llistxattr(full.c_str(), nullptr, 0);
    if (size < 0) {
        err = errno;
        return out;
    }
    std::string names(static_cast<size_t>(size) + 1, '\0');
    size = llistxattr(full.c_str(), names.data(), names.size());
    if (size < 0) {
        err = errno;
        return out;
    }
    names.resize(static_cast<size_t>(size));
    for (size_t pos = 0; pos < names.size();) {
        std::string name = names.c_str() + pos;
        pos += name.size() + 1;
        if (name.empty() || is_private_xattr(name)) continue;
        ssize_t length = lgetxattr(full.c_str(), name.c_str(), nullptr, 0);
        std::string value;
        if (length > 0) {
            value.resize(static_cast<size_t>(length));
            length = lgetxattr(full.c_str(), name.c_str(), value.data(), value.size());
        }
        if (length < 0) {
            out[name] = "<getxattr: " + std::string(strerror(errno)) + ">";
        } else {
            value.resize(static_cast<size_t>(length));
            out[name] = value;
        }
    }
    return out;
}

void read_content(const std::string& full, Seen& seen) {
    int raw = open(full.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (raw < 0) {
        seen.content_errno = errno;
        return;
    }
    FdOwner fd(raw);
    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            seen.content_errno = errno;
            break;
        }
        if (n == 0) break;
        XXH3_64bits_update(state, buf, static_cast<size_t>(n));
        seen.content_length += static_cast<size_t>(n);
    }
    seen.content_hash = XXH3_64bits_digest(state);
    XXH3_freeState(state);
}

class TreeWalker {
public:
    explicit TreeWalker(std::string mount) : mount_(std::move(mount)) {}

    TreeView walk() {
        Seen root;
        if (lstat(mount_.c_str(), &root.st) != 0) {
            view_.violations.push_back("lstat of the mount root failed: " +
                                       std::string(strerror(errno)));
            return view_;
        }
        root.d_type = DT_DIR;
        root.d_ino = root.st.st_ino;
        root.xattrs = read_xattrs(mount_, root.xattr_errno);
        root_dev_ = root.st.st_dev;
        view_.entries[""] = root;
        walk_dir("", root.st.st_ino, 0, 0);
        check_inode_sharing();
        return std::move(view_);
    }

private:
    std::string full(const std::string& rel) const {
        return rel.empty() ? mount_ : mount_ + "/" + rel;
    }

    void disconnected(const char* op, const std::string& path, int err) {
        view_.disconnected = std::string(op) + " " + shown(path) + ": " + strerror(err);
    }

    void violation(const std::string& path, const std::string& what) {
        view_.violations.push_back(shown(path) + ": " + what);
    }

    void walk_dir(const std::string& rel, ino_t self_ino, ino_t parent_ino, int depth) {
        if (depth > 64) return violation(rel, "directory tree deeper than 64 levels");
        DIR* dir = opendir(full(rel).c_str());
        if (!dir) {
            if (is_disconnect(errno)) return disconnected("opendir", rel, errno);
            return violation(rel, "opendir failed: " + std::string(strerror(errno)));
        }
        std::map<std::string, std::pair<unsigned char, ino_t>> listed;
        errno = 0;
        while (dirent* entry = readdir(dir)) {
            std::string name = entry->d_name;
            if (name == "." || name == "..") {
                ino_t want = name == "." ? self_ino : parent_ino;
                if (entry->d_type != DT_DIR && entry->d_type != DT_UNKNOWN) {
                    violation(rel,
                              "readdir lists \"" + name + "\" as " + dtype_name(entry->d_type));
                }
                // The mount root's ".." is outside the mount.
                if ((name == "." || !rel.empty()) && entry->d_ino != want) {
                    std::string what = "readdir d_ino of \"" + name + "\" is " +
                                       std::to_string(entry->d_ino) + ", lstat st_ino is " +
                                       std::to_string(want);
                    if (name == ".") {
                        violation(rel, what);
                    } else {
                        view_.dotdot_mismatches.push_back(shown(rel) + ": " + what);
                    }
                }
                continue;
            }
            if (!listed.emplace(name, std::make_pair(entry->d_type, entry->d_ino)).second) {
                violation(join_path(rel, name), "readdir lists this name more than once");
            }
        }
        int readdir_errno = errno;
        closedir(dir);
        if (is_disconnect(readdir_errno)) return disconnected("readdir", rel, readdir_errno);
        if (readdir_errno != 0)
            violation(rel, "readdir failed: " + std::string(strerror(readdir_errno)));

        for (const auto& [name, listing] : listed) {
            std::string child = join_path(rel, name);
            Seen seen;
            if (lstat(full(child).c_str(), &seen.st) != 0) {
                if (errno == ENOENT) {
                    view_.phantoms.push_back(child);
                } else if (is_disconnect(errno)) {
                    return disconnected("lstat", child, errno);
                } else {
                    violation(child,
                              "listed by readdir but lstat fails: " + std::string(strerror(errno)));
                }
                continue;
            }
            seen.d_type = listing.first;
            seen.d_ino = listing.second;
            if (seen.d_type != IFTODT(seen.st.st_mode)) {
                violation(child, std::string("readdir d_type ") + dtype_name(seen.d_type) +
                                     " but lstat type " + type_name(seen.st.st_mode));
            }
            if (seen.d_ino != seen.st.st_ino) {
                violation(child, "readdir d_ino " + std::to_string(seen.d_ino) +
                                     " but lstat st_ino " + std::to_string(seen.st.st_ino));
            }
            if (seen.st.st_dev != root_dev_) {
                violation(child, "st_dev " + std::to_string(seen.st.st_dev) +
                                     " differs from the mount root's " + std::to_string(root_dev_));
            }
            if (S_ISLNK(seen.st.st_mode)) {
                std::string target(PATH_MAX + 1, '\0');
                ssize_t n = readlink(full(child).c_str(), target.data(), target.size());
                seen.link_target = n < 0 ? "<readlink: " + std::string(strerror(errno)) + ">"
                                         : target.substr(0, static_cast<size_t>(n));
            }
            if (S_ISREG(seen.st.st_mode)) read_content(full(child), seen);
            seen.xattrs = read_xattrs(full(child), seen.xattr_errno);
            if (is_disconnect(seen.content_errno))
                return disconnected("open/read", child, seen.content_errno);
            if (is_disconnect(seen.xattr_errno))
                return disconnected("listxattr", child, seen.xattr_errno);
            bool is_dir = S_ISDIR(seen.st.st_mode);
            ino_t ino = seen.st.st_ino;
            view_.entries[child] = std::move(seen);
            if (is_dir) walk_dir(child, ino, self_ino, depth + 1);
            if (!view_.disconnected.empty()) return;
        }
    }

    // Two paths may share an inode only as hardlinks, which are never directories.
    void check_inode_sharing() {
        std::map<ino_t, std::vector<std::string>> by_ino;
        for (const auto& [path, seen] : view_.entries) by_ino[seen.st.st_ino].push_back(path);
        for (const auto& [ino, paths] : by_ino) {
            if (paths.size() < 2) continue;
            for (const auto& path : paths) {
                if (S_ISDIR(view_.entries[path].st.st_mode)) {
                    violation(path, "directory shares st_ino " + std::to_string(ino) + " with " +
                                        std::to_string(paths.size() - 1) + " other path(s), e.g. " +
                                        shown(paths[0] == path ? paths[1] : paths[0]));
                    break;
                }
            }
        }
    }

    std::string mount_;
    dev_t root_dev_ = 0;
    TreeView view_;
};

// ---------------------------------------------------------------------------------------------
// Comparing the two views.

class Differences {
public:
    explicit Differences(std::string candidate) : candidate_(std::move(candidate)) {}

    void add(const std::string& line) {
        ++count_;
        if (lines_.size() < kMaxReportedDifferences) lines_.push_back(line);
    }
    void attribute(const std::string& path, const std::string& what, const std::string& kernel,
                   const std::string& candidate) {
        add(shown(path) + ": " + what + ": kernel " + kernel + ", " + candidate_ + " " + candidate);
    }
    bool full() const { return lines_.size() >= kMaxReportedDifferences; }
    size_t count() const { return count_; }
    const std::string& candidate() const { return candidate_; }
    std::string text() const {
        std::string out;
        for (const auto& line : lines_) out += "  " + line + "\n";
        if (count_ > lines_.size())
            out += "  ... and " + std::to_string(count_ - lines_.size()) + " more\n";
        return out;
    }

private:
    std::string candidate_;
    std::vector<std::string> lines_;
    size_t count_ = 0;
};

std::string printable(const std::string& bytes) {
    std::ostringstream out;
    out << '"';
    for (size_t i = 0; i < bytes.size() && i < 48; ++i) {
        unsigned char c = static_cast<unsigned char>(bytes[i]);
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            out << c;
        } else {
            static const char* hex = "0123456789abcdef";
            out << "\\x" << hex[c >> 4] << hex[c & 15];
        }
    }
    out << (bytes.size() > 48 ? "...\"" : "\"") << " (" << bytes.size() << " bytes)";
    return out.str();
}

// Where two files first differ, read again only when their hashes do.
std::string first_difference(const std::string& a, const std::string& b) {
    std::string left = read_file(a), right = read_file(b);
    size_t n = std::min(left.size(), right.size());
    for (size_t i = 0; i < n; ++i) {
        if (left[i] != right[i]) return "first differing byte at offset " + std::to_string(i);
    }
    return left.size() == right.size() ? "same bytes on re-read" : "one is a prefix of the other";
}

void compare_entry(const std::string& path, const Seen& k, const Seen& c,
                   const std::string& kernel_mount, const std::string& candidate_mount,
                   Differences& diffs) {
    if ((k.st.st_mode & S_IFMT) != (c.st.st_mode & S_IFMT)) {
        return diffs.attribute(path, "type", type_name(k.st.st_mode), type_name(c.st.st_mode));
    }
    bool is_dir = S_ISDIR(k.st.st_mode);
    if ((k.st.st_mode & 07777) != (c.st.st_mode & 07777)) {
        diffs.attribute(path, "mode", octal(k.st.st_mode & 07777), octal(c.st.st_mode & 07777));
    }
    if (k.st.st_uid != c.st.st_uid)
        diffs.attribute(path, "uid", std::to_string(k.st.st_uid), std::to_string(c.st.st_uid));
    if (k.st.st_gid != c.st.st_gid)
        diffs.attribute(path, "gid", std::to_string(k.st.st_gid), std::to_string(c.st.st_gid));
    if (!is_dir && k.st.st_size != c.st.st_size) {
        diffs.attribute(path, "size", std::to_string(k.st.st_size), std::to_string(c.st.st_size));
    }
    if (k.st.st_mtim.tv_sec != c.st.st_mtim.tv_sec ||
        k.st.st_mtim.tv_nsec != c.st.st_mtim.tv_nsec) {
        auto when = [](const timespec& t) {
            return std::to_string(t.tv_sec) + "." + std::to_string(t.tv_nsec);
        };
        diffs.attribute(path, "st_mtim", when(k.st.st_mtim), when(c.st.st_mtim));
    }
    if (S_ISREG(k.st.st_mode) && k.st.st_blocks != c.st.st_blocks) {
        diffs.attribute(path, "st_blocks", std::to_string(k.st.st_blocks),
                        std::to_string(c.st.st_blocks));
    }
    if (!is_dir && k.st.st_nlink != c.st.st_nlink) {
        diffs.attribute(path, "st_nlink", std::to_string(k.st.st_nlink),
                        std::to_string(c.st.st_nlink));
    }
    if ((S_ISCHR(k.st.st_mode) || S_ISBLK(k.st.st_mode)) && k.st.st_rdev != c.st.st_rdev) {
        auto dev = [](dev_t d) {
            return std::to_string(major(d)) + ":" + std::to_string(minor(d));
        };
        diffs.attribute(path, "st_rdev", dev(k.st.st_rdev), dev(c.st.st_rdev));
    }
    if (k.link_target != c.link_target) {
        diffs.attribute(path, "symlink target", printable(k.link_target), printable(c.link_target));
    }
    if (S_ISREG(k.st.st_mode)) {
        if (k.content_errno != c.content_errno) {
            diffs.attribute(path, "open/read", k.content_errno ? strerror(k.content_errno) : "ok",
                            c.content_errno ? strerror(c.content_errno) : "ok");
        } else if (k.content_length != c.content_length) {
            diffs.attribute(path, "bytes read", std::to_string(k.content_length),
                            std::to_string(c.content_length));
        } else if (k.content_hash != c.content_hash) {
            diffs.attribute(
                path, "content", "xxh3 " + std::to_string(k.content_hash),
                "xxh3 " + std::to_string(c.content_hash) + " (" +
                    first_difference(kernel_mount + "/" + path, candidate_mount + "/" + path) +
                    ")");
        }
    }
    if (k.xattr_errno != c.xattr_errno) {
        diffs.attribute(path, "listxattr", k.xattr_errno ? strerror(k.xattr_errno) : "ok",
                        c.xattr_errno ? strerror(c.xattr_errno) : "ok");
    }
    std::set<std::string> names;
    for (const auto& xattr : k.xattrs) names.insert(xattr.first);
    for (const auto& xattr : c.xattrs) names.insert(xattr.first);
    for (const auto& name : names) {
        auto kv = k.xattrs.find(name), cv = c.xattrs.find(name);
        std::string kt = kv == k.xattrs.end() ? "absent" : printable(kv->second);
        std::string ct = cv == c.xattrs.end() ? "absent" : printable(cv->second);
        if (kt != ct) diffs.attribute(path, "xattr " + name, kt, ct);
    }
}

// Both views must group paths into shared inodes (hardlinks) the same way.
void compare_inode_sharing(const TreeView& kernel, const TreeView& candidate, Differences& diffs) {
    auto groups = [](const TreeView& view) {
        std::map<ino_t, std::vector<std::string>> by_ino;
        for (const auto& [path, seen] : view.entries) by_ino[seen.st.st_ino].push_back(path);
        std::map<std::string, std::vector<std::string>> of_path;
        for (const auto& [ino, paths] : by_ino) {
            for (const auto& path : paths) of_path[path] = paths;
        }
        return of_path;
    };
    auto list = [](const std::vector<std::string>& paths) {
        std::string out = "{";
        for (const auto& path : paths) out += (out.size() > 1 ? ", " : "") + shown(path);
        return out + "}";
    };
    auto kernel_groups = groups(kernel), candidate_groups = groups(candidate);
    std::set<std::string> reported;
    for (const auto& [path, kernel_group] : kernel_groups) {
        auto it = candidate_groups.find(path);
        if (it == candidate_groups.end() || reported.count(path)) continue;
        if (kernel_group != it->second) {
            diffs.attribute(path, "paths sharing its st_ino", list(kernel_group), list(it->second));
            for (const auto& p : kernel_group) reported.insert(p);
            for (const auto& p : it->second) reported.insert(p);
        }
    }
}

void compare_views(const TreeView& kernel, const TreeView& candidate,
                   const std::string& kernel_mount, const std::string& candidate_mount,
                   bool candidate_is_also_kernel, Differences& diffs) {
    if (!kernel.disconnected.empty())
        return diffs.add("kernel mount stopped answering: " + kernel.disconnected);
    if (!candidate.disconnected.empty()) {
        return diffs.add(diffs.candidate() + " stopped answering (did the daemon die?), first at " +
                         candidate.disconnected + "; see the kernel log for a segfault");
    }
    for (const auto& violation : kernel.violations)
        diffs.add("kernel mount contradicts itself: " + violation);
    for (const auto& violation : candidate.violations) {
        diffs.add(diffs.candidate() + " mount contradicts itself: " + violation);
    }
    if (!candidate_is_also_kernel) {
        // The kernel's own phantoms are the ones laminafs may share: the bottom layer's xattr
        // whiteouts, which readdir lists there because the kernel never reads that layer's
        // opaque="x" (laminafs lists none of the other kind).
        std::set<std::string> kernel_phantoms(kernel.phantoms.begin(), kernel.phantoms.end());
        for (const auto& phantom : candidate.phantoms) {
            if (kernel_phantoms.count(phantom)) continue;
            diffs.add(shown(phantom) + ": " + diffs.candidate() +
                      " readdir lists it but lstat says ENOENT");
        }
        for (const auto& mismatch : candidate.dotdot_mismatches) {
            diffs.add(diffs.candidate() + " mount contradicts itself: " + mismatch);
        }
    }
    // A directory one view lacks (or has as something else) is reported once, not with all below it.
    std::set<std::string> kernel_only_dirs, candidate_only_dirs;
    auto below_reported = [](const std::set<std::string>& dirs, const std::string& path) {
        for (const auto& dir : ancestors_of(path)) {
            if (dirs.count(dir)) return true;
        }
        return false;
    };
    auto only_in = [&](const std::string& view_name, const std::string& path, const Seen& seen,
                       std::set<std::string>& only_dirs) {
        if (below_reported(only_dirs, path)) return;
        bool is_dir = S_ISDIR(seen.st.st_mode);
        if (is_dir) only_dirs.insert(path);
        diffs.add(shown(path) + ": only in the " + view_name + " view (" +
                  type_name(seen.st.st_mode) + (is_dir ? ", and everything below it)" : ")"));
    };
    auto k = kernel.entries.begin(), c = candidate.entries.begin();
    while (k != kernel.entries.end() || c != candidate.entries.end()) {
        if (c == candidate.entries.end() || (k != kernel.entries.end() && k->first < c->first)) {
            only_in("kernel", k->first, k->second, kernel_only_dirs);
            ++k;
        } else if (k == kernel.entries.end() || c->first < k->first) {
            only_in(diffs.candidate(), c->first, c->second, candidate_only_dirs);
            ++c;
        } else {
            bool k_dir = S_ISDIR(k->second.st.st_mode), c_dir = S_ISDIR(c->second.st.st_mode);
            if (k_dir != c_dir) (k_dir ? kernel_only_dirs : candidate_only_dirs).insert(k->first);
            compare_entry(k->first, k->second, c->second, kernel_mount, candidate_mount, diffs);
            ++k;
            ++c;
        }
    }
    compare_inode_sharing(kernel, candidate, diffs);
}

// ---------------------------------------------------------------------------------------------
// Mounting, seeds and the driver every case shares.

bool candidate_is_kernel() {
    const char* value = getenv("LAMINA_DIFF_CANDIDATE");
    return value && std::string(value) == "kernel";
}

std::string candidate_label() {
    if (candidate_is_kernel()) return "kernel#2";
    std::string bin = laminafs_binary();
    std::string base = base_of(bin);
    return base == "laminafs" ? base : base + " (LAMINAFS_BIN)";
}

std::optional<uint64_t> env_number(const char* name) {
    const char* value = getenv(name);
    if (!value || !*value) return std::nullopt;
    char* end = nullptr;
    uint64_t number = strtoull(value, &end, 0);
    if (*end != '\0') {
        ADD_FAILURE() << name << "=" << value << " is not a number";
        return std::nullopt;
    }
    return number;
}

std::vector<uint64_t> seeds_for(uint64_t base_seed, int default_iterations) {
    auto env_seed = env_number("LAMINA_DIFF_SEED");
    auto env_iterations = env_number("LAMINA_DIFF_ITERATIONS");
    // Zero seeds would compare nothing and pass.
    if (env_iterations == 0u) ADD_FAILURE() << "refused: LAMINA_DIFF_ITERATIONS=0 runs nothing";
    uint64_t first = env_seed.value_or(base_seed);
    uint64_t count =
        env_iterations.value_or(env_seed ? 1 : static_cast<uint64_t>(default_iterations));
    std::vector<uint64_t> seeds;
    for (uint64_t i = 0; i < count; ++i) seeds.push_back(first + i);
    return seeds;
}

std::string current_test_name() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return std::string(info->test_suite_name()) + "." + info->name();
}

std::string reproduce_hint(uint64_t seed) {
    return "reproduce: LAMINA_DIFF_SEED=" + std::to_string(seed) + " " +
           "diff_read_test --gtest_filter=" + current_test_name();
}

std::string lowerdir_option(const std::vector<std::string>& bottom_first) {
    std::string option = "lowerdir=";
    for (auto it = bottom_first.rbegin(); it != bottom_first.rend(); ++it) {
        if (it != bottom_first.rbegin()) option += ":";
        option += *it;
    }
    return option;
}

// A mounted stack: layers written under a temporary directory, the kernel's view and the
// candidate's view of them, unmounted when it goes away.
class MountedStack {
public:
    MountedStack(const StackShape& shape, const std::vector<Layer>& layers)
        : dir_("ld"),
          kernel_mount_(dir_ / "mk"),
          candidate_mount_(dir_ / "mc"),
          kernel_guard_(kernel_mount_),
          candidate_guard_(candidate_mount_) {
        for (const char* sub : {"g", "k", "mk", "mc", "empty"}) mkdir((dir_ / sub).c_str(), 0755);
        std::vector<std::string> generated, kernel_form;
        LayerWriter as_generated(shape, LayerWriter::Form::AsGenerated);
        LayerWriter converted(shape, LayerWriter::Form::KernelForm);
        for (size_t i = 0; i < layers.size(); ++i) {
            generated.push_back(dir_ / ("g/" + std::to_string(i)));
            as_generated.write(layers[i], generated.back());
            if (shape.oci_forms) {
                kernel_form.push_back(dir_ / ("k/" + std::to_string(i)));
                converted.write(layers[i], kernel_form.back());
            }
        }
        if (::testing::Test::HasFailure()) return;
        std::vector<std::string> oracle_layers = shape.oci_forms ? kernel_form : generated;
        // A lowerdir-only kernel mount needs two layers; an empty one beneath adds nothing.
        if (oracle_layers.size() == 1) oracle_layers.insert(oracle_layers.begin(), dir_ / "empty");
        std::string kernel_options = lowerdir_option(oracle_layers);
        if (shape.prefix == OverlayPrefix::User) kernel_options += ",userxattr";
        if (kernel_options.size() >= 4000) {
            ADD_FAILURE() << "kernel mount options are " << kernel_options.size()
                          << " bytes, over mount(2)'s page: set TMPDIR to a shorter directory";
            return;
        }
        std::string err = mount_kernel_overlay(kernel_options, kernel_mount_);
        if (!err.empty()) {
            ADD_FAILURE() << "kernel overlayfs: " << err;
            return;
        }
        if (candidate_is_kernel()) {
            err = mount_kernel_overlay(kernel_options, candidate_mount_);
            if (!err.empty()) {
                ADD_FAILURE() << "second kernel overlayfs: " << err;
                return;
            }
        } else {
            CommandResult result = mount_laminafs(lowerdir_option(generated), candidate_mount_);
            if (result.status != 0 || !is_mountpoint(candidate_mount_)) {
                ADD_FAILURE() << laminafs_binary() << " -o lowerdir=... " << candidate_mount_
                              << " failed (status " << result.status << "): " << result.err;
                return;
            }
        }
        mounted_ = true;
    }

    bool mounted() const { return mounted_; }
    const std::string& kernel_mount() const { return kernel_mount_; }
    const std::string& candidate_mount() const { return candidate_mount_; }

private:
    TempDir dir_;
    std::string kernel_mount_;
    std::string candidate_mount_;
    MountGuard kernel_guard_;
    MountGuard candidate_guard_;
    bool mounted_ = false;
};

// What the kernel's view held, so a run shows what it covered.
std::string summary(const TreeView& view) {
    size_t files = 0, dirs = 0, symlinks = 0, others = 0, hardlinked = 0, special_bits = 0,
           with_xattrs = 0;
    for (const auto& [path, seen] : view.entries) {
        mode_t mode = seen.st.st_mode;
        files += S_ISREG(mode);
        dirs += S_ISDIR(mode);
        symlinks += S_ISLNK(mode);
        others += !S_ISREG(mode) && !S_ISDIR(mode) && !S_ISLNK(mode);
        hardlinked += !S_ISDIR(mode) && seen.st.st_nlink > 1;
        special_bits += (mode & 07000) != 0;
        with_xattrs += !seen.xattrs.empty();
    }
    std::ostringstream out;
    out << view.entries.size() << " paths (" << files << " files, " << dirs << " dirs, " << symlinks
        << " symlinks, " << others << " fifos/devices; " << hardlinked << " hardlinked, "
        << special_bits << " with setuid/setgid/sticky, " << with_xattrs << " with xattrs), "
        << view.phantoms.size() << " kernel phantom(s)";
    return out.str();
}

bool cannot_mount() {
    return !can_mount_kernel_overlay() || (!candidate_is_kernel() && !can_mount_fuse());
}

void check_stack(const StackShape& shape, uint64_t seed) {
    std::vector<Layer> layers = StackGenerator(shape, seed).generate();
    MountedStack stack(shape, layers);
    if (!stack.mounted()) return;
    TreeView kernel = TreeWalker(stack.kernel_mount()).walk();
    TreeView candidate = TreeWalker(stack.candidate_mount()).walk();
    Differences diffs(candidate_label());
    compare_views(kernel, candidate, stack.kernel_mount(), stack.candidate_mount(),
                  candidate_is_kernel(), diffs);
    std::cout << "[ diff     ] seed " << seed << ": " << summary(kernel) << "; " << diffs.count()
              << " difference(s)" << std::endl;
    if (diffs.count() > 0) {
        ADD_FAILURE() << "seed " << seed << " (" << describe(shape) << "): " << diffs.count()
                      << " difference(s) between kernel overlayfs and " << diffs.candidate()
                      << ":\n"
                      << diffs.text() << reproduce_hint(seed);
    }
}

void run_stacks(const StackShape& shape, uint64_t base_seed, int default_iterations) {
    for (uint64_t seed : seeds_for(base_seed, default_iterations)) {
        SCOPED_TRACE("seed " + std::to_string(seed) + "; " + reproduce_hint(seed));
        std::cout << "[ diff     ] " << current_test_name() << " seed " << seed << " ("
                  << describe(shape) << ")" << std::endl;
        check_stack(shape, seed);
    }
}

StackShape shape_with(int layers, int entries) {
    StackShape shape;
    shape.layers = layers;
    shape.entries_per_layer = entries;
    return shape;
}

StackShape only_whiteout_format(bool chardev, bool xattr, bool opaque, bool oci) {
    StackShape shape = shape_with(4, 40);
    shape.chardev_whiteouts = chardev;
    shape.xattr_whiteouts = xattr;
    shape.opaque_dirs = opaque;
    shape.oci_forms = oci;
    return shape;
}

#define SKIP_UNLESS_MOUNTABLE() \
    if (cannot_mount()) GTEST_SKIP() << skip_reason()

TEST(DiffRead, one_layer_matches_kernel) {
    SKIP_UNLESS_MOUNTABLE();
    run_stacks(shape_with(1, 80), 1000, 3);
}

TEST(DiffRead, two_layers_match_kernel) {
    SKIP_UNLESS_MOUNTABLE();
    run_stacks(shape_with(2, 60), 2000, 4);
}

TEST(DiffRead, sixteen_layers_match_kernel) {
    SKIP_UNLESS_MOUNTABLE();
    run_stacks(shape_with(16, 30), 3000, 3);
}

TEST(DiffRead, many_layers_128_match_kernel) {
    SKIP_UNLESS_MOUNTABLE();
    run_stacks(shape_with(128, 5), 4000, 2);
}

TEST(DiffRead, chardev_whiteouts_alone_match_kernel) {
    SKIP_UNLESS_MOUNTABLE();
    run_stacks(only_whiteout_format(true, false, false, false), 5000, 3);
}

TEST(DiffRead, xattr_whiteouts_alone_match_kernel) {
    SKIP_UNLESS_MOUNTABLE();
    run_stacks(only_whiteout_format(false, true, false, false), 6000, 3);
}

TEST(DiffRead, opaque_dirs_alone_match_kernel) {
    SKIP_UNLESS_MOUNTABLE();
    run_stacks(only_whiteout_format(false, false, true, false), 7000, 3);
}

TEST(DiffRead, user_overlay_xattrs_match_kernel_with_userxattr) {
    SKIP_UNLESS_MOUNTABLE();
    StackShape shape = shape_with(6, 40);
    shape.prefix = OverlayPrefix::User;
    run_stacks(shape, 8000, 3);
}

TEST(DiffRead, oci_whiteouts_alone_match_converted_layers) {
    SKIP_UNLESS_MOUNTABLE();
    run_stacks(only_whiteout_format(false, false, false, true), 9000, 3);
}

TEST(DiffRead, oci_whiteouts_over_sixteen_layers_with_kernel_forms) {
    SKIP_UNLESS_MOUNTABLE();
    StackShape shape = shape_with(16, 25);
    shape.oci_forms = true;
    shape.xattr_whiteouts = false;  // a .wh. over an opaque=x directory has no single kernel form
    run_stacks(shape, 10000, 2);
}

// Lookups of names that are not there (never were, whited out, below a file, below a missing
// directory) must fail with the kernel's errno, twice in a row so cached negatives are hit too.
TEST(DiffRead, missing_names_under_128_layers) {
    SKIP_UNLESS_MOUNTABLE();
    StackShape shape = shape_with(128, 6);
    for (uint64_t seed : seeds_for(11000, 1)) {
        SCOPED_TRACE("seed " + std::to_string(seed) + "; " + reproduce_hint(seed));
        std::cout << "[ diff     ] " << current_test_name() << " seed " << seed << std::endl;
        std::vector<Layer> layers = StackGenerator(shape, seed).generate();
        MountedStack stack(shape, layers);
        if (!stack.mounted()) return;

        std::set<std::string> probes = {"no-such-name", "no/such/deep/path", std::string(255, 'q'),
                                        std::string(kOciWhiteoutPrefix) + "a"};
        for (const auto& layer : layers) {
            for (const auto& [path, node] : layer) {
                if (path.empty()) continue;
                probes.insert(path);
                probes.insert(path + "/below");
            }
        }
        TreeView kernel = TreeWalker(stack.kernel_mount()).walk();
        for (const auto& [path, seen] : kernel.entries) {
            if (S_ISDIR(seen.st.st_mode))
                probes.insert(join_path(path, "missing-" + std::to_string(path.size() % 7)));
        }

        Differences diffs(candidate_label());
        auto outcome = [](const std::string& full, bool follow) {
            struct stat st;
            int rc = follow ? stat(full.c_str(), &st) : lstat(full.c_str(), &st);
            if (rc != 0)
                return std::string(strerrorname_np(errno) ? strerrorname_np(errno)
                                                          : strerror(errno));
            return std::string("found ") + type_name(st.st_mode);
        };
        size_t missing = 0;
        bool answering = true;
        for (int round = 0; round < 2 && answering; ++round) {
            for (auto probe = probes.begin(); probe != probes.end() && answering; ++probe) {
                for (bool follow : {false, true}) {
                    std::string k = outcome(stack.kernel_mount() + "/" + *probe, follow);
                    std::string c = outcome(stack.candidate_mount() + "/" + *probe, follow);
                    std::string call = std::string(follow ? "stat" : "lstat") + " (round " +
                                       std::to_string(round + 1) + ")";
                    if (round == 0 && !follow && k.rfind("found", 0) != 0) ++missing;
                    if (c == "ENOTCONN" || c == "ECONNABORTED") {
                        diffs.add(diffs.candidate() +
                                  " stopped answering (did the daemon die?), first at " + call +
                                  " " + shown(*probe) + ": " + c);
                        answering = false;
                        break;
                    }
                    if (k != c) diffs.attribute(*probe, call, k, c);
                }
            }
        }
        std::cout << "[ diff     ] " << probes.size() << " names probed, " << missing
                  << " missing in the kernel view, " << diffs.count() << " difference(s)"
                  << std::endl;
        if (diffs.count() > 0) {
            ADD_FAILURE() << "seed " << seed << ": " << diffs.count()
                          << " lookup difference(s) between kernel overlayfs and "
                          << diffs.candidate() << ":\n"
                          << diffs.text() << reproduce_hint(seed);
        }
    }
}

}  // namespace
}  // namespace lamina::test
