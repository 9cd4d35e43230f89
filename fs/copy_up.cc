// Copy-up: the first change to a lower entry copies it, with data, owner, mode, times and xattrs,
// into the work dir and renames it into the upper layer, so a crash never leaves a partial file.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "overlay.h"
#include "path_util.h"
#include "resolve.h"

namespace lamina {

namespace {

std::atomic<uint64_t> temp_counter{0};

}  // namespace

std::string Overlay::work_temp_name() {
    char buf[64];
    snprintf(buf, sizeof buf, "#%x.%llx", static_cast<unsigned>(getpid()),
             static_cast<unsigned long long>(temp_counter.fetch_add(1)));
    return buf;
}

// Copies data extent by extent so holes stay holes; copy_file_range lets the filesystem reflink.
int copy_data(int in, int out, off_t size) {
    off_t pos = 0;
    while (pos < size) {
        off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break;  // only a hole remains
            data = pos;                 // no SEEK_DATA support: copy everything
        }
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0) hole = size;
        off_t in_off = data, out_off = data;
        while (in_off < hole) {
            ssize_t n =
                copy_file_range(in, &in_off, out, &out_off, static_cast<size_t>(hole - in_off), 0);
            if (n < 0) {
                if (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP) {
                    char buf[1 << 16];
                    ssize_t r = pread(in, buf, sizeof buf, in_off);
                    if (r < 0) return errno;
                    if (r == 0) break;
                    ssize_t w = pwrite(out, buf, static_cast<size_t>(r), out_off);
                    if (w < 0) return errno;
                    in_off += w;
                    out_off += w;
                    continue;
                }
                return errno;
            }
            if (n == 0) break;
        }
        pos = hole;
    }
    if (ftruncate(out, size) != 0) return errno;
    return 0;
}

int Overlay::copy_up_locked(Node* node) {
    if (node->unlinked) return gone_error(node);
    if (node->in_upper) return 0;
    if (int err = check_writable()) return err;
    // Parents first, from the highest one not yet copied; a loop, not recursion: a tree may be
    // thousands of directories deep.
    std::vector<Node*> chain;
    for (Node* n = node; n && !n->in_upper; n = n->parent) chain.push_back(n);
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        if ((*it)->unlinked) return ENOENT;
        if (int err = copy_up_one_locked(*it)) return err;
    }
    return 0;
}

int Overlay::copy_up_one_locked(Node* node) {
    LayerNo src_layer = node->top_layer();
    Place src;
    if (int err = lower_place(node, src)) return err;
    int src_dir = src.dirfd;
    const char* src_rel = src.c_name();
    struct stat st;
    if (fstatat(src_dir, src_rel, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
    std::string src_xattr_path = src.xattr_path();

    std::string tmp = work_temp_name();
    std::string tmp_xattr_path = stack_.work_proc_path(tmp);
    int work = stack_.work_fd();
    int err = 0;
    bool device_as_file = false;
    UniqueFd out;
    switch (st.st_mode & S_IFMT) {
        case S_IFREG: {
            UniqueFd in(open_maybe_noatime(
                O_RDONLY | O_NOFOLLOW | O_CLOEXEC | stack_.noatime_flag(src_layer, false),
                [&](int f) { return openat(src_dir, src_rel, f); }));
            if (!in) return errno;
            // A placeholder (or an evicted file) is completed first, while `in` holds it
            // (lazy.h); under the tree lock, as copy-up is.
            if (lazy_ &&
                (err = lazy_->ensure_complete(src_layer, node->lower_path_in(0), in.get())))
                return err;
            out.reset(openat(work, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
            if (!out) return errno;
            err = copy_data(in.get(), out.get(), st.st_size);
            if (!err && opts_.fsync && fdatasync(out.get()) != 0) err = errno;
            break;
        }
        case S_IFDIR:
            if (mkdirat(work, tmp.c_str(), 0700) != 0) return errno;
            out.reset(openat(work, tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            if (!out) err = errno;
            break;
        case S_IFLNK: {
            char target[PATH_MAX];
            ssize_t n = readlinkat(src_dir, src_rel, target, sizeof target - 1);
            if (n < 0) return errno;
            target[n] = '\0';
            if (symlinkat(target, work, tmp.c_str()) != 0) return errno;
            break;
        }
        default:
            if (mknodat(work, tmp.c_str(), (st.st_mode & S_IFMT) | 0600, st.st_rdev) == 0) break;
            if (errno != EPERM || !use_override_ || !(S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)))
                return errno;
            // A device the daemon may not make: kept as a regular file with an override.
            out.reset(openat(work, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
            if (!out) return errno;
            device_as_file = true;
            break;
    }
    if (!err) err = copy_xattrs(src_xattr_path, out.get(), tmp_xattr_path);
    // The copy keeps the owner the mount showed; where the host refuses it, in the override.
    // The upper layer holds disk ids, which an idmapped lower shows as host ids.
    uid_t uid = st.st_uid;
    gid_t gid = st.st_gid;
    if (stack_.layer(src_layer).idmapped) {
        uid = ids_.disk_uid(uid);
        gid = ids_.disk_gid(gid);
    }
    bool overridden = false;
    if (!err)
        err = chown_or_override(work, tmp.c_str(), tmp_xattr_path, uid, gid, st.st_mode, st.st_rdev,
                                device_as_file, overridden);
    mode_t perm =
        overridden ? host_mode_under_override(st.st_mode, S_ISDIR(st.st_mode)) : st.st_mode & 07777;
    if (!err && !S_ISLNK(st.st_mode) && fchmodat(work, tmp.c_str(), perm, 0) != 0) err = errno;
    if (!err) {
        struct timespec times[2] = {st.st_atim, st.st_mtim};
        if (utimensat(work, tmp.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) err = errno;
    }
    // The parent was copied up above: its upper directory is held or found again.
    Place dst;
    if (!err) err = upper_child_place(node->parent, node->name, dst);
    // Copy-up is no change the user made: the parent keeps its times, as with the kernel.
    struct stat pst;
    bool have_parent_times = !err && fstatat(dst.dirfd, ".", &pst, AT_SYMLINK_NOFOLLOW) == 0;
    if (!err && renameat2(work, tmp.c_str(), dst.dirfd, dst.c_name(), RENAME_NOREPLACE) != 0)
        err = errno;
    if (!err && have_parent_times) {
        struct timespec times[2] = {pst.st_atim, pst.st_mtim};
        utimensat(dst.dirfd, ".", times, AT_SYMLINK_NOFOLLOW);
    }
    if (err) {
        unlinkat(work, tmp.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
        return err;
    }
    node->in_upper = true;
    struct stat ust;
    if (fstatat(dst.dirfd, dst.c_name(), &ust, AT_SYMLINK_NOFOLLOW) == 0) {
        node->ino = make_ino(kUpperLayer, ust.st_ino);
        if (!S_ISDIR(ust.st_mode)) table_.set_upper_ino(node, ust.st_ino);
    }
    if (S_ISDIR(st.st_mode) && out) {
        // The descriptor made in the work dir followed the rename: it is the node's directory.
        struct stat dst_st;
        if (fstat(out.get(), &dst_st) == 0) node->upper_dir_ino = dst_st.st_ino;
        hold_upper_dir(node, out);
    }
    // The kernel's cached attributes (st_ino, and st_nlink of a lower hardlink) are stale now.
    invalidate(Invalidation{table_.id_of(node), false});
    return 0;
}

}  // namespace lamina
