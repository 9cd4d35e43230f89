// The layer format's rules, written once for the daemon, the store and the CLI.
#include "overlay_format.h"

#include <errno.h>
#include <string.h>
#include <sys/xattr.h>

namespace lamina {

bool has_whiteout_xattr(const std::string& xattr_path) {
    for (const char* name : kWhiteoutXattrs)
        if (lgetxattr(xattr_path.c_str(), name, nullptr, 0) >= 0) return true;
    return false;
}

bool is_whiteout(const struct stat& st, const std::string& xattr_path) {
    return is_chardev_whiteout(st) || (may_be_xattr_whiteout(st) && has_whiteout_xattr(xattr_path));
}

char opaque_value(std::string_view value) {
    if (value.size() != 1) return 0;
    return value[0] == kOpaque || value[0] == kHoldsXattrWhiteouts ? value[0] : 0;
}

char read_opaque(const std::string& xattr_path) {
    return first_opaque_value([&](const char* name, char* buf, size_t size) {
        return lgetxattr(xattr_path.c_str(), name, buf, size);
    });
}

std::optional<std::string> read_redirect(const std::string& xattr_path) {
    return first_redirect([&](const char* name, char* buf, size_t size) {
        return lgetxattr(xattr_path.c_str(), name, buf, size);
    });
}

std::optional<std::string_view> oci_whiteout_target(std::string_view name) {
    if (!name.starts_with(kOciWhiteoutPrefix) || name == kOciOpaqueMarker) return std::nullopt;
    std::string_view target = name.substr(kOciWhiteoutPrefix.size());
    if (target.empty() || target == "." || target == "..") return std::nullopt;
    return target;
}

std::string oci_whiteout_name(std::string_view target) {
    std::string out(kOciWhiteoutPrefix);
    out.append(target);
    return out;
}

bool is_private_xattr(std::string_view name) {
    return name.starts_with(kTrustedPrefix) || name.starts_with(kUserPrefix);
}

int copy_xattrs(const std::string& from, int to_fd, const std::string& to,
                std::string* failed_name) {
    ssize_t len = llistxattr(from.c_str(), nullptr, 0);
    if (len <= 0) return len < 0 && errno != ENOTSUP ? errno : 0;
    std::string names(static_cast<size_t>(len), '\0');
    len = llistxattr(from.c_str(), names.data(), names.size());
    if (len < 0) return errno;
    names.resize(static_cast<size_t>(len));
    std::string value;
    for (size_t pos = 0; pos < names.size();) {
        const char* name = names.c_str() + pos;
        pos += strlen(name) + 1;
        if (*name == '\0' || is_private_xattr(name)) continue;
        ssize_t vlen = lgetxattr(from.c_str(), name, nullptr, 0);
        if (vlen < 0) continue;
        value.resize(static_cast<size_t>(vlen));
        vlen = lgetxattr(from.c_str(), name, value.data(), value.size());
        if (vlen < 0) continue;
        int rc = to_fd >= 0
                     ? fsetxattr(to_fd, name, value.data(), static_cast<size_t>(vlen), 0)
                     : lsetxattr(to.c_str(), name, value.data(), static_cast<size_t>(vlen), 0);
        if (rc != 0 && errno != EPERM && errno != ENOTSUP) {
            if (failed_name) *failed_name = name;
            return errno;
        }
    }
    return 0;
}

}  // namespace lamina
