// A container's volumes and binds, mounted inside its merged tree so their I/O bypasses laminafs,
// and the first copy of the image's content into a new volume.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "db.h"
#include "error.h"
#include "fsutil.h"
#include "mount_table.h"
#include "overlay_format.h"
#include "volumes.h"

namespace lamina::store {

namespace {

std::string fd_path(int fd) {
    return "/proc/self/fd/" + std::to_string(fd);
}

// The mount point for destination inside the container, made (directories 0755, a file for a
// file bind) where the image has nothing; an O_PATH descriptor of it.
Fd make_mount_point(int root, const std::string& destination, bool want_dir,
                    const std::string& merged) {
    std::string where = merged + destination;
    std::string rel;
    Fd parent(::dup(root));
    size_t start = 1;
    while (start <= destination.size()) {
        size_t slash = destination.find('/', start);
        if (slash == std::string::npos) slash = destination.size();
        std::string name = destination.substr(start, slash - start);
        bool last = slash == destination.size();
        rel += (rel.empty() ? "" : "/") + name;
        Fd fd = open_in_root_dir(root, rel, O_PATH);
        if (!fd && errno == ENOENT) {
            int rc = 0;
            if (!last || want_dir) {
                rc = ::mkdirat(parent.get(), name.c_str(), 0755);
            } else {
                Fd file(::openat(parent.get(), name.c_str(),
                                 O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
                rc = file ? 0 : -1;
            }
            if (rc != 0 && errno != EEXIST) throw_errno("cannot create mount point", where, errno);
            fd = open_in_root_dir(root, rel, O_PATH);
        }
        if (!fd) throw_errno("cannot open mount point", where, errno);
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat", where, errno);
        if ((!last || want_dir) && !S_ISDIR(st.st_mode))
            throw StoreError("cannot mount a directory at " + where + ": " +
                             (last ? "the image has a file there" : "a parent is not a directory"));
        if (last && !want_dir && S_ISDIR(st.st_mode))
            throw StoreError("cannot mount a file at " + where +
                             ": the image has a directory there");
        parent = std::move(fd);
        start = slash + 1;
    }
    return parent;
}

// Copies a tree with *at() calls from open directories, never following a symlink.
class TreeCopier {
public:
    TreeCopier(int dst_root, std::string where) : dst_root_(dst_root), where_(std::move(where)) {}

    // rel: the directory's path below the roots, "" for the roots themselves.
    void copy_dir(int src, int dst, const std::string& rel) {
        std::vector<std::string> names;
        if (!sorted_names_at(src, ".", names))
            throw_errno("cannot list", where_ + "/" + rel, errno);
        for (const auto& n : names) copy_entry(src, dst, n, rel.empty() ? n : rel + "/" + n);
    }

    // Owner, mode, xattrs and times of src onto dst (both paths that name the entry itself).
    void copy_attrs(const std::string& src, const std::string& dst, const struct stat& st) {
        if (::lchown(dst.c_str(), st.st_uid, st.st_gid) != 0 && geteuid() == 0 && errno != EINVAL)
            throw_errno("cannot chown", dst, errno);
        std::string failed;
        if (int err = copy_xattrs(src, -1, dst, &failed); err && !failed.empty())
            throw_errno("cannot set xattr " + failed + " on", dst, err);
        if (!S_ISLNK(st.st_mode) && ::chmod(dst.c_str(), st.st_mode & 07777) != 0)
            throw_errno("cannot chmod", dst, errno);
        struct timespec times[2] = {st.st_atim, st.st_mtim};
        ::utimensat(AT_FDCWD, dst.c_str(), times, AT_SYMLINK_NOFOLLOW);
    }

private:
    void copy_entry(int src_dir, int dst_dir, const std::string& name, const std::string& rel) {
        struct stat st;
        if (::fstatat(src_dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
            throw_errno("cannot stat", where_ + "/" + rel, errno);
        std::string src_path = fd_path(src_dir) + "/" + name;
        std::string dst_path = fd_path(dst_dir) + "/" + name;
        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
            auto it = links_.find({st.st_dev, st.st_ino});
            if (it != links_.end()) {
                if (::linkat(dst_root_, it->second.c_str(), dst_dir, name.c_str(), 0) != 0)
                    throw_errno("cannot link", where_ + "/" + rel, errno);
                return;
            }
        }
        if (S_ISDIR(st.st_mode)) {
            if (::mkdirat(dst_dir, name.c_str(), 0700) != 0)
                throw_errno("cannot create directory", where_ + "/" + rel, errno);
            Fd s(::openat(src_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            Fd d(::openat(dst_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!s || !d) throw_errno("cannot open", where_ + "/" + rel, errno);
            copy_dir(s.get(), d.get(), rel);
        } else if (S_ISREG(st.st_mode)) {
            copy_file(src_dir, dst_dir, name, rel);
        } else if (S_ISLNK(st.st_mode)) {
            std::string target(PATH_MAX, '\0');
            ssize_t n = ::readlinkat(src_dir, name.c_str(), target.data(), target.size());
            if (n < 0) throw_errno("cannot read link", where_ + "/" + rel, errno);
            target.resize(static_cast<size_t>(n));
            if (::symlinkat(target.c_str(), dst_dir, name.c_str()) != 0)
                throw_errno("cannot create symlink", where_ + "/" + rel, errno);
        } else if (::mknodat(dst_dir, name.c_str(), st.st_mode, st.st_rdev) != 0) {
            // Devices need CAP_MKNOD; without it the entry is left out rather than failing.
            if (errno != EPERM) throw_errno("cannot create", where_ + "/" + rel, errno);
            return;
        }
        copy_attrs(src_path, dst_path, st);
        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) links_[{st.st_dev, st.st_ino}] = rel;
    }

    void copy_file(int src_dir, int dst_dir, const std::string& name, const std::string& rel) {
        Fd in(::openat(src_dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!in) throw_errno("cannot open", where_ + "/" + rel, errno);
        Fd out(::openat(dst_dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        0600));
        if (!out) throw_errno("cannot create", where_ + "/" + rel, errno);
        std::vector<char> buf(1 << 20);
        for (;;) {
            ssize_t n = ::read(in.get(), buf.data(), buf.size());
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("cannot read", where_ + "/" + rel, errno);
            if (n == 0) break;
            for (ssize_t off = 0; off < n;) {
                ssize_t w = ::write(out.get(), buf.data() + off, static_cast<size_t>(n - off));
                if (w < 0 && errno == EINTR) continue;
                if (w < 0) throw_errno("cannot write", where_ + "/" + rel, errno);
                off += w;
            }
        }
    }

    int dst_root_;
    std::string where_;
    std::map<std::pair<dev_t, ino_t>, std::string> links_;  // first copy's path below dst_root_
};

// The owner, mode, xattrs and times of the image's directory onto a volume's root, as Docker does.
void copy_root_attrs(int image_dir, int volume_dir, const std::string& where) {
    struct stat st;
    if (::fstat(image_dir, &st) != 0) throw_errno("cannot stat", where, errno);
    // "/." makes the path name the directory itself: lchown, the l*xattr calls and
    // utimensat(AT_SYMLINK_NOFOLLOW) on a bare /proc/self/fd/N would act on the proc link.
    TreeCopier(volume_dir, where)
        .copy_attrs(fd_path(image_dir) + "/.", fd_path(volume_dir) + "/.", st);
}

// Where a volume's first copy is made before it is moved in: a directory on the data's own
// filesystem, so that renames move it, and apart from the data, so that a copy cut short is never
// taken for the volume's content.
struct CopyStage {
    Fd parent;            // holds the stage: the volume's store directory, or a device directory
    std::string copying;  // the stage while the copy is made
    std::string copied;   // the stage once the copy is whole: its entries are moved into the data
};

// The data directory holds nothing but (for a device volume, whose stage is inside it) the stage.
bool data_is_empty(int data_dir, const CopyStage& stage) {
    std::vector<std::string> names;
    if (!sorted_names_at(data_dir, ".", names)) return false;
    return std::all_of(names.begin(), names.end(), [&](const std::string& n) {
        return n == stage.copying || n == stage.copied;
    });
}

void copy_into_stage(int image_dir, const CopyStage& stage, const std::string& where) {
    int parent = stage.parent.get();
    if (::mkdirat(parent, stage.copying.c_str(), 0700) != 0)
        throw_errno("cannot create directory", where + " (first copy)", errno);
    try {
        Fd dst(::openat(parent, stage.copying.c_str(),
                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dst) throw_errno("cannot open", where + " (first copy)", errno);
        TreeCopier(dst.get(), where).copy_dir(image_dir, dst.get(), "");
        // The copy reaches the disk before the rename says it is whole.
        if (::syncfs(dst.get()) != 0) throw_errno("cannot sync", where, errno);
    } catch (const StoreError&) {
        remove_tree_at(parent, stage.copying);
        throw;
    }
    if (::renameat(parent, stage.copying.c_str(), parent, stage.copied.c_str()) != 0)
        throw_errno("cannot rename the first copy of", where, errno);
}

// Fills an empty volume from the directory the image has where it is attached, and gives it that
// directory's owner and mode. A kill at any point leaves either no copy (a half-made stage, thrown
// away here) or a whole one (the copied stage, moved in here), never part of one in the data:
// the caller marks the volume populated only after this returns.
void copy_image_content(int image_dir, int data_dir, const CopyStage& stage,
                        const std::string& where) {
    int parent = stage.parent.get();
    Fd copied(
        ::openat(parent, stage.copied.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!copied && errno != ENOENT) throw_errno("cannot open", where + " (first copy)", errno);
    if (!copied) {
        remove_tree_at(parent, stage.copying);
        if (!data_is_empty(data_dir, stage)) return;
        copy_into_stage(image_dir, stage, where);
        copied = Fd(::openat(parent, stage.copied.c_str(),
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!copied) throw_errno("cannot open", where + " (first copy)", errno);
    }
    // Renames keep hard links and take no space; an entry that has meanwhile appeared in the
    // data (another container writing there) is kept and the copy's dropped.
    std::vector<std::string> names;
    if (!sorted_names_at(copied.get(), ".", names)) throw_errno("cannot list", where, errno);
    for (const auto& n : names) {
        if (::renameat2(copied.get(), n.c_str(), data_dir, n.c_str(), RENAME_NOREPLACE) == 0)
            continue;
        if (errno != EEXIST) throw_errno("cannot move the first copy into", where + "/" + n, errno);
        remove_tree_at(copied.get(), n);
    }
    copy_root_attrs(image_dir, data_dir, where);
    copied.reset();
    if (::unlinkat(parent, stage.copied.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
        throw_errno("cannot remove the first copy's stage of", where, errno);
}

// The stage of a volume's first copy: beside _data in the store (volumes/NAME/_copy), or for a
// type=none volume inside its device, the only place known to share its filesystem.
CopyStage copy_stage_for(const Layout& l, const ContainerMount& m) {
    std::string store_dir = volumes_dir(l) + "/" + m.spec.source;
    bool in_store = m.host_path == store_dir + "/_data";
    CopyStage stage;
    std::string parent = in_store ? store_dir : m.host_path;
    stage.parent = Fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!stage.parent) throw_errno("cannot open volume", parent, errno);
    stage.copying = in_store ? "_copy" : ".lamina-copy";
    stage.copied = in_store ? "_copied" : ".lamina-copied";
    return stage;
}

// Read-only remount of the one mount at path; the flags the kernel locks (nosuid, nodev, noexec,
// atime) are kept, or a user namespace refuses the remount.
void remount_readonly(const std::string& path, const std::string& where) {
    struct statvfs sv;
    if (::statvfs(path.c_str(), &sv) != 0) throw_errno("cannot stat", where, errno);
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY;
    if (sv.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
    if (::mount(nullptr, path.c_str(), nullptr, flags, nullptr) != 0)
        throw_errno("cannot make read-only", where, errno);
}

// Read-only for the mount at top and every mount below it, so that a bind's submounts (which
// MS_REC brought along) are no way to write either: one mount_setattr(AT_RECURSIVE), or on
// kernels without it (before 5.12) a remount of each, parents first.
void make_readonly(int top, const std::string& where) {
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (::mount_setattr(top, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) == 0) return;
    if (errno != ENOSYS) throw_errno("cannot make read-only", where, errno);
    char path[PATH_MAX];
    ssize_t n = ::readlink(fd_path(top).c_str(), path, sizeof path - 1);
    if (n < 0) throw_errno("cannot read the path of", where, errno);
    for (const auto& e : mounts_at_or_below(std::string(path, static_cast<size_t>(n))))
        remount_readonly(e.mount_point, where);
}

// Mounts m inside the union; true when it copied the image's content into the volume (which
// the caller then records as populated).
bool mount_one(const Layout& l, int root, const std::string& merged, const ContainerMount& m) {
    const std::string& dest = m.spec.destination;
    std::string where = merged + dest;
    bool want_dir = true;
    if (!m.tmpfs) {
        struct stat st;
        if (::stat(m.host_path.c_str(), &st) != 0) throw_errno("cannot mount", m.host_path, errno);
        want_dir = S_ISDIR(st.st_mode);
    }
    Fd target = make_mount_point(root, dest, want_dir, merged);
    bool volume = m.spec.type == MountType::Volume;
    bool copy = volume && want_dir && !m.spec.nocopy;
    // Opened before anything covers it, so the image's content stays readable through it.
    Fd image_dir;
    if (copy) {
        image_dir = Fd(::openat(target.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!image_dir) throw_errno("cannot open", where, errno);
    }
    bool populated_now = false;
    if (copy && !m.tmpfs && !m.populated) {
        Fd data(::open(m.host_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!data) throw_errno("cannot open volume", m.host_path, errno);
        copy_image_content(image_dir.get(), data.get(), copy_stage_for(l, m), where);
        populated_now = true;
    }
    bool readonly = m.spec.readonly;
    TmpfsMountOptions tmpfs;
    if (m.tmpfs) {
        tmpfs = parse_tmpfs_options(m.mount_options);
        // An o=ro tmpfs is made read-only after its copy, like a :ro volume.
        readonly = readonly || (tmpfs.flags & MS_RDONLY);
        tmpfs.flags &= ~static_cast<unsigned long>(MS_RDONLY);
    }
    int rc = m.tmpfs ? ::mount("tmpfs", fd_path(target.get()).c_str(), "tmpfs", tmpfs.flags,
                               tmpfs.data.c_str())
                     : ::mount(m.host_path.c_str(), fd_path(target.get()).c_str(), nullptr,
                               MS_BIND | MS_REC, nullptr);
    if (rc != 0)
        throw_errno("cannot mount " + (m.tmpfs ? "tmpfs" : m.host_path) + " at", where, errno);
    Fd top = open_in_root_dir(root, dest.substr(1), O_PATH);
    if (!top) throw_errno("cannot open", where, errno);
    if (::mount(nullptr, fd_path(top.get()).c_str(), nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        throw_errno("cannot make private", where, errno);
    if (copy && m.tmpfs) {
        Fd fresh(::openat(top.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fresh) throw_errno("cannot open", where, errno);
        // A fresh tmpfs each mount: a copy cut short dies with it, and the next mount (seeing the
        // container's volumes incomplete) mounts a new one.
        TreeCopier(fresh.get(), where).copy_dir(image_dir.get(), fresh.get(), "");
        copy_root_attrs(image_dir.get(), fresh.get(), where);
    }
    if (readonly) make_readonly(top.get(), where);
    return populated_now;
}

}  // namespace

void copy_tree(int src_dir, int dst_dir, const std::string& where) {
    TreeCopier(dst_dir, where).copy_dir(src_dir, dst_dir, "");
}

void mount_container_volumes(Db& db, const Layout& l, const std::string& container_id,
                             const std::string& merged) {
    // Everything the mounts need is read first; the database is written once, after.
    auto mounts = read_container_mounts(db, l, container_id);
    if (mounts.empty()) return;
    std::set<std::string> populated;
    auto record_populated = [&] {
        for (const auto& name : populated)
            Stmt(db, "UPDATE volumes SET populated = 1 WHERE name = ?").bind(1, name).run();
    };
    try {
        // The union itself becomes private first: where / is shared (systemd hosts), each volume
        // mounted below it would otherwise be copied into every peer namespace before its own
        // MS_PRIVATE took effect, and unmounting lamina's copy would leave those behind.
        if (::mount(nullptr, merged.c_str(), nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
            throw_errno("cannot make private", merged, errno);
        Fd root(::open(merged.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!root) throw_errno("cannot open", merged, errno);
        for (auto& m : mounts) {
            // A volume mounted twice is copied into once.
            m.populated = m.populated || populated.count(m.spec.source);
            if (mount_one(l, root.get(), merged, m)) populated.insert(m.spec.source);
        }
    } catch (...) {
        // A copy that finished is whole, even when a later mount failed.
        try {
            record_populated();
        } catch (const StoreError&) {
            // Not recorded: the next mount finds the data filled and copies nothing.
        }
        unmount_below(merged);
        throw;
    }
    record_populated();
}

void unmount_below(const std::string& merged) {
    char* real = ::realpath(merged.c_str(), nullptr);
    std::string path = real ? std::string(real) : merged;
    ::free(real);
    auto mounts = mounts_at_or_below(path);
    // mountinfo lists mounts in the order they were made: the last one comes down first.
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
        if (it->mount_point == path) continue;
        const char* p = it->mount_point.c_str();
        if (::umount2(p, 0) != 0 && errno == EBUSY) ::umount2(p, MNT_DETACH);
    }
}

}  // namespace lamina::store
