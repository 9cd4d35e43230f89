// The store's reads of overlay marks, through the directory it holds open.
#include "overlay_names.h"

#include <fcntl.h>
#include <unistd.h>

namespace lamina::store {

std::string entry_xattr_path(int dirfd, const std::string& name) {
    return "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
}

bool is_whiteout_at(int dirfd, const std::string& name, const struct stat& st) {
    return lamina::is_whiteout(st, entry_xattr_path(dirfd, name));
}

bool is_opaque_at(int dirfd, const std::string& name) {
    return read_opaque(entry_xattr_path(dirfd, name)) == kOpaque;
}

std::optional<std::string> redirect_at(int dirfd, const std::string& name) {
    return read_redirect(entry_xattr_path(dirfd, name));
}

bool has_oci_opaque_marker(int dirfd) {
    struct stat st;
    return ::fstatat(dirfd, std::string(kOciOpaqueMarker).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

}  // namespace lamina::store
