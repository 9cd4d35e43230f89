// Ownership as the mount shows it: uid/gid mappings, squash options, static_nlink, and the
// containers override xattr that keeps owners and modes an unprivileged daemon cannot set.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "options.h"
#include "overlay_format.h"  // kOverrideStatXattr

namespace lamina {

// The kernel's default overflow id: what an id outside every mapping range shows as.
inline constexpr uint32_t kOverflowId = 65534;

// The value of user.containers.override_stat. `mode` holds the permission bits and, when the
// value names one, the file type (S_IFCHR with `rdev` for a device kept as a regular file).
struct StatOverride {
    uint32_t uid = 0;
    uint32_t gid = 0;
    mode_t mode = 0;
    dev_t rdev = 0;
};

// Reads "UID:GID:MODE[:TYPE]": MODE in octal, with the file type bits or without them (both
// forms are in use), TYPE one of file, dir, symlink, pipe, socket, block-MAJ-MIN, char-MAJ-MIN.
std::optional<StatOverride> parse_override_stat(std::string_view value);
// Writes "UID:GID:0MODE:TYPE" as containers/storage does; special files keep their type bits in
// MODE too, so readers that know only the three-field form still see a device.
std::string format_override_stat(const StatOverride& o);

// The override on the file at `path` (not following a final symlink), if it has a valid one.
std::optional<StatOverride> read_override_stat(const std::string& path);
// Sets it. Returns 0 or an errno.
int write_override_stat(const std::string& path, const StatOverride& o);
// Puts an override's owner, mode and device into a stat of the host copy. The file type changes
// only from a regular file to a special one, never between directory and non-directory.
void apply_override(const StatOverride& o, struct stat& st);
// The mode the host copy keeps under an override: no set-id bits (the override has them), and
// the daemon's own read and write access, so it can still copy and open the file.
mode_t host_mode_under_override(mode_t perm, bool is_dir);

// True when the daemon may chown to any id and make device nodes: euid 0 in the initial user
// namespace. Otherwise it writes user.overlay.* xattrs and keeps owners in override xattrs.
bool daemon_is_privileged();

// uidmapping=/gidmapping= and the squash options. Ids on disk are container ids; the kernel is
// shown host ids, as fuse-overlayfs does (a file owned by 0 on disk under uidmapping=0:1000:1
// shows as 1000 to the host and so as 0 inside the user namespace mapping 0 to 1000).
class IdShift {
public:
    explicit IdShift(const MountOptions& opts);

    // Disk owner → the owner stat shows (mapping, then squash).
    uid_t shown_uid(uid_t disk) const;
    gid_t shown_gid(gid_t disk) const;
    // An id from a request (chown, the caller of a create) → the id to write on disk.
    uid_t disk_uid(uid_t shown) const;
    gid_t disk_gid(gid_t shown) const;

    // Owner, and st_nlink of directories under static_nlink, as the mount shows them. A stat
    // that shows host ids already (from an idmapped lower layer) gets the squash options and
    // static_nlink but not the mapping.
    void present(struct stat& st, bool host_ids = false) const;
    // True when present() changes nothing.
    bool identity() const { return identity_; }

private:
    std::vector<IdMapRange> uid_map_, gid_map_;
    std::optional<uint32_t> squash_uid_, squash_gid_;
    bool static_nlink_ = false;
    bool identity_ = true;
};

}  // namespace lamina
