// The store's volume internals: schema, recovery, and a container's volumes and binds.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "internal.h"
#include "store.h"

namespace lamina::store {

class Db;

inline std::string volumes_dir(const Layout& l) {
    return l.root + "/volumes";
}

// Adds the volume tables to a store of any age (idempotent).
void create_volume_schema(Db& db);
// Removes volume directories the database does not know (an interrupted create); under the
// exclusive lock.
void recover_volumes(Db& db, const Layout& l);

// A tmpfs volume's o=, split as mount(8) does: the generic mount flags in it (ro, noexec, nosuid,
// noatime...) go to mount(2) as flags, over nosuid and nodev; the rest (size=, mode=, uid=, gid=,
// nr_inodes=...) are the tmpfs's own, passed as data.
struct TmpfsMountOptions {
    unsigned long flags = 0;
    std::string data;
};
TmpfsMountOptions parse_tmpfs_options(const std::string& o);

// Valid local volume names: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (throws StoreError otherwise).
void check_volume_name(const std::string& name);

std::vector<ContainerMount> read_container_mounts(Db& db, const Layout& l,
                                                  const std::string& container_id);

// Checks mounts against each other and the store, makes the volumes they need (anonymous ones,
// named ones that do not exist yet, one per VOLUME of image_config not already covered) and
// records them for the container, all inside the caller's transaction. Directories are staged
// and renamed into volumes/ before; the caller's transaction is the commit point.
struct PreparedMounts {
    std::vector<MountSpec> mounts;          // sorted parents first
    std::vector<VolumeRecord> new_volumes;  // to insert in the transaction
    // (staging dir, volume name) of each new volume, renamed into volumes/ before the transaction
    std::vector<std::pair<std::string, std::string>> staged;
};
PreparedMounts prepare_container_mounts(Db& db, const Layout& l,
                                        const std::vector<MountSpec>& requested,
                                        const std::string& image_config);
// Moves the staged volume directories into volumes/ (before the transaction).
void place_staged_volumes(const Layout& l, const PreparedMounts& p);
void record_container_mounts(Db& db, const std::string& container_id, const PreparedMounts& p);

// Mounts every volume and bind of the container below merged (already the union), parents
// first, with private propagation; copies the image's content into new volumes. On failure
// unmounts whatever it mounted and throws.
void mount_container_volumes(Db& db, const Layout& l, const std::string& container_id,
                             const std::string& merged);
// Unmounts everything mounted below merged (not merged itself), last mounted first.
void unmount_below(const std::string& merged);

// Copies the tree below src_dir (an open directory) into dst_dir, keeping owners, modes, times,
// xattrs (overlay-private ones left out), hard links, symlinks and special files.
void copy_tree(int src_dir, int dst_dir, const std::string& where);

}  // namespace lamina::store
