// The layer format, once: what a whiteout, an opaque directory and a redirect are in the kernel's
// and the OCI forms, which xattrs belong to the overlay, and copying the ones that do not.
#pragma once

#include <limits.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace lamina {

// Overlay-private xattrs: trusted.overlay.* for a privileged mount, user.overlay.* for one with
// userxattr (an unprivileged mount). Both are read, trusted first; the writer picks one.
inline constexpr std::string_view kTrustedPrefix = "trusted.overlay.";
inline constexpr std::string_view kUserPrefix = "user.overlay.";
inline constexpr std::array<const char*, 2> kOpaqueXattrs = {"trusted.overlay.opaque",
                                                             "user.overlay.opaque"};
inline constexpr std::array<const char*, 2> kWhiteoutXattrs = {"trusted.overlay.whiteout",
                                                               "user.overlay.whiteout"};
inline constexpr std::array<const char*, 2> kRedirectXattrs = {"trusted.overlay.redirect",
                                                               "user.overlay.redirect"};

// Owners and modes an unprivileged writer could not set, as fuse-overlayfs and containers/storage
// keep them. Not overlay-private: it travels with the file on copy-up.
inline constexpr std::string_view kOverrideStatXattr = "user.containers.override_stat";

// overlay.opaque values, one byte exactly: 'y' hides the layers below; 'x' says the directory
// holds xattr whiteouts (the kernel's readdir looks for them only there).
inline constexpr char kOpaque = 'y';
inline constexpr char kHoldsXattrWhiteouts = 'x';

// The OCI (AUFS) forms in image layers: ".wh.NAME" deletes NAME, ".wh..wh..opq" makes the
// directory holding it opaque.
inline constexpr std::string_view kOciWhiteoutPrefix = ".wh.";
inline constexpr std::string_view kOciOpaqueMarker = ".wh..wh..opq";

// The kernel's own whiteout: a character device with device number 0/0.
inline bool is_whiteout_device(mode_t mode, dev_t rdev) {
    return S_ISCHR(mode) && rdev == 0;
}
inline bool is_chardev_whiteout(const struct stat& st) {
    return is_whiteout_device(st.st_mode, st.st_rdev);
}

// The only shape an xattr whiteout may have: an empty regular file. Callers test this before
// reading the xattr, which costs a system call.
inline bool may_be_xattr_whiteout(const struct stat& st) {
    return S_ISREG(st.st_mode) && st.st_size == 0;
}

// True when the entry at `xattr_path` (a path the l*xattr calls take, such as /proc/self/fd/N)
// carries overlay.whiteout, in either prefix.
bool has_whiteout_xattr(const std::string& xattr_path);

// Whether an entry is a whiteout, as the kernel's lookup decides (ovl_path_is_whiteout): a 0/0
// character device, or an empty regular file carrying overlay.whiteout, in any directory of any
// layer, upper included. The parent's opaque 'x' does not matter to lookup; it only tells readdir
// where to look (see readdir_hides_xattr_whiteouts).
bool is_whiteout(const struct stat& st, const std::string& xattr_path);

// True when the kernel's readdir leaves xattr whiteouts out of a directory's listing: only in a
// directory marked 'x'. Elsewhere it lists the name, which lookup then refuses with ENOENT.
inline bool readdir_hides_xattr_whiteouts(char opaque_value) {
    return opaque_value == kHoldsXattrWhiteouts;
}

// 'y', 'x' or 0 from a raw overlay.opaque value (anything but one of those single bytes is 0).
char opaque_value(std::string_view value);

// The opaque value from the first opaque xattr that holds one, trusted first. `get(name, buf,
// size)` is an lgetxattr or fgetxattr call. One byte of room, as the kernel reads it: a longer
// value fails with ERANGE and counts as none.
template <class Get>
char first_opaque_value(Get&& get) {
    char buf[1];
    for (const char* name : kOpaqueXattrs) {
        ssize_t n = get(name, buf, sizeof buf);
        if (n == 1 && opaque_value(std::string_view(buf, 1))) return buf[0];
    }
    return 0;
}

// The first redirect xattr that holds a value, trusted first; `get` as above.
template <class Get>
std::optional<std::string> first_redirect(Get&& get) {
    char buf[PATH_MAX];
    for (const char* name : kRedirectXattrs) {
        ssize_t n = get(name, buf, sizeof buf);
        if (n > 0) return std::string(buf, static_cast<size_t>(n));
    }
    return std::nullopt;
}

// The opaque value and the redirect of the directory at `xattr_path`.
char read_opaque(const std::string& xattr_path);
std::optional<std::string> read_redirect(const std::string& xattr_path);

// ".wh.NAME" → "NAME"; the opaque marker, names that are not whiteouts and names that would
// leave the directory ("", ".", "..") → nullopt.
std::optional<std::string_view> oci_whiteout_target(std::string_view name);

// "NAME" → ".wh.NAME".
std::string oci_whiteout_name(std::string_view target);

// True for overlay-private xattrs: they are the layer's, never shown, copied up, or carried in a
// layer tar, where they would forge whiteouts and redirects.
bool is_private_xattr(std::string_view name);

// Copies every xattr but the private ones from `from` to `to` (paths the l*xattr calls take; when
// to_fd is open it is written through instead). xattrs the writer may not set (EPERM, ENOTSUP:
// security.* and trusted.* unprivileged) are skipped; any other failure returns its errno and,
// when asked, the xattr's name.
int copy_xattrs(const std::string& from, int to_fd, const std::string& to,
                std::string* failed_name = nullptr);

}  // namespace lamina
