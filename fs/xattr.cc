// Extended attributes through the mount: the copy's own, with overlay-private names hidden.
#include <sys/xattr.h>

#include <cerrno>

#include "overlay.h"

namespace lamina {

namespace {

int xattr_result(ssize_t n) {
    return n < 0 ? errno : 0;
}

bool is_override_name(std::string_view name) {
    return name == kOverrideStatXattr;
}

}  // namespace

int Overlay::getxattr(Node* node, const char* name, std::string& value, size_t size) {
    // An override the daemon honours is shown through stat, not as an xattr.
    if (is_private_xattr(name) || (use_override_ && is_override_name(name))) return ENODATA;
    std::shared_lock lock(tree_);
    if (node->unlinked) return ENOENT;
    Place at;
    if (int err = top_place(node, at)) return err;
    std::string xattr_path = at.xattr_path();
    if (size == 0) {
        ssize_t n = lgetxattr(xattr_path.c_str(), name, nullptr, 0);
        if (n < 0) return errno;
        value.assign(static_cast<size_t>(n), '\0');
        value.resize(static_cast<size_t>(n));
        return 0;
    }
    value.resize(size);
    ssize_t n = lgetxattr(xattr_path.c_str(), name, value.data(), size);
    if (n < 0) return errno;
    value.resize(static_cast<size_t>(n));
    return 0;
}

int Overlay::listxattr(Node* node, std::string& names, size_t size) {
    std::shared_lock lock(tree_);
    if (node->unlinked) return ENOENT;
    Place at;
    if (int err = top_place(node, at)) return err;
    std::string xattr_path = at.xattr_path();
    std::string raw;
    for (;;) {
        ssize_t n = llistxattr(xattr_path.c_str(), nullptr, 0);
        if (n < 0) return errno;
        raw.resize(static_cast<size_t>(n));
        if (n == 0) break;
        n = llistxattr(xattr_path.c_str(), raw.data(), raw.size());
        if (n >= 0) {
            raw.resize(static_cast<size_t>(n));
            break;
        }
        if (errno != ERANGE) return errno;
    }
    names.clear();
    for (size_t pos = 0; pos < raw.size();) {
        size_t end = raw.find('\0', pos);
        if (end == std::string::npos) end = raw.size();
        std::string_view name(raw.data() + pos, end - pos);
        if (!name.empty() && !is_private_xattr(name) &&
            !(use_override_ && is_override_name(name))) {
            names.append(name);
            names.push_back('\0');
        }
        pos = end + 1;
    }
    if (size != 0 && names.size() > size) return ERANGE;
    return 0;
}

int Overlay::setxattr(Node* node, const char* name, const char* value, size_t size, int flags) {
    if (int err = check_writable()) return err;
    if (is_private_xattr(name) || (use_override_ && is_override_name(name))) return EPERM;
    std::unique_lock lock(tree_);
    if (int err = copy_up_locked(node)) return err;
    Place at;
    if (int err = upper_place(node, at)) return err;
    std::string xattr_path = at.xattr_path();
    invalidate_peers(node);
    return xattr_result(lsetxattr(xattr_path.c_str(), name, value, size, flags));
}

int Overlay::removexattr(Node* node, const char* name) {
    if (int err = check_writable()) return err;
    if (is_private_xattr(name) || (use_override_ && is_override_name(name))) return EPERM;
    std::unique_lock lock(tree_);
    if (node->unlinked) return ENOENT;
    {
        // Removing a name the file does not have changes nothing and needs no copy-up.
        Place at;
        if (int err = top_place(node, at)) return err;
        if (lgetxattr(at.xattr_path().c_str(), name, nullptr, 0) < 0) return errno;
    }
    if (int err = copy_up_locked(node)) return err;
    Place at;
    if (int err = upper_place(node, at)) return err;
    std::string xattr_path = at.xattr_path();
    invalidate_peers(node);
    return xattr_result(lremovexattr(xattr_path.c_str(), name));
}

}  // namespace lamina
