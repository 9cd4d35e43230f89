// rename(2) through the overlay: copy-up, a whiteout where lower entries remain, and redirects so
// a directory from the lower layers takes its lower content along.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "dir_index.h"
#include "overlay.h"
#include "path_util.h"

namespace lamina {

namespace {

// The longest absolute redirect the kernel writes (overlay's redirect_max parameter, default
// 256); a longer one makes it answer EXDEV and leave the move to userspace.
constexpr size_t kRedirectMax = 256;

}  // namespace

int Overlay::rename(Node* parent, std::string_view name, Node* new_parent,
                    std::string_view new_name, unsigned flags) {
    if (int err = check_writable()) return err;
    std::unique_lock lock(tree_);
    parent->name_changes++;
    new_parent->name_changes++;

    auto require_empty = [this](Node* dir) {
        bool empty = false;
        if (int err = merged_is_empty_locked(dir, empty)) return err;
        return empty ? 0 : ENOTEMPTY;
    };
    std::unique_ptr<Node> src_scratch, dst_scratch;
    Node* src = nullptr;
    Node* dst = nullptr;
    if (int err = existing_node_locked(parent, name, src_scratch, src)) return err;
    int dst_err = existing_node_locked(new_parent, new_name, dst_scratch, dst);
    if (dst_err && dst_err != ENOENT) return dst_err;
    if (parent == new_parent && name == new_name) return 0;
    // Two names of one upper file: rename(2) does nothing, whatever the flags (the VFS returns
    // early when source and target are one inode; ours are separate FUSE inodes).
    if (dst && src->in_upper && dst->in_upper && !src->is_dir() && !dst->is_dir()) {
        struct stat a, b;
        Place pa, pb;
        if (upper_place(src, pa) == 0 && upper_child_place(new_parent, new_name, pb) == 0 &&
            fstatat(pa.dirfd, pa.c_name(), &a, AT_SYMLINK_NOFOLLOW) == 0 &&
            fstatat(pb.dirfd, pb.c_name(), &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev)
            return 0;
    }
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return EINVAL;  // RENAME_WHITEOUT too
    if (new_name.starts_with(kOciWhiteoutPrefix)) return EINVAL;
    if ((flags & RENAME_NOREPLACE) && dst) return EEXIST;
    if ((flags & RENAME_EXCHANGE) && !dst) return ENOENT;
    bool exchange = flags & RENAME_EXCHANGE;
    if (dst && !exchange) {
        if (src->is_dir() && !dst->is_dir()) return ENOTDIR;
        if (!src->is_dir() && dst->is_dir()) return EISDIR;
        // A target that merges with lower content is checked before anything is copied up; a
        // pure upper one only by the rename itself, after the copy-ups, as the kernel does.
        if (dst->is_dir() && !dst->lowers.empty()) {
            if (int err = require_empty(dst)) return err;
        }
    }
    // A directory with lower content moves only with a redirect, as the kernel does.
    auto needs_redirect = [](Node* n) { return n->is_dir() && !n->lowers.empty(); };
    bool redirects_ok = opts_.redirect_dir == RedirectDir::On;
    if ((needs_redirect(src) || (exchange && needs_redirect(dst))) && !redirects_ok) return EXDEV;

    if (int err = copy_up_locked(src)) return err;
    if (exchange) {
        if (int err = copy_up_locked(dst)) return err;
    }
    if (int err = copy_up_locked(new_parent)) return err;

    Place from, to;
    if (int err = upper_child_place(parent, name, from)) return err;
    if (int err = upper_child_place(new_parent, new_name, to)) return err;
    bool src_lower_remains = lower_has_name(parent, name);
    bool dst_lower_below = lower_has_name(new_parent, new_name);

    // Where the new name had lower content, the moved directory must not merge with it: it
    // keeps its own lower content through a redirect, or becomes opaque.
    auto mark_moved_dir = [&](Node* n, bool lower_below) -> int {
        if (!n->is_dir()) return 0;
        Place at;  // the directory itself, wherever its name is now
        if (int err = upper_place(n, at)) return err;
        std::string xattr_path = at.xattr_path();
        if (needs_redirect(n)) {
            // As the kernel: within one directory the old name (relative), elsewhere the whole
            // lower path (absolute); a redirect the entry has already stays when it still
            // serves. An absolute one longer than the kernel's redirect_max makes it EXDEV.
            bool samedir = parent == new_parent;
            if (n->upper_redirect && (samedir || n->redirect_absolute)) return 0;
            std::string value = samedir ? n->name : "/" + n->lower_path;
            if (!samedir && value.size() > kRedirectMax) return EXDEV;
            if (int err = set_upper_xattr(xattr_path, "redirect", value)) return err;
            n->upper_redirect = true;
            n->redirect_absolute = !samedir;
            if (!samedir) {
                // Its lower layers were found by name from the old parent, and a relative
                // redirect in one of them resolves from there: the new parent's layers would
                // lead elsewhere once the index is built again (evicted, or the node retired).
                // From here on they are where the absolute redirect leads, as a lookup finds.
                n->lowers.clear();
                n->lower_paths.clear();
                follow_upper_redirect(n == src ? new_parent : parent, n, value);
            }
            return 0;
        }
        if (lower_below && !n->opaque) {
            if (int err = set_upper_xattr(xattr_path, "opaque", "y")) return err;
            n->opaque = true;
        }
        return 0;
    };

    if (exchange) {
        // Marked before the move, as the kernel does: a redirect it cannot write (EXDEV) leaves
        // both names where they were.
        if (int err = mark_moved_dir(src, dst_lower_below)) return err;
        if (int err = mark_moved_dir(dst, src_lower_remains)) return err;
        if (renameat2(from.dirfd, from.c_name(), to.dirfd, to.c_name(), RENAME_EXCHANGE) != 0)
            return errno;
        Node* src_node = table_.find(parent, name);
        Node* dst_node = table_.find(new_parent, new_name);
        if (src_node) table_.unhash(src_node);
        if (dst_node) table_.rename(dst_node, parent, name);
        if (src_node) table_.rename(src_node, new_parent, new_name);
        return 0;
    }

    // The source is marked first: a redirect it cannot have (EXDEV) must leave the target
    // as it was, its whiteout included.
    if (int err = mark_moved_dir(src, dst_lower_below)) return err;
    // An upper target that is a whiteout, or a directory holding only whiteouts, goes next.
    // A pure-upper target directory is left to the rename itself in the kernel, after the
    // source is marked: it is checked for emptiness, and removed, only then.
    struct stat tst;
    bool target_in_upper = fstatat(to.dirfd, to.c_name(), &tst, AT_SYMLINK_NOFOLLOW) == 0;
    bool pure_upper_target =
        target_in_upper && S_ISDIR(tst.st_mode) && dst && dst->is_dir() && dst->lowers.empty();
    if (target_in_upper && S_ISDIR(tst.st_mode) && !pure_upper_target) {
        if (int err = remove_upper_dir_locked(new_parent, to, false)) return err;
    } else if (target_in_upper && src->is_dir() && !S_ISDIR(tst.st_mode)) {
        // A directory cannot replace the whiteout in one rename(2).
        if (unlinkat(to.dirfd, to.c_name(), 0) != 0) return errno;
    }
    if (pure_upper_target) {
        if (int err = require_empty(dst)) return err;
        if (int err = remove_upper_dir_locked(new_parent, to, false)) return err;
    }
    if (Node* old = table_.find(new_parent, new_name)) keep_open_copy_locked(old);
    if (src_lower_remains) {
        if (int err = leave_whiteout_locked(parent, from, &to)) return err;
    } else if (renameat2(from.dirfd, from.c_name(), to.dirfd, to.c_name(), 0) != 0) {
        return errno;
    }
    if (Node* old = table_.find(new_parent, new_name)) {
        invalidate_peers(old);
        table_.unhash(old);
    }
    if (Node* moved = table_.find(parent, name)) table_.rename(moved, new_parent, new_name);
    return 0;
}

}  // namespace lamina
