// Reading /proc/self/mountinfo: one parser for every question the store asks about mounts.
#include "mount_table.h"

#include <fstream>
#include <sstream>

namespace lamina {

namespace {

// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
bool parse_mountinfo_line(const std::string& line, MountEntry& e) {
    std::istringstream fields(line);
    std::string root, field;
    if (!(fields >> e.id >> e.parent >> e.device >> root >> e.mount_point >> e.options))
        return false;
    e.mount_point = unescape_mountinfo(e.mount_point);
    // Optional fields (shared:N, master:N...) run up to the lone "-".
    while (fields >> field && field != "-") {
    }
    std::string source;
    if (!(fields >> e.fstype >> source)) return false;
    fields >> e.super_options;
    return true;
}

}  // namespace

std::string unescape_mountinfo(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
            i += 3;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

std::vector<MountEntry> read_mount_table() {
    std::vector<MountEntry> out;
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        MountEntry e;
        if (parse_mountinfo_line(line, e)) out.push_back(std::move(e));
    }
    return out;
}

std::vector<MountEntry> mounts_at_or_below(const std::string& path) {
    std::vector<MountEntry> out;
    for (auto& e : read_mount_table())
        if (e.mount_point == path || e.mount_point.starts_with(path + "/"))
            out.push_back(std::move(e));
    return out;
}

bool is_mount_point(const std::string& path) {
    for (const auto& e : read_mount_table())
        if (e.mount_point == path) return true;
    return false;
}

}  // namespace lamina
