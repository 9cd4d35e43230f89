// Attributes: stat from the copy the entry comes from; changes copy up first.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

#include "overlay.h"
#include "path_util.h"

namespace lamina {

int Overlay::getattr(Node* node, struct stat& st) {
    std::shared_lock lock(tree_);
    return stat_node_locked(node, st);
}

int Overlay::readlink(Node* node, std::string& target) {
    std::shared_lock lock(tree_);
    if (node->unlinked) return ENOENT;
    Place at;
    if (int err = top_place(node, at)) return err;
    char buf[PATH_MAX];
    ssize_t n = readlinkat(at.dirfd, at.c_name(), buf, sizeof buf);
    if (n < 0) return errno;
    target.assign(buf, static_cast<size_t>(n));
    return 0;
}

int Overlay::statfs(struct statvfs& st) {
    LayerNo top = stack_.has_upper() ? kUpperLayer : stack_.first_lower();
    if (fstatvfs(stack_.fd(top), &st) != 0) return errno;
    return 0;
}

void Overlay::show_ownership(const Node* node, struct stat& st) const {
    // Only regular files and directories can carry user.* xattrs.
    if (use_override_ && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
        // An unlinked file that is still open is reached through the descriptor kept for it.
        std::string xattr_path;
        Place at;
        if (!node->unlinked) {
            if (top_place(node, at) == 0) xattr_path = at.xattr_path();
        } else if (int fd = gone_copy_fd(node); fd >= 0) {
            xattr_path = "/proc/self/fd/" + std::to_string(fd);
        }
        if (!xattr_path.empty()) {
            if (auto o = read_override_stat(xattr_path)) apply_override(*o, st);
        }
    }
    ids_.present(st, stack_.layer(node->top_layer()).idmapped);
}

int Overlay::chown_or_override(int dirfd, const char* rel, const std::string& xattr_path, uid_t uid,
                               gid_t gid, mode_t mode, dev_t rdev, bool force_override,
                               bool& overridden) {
    overridden = false;
    if (!force_override) {
        if (fchownat(dirfd, rel, uid, gid, AT_SYMLINK_NOFOLLOW) == 0) return 0;
        // EPERM: not ours to give; EINVAL: an id outside the daemon's user namespace.
        if (errno != EPERM && errno != EINVAL) return errno;
        // Without an override the entry keeps the daemon's owner, as a plain chown would.
        if (!use_override_ || !(S_ISREG(mode) || S_ISDIR(mode))) return 0;
        // A copy-up brought the source's override along: that one already says who owns it.
        if (read_override_stat(xattr_path)) return 0;
    }
    int err = write_override_stat(xattr_path, StatOverride{uid, gid, mode, rdev});
    if (err) return force_override ? err : 0;
    overridden = true;
    return 0;
}

int Overlay::change_owner_and_mode(Node* node, int fd, const Place& at, const struct stat& attr,
                                   int to_set) {
    int dirfd = at.dirfd;
    const char* rel = at.c_name();
    struct stat cur;
    if ((fd >= 0 ? fstat(fd, &cur) : fstatat(dirfd, rel, &cur, AT_SYMLINK_NOFOLLOW)) != 0)
        return errno;
    bool is_dir = S_ISDIR(cur.st_mode);
    // An unlinked file has no path for the xattr calls; it keeps what the host allows.
    bool may_override = use_override_ && !node->unlinked && (S_ISREG(cur.st_mode) || is_dir);
    std::string xattr_path = may_override ? at.xattr_path() : std::string();
    bool set_mode = to_set & kSetMode;
    mode_t perm = attr.st_mode & 07777;
    uid_t uid = (to_set & kSetUid) ? ids_.disk_uid(attr.st_uid) : static_cast<uid_t>(-1);
    gid_t gid = (to_set & kSetGid) ? ids_.disk_gid(attr.st_gid) : static_cast<gid_t>(-1);

    // Moves the owner and mode into the override; the host copy keeps the daemon's access.
    auto keep_in_override = [&](StatOverride next) -> int {
        if (int err = write_override_stat(xattr_path, next)) return err;
        if (fchmodat(dirfd, rel, host_mode_under_override(next.mode, is_dir),
                     AT_SYMLINK_NOFOLLOW) != 0)
            return errno;
        return 0;
    };

    std::optional<StatOverride> current;
    if (may_override) current = read_override_stat(xattr_path);
    if (current) {
        // The override is what the mount shows, so it is what changes.
        StatOverride next = *current;
        if (uid != static_cast<uid_t>(-1)) next.uid = uid;
        if (gid != static_cast<gid_t>(-1)) next.gid = gid;
        if (set_mode) next.mode = (current->mode & S_IFMT) | perm;
        return keep_in_override(next);
    }
    if (uid != static_cast<uid_t>(-1) || gid != static_cast<gid_t>(-1)) {
        int rc =
            fd >= 0 ? fchown(fd, uid, gid) : fchownat(dirfd, rel, uid, gid, AT_SYMLINK_NOFOLLOW);
        if (rc != 0) {
            int err = errno;
            if (!may_override || (err != EPERM && err != EINVAL)) return err;
            StatOverride next{uid != static_cast<uid_t>(-1) ? uid : cur.st_uid,
                              gid != static_cast<gid_t>(-1) ? gid : cur.st_gid,
                              (cur.st_mode & S_IFMT) | (set_mode ? perm : cur.st_mode & 07777), 0};
            return keep_in_override(next);
        }
    }
    if (set_mode) {
        int rc = fd >= 0 ? fchmod(fd, perm) : fchmodat(dirfd, rel, perm, AT_SYMLINK_NOFOLLOW);
        if (rc != 0 && !(errno == EOPNOTSUPP && S_ISLNK(node->type))) return errno;
        // The host drops set-id bits the caller may set but the daemon may not (setgid for a
        // group the daemon is not in): the mount must still show them.
        struct stat after;
        if (rc == 0 && may_override && (perm & (S_ISUID | S_ISGID)) &&
            fstatat(dirfd, rel, &after, AT_SYMLINK_NOFOLLOW) == 0 &&
            (after.st_mode & 07777) != perm)
            return keep_in_override(
                StatOverride{after.st_uid, after.st_gid, (after.st_mode & S_IFMT) | perm, 0});
    }
    return 0;
}

int Overlay::setattr(Node* node, FileHandle* fh, const struct stat& attr, int to_set,
                     const Credentials& cred, struct stat& out) {
    if (int err = check_writable()) return err;
    std::unique_lock lock(tree_);
    // An open handle's descriptor still works for a file that has been unlinked; only one of
    // the upper copy may be changed through.
    FileFd handle_fd;
    if (fh && file_fd_locked(*fh, handle_fd) == 0 && !handle_fd.upper) handle_fd = FileFd{};
    int fd = handle_fd.fd;
    // Through a descriptor of a name since removed or replaced (fchmod, fchown): its copy.
    UniqueFd gone;
    if (node->unlinked && fd < 0 && open_gone_copy(node, gone) == 0) fd = gone.get();
    if (!(node->unlinked && fd >= 0)) {
        if (int err = copy_up_locked(node)) return err;
    }
    // An unlinked node is changed through its descriptor alone.
    Place at;
    if (!node->unlinked) {
        if (int err = upper_place(node, at)) return err;
    }
    int dirfd = at.dirfd;
    const char* rel = at.c_name();

    // A chown clears set-id bits (the kernel asks us to since killpriv v2), unless the same
    // request sets the mode. Which bits is decided by the owner and mode before it.
    mode_t chown_clears = 0;
    struct stat before {};
    if ((to_set & (kSetUid | kSetGid)) && !(to_set & kSetMode)) {
        if (int err = setid_to_clear_locked(node, fd, cred, true, chown_clears, before)) return err;
    } else if ((to_set & ~kSetCtime) == 0 && !node->is_dir()) {
        // chown(path, -1, -1): the kernel clears set-id bits as for any chown, but with killpriv
        // v2 it sends only the ctime (which libfuse 3.14 passes on as nothing) and no request to
        // clear them. The only other ctime-only SETATTR is the kernel's own file_remove_privs()
        // before a write or fallocate by a caller without CAP_FSETID of a set-user-ID file,
        // whose rule is the same for such a caller: set-user-ID goes, set-group-ID when the file
        // is group-executable or the caller is outside its group (utimensat with both times
        // UTIME_OMIT returns before the VFS).
        Credentials as_chown = cred;
        as_chown.kill_setid = true;
        if (int err = setid_to_clear_locked(node, fd, as_chown, true, chown_clears, before))
            return err;
    }
    if (to_set & (kSetMode | kSetUid | kSetGid)) {
        if (int err = change_owner_and_mode(node, fd, at, attr, to_set)) return err;
    }
    if (int err = clear_setid_locked(node, fd, chown_clears, before)) return err;
    if (to_set & kSetSize) {
        int rc;
        if (fd >= 0) {
            rc = ftruncate(fd, attr.st_size);
        } else {
            UniqueFd tfd(openat(dirfd, rel, O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
            rc = tfd ? ftruncate(tfd.get(), attr.st_size) : -1;
        }
        if (rc != 0) return errno;
        if (!(to_set & (kSetUid | kSetGid))) {
            mode_t clears;
            struct stat st;
            if (int err = setid_to_clear_locked(node, fd, cred, false, clears, st)) return err;
            if (int err = clear_setid_locked(node, fd, clears, st)) return err;
        }
    }
    if (to_set & (kSetAtime | kSetMtime | kSetAtimeNow | kSetMtimeNow | kSetCtime)) {
        struct timespec tv[2];
        tv[0].tv_nsec = UTIME_OMIT;
        tv[1].tv_nsec = UTIME_OMIT;
        if (to_set & kSetAtimeNow)
            tv[0].tv_nsec = UTIME_NOW;
        else if (to_set & kSetAtime)
            tv[0] = attr.st_atim;
        if (to_set & kSetMtimeNow)
            tv[1].tv_nsec = UTIME_NOW;
        else if (to_set & kSetMtime)
            tv[1] = attr.st_mtim;
        int rc = fd >= 0 ? futimens(fd, tv) : utimensat(dirfd, rel, tv, AT_SYMLINK_NOFOLLOW);
        if (rc != 0) return errno;
    }
    invalidate_peers(node);
    if (fd >= 0) {
        if (fstat(fd, &out) != 0) return errno;
        fix_stat(node, out);
        return 0;
    }
    return stat_node_locked(node, out);
}

}  // namespace lamina
