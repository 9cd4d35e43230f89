// File attributes (chattr/lsattr: FS_IOC_GETFLAGS/SETFLAGS, FS_IOC_FSGETXATTR/FSSETXATTR): read
// from the copy that shows, set on the upper copy after a copy-up, as the kernel's overlay does.
// The upper filesystem then enforces them (immutable, append-only) on what the daemon does.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <cerrno>

#include "overlay.h"

namespace lamina {

namespace {

// Only files and directories: opening a fifo or a device to ask would have effects.
bool has_file_attributes(const Node* node) {
    return S_ISREG(node->type) || S_ISDIR(node->type);
}

}  // namespace

int Overlay::open_for_fileattr_locked(Node* node, bool upper, UniqueFd& out) {
    if (node->unlinked) return ENOENT;
    if (!has_file_attributes(node)) return ENOTTY;
    Place at;
    if (int err = upper ? upper_place(node, at) : top_place(node, at)) return err;
    int flags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | (node->is_dir() ? O_DIRECTORY : 0);
    out.reset(openat(at.dirfd, at.c_name(), flags));
    return out ? 0 : errno;
}

int Overlay::fileattr(Node* node, unsigned long cmd, void* arg, bool set) {
    if (set) {
        if (int err = check_writable()) return err;
        std::unique_lock lock(tree_);
        if (int err = copy_up_locked(node)) return err;
        UniqueFd fd;
        if (int err = open_for_fileattr_locked(node, true, fd)) return err;
        if (ioctl(fd.get(), cmd, arg) != 0) return errno;
        // The flags show in nothing the kernel caches but the immutable/append bits of the
        // mode checks; drop its attributes anyway, as after any change.
        pending_invalidations().push_back(Invalidation{table_.id_of(node), false});
        return 0;
    }
    std::shared_lock lock(tree_);
    UniqueFd fd;
    if (int err = open_for_fileattr_locked(node, false, fd)) return err;
    return ioctl(fd.get(), cmd, arg) == 0 ? 0 : errno;
}

}  // namespace lamina
