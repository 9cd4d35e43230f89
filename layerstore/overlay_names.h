// How the store recognises overlay whiteouts, opaque directories and redirects in a layer or an
// upper directory, in both the trusted.* (root) and user.* (unprivileged) xattr forms.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>

namespace lamina::store {

inline bool is_chardev_whiteout(const struct stat& st) {
    return S_ISCHR(st.st_mode) && st.st_rdev == 0;
}

// The overlay.NAME xattr of the entry name in dirfd (trusted.overlay.NAME first), or nullopt.
// Symlinks are never followed.
std::optional<std::string> overlay_xattr_at(int dirfd, const std::string& name, const char* suffix);

// True for a 0/0 character device, or a regular file carrying overlay.whiteout.
bool is_whiteout_at(int dirfd, const std::string& name, const struct stat& st);
bool is_opaque_at(int dirfd, const std::string& name);

// True for xattrs that belong to the overlay and never travel in a layer tar.
bool is_overlay_private_xattr(const char* name);

}  // namespace lamina::store
