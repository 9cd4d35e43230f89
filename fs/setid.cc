// Clearing set-user-ID and set-group-ID bits where the kernel would, now that it leaves that to
// laminafs (FUSE_HANDLE_KILLPRIV_V2, see device.h).
//
// The rules are the kernel's (setattr_should_drop_suidgid, chown_common): a write or truncation
// by a caller without CAP_FSETID clears set-user-ID, and set-group-ID when the file is
// group-executable or the caller is not in its group (set-group-ID without group execute marks
// mandatory locking, which stays). A chown of a non-directory clears them whoever asks, with root
// counting as in every group. The kernel flags the requests that need this, but it asks whether
// the caller has CAP_FSETID in the initial user namespace, where root in a container has none;
// overlayfs asks in the file's namespace. So laminafs also counts as privileged a caller who is
// root on the layers' side of the id mapping (uid 0, or what uidmapping= maps to 0).
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cerrno>

#include "overlay.h"
#include "path_util.h"

namespace lamina {

bool Overlay::is_root_caller(const Credentials& cred) const {
    return ids_.disk_uid(cred.uid) == 0;
}

int Overlay::setid_to_clear_locked(Node* node, int fd, const Credentials& cred, bool chown,
                                   mode_t& clear, struct stat& st) {
    clear = 0;
    bool root = is_root_caller(cred);
    if (!cred.kill_setid || (!chown && root)) return 0;
    if (fd >= 0) {
        if (fstat(fd, &st) != 0) return errno;
        fix_stat(node, st);
    } else if (node->unlinked) {
        return 0;  // nothing to chmod it by
    } else if (int err = stat_node_locked(node, st)) {
        return err;
    }
    // A chown clears them on any non-directory (chown_common), a write only on what it writes.
    if (chown ? S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) return 0;
    if (st.st_mode & S_ISUID) clear |= S_ISUID;
    if (st.st_mode & S_ISGID) {
        bool in_group =
            root || cred.gid == st.st_gid || (cred.in_group && cred.in_group(st.st_gid));
        if ((st.st_mode & S_IXGRP) || !in_group) clear |= S_ISGID;
    }
    return 0;
}

int Overlay::clear_setid_locked(Node* node, int fd, mode_t clear, const struct stat& st) {
    if (!clear) return 0;
    struct stat attr {};
    attr.st_mode = st.st_mode & ~clear;
    Place at;
    if (!node->unlinked) {
        if (int err = upper_place(node, at)) return err;
    }
    if (int err = change_owner_and_mode(node, fd, at, attr, kSetMode)) return err;
    // The kernel may hold the old mode for this name and its other names.
    invalidate(Invalidation{table_.id_of(node), false});
    invalidate_peers(node);
    return 0;
}

int Overlay::clear_setid_for_write(FileHandle& fh, const Credentials& cred) {
    // A read-only handle (no descriptor of its own) writes nothing.
    if (!cred.kill_setid || is_root_caller(cred) || !fh.fd) return 0;
    // This runs before every write of an unprivileged caller, and most files have no set-id
    // bits: ask the descriptor first, and take the exclusive lock only for a file that has.
    int fd = fh.fd.get();
    struct stat st;
    if (fstat(fd, &st) != 0) return errno;
    bool has_setid = st.st_mode & (S_ISUID | S_ISGID);
    if (!has_setid && use_override_ && S_ISREG(st.st_mode)) {
        // The host copy of an overridden file keeps no set-id bits: the override has them.
        char value[256];
        ssize_t n = fgetxattr(fd, kOverrideStatXattr.data(), value, sizeof value);
        if (n > 0) {
            auto o = parse_override_stat(std::string_view(value, static_cast<size_t>(n)));
            has_setid = o && (o->mode & (S_ISUID | S_ISGID));
        }
    }
    if (!has_setid) return 0;
    std::unique_lock lock(tree_);
    mode_t clear;
    if (int err = setid_to_clear_locked(fh.node, fd, cred, false, clear, st)) return err;
    return clear_setid_locked(fh.node, fd, clear, st);
}

bool Overlay::has_setid(FileHandle& fh) {
    std::shared_lock lock(tree_);
    FileFd fd;
    struct stat st;
    if (file_fd_locked(fh, fd) != 0 || fstat(fd.fd, &st) != 0) return false;
    fix_stat(fh.node, st);
    return S_ISREG(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID));
}

}  // namespace lamina
