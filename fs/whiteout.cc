// Recognising whiteouts, opaque directories and redirects in the kernel's and the OCI formats.
#include "whiteout.h"

#include <limits.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <cstring>

namespace lamina {

namespace {

// The names tried, trusted first: written out once instead of built per call on the lookup path.
constexpr std::array<const char*, 2> kOpaqueNames = {"trusted.overlay.opaque",
                                                     "user.overlay.opaque"};
constexpr std::array<const char*, 2> kWhiteoutNames = {"trusted.overlay.whiteout",
                                                       "user.overlay.whiteout"};
constexpr std::array<const char*, 2> kRedirectNames = {"trusted.overlay.redirect",
                                                       "user.overlay.redirect"};

// 'y' or 'x' from the first opaque xattr that holds one; `get` is lgetxattr or fgetxattr.
template <class Get>
char first_opaque_value(Get&& get) {
    char buf[4];
    for (const char* name : kOpaqueNames) {
        ssize_t n = get(name, buf, sizeof buf);
        if (n == 1 && (buf[0] == 'y' || buf[0] == 'x')) return buf[0];
    }
    return 0;
}

// Which of `names` a listxattr result holds; all of them when the list could not be read (the
// caller then asks for each, as without the list).
template <size_t N>
bool any_listed(ssize_t len, const char* list, const std::array<const char*, N>& names) {
    if (len < 0) return true;
    for (const char* at = list; at < list + len; at += std::strlen(at) + 1)
        for (const char* name : names)
            if (std::strcmp(at, name) == 0) return true;
    return false;
}

}  // namespace

std::optional<std::string_view> oci_whiteout_target(std::string_view name) {
    if (!name.starts_with(kOciWhiteoutPrefix) || name == kOciOpaqueMarker) return std::nullopt;
    std::string_view target = name.substr(kOciWhiteoutPrefix.size());
    if (target.empty() || target == "." || target == "..") return std::nullopt;
    return target;
}

bool is_private_xattr(std::string_view name) {
    return name.starts_with(kTrustedPrefix) || name.starts_with(kUserPrefix);
}

char read_opaque(const std::string& path) {
    return first_opaque_value([&](const char* name, char* buf, size_t size) {
        return lgetxattr(path.c_str(), name, buf, size);
    });
}

bool has_whiteout_xattr(const std::string& path) {
    for (const char* name : kWhiteoutNames) {
        if (lgetxattr(path.c_str(), name, nullptr, 0) >= 0) return true;
    }
    return false;
}

// The first redirect xattr that holds a value; `get` is lgetxattr or fgetxattr.
template <class Get>
std::optional<std::string> first_redirect(Get&& get) {
    char buf[PATH_MAX];
    for (const char* name : kRedirectNames) {
        ssize_t n = get(name, buf, sizeof buf);
        if (n > 0) return std::string(buf, static_cast<size_t>(n));
    }
    return std::nullopt;
}

std::optional<std::string> read_redirect(const std::string& path) {
    return first_redirect([&](const char* name, char* buf, size_t size) {
        return lgetxattr(path.c_str(), name, buf, size);
    });
}

namespace {

// A directory's marks from one listxattr; `list` and `get` are the l* or f* calls.
template <class List, class Get>
DirMarks dir_marks(List&& list_names, Get&& get, bool want_redirect) {
    DirMarks marks;
    char list[1024];
    ssize_t len = list_names(list, sizeof list);
    if (len == 0) return marks;  // the common case: no xattrs at all
    if (any_listed(len, list, kOpaqueNames)) marks.opaque = first_opaque_value(get);
    if (want_redirect && marks.opaque != 'y' && any_listed(len, list, kRedirectNames))
        marks.redirect = first_redirect(get);
    return marks;
}

}  // namespace

DirMarks read_dir_marks(const std::string& path, bool want_redirect) {
    return dir_marks([&](char* list, size_t size) { return llistxattr(path.c_str(), list, size); },
                     [&](const char* name, char* buf, size_t size) {
                         return lgetxattr(path.c_str(), name, buf, size);
                     },
                     want_redirect);
}

DirMarks read_dir_marks_fd(int fd, bool want_redirect) {
    return dir_marks([&](char* list, size_t size) { return flistxattr(fd, list, size); },
                     [&](const char* name, char* buf, size_t size) {
                         return fgetxattr(fd, name, buf, size);
                     },
                     want_redirect);
}

std::optional<std::string> redirect_lower_path(std::string_view parent_lower_path,
                                               std::string_view redirect) {
    auto bad_component = [](std::string_view c) { return c == "." || c == ".."; };
    if (redirect.empty() || redirect.find('\0') != std::string_view::npos) return std::nullopt;
    if (!redirect.starts_with('/')) {
        if (redirect.find('/') != std::string_view::npos || bad_component(redirect))
            return std::nullopt;
        std::string out(parent_lower_path);
        if (!out.empty()) out.push_back('/');
        out.append(redirect);
        return out;
    }
    std::string out;
    size_t at = 0;
    while (at < redirect.size()) {
        size_t slash = redirect.find('/', at);
        if (slash == std::string_view::npos) slash = redirect.size();
        std::string_view component = redirect.substr(at, slash - at);
        at = slash + 1;
        if (component.empty()) continue;  // "//" and the leading "/"
        if (bad_component(component)) return std::nullopt;
        if (!out.empty()) out.push_back('/');
        out.append(component);
    }
    return out;
}

std::string overlay_xattr(XattrFlavour flavour, std::string_view suffix) {
    std::string out(flavour == XattrFlavour::Trusted ? kTrustedPrefix : kUserPrefix);
    out.append(suffix);
    return out;
}

}  // namespace lamina
