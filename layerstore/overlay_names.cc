// Reading overlay xattrs through O_PATH descriptors, so no lookup ever follows a symlink.
#include "overlay_names.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/xattr.h>

#include "fd.h"

namespace lamina::store {

std::optional<std::string> overlay_xattr_at(int dirfd, const std::string& name,
                                            const char* suffix) {
    Fd fd(::openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return std::nullopt;
    struct stat st;
    if (::fstat(fd.get(), &st) != 0 || S_ISLNK(st.st_mode)) return std::nullopt;
    std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
    for (const char* prefix : {"trusted.overlay.", "user.overlay."}) {
        std::string key = std::string(prefix) + suffix;
        char buf[4096];
        ssize_t n = ::getxattr(proc.c_str(), key.c_str(), buf, sizeof buf);
        if (n >= 0) return std::string(buf, static_cast<size_t>(n));
    }
    return std::nullopt;
}

bool is_whiteout_at(int dirfd, const std::string& name, const struct stat& st) {
    if (is_chardev_whiteout(st)) return true;
    return S_ISREG(st.st_mode) && st.st_size == 0 &&
           overlay_xattr_at(dirfd, name, "whiteout").has_value();
}

bool is_opaque_at(int dirfd, const std::string& name) {
    auto v = overlay_xattr_at(dirfd, name, "opaque");
    return v && *v == "y";
}

bool is_overlay_private_xattr(const char* name) {
    return strncmp(name, "trusted.overlay.", 16) == 0 || strncmp(name, "user.overlay.", 13) == 0;
}

}  // namespace lamina::store
