// Remounting: mount(8) hands "remount" with the mount's flags to the helper, which changes the
// FUSE mount in place (the kernel allows ro/rw and the per-mount flags); the daemon serving it
// goes on, and the kernel refuses writes to a read-only mount before they reach it.
#include "remount.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/mount.h>

#include <cerrno>
#include <cstring>

#include "mount_table.h"

namespace lamina {

std::string remount_laminafs(const MountOptions& opts) {
    if (opts.mountpoint.empty()) return "remount: missing mountpoint";
    char resolved[PATH_MAX];
    if (!realpath(opts.mountpoint.c_str(), resolved))
        return "remount '" + opts.mountpoint + "': " + strerror(errno);
    std::string fstype;
    for (const auto& e : read_mount_table())  // the newest mount on the path is the one seen
        if (e.mount_point == resolved) fstype = e.fstype;
    if (fstype.empty()) return "remount '" + std::string(resolved) + "': not a mount point";
    if (fstype != "fuse.laminafs")
        return "remount '" + std::string(resolved) + "': not a laminafs mount (" + fstype + ")";
    unsigned long flags = MS_REMOUNT;
    if (opts.read_only) flags |= MS_RDONLY;
    if (opts.nosuid) flags |= MS_NOSUID;
    if (opts.nodev) flags |= MS_NODEV;
    if (opts.noexec) flags |= MS_NOEXEC;
    if (opts.nodiratime) flags |= MS_NODIRATIME;
    if (opts.noatime)
        flags |= MS_NOATIME;
    else if (opts.strictatime)
        flags |= MS_STRICTATIME;
    else
        flags |= MS_RELATIME;
    if (mount(nullptr, resolved, nullptr, flags, nullptr) != 0) {
        int err = errno;
        std::string why = strerror(err);
        if (err == EPERM) why += " (remounting needs CAP_SYS_ADMIN; fusermount3 cannot remount)";
        return "remount '" + std::string(resolved) + "': " + why;
    }
    return "";
}

}  // namespace lamina
