// Reaching an entry inside a layer: never through a symlink, never out of the layer. Every path
// the daemon resolves inside a layer goes through here or starts at a directory it holds open.
#pragma once

#include <fcntl.h>

#include <cerrno>
#include <memory>
#include <string>
#include <string_view>

#include "path_util.h"
#include "unique_fd.h"

namespace lamina {

// Opens `rel` ("" is dirfd itself) below the open directory dirfd with openat2 and
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: a symlink in any component,
// the last included, fails with ELOOP, and ".." cannot climb out. A path longer than one call
// takes (PATH_MAX) is resolved a piece at a time, each piece beneath the last. `flags` are open
// flags (O_PATH | O_DIRECTORY, O_RDONLY, ...). Returns the descriptor, or -1 with errno set.
int open_beneath(int dirfd, std::string_view rel, int flags);

// Runs open(flags); when flags has O_NOATIME and the open fails with EPERM (the daemon neither
// owns the file nor has CAP_FOWNER: a rootless daemon reading another user's lower file), runs it
// again without. Layer files are read with O_NOATIME where the merged file's atime must not move
// (lower files always, as kernel overlayfs opens its real files; upper ones under noatime).
template <class Open>
int open_maybe_noatime(int flags, Open open) {
    int fd = open(flags);
    if (fd < 0 && errno == EPERM && (flags & O_NOATIME)) fd = open(flags & ~O_NOATIME);
    return fd;
}

// An entry as the *at() calls take it: a directory held open and one name in it ("." for that
// directory itself). Whoever made it got there without a symlink; the calls on `name` must not
// follow one either (AT_SYMLINK_NOFOLLOW, O_NOFOLLOW, the l*xattr calls).
struct Place {
    UniqueFd owned;  // the directory, when it was opened for this use alone
    int dirfd = -1;
    std::string name = ".";
    // What holds dirfd open when someone else owns it (a cached directory index): kept alive
    // with the Place, so the descriptor cannot be closed and its number reused meanwhile.
    std::shared_ptr<const void> keep;

    const char* c_name() const { return name.c_str(); }
    // For the calls without an *at() form: "/proc/self/fd/DIRFD/NAME" (see proc_fd_path).
    std::string xattr_path() const { return proc_fd_path(dirfd, name == "." ? "" : name); }
};

// The place of `rel` below dirfd: its parent directory opened with open_beneath, and its last
// name. Returns 0 or an errno.
int locate_beneath(int dirfd, std::string_view rel, Place& out);

}  // namespace lamina
