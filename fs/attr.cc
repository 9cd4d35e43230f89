// Attributes: stat from the copy the entry comes from; changes copy up first.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>

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
    std::string p = node->in_upper ? path_of(node) : node->lower_path;
    char buf[PATH_MAX];
    ssize_t n = readlinkat(stack_.fd(node->top_layer()), p.c_str(), buf, sizeof buf);
    if (n < 0) return errno;
    target.assign(buf, static_cast<size_t>(n));
    return 0;
}

int Overlay::statfs(struct statvfs& st) {
    LayerNo top = stack_.has_upper() ? kUpperLayer : stack_.first_lower();
    if (fstatvfs(stack_.fd(top), &st) != 0) return errno;
    return 0;
}

int Overlay::setattr(Node* node, FileHandle* fh, const struct stat& attr, int to_set,
                     const Credentials&, struct stat& out) {
    if (int err = check_writable()) return err;
    std::unique_lock lock(tree_);
    // An open handle's descriptor still works for a file that has been unlinked.
    int fd = (fh && !fh->on_lower) ? fh->fd.get() : -1;
    if (!(node->unlinked && fd >= 0)) {
        if (int err = copy_up_locked(node)) return err;
    }
    std::string p = node->unlinked ? std::string() : path_of(node);
    int dirfd = stack_.fd(kUpperLayer);
    const char* rel = rel_or_dot(p);

    if (to_set & kSetMode) {
        int rc = fd >= 0 ? fchmod(fd, attr.st_mode & 07777)
                         : fchmodat(dirfd, rel, attr.st_mode & 07777, 0);
        if (rc != 0 && !(errno == EOPNOTSUPP && S_ISLNK(node->type))) return errno;
    }
    if (to_set & (kSetUid | kSetGid)) {
        uid_t uid = (to_set & kSetUid) ? attr.st_uid : static_cast<uid_t>(-1);
        gid_t gid = (to_set & kSetGid) ? attr.st_gid : static_cast<gid_t>(-1);
        int rc =
            fd >= 0 ? fchown(fd, uid, gid) : fchownat(dirfd, rel, uid, gid, AT_SYMLINK_NOFOLLOW);
        if (rc != 0) return errno;
    }
    if (to_set & kSetSize) {
        int rc;
        if (fd >= 0) {
            rc = ftruncate(fd, attr.st_size);
        } else {
            UniqueFd tfd(openat(dirfd, rel, O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
            rc = tfd ? ftruncate(tfd.get(), attr.st_size) : -1;
        }
        if (rc != 0) return errno;
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
