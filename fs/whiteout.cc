// Reading a directory's overlay marks in as few system calls as the lookup path allows.
#include "whiteout.h"

#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <cstring>

namespace lamina {

namespace {

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

namespace {

// A directory's marks from one listxattr; `list` and `get` are the l* or f* calls.
template <class List, class Get>
DirMarks dir_marks(List&& list_names, Get&& get, bool want_redirect) {
    DirMarks marks;
    char list[1024];
    ssize_t len = list_names(list, sizeof list);
    if (len == 0) return marks;  // the common case: no xattrs at all
    if (any_listed(len, list, kOpaqueXattrs)) marks.opaque = first_opaque_value(get);
    if (want_redirect && marks.opaque != 'y' && any_listed(len, list, kRedirectXattrs))
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
    return dir_marks(
        [&](char* list, size_t size) { return flistxattr(fd, list, size); },
        [&](const char* name, char* buf, size_t size) { return fgetxattr(fd, name, buf, size); },
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
