// Ownership as the mount shows it: id mappings, squash options and the override xattr.
#include "ownership.h"

#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>

namespace lamina {

namespace {

bool parse_number(std::string_view text, int base, uint32_t& out) {
    if (text.empty()) return false;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out, base);
    return ec == std::errc() && end == text.data() + text.size();
}

std::vector<std::string_view> split_colons(std::string_view value) {
    std::vector<std::string_view> fields;
    size_t start = 0;
    while (true) {
        size_t colon = value.find(':', start);
        if (colon == std::string_view::npos) {
            fields.push_back(value.substr(start));
            return fields;
        }
        fields.push_back(value.substr(start, colon - start));
        start = colon + 1;
    }
}

// "block-MAJ-MIN" / "char-MAJ-MIN"; later dash-separated parts are ignored, as containers do.
bool parse_device(std::string_view rest, dev_t& rdev) {
    size_t dash = rest.find('-');
    if (dash == std::string_view::npos) return false;
    size_t end = rest.find('-', dash + 1);
    uint32_t major_no = 0, minor_no = 0;
    if (!parse_number(rest.substr(0, dash), 10, major_no)) return false;
    if (!parse_number(rest.substr(dash + 1, end == std::string_view::npos ? end : end - dash - 1),
                      10, minor_no))
        return false;
    rdev = makedev(major_no, minor_no);
    return true;
}

// The TYPE field: the S_IFMT bits it names, or 0 when it names none we know.
mode_t parse_type(std::string_view type, dev_t& rdev) {
    if (type.starts_with("file")) return S_IFREG;
    if (type.starts_with("dir")) return S_IFDIR;
    if (type.starts_with("symlink")) return S_IFLNK;
    if (type.starts_with("pipe")) return S_IFIFO;
    if (type.starts_with("socket")) return S_IFSOCK;
    if (type.starts_with("block-")) return parse_device(type.substr(6), rdev) ? S_IFBLK : 0;
    if (type.starts_with("char-")) return parse_device(type.substr(5), rdev) ? S_IFCHR : 0;
    return 0;
}

bool is_special(mode_t type) {
    return type == S_IFCHR || type == S_IFBLK || type == S_IFIFO || type == S_IFSOCK;
}

uint32_t map_id(const std::vector<IdMapRange>& map, uint32_t id, bool to_host) {
    if (map.empty()) return id;
    for (const auto& r : map) {
        uint32_t from = to_host ? r.container : r.host;
        uint32_t to = to_host ? r.host : r.container;
        if (id >= from && uint64_t{id} < uint64_t{from} + r.size) return to + (id - from);
    }
    return kOverflowId;
}

bool read_privilege() {
    if (geteuid() != 0) return false;
    // Root of a user namespace maps only part of the ids, and cannot make devices or set
    // trusted.* xattrs on the host's filesystems.
    std::ifstream in("/proc/self/uid_map");
    uint64_t inside = 1, outside = 1, count = 0;
    if (!(in >> inside >> outside >> count)) return true;  // no user namespaces at all
    return inside == 0 && outside == 0 && count == 4294967295u;
}

}  // namespace

std::optional<StatOverride> parse_override_stat(std::string_view value) {
    auto fields = split_colons(value);
    if (fields.size() < 3) return std::nullopt;
    StatOverride o;
    uint32_t mode = 0;
    if (!parse_number(fields[0], 10, o.uid) || !parse_number(fields[1], 10, o.gid) ||
        !parse_number(fields[2], 8, mode) || mode > 0177777)
        return std::nullopt;
    o.mode = static_cast<mode_t>(mode);
    if (fields.size() > 3) {
        mode_t type = parse_type(fields[3], o.rdev);
        if (type == 0) return std::nullopt;
        o.mode = type | (o.mode & 07777);
    }
    return o;
}

std::string format_override_stat(const StatOverride& o) {
    mode_t type = o.mode & S_IFMT;
    std::string kind;
    switch (type) {
        case S_IFDIR:
            kind = "dir";
            break;
        case S_IFLNK:
            kind = "symlink";
            break;
        case S_IFIFO:
            kind = "pipe";
            break;
        case S_IFSOCK:
            kind = "socket";
            break;
        case S_IFBLK:
        case S_IFCHR:
            kind = std::string(type == S_IFBLK ? "block-" : "char-") +
                   std::to_string(major(o.rdev)) + "-" + std::to_string(minor(o.rdev));
            break;
        default:
            kind = "file";
            break;
    }
    char mode[16];
    if (is_special(type))
        snprintf(mode, sizeof mode, "0%o", static_cast<unsigned>(o.mode));
    else
        snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(o.mode & 07777));
    return std::to_string(o.uid) + ":" + std::to_string(o.gid) + ":" + mode + ":" + kind;
}

std::optional<StatOverride> read_override_stat(const std::string& path) {
    char buf[128];
    const std::string name(kOverrideStatXattr);
    ssize_t n = lgetxattr(path.c_str(), name.c_str(), buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    return parse_override_stat(std::string_view(buf, static_cast<size_t>(n)));
}

int write_override_stat(const std::string& path, const StatOverride& o) {
    std::string value = format_override_stat(o);
    const std::string name(kOverrideStatXattr);
    if (lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0) != 0) return errno;
    return 0;
}

void apply_override(const StatOverride& o, struct stat& st) {
    st.st_uid = o.uid;
    st.st_gid = o.gid;
    mode_t type = o.mode & S_IFMT;
    if (S_ISREG(st.st_mode) && is_special(type)) {
        st.st_mode = type | (o.mode & 07777);
        st.st_rdev = (type == S_IFCHR || type == S_IFBLK) ? o.rdev : 0;
        st.st_size = 0;
        return;
    }
    st.st_mode = (st.st_mode & S_IFMT) | (o.mode & 07777);
}

mode_t host_mode_under_override(mode_t perm, bool is_dir) {
    return (perm & 01777) | (is_dir ? S_IRWXU : (S_IRUSR | S_IWUSR));
}

bool daemon_is_privileged() {
    static const bool privileged = read_privilege();
    return privileged;
}

IdShift::IdShift(const MountOptions& opts)
    : uid_map_(opts.uid_map),
      gid_map_(opts.gid_map),
      squash_uid_(opts.squash_to_uid),
      squash_gid_(opts.squash_to_gid),
      static_nlink_(opts.static_nlink) {
    // squash_to_uid/gid take precedence over squash_to_root, as in fuse-overlayfs.
    if (opts.squash_to_root) {
        if (!squash_uid_) squash_uid_ = 0;
        if (!squash_gid_) squash_gid_ = 0;
    }
    identity_ =
        uid_map_.empty() && gid_map_.empty() && !squash_uid_ && !squash_gid_ && !static_nlink_;
}

uid_t IdShift::shown_uid(uid_t disk) const {
    if (squash_uid_) return *squash_uid_;
    return map_id(uid_map_, disk, true);
}

gid_t IdShift::shown_gid(gid_t disk) const {
    if (squash_gid_) return *squash_gid_;
    return map_id(gid_map_, disk, true);
}

uid_t IdShift::disk_uid(uid_t shown) const {
    return map_id(uid_map_, shown, false);
}

gid_t IdShift::disk_gid(gid_t shown) const {
    return map_id(gid_map_, shown, false);
}

void IdShift::present(struct stat& st, bool host_ids) const {
    if (identity_) return;
    st.st_uid = host_ids ? squash_uid_.value_or(st.st_uid) : shown_uid(st.st_uid);
    st.st_gid = host_ids ? squash_gid_.value_or(st.st_gid) : shown_gid(st.st_gid);
    if (static_nlink_ && S_ISDIR(st.st_mode)) st.st_nlink = 1;
}

}  // namespace lamina
