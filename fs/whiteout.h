// What marks a whiteout, an opaque directory and a redirect, in every format laminafs reads and writes.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>
#include <string_view>

namespace lamina {

// Overlay-private xattr names. Both prefixes are honoured when reading; one is written.
inline constexpr std::string_view kTrustedPrefix = "trusted.overlay.";
inline constexpr std::string_view kUserPrefix = "user.overlay.";

// OCI/AUFS forms, found in unpacked image layers.
inline constexpr std::string_view kOciWhiteoutPrefix = ".wh.";
inline constexpr std::string_view kOciOpaqueMarker = ".wh..wh..opq";

// The kernel's whiteout: a character device with device number 0/0.
inline bool is_chardev_whiteout(const struct stat& st) {
    return S_ISCHR(st.st_mode) && st.st_rdev == 0;
}

// ".wh.NAME" → "NAME"; the opaque marker and non-whiteout names → nullopt.
std::optional<std::string_view> oci_whiteout_target(std::string_view name);

// True for names that are overlay-private and never shown or changed through the mount.
bool is_private_xattr(std::string_view name);

// The value of overlay.opaque on a directory: 'y' opaque, 'x' holds xattr whiteouts, 0 neither.
// `path` is one the l*xattr calls take (a proc_fd_path in the daemon).
char read_opaque(const std::string& path);

// True when the file at `path` carries overlay.whiteout (only meaningful as an empty regular file
// inside a directory whose opaque value is 'x', as the kernel requires).
bool has_whiteout_xattr(const std::string& path);

// The directory's overlay.redirect value, or nullopt.
std::optional<std::string> read_redirect(const std::string& path);

// A directory's opaque value and (when asked for) redirect, as read_opaque and read_redirect
// give them, from one llistxattr when the directory has none of those names (most have no
// xattrs at all): one system call instead of four on each lookup of a directory.
struct DirMarks {
    char opaque = 0;
    std::optional<std::string> redirect;
};
DirMarks read_dir_marks(const std::string& path, bool want_redirect);
// The same from an open (not O_PATH) directory.
DirMarks read_dir_marks_fd(int fd, bool want_redirect);

// Where a redirect value points, as a path inside the lower layers ("" is the layer root): an
// absolute value ("/a/b") from the root, a relative one a name in the parent's lower directory.
// nullopt for values the kernel refuses too (empty, a NUL byte, a '/' in a relative value) and for
// "." or ".." components, which would lead out of the layer.
std::optional<std::string> redirect_lower_path(std::string_view parent_lower_path,
                                               std::string_view redirect);

// Which prefix the write side uses for opaque and redirect xattrs.
enum class XattrFlavour { Trusted, User };
std::string overlay_xattr(XattrFlavour flavour, std::string_view suffix);

}  // namespace lamina
