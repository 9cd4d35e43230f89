// Merged readdir: the upper listing over the lower index, without whiteouts or duplicates.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <unordered_set>

#include "dir_index.h"
#include "dirent_reader.h"
#include "overlay.h"
#include "path_util.h"

namespace lamina {

int Overlay::opendir(Node* node, std::unique_ptr<DirHandle>& out) {
    if (!node->is_dir()) return ENOTDIR;
    auto dh = std::make_unique<DirHandle>();
    dh->node = node;
    out = std::move(dh);
    return 0;
}

int Overlay::load_dir(DirHandle& dh) {
    std::shared_lock lock(tree_);
    int err = list_merged_locked(dh.node, dh.entries, &dh.upper_fd);
    if (err == 0) dh.loaded = true;
    return err;
}

int Overlay::list_merged_locked(Node* node, std::vector<MergedEntry>& entries, UniqueFd* upper_fd) {
    entries.clear();
    uint64_t parent_ino = node->parent ? node->parent->ino : node->ino;
    entries.push_back(MergedEntry{".", node->ino, DT_DIR});
    entries.push_back(MergedEntry{"..", parent_ino, DT_DIR});

    if (node->unlinked) return 0;  // a removed directory still open lists as empty
    std::unordered_set<std::string> upper_names;
    if (node->in_upper) {
        std::string rel = path_of(node);
        UniqueFd dir(openat(stack_.fd(kUpperLayer), rel_or_dot(rel),
                            O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dir) return errno;
        char opaque = read_opaque_fd(dir.get());
        int err =
            for_each_dirent(dir.get(), [&](std::string_view name, ino_t d_ino, uint8_t dtype) {
                bool whiteout = false;
                if (dtype == DT_CHR || dtype == DT_UNKNOWN || (opaque == 'x' && dtype == DT_REG)) {
                    std::string sname(name);
                    struct stat st;
                    if (fstatat(dir.get(), sname.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;
                    whiteout = is_chardev_whiteout(st) ||
                               (opaque == 'x' && S_ISREG(st.st_mode) && st.st_size == 0 &&
                                has_whiteout_xattr(proc_fd_path(dir.get(), sname)));
                    dtype = static_cast<uint8_t>(IFTODT(st.st_mode));
                }
                upper_names.emplace(name);
                if (whiteout) return;
                uint64_t ino = make_ino(kUpperLayer, d_ino);
                table_.find_ino(node, name, ino);
                entries.push_back(MergedEntry{std::string(name), ino, dtype});
            });
        if (err) return err;
        if (upper_fd) *upper_fd = std::move(dir);
    }
    if (!node->opaque && !node->lowers.empty()) {
        auto index = dir_index(node);
        for (const LowerEntry& e : index->entries) {
            if (e.whiteout || upper_names.contains(e.name)) continue;
            uint64_t ino = make_ino(e.layer, e.ino);
            table_.find_ino(node, e.name, ino);
            entries.push_back(MergedEntry{e.name, ino, e.dtype});
        }
    }
    return 0;
}

}  // namespace lamina
