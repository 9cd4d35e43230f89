// Recognising whiteouts, opaque directories and redirects in the kernel's and the OCI formats.
#include "whiteout.h"

#include <limits.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>

namespace lamina {

namespace {

constexpr std::array<std::string_view, 2> kPrefixes = {kTrustedPrefix, kUserPrefix};

std::string join(std::string_view prefix, std::string_view suffix) {
    std::string out(prefix);
    out.append(suffix);
    return out;
}

char opaque_from_value(const char* buf, ssize_t n) {
    if (n == 1 && (buf[0] == 'y' || buf[0] == 'x')) return buf[0];
    return 0;
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
    char buf[4];
    for (auto prefix : kPrefixes) {
        ssize_t n = lgetxattr(path.c_str(), join(prefix, "opaque").c_str(), buf, sizeof buf);
        if (char v = opaque_from_value(buf, n)) return v;
    }
    return 0;
}

char read_opaque_fd(int fd) {
    char buf[4];
    for (auto prefix : kPrefixes) {
        ssize_t n = fgetxattr(fd, join(prefix, "opaque").c_str(), buf, sizeof buf);
        if (char v = opaque_from_value(buf, n)) return v;
    }
    return 0;
}

bool has_whiteout_xattr(const std::string& path) {
    for (auto prefix : kPrefixes) {
        if (lgetxattr(path.c_str(), join(prefix, "whiteout").c_str(), nullptr, 0) >= 0) return true;
    }
    return false;
}

std::optional<std::string> read_redirect(const std::string& path) {
    char buf[PATH_MAX];
    for (auto prefix : kPrefixes) {
        ssize_t n = lgetxattr(path.c_str(), join(prefix, "redirect").c_str(), buf, sizeof buf);
        if (n > 0) return std::string(buf, static_cast<size_t>(n));
    }
    return std::nullopt;
}

std::string overlay_xattr(XattrFlavour flavour, std::string_view suffix) {
    return join(flavour == XattrFlavour::Trusted ? kTrustedPrefix : kUserPrefix, suffix);
}

}  // namespace lamina
