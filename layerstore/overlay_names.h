// How the store reads the layer format (common/overlay_format.h) from entries it reaches as a
// directory descriptor and a name, never through a symlink.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>

#include "overlay_format.h"

namespace lamina::store {

// The format's own names (is_chardev_whiteout, kOciOpaqueMarker, ...) are lamina::'s, seen from
// here unqualified.

// "/proc/self/fd/DIRFD/NAME": the entry itself for the l*xattr calls, never followed if a symlink.
std::string entry_xattr_path(int dirfd, const std::string& name);

// A whiteout as the kernel's lookup sees one (lamina::is_whiteout): a 0/0 character device, or an
// empty regular file carrying overlay.whiteout, in any directory.
bool is_whiteout_at(int dirfd, const std::string& name, const struct stat& st);
// overlay.opaque is 'y' (an 'x' only says the directory holds xattr whiteouts).
bool is_opaque_at(int dirfd, const std::string& name);
// The directory's overlay.redirect value, or nullopt.
std::optional<std::string> redirect_at(int dirfd, const std::string& name);
// True when the directory holds the OCI opaque marker ".wh..wh..opq".
bool has_oci_opaque_marker(int dirfd);

}  // namespace lamina::store
