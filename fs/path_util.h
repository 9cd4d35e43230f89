// Relative paths inside a layer: "" is the layer root.
#pragma once

#include <string>
#include <string_view>

namespace lamina {

// Whether path is join_path(dir, name), without building it.
inline bool is_joined_path(std::string_view path, std::string_view dir, std::string_view name) {
    if (dir.empty()) return path == name;
    return path.size() == dir.size() + 1 + name.size() && path.starts_with(dir) &&
           path[dir.size()] == '/' && path.ends_with(name);
}

inline std::string join_path(std::string_view dir, std::string_view name) {
    std::string out;
    out.reserve(dir.size() + 1 + name.size());
    out.append(dir);
    if (!dir.empty()) out.push_back('/');
    out.append(name);
    return out;
}

// The name *at() calls take for a relative path: "." for the layer root.
inline const char* rel_or_dot(const std::string& rel) {
    return rel.empty() ? "." : rel.c_str();
}

// "/proc/self/fd/DIRFD/REL": `rel` below the open directory dirfd, for the calls without an *at()
// form (lgetxattr and friends; an O_PATH descriptor refuses fgetxattr). The kernel jumps through
// the /proc link to the directory itself, so the path works after the directory's own path is
// gone (a bind mount detached with umount -l, containers/storage's idmapped lower mounts). REL is
// then resolved as usual: the l* calls still act on a final symlink, not on its target. The
// directory itself is DIRFD/. ("" or "."): on the bare link the l* calls would act on the link.
// "/proc/self/fd/FD": the open file itself (a magic link: follow it to reach the file).
inline std::string proc_fd_link(int fd) {
    return "/proc/self/fd/" + std::to_string(fd);
}

inline std::string proc_fd_path(int dirfd, std::string_view rel) {
    std::string out = "/proc/self/fd/";
    out.append(std::to_string(dirfd));
    out.push_back('/');
    out.append(rel.empty() ? std::string_view(".") : rel);
    return out;
}

}  // namespace lamina
