// Opening the layer stack named by the mount options.
#include "layers.h"

#include <fcntl.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace lamina {

namespace {

// The mount ID of the mount fd lies on; 0 when the kernel does not say.
uint64_t mount_id(int fd) {
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) != 0 || !(stx.stx_mask & STATX_MNT_ID))
        return 0;
    return stx.stx_mnt_id;
}

// True when the mount fd lies on is idmapped: /proc/self/mountinfo names it in the mount's own
// options. Read at start, on the layer's own mount: a clone of it stays idmapped, but a detached
// mount is not listed.
bool on_idmapped_mount(int fd) {
    uint64_t id = mount_id(fd);
    if (id == 0) return false;
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        uint64_t listed = 0;
        std::string parent, devno, root, mountpoint, options;
        if (!(fields >> listed >> parent >> devno >> root >> mountpoint >> options)) continue;
        if (listed == id) return ("," + options + ",").find(",idmapped,") != std::string::npos;
    }
    return false;
}

// A private clone of the mount fd lies on, rooted at fd: open_tree(2) without AT_RECURSIVE, as
// the kernel's clone_private_mount. It carries none of the mounts below fd, those there now nor
// those made later (the laminafs mount itself, when its mount point lies inside the layer), and
// it is attached nowhere, so nothing can be mounted on it or propagate into it. It keeps the
// mount's flags and idmapping. Invalid, errno set, where the caller may not clone mounts: EPERM
// without CAP_SYS_ADMIN over its mount namespace, EINVAL in a user namespace when mounts it may
// not reveal lie below fd (lowerdir=/).
//
// atime (MOUNT_ATTR_NOATIME, _STRICTATIME or 0, each with or without _NODIRATIME) is set on the
// clone: it governs every read of the layer's files, the daemon's own and the kernel's
// passthrough reads of backing files alike (those are opened on the daemon's mount, with the
// reader's flags). rule_set tells whether it took; where it did not, the daemon's opens carry
// O_NOATIME instead (set_noatime).
UniqueFd clone_private_mount(int fd, uint64_t atime, bool& rule_set) {
    rule_set = false;
    UniqueFd clone(open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
    if (clone && atime) {
        int saved = errno;
        mount_attr attr{};
        attr.attr_set = atime;
        attr.attr_clr = MOUNT_ATTR__ATIME;
        if (atime == MOUNT_ATTR_NODIRATIME) attr.attr_clr = 0;
        rule_set = mount_setattr(clone.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) == 0;
        if (!rule_set)
            spdlog::debug("cannot set the atime rule of a layer's private mount: {}",
                          std::strerror(errno));
        errno = saved;
    }
    return clone;
}

// What the daemon's own reads of a layer add when its clone does not carry the atime rule.
void set_noatime(Layer& layer, bool rule_set, uint64_t atime) {
    bool files = !rule_set && (atime & MOUNT_ATTR_NOATIME);
    bool dirs = !rule_set && (files || (atime & MOUNT_ATTR_NODIRATIME));
    layer.file_noatime = files ? O_NOATIME : 0;
    layer.dir_noatime = dirs ? O_NOATIME : 0;
}

bool same_inode(const struct stat& a, const struct stat& b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// Opens path, resolved already, as a layer root on the layer's own mount.
std::string open_root(const std::string& path, const char* what, Layer& out, struct stat& st) {
    out.path = path;
    out.fd.reset(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!out.fd || fstat(out.fd.get(), &st) != 0)
        return std::string(what) + " '" + path + "': " + std::strerror(errno);
    out.dev = st.st_dev;
    return "";
}

// Moves the layer onto `reached`, its root as found inside a private clone, once it is shown
// to be the directory the path opened. Without a clone the layer stays on its own mount and
// clone_error says why.
std::string reach_through_clone(UniqueFd reached, int clone_errno, const struct stat& root,
                                const char* what, Layer& out) {
    if (!reached) {
        out.clone_error = clone_errno != 0 ? clone_errno : EINVAL;
        return "";
    }
    struct stat st;
    if (fstat(reached.get(), &st) != 0 || !same_inode(st, root))
        return std::string(what) + " '" + out.path + "': changed while it was opened";
    out.fd = std::move(reached);
    out.clone_error = 0;
    return "";
}

// The xattr calls reach a layer through /proc/self/fd (proc_fd_path), which works on a detached
// clone too; without /proc they would fail on the first copy-up, so say so now.
std::string check_proc_reach(const Layer& layer, const char* what) {
    struct stat st, via_proc;
    if (fstat(layer.fd.get(), &st) != 0 ||
        stat(proc_fd_path(layer.fd.get(), "").c_str(), &via_proc) != 0 || !same_inode(st, via_proc))
        return std::string(what) + " '" + layer.path +
               "': cannot reach it through /proc/self/fd (is /proc mounted?)";
    return "";
}

// A lower layer: its root is the root of its own private clone. check_idmapped asks whether its
// mount is idmapped, which only its own mount can tell.
std::string open_layer(const std::string& path, const char* what, bool check_idmapped, Layer& out) {
    struct stat st;
    if (auto err = open_root(path, what, out, st); !err.empty()) return err;
    if (check_idmapped) out.idmapped = on_idmapped_mount(out.fd.get());
    // A lower file's atime never moves through the mount, as on kernel overlayfs.
    bool rule_set;
    UniqueFd clone = clone_private_mount(out.fd.get(), MOUNT_ATTR_NOATIME, rule_set);
    if (auto err = reach_through_clone(std::move(clone), errno, st, what, out); !err.empty())
        return err;
    set_noatime(out, rule_set && out.clone_error == 0, MOUNT_ATTR_NOATIME);
    return check_proc_reach(out, what);
}

// `rel`, a relative path without symlinks or mounts on the way, opened beneath dirfd.
UniqueFd open_beneath(int dirfd, const std::string& rel) {
    struct open_how how {};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    return UniqueFd(static_cast<int>(syscall(SYS_openat2, dirfd, rel.c_str(), &how, sizeof how)));
}

// The nearest directory holding both resolved paths, neither inside the other.
std::string common_parent(const std::string& a, const std::string& b) {
    size_t end = 0;
    for (size_t i = 1; i <= a.size() && i <= b.size(); ++i) {
        bool a_ends = i == a.size() || a[i] == '/';
        bool b_ends = i == b.size() || b[i] == '/';
        if (a.compare(0, i, b, 0, i) != 0) break;
        if (a_ends && b_ends) end = i;
    }
    return end == 0 ? "/" : a.substr(0, end);
}

// The upper and the work dir, through one private clone: a copy-up renames from the work dir
// into the upper, and rename(2) refuses to cross mounts (EXDEV), two clones of one mount
// included. The clone is taken at their nearest common directory, and each is opened beneath
// it; the kernel, which needs no path, clones the upper's mount and likewise requires the work
// dir on it.
std::string open_upper_and_work(const std::string& upper, const std::string& work, uint64_t atime,
                                Layer& up, Layer& wk) {
    struct stat up_st, wk_st;
    if (auto err = open_root(upper, "upperdir", up, up_st); !err.empty()) return err;
    if (auto err = open_root(work, "workdir", wk, wk_st); !err.empty()) return err;
    uint64_t mnt = mount_id(up.fd.get());
    if (mnt != mount_id(wk.fd.get()))
        return "workdir '" + work + "' is not on the mount of upperdir '" + upper +
               "' (a copy-up renames from one into the other)";
    std::string parent = common_parent(upper, work);
    UniqueFd parent_fd(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    UniqueFd clone;
    int clone_errno = EXDEV;  // the common directory lies on another mount
    bool rule_set = false;
    if (parent_fd && mount_id(parent_fd.get()) == mnt) {
        clone = clone_private_mount(parent_fd.get(), atime, rule_set);
        clone_errno = errno;
    }
    // Each lies inside the clone; the clone itself may go, they hold it.
    UniqueFd up_fd, wk_fd;
    if (clone) {
        std::string base = parent == "/" ? "" : parent;
        up_fd = open_beneath(clone.get(), upper.substr(base.size() + 1));
        wk_fd = open_beneath(clone.get(), work.substr(base.size() + 1));
        if (!up_fd || !wk_fd) {
            clone_errno = errno;
            up_fd.reset();
            wk_fd.reset();
        }
    }
    if (auto err = reach_through_clone(std::move(up_fd), clone_errno, up_st, "upperdir", up);
        !err.empty())
        return err;
    if (auto err = reach_through_clone(std::move(wk_fd), clone_errno, wk_st, "workdir", wk);
        !err.empty())
        return err;
    set_noatime(up, rule_set && up.clone_error == 0, atime);
    if (auto err = check_proc_reach(up, "upperdir"); !err.empty()) return err;
    return check_proc_reach(wk, "workdir");
}

// Without a private clone, a path walk from a layer root that reaches the mount point enters
// the laminafs mount itself: the tree would contain itself, and a walk of it would wait on the
// daemon from within the daemon. Refuse that (a layer that is the mount point is fine: the
// descriptor was opened beneath the mount).
std::string check_mount_point_outside(const Layer& layer, const char* what,
                                      const std::string& mountpoint) {
    if (layer.clone_error == 0 || !is_inside(mountpoint, layer.path)) return "";
    return "mountpoint '" + mountpoint + "' is inside " + what + " '" + layer.path +
           "', and without a private clone of its mount (open_tree: " +
           std::strerror(layer.clone_error) + ") the mount would contain itself";
}

}  // namespace

std::string LayerStack::open(const MountOptions& opts) {
    layers_.clear();
    layers_.resize(opts.lowerdirs.size() + 1);
    has_upper_ = !opts.upperdir.empty();
    if (has_upper_) {
        // The upper copies' atime follows the mount's option, as the kernel's touch_atime on
        // the overlay inode and then on the upper file does.
        // nodiratime goes with any of the others (strictatime,nodiratime: fuzzer seed 111).
        uint64_t atime = opts.noatime       ? MOUNT_ATTR_NOATIME
                         : opts.strictatime ? MOUNT_ATTR_STRICTATIME
                                            : 0;
        if (opts.nodiratime) atime |= MOUNT_ATTR_NODIRATIME;
        if (auto err = open_upper_and_work(opts.upperdir, opts.workdir, atime, layers_[0], work_);
            !err.empty())
            return err;
    }
    bool mapped = !opts.uid_map.empty() || !opts.gid_map.empty();
    for (size_t i = 0; i < opts.lowerdirs.size(); ++i) {
        if (auto err = open_layer(opts.lowerdirs[i], "lowerdir", mapped, layers_[i + 1]);
            !err.empty())
            return err;
    }
    for (LayerNo n = has_upper_ ? kUpperLayer : first_lower(); n < end(); ++n) {
        const char* what = n == kUpperLayer ? "upperdir" : "lowerdir";
        if (auto err = check_mount_point_outside(layers_[n], what, opts.mountpoint); !err.empty())
            return err;
    }
    if (has_upper_) return check_mount_point_outside(work_, "workdir", opts.mountpoint);
    return "";
}

namespace {

int remove_entry(const char* path, const struct stat*, int type, struct FTW*) {
    (type == FTW_DP ? ::rmdir(path) : ::unlink(path));
    return 0;
}

}  // namespace

std::string LayerStack::prepare_work_dir() {
    std::string work = work_.path + "/work";
    if (mkdirat(work_.fd.get(), "work", 0700) != 0 && errno != EEXIST)
        return "workdir '" + work_.path + "': " + std::strerror(errno);
    // Leftovers of copy-ups a crash interrupted: never visible, safe to drop.
    nftw(proc_fd_path(work_.fd.get(), "work").c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (mkdirat(work_.fd.get(), "work", 0700) != 0 && errno != EEXIST)
        return "workdir '" + work + "': " + std::strerror(errno);
    // Held from here on: copy-ups and whiteouts are made in this very directory.
    work_dir_.reset(openat(work_.fd.get(), "work", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!work_dir_) return "workdir '" + work + "': " + std::strerror(errno);
    return "";
}

std::string LayerStack::proc_path(LayerNo n, std::string_view rel) const {
    return proc_fd_path(layers_[n].fd.get(), rel);
}

std::string LayerStack::work_proc_path(std::string_view rel) const {
    return proc_fd_path(work_dir_.get(), rel);
}

}  // namespace lamina
