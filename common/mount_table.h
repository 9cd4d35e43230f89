// What /proc/self/mountinfo says is mounted in this mount namespace: for the store (a container's
// union and the volumes below it), the daemon (its own mount's device) and the tests.
#pragma once

#include <string>
#include <vector>

namespace lamina {

struct MountEntry {
    int id = 0;
    int parent = 0;
    std::string device;         // major:minor
    std::string mount_point;    // escapes undone
    std::string options;        // the mount's own flags: ro, nosuid, noexec...
    std::string fstype;         // "tmpfs", "fuse.laminafs"...
    std::string super_options;  // the filesystem's: size=..., uid=...
};

// Every mount of the namespace in mountinfo's order, which is the order they were made.
std::vector<MountEntry> read_mount_table();
// The mounts exactly at path or below it, in mountinfo's order (path spelled as mountinfo does).
std::vector<MountEntry> mounts_at_or_below(const std::string& path);
// True when something is mounted exactly at path.
bool is_mount_point(const std::string& path);
// A path field of mountinfo with its octal escapes (\040 for a space...) undone.
std::string unescape_mountinfo(const std::string& s);

}  // namespace lamina
