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

// Where the xattr calls go: an entry reached through a Place, with the l* calls; or the copy a
// removed or renamed-over node still has, through the /proc link of its kept descriptor, which
// only the following calls go through (the l* ones would act on the link).
struct XattrTarget {
    Place place;  // holds the directory the path goes through open
    std::string path;
    bool via_link = false;

    ssize_t get(const char* name, void* value, size_t size) const {
        return via_link ? ::getxattr(path.c_str(), name, value, size)
                        : lgetxattr(path.c_str(), name, value, size);
    }
    ssize_t list(char* names, size_t size) const {
        return via_link ? ::listxattr(path.c_str(), names, size)
                        : llistxattr(path.c_str(), names, size);
    }
    int set(const char* name, const void* value, size_t size, int flags) const {
        return via_link ? ::setxattr(path.c_str(), name, value, size, flags)
                        : lsetxattr(path.c_str(), name, value, size, flags);
    }
    int remove(const char* name) const {
        return via_link ? ::removexattr(path.c_str(), name) : lremovexattr(path.c_str(), name);
    }
};

}  // namespace

int Overlay::xattr_target_locked(Node* node, bool change, Place& at, std::string& path,
                                 bool& via_link) {
    via_link = false;
    if (node->unlinked) {
        // Changes only to an upper copy: a removed lower copy is not copied up any more.
        int fd = change && !node->in_upper ? -1 : gone_copy_fd(node);
        if (fd < 0) return ENOENT;
        path = proc_fd_link(fd);
        via_link = true;
        return 0;
    }
    if (change) {
        if (int err = copy_up_locked(node)) return err;
    }
    if (int err = change ? upper_place(node, at) : top_place(node, at)) return err;
    path = at.xattr_path();
    return 0;
}

int Overlay::getxattr(Node* node, const char* name, std::string& value, size_t size) {
    // An override the daemon honours is shown through stat, not as an xattr.
    if (is_private_xattr(name) || (use_override_ && is_override_name(name))) return ENODATA;
    std::shared_lock lock(tree_);
    XattrTarget target;
    if (int err = xattr_target_locked(node, false, target.place, target.path, target.via_link))
        return err;
    if (size == 0) {
        ssize_t n = target.get(name, nullptr, 0);
        if (n < 0) return errno;
        value.assign(static_cast<size_t>(n), '\0');
        value.resize(static_cast<size_t>(n));
        return 0;
    }
    value.resize(size);
    ssize_t n = target.get(name, value.data(), size);
    if (n < 0) return errno;
    value.resize(static_cast<size_t>(n));
    return 0;
}

int Overlay::listxattr(Node* node, std::string& names, size_t size, bool list_trusted) {
    std::shared_lock lock(tree_);
    XattrTarget target;
    if (int err = xattr_target_locked(node, false, target.place, target.path, target.via_link))
        return err;
    std::string raw;
    for (;;) {
        ssize_t n = target.list(nullptr, 0);
        if (n < 0) return errno;
        raw.resize(static_cast<size_t>(n));
        if (n == 0) break;
        n = target.list(raw.data(), raw.size());
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
            (list_trusted || !name.starts_with("trusted.")) &&
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
    XattrTarget target;
    if (int err = xattr_target_locked(node, true, target.place, target.path, target.via_link))
        return err;
    invalidate_peers(node);
    return xattr_result(target.set(name, value, size, flags));
}

int Overlay::removexattr(Node* node, const char* name) {
    if (int err = check_writable()) return err;
    if (is_private_xattr(name) || (use_override_ && is_override_name(name))) return EPERM;
    std::unique_lock lock(tree_);
    {
        // Removing a name the file does not have changes nothing and needs no copy-up.
        XattrTarget shown;
        if (int err = xattr_target_locked(node, false, shown.place, shown.path, shown.via_link))
            return err;
        if (shown.get(name, nullptr, 0) < 0) return errno;
    }
    XattrTarget target;
    if (int err = xattr_target_locked(node, true, target.place, target.path, target.via_link))
        return err;
    invalidate_peers(node);
    return xattr_result(target.remove(name));
}

}  // namespace lamina
