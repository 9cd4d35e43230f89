// Operations that make and remove names: create, mkdir, mknod, symlink, link, unlink, rmdir
// (rename is in rename.cc). New entries are made in the work dir and renamed into place, over a
// whiteout when there is one.
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <functional>

#include "acl.h"
#include "dir_index.h"
#include "overlay.h"
#include "path_util.h"
#include "resolve.h"

namespace lamina {

namespace {

// Names of the OCI whiteout form would hide something once the layer is exported or used as a
// lower layer, so they cannot be created through the mount.
bool is_reserved_name(std::string_view name) {
    return name.starts_with(kOciWhiteoutPrefix);
}

}  // namespace

bool Overlay::lower_has_name(Node* parent, std::string_view name) {
    if (parent->opaque || parent->lowers.empty()) return false;
    // Held while the entry is read: the cache may drop the index at any time (ASan found this
    // with dir_cache_entries=2).
    std::shared_ptr<const DirIndex> index = dir_index(parent);
    const LowerEntry* e = index->find(name);
    if (!e || e->whiteout) return false;
    if (e->dtype != DT_REG) return true;
    // The index lists the xattr whiteouts readdir shows (in the bottom layer, in directories not
    // marked 'x'); the kernel's ovl_lower_positive still takes them for whiteouts.
    UniqueFd dir(open_beneath(stack_.fd(e->layer), index->path_in(e->layer), O_PATH | O_DIRECTORY));
    struct stat st;
    std::string sname(name);
    if (!dir || fstatat(dir.get(), sname.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return true;
    return !is_whiteout(st, proc_fd_path(dir.get(), sname));
}

int Overlay::set_upper_xattr(const std::string& xattr_path, std::string_view suffix,
                             std::string_view value) {
    std::string name = overlay_xattr(flavour_, suffix);
    if (lsetxattr(xattr_path.c_str(), name.c_str(), value.data(), value.size(), 0) != 0)
        return errno;
    return 0;
}

int Overlay::make_whiteout_at_locked(Node* parent, const Place& at) {
    if (mknodat(at.dirfd, at.c_name(), S_IFCHR | 0, makedev(0, 0)) == 0) return 0;
    if (errno != EPERM) return errno;
    // Device nodes refused (an unprivileged daemon where whiteout devices are not allowed): the
    // kernel's xattr whiteout, in a parent marked 'x' so that readdir hides it too.
    UniqueFd fd(
        openat(at.dirfd, at.c_name(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0));
    if (!fd) return errno;
    std::string wname = overlay_xattr(flavour_, "whiteout");
    int err = fsetxattr(fd.get(), wname.c_str(), "y", 1, 0) == 0 ? 0 : errno;
    if (!err)
        err = set_upper_xattr(proc_fd_path(at.dirfd, ""), "opaque",
                              std::string_view(&kHoldsXattrWhiteouts, 1));
    if (err) {
        unlinkat(at.dirfd, at.c_name(), 0);  // an empty file would show where nothing should
        return err;
    }
    parent->xwhiteouts = true;
    return 0;
}

int Overlay::leave_whiteout_locked(Node* parent, const Place& at, const Place* move_to) {
    if (!move_to) return make_whiteout_at_locked(parent, at);
    if (renameat2(at.dirfd, at.c_name(), move_to->dirfd, move_to->c_name(), RENAME_WHITEOUT) == 0)
        return 0;
    // The upper filesystem, or the daemon's privilege, does not allow it in one step.
    if (renameat2(at.dirfd, at.c_name(), move_to->dirfd, move_to->c_name(), 0) != 0) return errno;
    int err = make_whiteout_at_locked(parent, at);
    if (err) renameat2(move_to->dirfd, move_to->c_name(), at.dirfd, at.c_name(), RENAME_NOREPLACE);
    return err;
}

int Overlay::prepare_new_name_locked(Node* parent, std::string_view name, Place& dst) {
    // A parent copied up here is a new, empty directory: no whiteout in it to replace.
    if (int err = copy_up_locked(parent)) return err;
    return upper_child_place(parent, name, dst);
}

int Overlay::install_from_work_locked(const std::string& tmp, const Place& dst,
                                      bool replace_whiteout) {
    int work = stack_.work_fd();
    if (replace_whiteout) {
        if (renameat2(work, tmp.c_str(), dst.dirfd, dst.c_name(), RENAME_EXCHANGE) != 0)
            return errno;
        unlinkat(work, tmp.c_str(), 0);  // the whiteout, now in the work dir
        return 0;
    }
    if (renameat2(work, tmp.c_str(), dst.dirfd, dst.c_name(), RENAME_NOREPLACE) != 0) return errno;
    return 0;
}

std::optional<InheritedAcl> Overlay::inherited_acl_locked(int parent_fd, mode_t mode) {
    char buf[4096];
    ssize_t n = lgetxattr(proc_fd_path(parent_fd, "").c_str(), kAclDefaultXattr, buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    return inherit_acl(std::string(buf, static_cast<size_t>(n)), mode);
}

int Overlay::set_inherited_acl(const std::string& xattr_path, const InheritedAcl& acl) {
    const char* path = xattr_path.c_str();
    if (!acl.access.empty() &&
        lsetxattr(path, kAclAccessXattr, acl.access.data(), acl.access.size(), 0) != 0)
        return errno;
    if (!acl.default_acl.empty() &&
        lsetxattr(path, kAclDefaultXattr, acl.default_acl.data(), acl.default_acl.size(), 0) != 0)
        return errno;
    return 0;
}

Overlay::NewOwner Overlay::new_owner_locked(Node* parent, const Credentials& cred, mode_t mode) {
    // The caller's ids are what the mount shows; the disk gets them through the id mapping.
    uid_t uid = ids_.disk_uid(cred.uid);
    gid_t gid = ids_.disk_gid(cred.gid);
    struct stat pst;
    UniqueFd parent_scratch;
    int parent_fd = -1;
    bool setgid_parent = false;
    if (upper_dir_fd(parent, parent_scratch, parent_fd) == 0 &&
        fstatat(parent_fd, ".", &pst, AT_SYMLINK_NOFOLLOW) == 0) {
        if (use_override_) {
            if (auto o = read_override_stat(proc_fd_path(parent_fd, ""))) {
                pst.st_gid = o->gid;
                pst.st_mode = (pst.st_mode & S_IFMT) | (o->mode & 07777);
            }
        }
        setgid_parent = pst.st_mode & S_ISGID;
    }
    if (setgid_parent) gid = pst.st_gid;
    // A directory in a setgid parent inherits the bit, which the work dir did not pass on.
    mode_t perm = mode & 07777;
    if (S_ISDIR(mode) && setgid_parent) perm |= S_ISGID;
    return NewOwner{uid, gid, perm};
}

int Overlay::set_new_owner(int dirfd, const char* name, const Credentials& cred, Node* parent,
                           mode_t mode, dev_t rdev, bool device_as_file) {
    auto [uid, gid, perm] = new_owner_locked(parent, cred, mode);
    // The daemon runs with umask 0, so an entry made as the daemon's own user (root making
    // root's files, the common case in a container) already has the owner and mode it needs.
    struct stat made;
    if (!device_as_file && fstatat(dirfd, name, &made, AT_SYMLINK_NOFOLLOW) == 0 &&
        made.st_uid == uid && made.st_gid == gid &&
        (S_ISLNK(mode) || (made.st_mode & 07777) == perm))
        return 0;
    bool overridden = false;
    if (int err = chown_or_override(dirfd, name, proc_fd_path(dirfd, name), uid, gid,
                                    (mode & S_IFMT) | perm, rdev, device_as_file, overridden))
        return err;
    if (S_ISLNK(mode)) return 0;
    // Set after chown, which drops set-id bits.
    if (overridden) perm = host_mode_under_override(perm, S_ISDIR(mode));
    return fchmodat(dirfd, name, perm, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

int Overlay::finish_entry_locked(Node* parent, std::string_view name, EntryReply& out) {
    std::unique_ptr<Node> fresh;
    if (int err = lookup_locked(parent, name, fresh, out.st)) return err;
    if (Node* old = table_.find(parent, name)) table_.unhash(old);
    insert_looked_up(parent, name, fresh, out);
    invalidate_peers(out.node);  // a new link changes every name's st_nlink
    return 0;
}

int Overlay::create(Node* parent, std::string_view name, mode_t mode, int flags,
                    const Credentials& cred, EntryReply& out, std::unique_ptr<FileHandle>& fh) {
    int open_flags = (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_DIRECT)) | O_CREAT |
                     O_EXCL | O_CLOEXEC;
    UniqueFd fd;
    auto make = [&](int work, const char* tmp) {
        fd.reset(openat(work, tmp, open_flags, mode & 07777));
        return fd ? 0 : errno;
    };
    if (int err = create_entry(parent, name, make, S_IFREG | (mode & 07777), cred, out)) return err;
    fh = open_handle(out.node, flags, std::move(fd));
    return 0;
}

std::unique_ptr<FileHandle> Overlay::open_handle(Node* node, int flags, UniqueFd fd) {
    auto fh = std::make_unique<FileHandle>();
    node->open_count++;
    fh->node = node;
    fh->flags = flags;
    fh->fd = std::move(fd);
    return fh;
}

int Overlay::create_tmpfile(Node* parent, mode_t mode, int flags, const Credentials& cred,
                            EntryReply& out, std::unique_ptr<FileHandle>& fh) {
    if (int err = check_writable()) return err;
    std::unique_lock lock(tree_);
    if (int err = copy_up_locked(parent)) return err;
    UniqueFd scratch;
    int dirfd;
    if (int err = upper_dir_fd(parent, scratch, dirfd)) return err;
    mode_t perm = mode & 07777;
    std::optional<InheritedAcl> acl;
    if (cred.apply_umask) {
        acl = inherited_acl_locked(dirfd, S_IFREG | perm);
        perm = acl ? acl->mode & 07777 : perm & ~(cred.umask & 0777);
    }
    // O_EXCL: never to be linked, as the caller asked.
    int open_flags = O_TMPFILE | O_CLOEXEC | (flags & (O_ACCMODE | O_EXCL | O_APPEND));
    UniqueFd fd(openat(dirfd, ".", open_flags, perm));
    if (!fd) return errno;
    // The file has no name for the *at() calls: everything goes through its descriptor. A
    // daemon without the right to give it away keeps it (as a chown would).
    NewOwner owner = new_owner_locked(parent, cred, S_IFREG | perm);
    if (fchown(fd.get(), owner.uid, owner.gid) != 0 && errno != EPERM && errno != EINVAL)
        return errno;
    if (fchmod(fd.get(), owner.perm) != 0) return errno;  // after the chown, which drops set-id
    if (acl && fsetxattr(fd.get(), kAclAccessXattr, acl->access.data(), acl->access.size(), 0) != 0)
        return errno;
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return errno;
    auto fresh = std::make_unique<Node>();
    fresh->type = S_IFREG;
    fresh->in_upper = true;
    // What getattr, and a link into place, reach it by.
    fresh->unlinked_fd.reset(::open(proc_fd_link(fd.get()).c_str(), O_PATH | O_CLOEXEC));
    if (!fresh->unlinked_fd) return errno;
    out.node = table_.insert_unnamed(parent, fresh);
    // Known by its upper inode, so that once linked the name's node is its peer: a write through
    // either drops what the kernel caches of the other (fuzzer seed 31, depth 1).
    table_.set_upper_ino(out.node, st.st_ino);
    fix_stat(out.node, st);
    out.node->ino = st.st_ino;
    out.st = st;
    fh = open_handle(out.node, flags, std::move(fd));
    return 0;
}

int Overlay::mknod(Node* parent, std::string_view name, mode_t mode, dev_t rdev,
                   const Credentials& cred, EntryReply& out) {
    if (is_whiteout_device(mode, rdev))
        return EPERM;  // a whiteout cannot be made through the mount
    bool device = S_ISCHR(mode) || S_ISBLK(mode);
    bool as_file = false;
    auto make = [&](int work, const char* tmp) {
        if (mknodat(work, tmp, mode, rdev) == 0) return 0;
        if (errno != EPERM || !device || !use_override_) return errno;
        // No right to make devices: a regular file that the override makes one (containers'
        // rootless convention; the kernel sees the device through the mount).
        UniqueFd fd(openat(work, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!fd) return errno;
        as_file = true;
        return 0;
    };
    return create_entry(parent, name, make, mode, cred, out, rdev, &as_file);
}

int Overlay::mkdir(Node* parent, std::string_view name, mode_t mode, const Credentials& cred,
                   EntryReply& out) {
    return create_entry(
        parent, name,
        [&](int work, const char* tmp) {
            return mkdirat(work, tmp, mode & 07777) == 0 ? 0 : errno;
        },
        S_IFDIR | (mode & 07777), cred, out);
}

int Overlay::symlink(const char* target, Node* parent, std::string_view name,
                     const Credentials& cred, EntryReply& out) {
    return create_entry(
        parent, name,
        [&](int work, const char* tmp) { return symlinkat(target, work, tmp) == 0 ? 0 : errno; },
        S_IFLNK, cred, out);
}

int Overlay::claim_new_name_locked(Node* parent, std::string_view name, bool& over_whiteout) {
    parent->name_changes++;  // readdir.cc: listings of parent are stale
    std::unique_ptr<Node> probe;
    struct stat st;
    int err = lookup_locked(parent, name, probe, st, &over_whiteout);
    if (err == 0) return EEXIST;
    return err == ENOENT ? 0 : err;
}

int Overlay::create_entry(Node* parent, std::string_view name,
                          const std::function<int(int, const char*)>& make, mode_t mode,
                          const Credentials& cred, EntryReply& out, dev_t rdev,
                          const bool* device_as_file) {
    bool is_dir = S_ISDIR(mode);
    if (int err = check_writable()) return err;
    if (is_reserved_name(name)) return EINVAL;
    std::unique_lock lock(tree_);
    bool over_whiteout;
    int err = claim_new_name_locked(parent, name, over_whiteout);
    if (err) return err;
    Place dst;
    if ((err = prepare_new_name_locked(parent, name, dst))) return err;
    // The mode and ACLs the new entry inherits, where the daemon applies the umask (acl.h).
    std::optional<InheritedAcl> acl;
    if (cred.apply_umask && !S_ISLNK(mode)) {
        acl = inherited_acl_locked(dst.dirfd, mode);
        mode_t perm = acl ? acl->mode & 07777 : (mode & 07777) & ~(cred.umask & 0777);
        mode = (mode & S_IFMT) | perm;
    }
    // make() tells whether it had to keep a device as a regular file.
    auto made_as_file = [&] { return device_as_file && *device_as_file; };
    // A directory made where a lower one was deleted must not show the old contents again.
    bool needs_opaque = is_dir && (over_whiteout || lower_has_name(parent, name));
    if (!over_whiteout && !needs_opaque) {
        // Nothing to replace and nothing to mark: made in place, as the kernel does. The tree
        // lock keeps the entry out of sight until its owner is right.
        if ((err = make(dst.dirfd, dst.c_name()))) return err;
        err = set_new_owner(dst.dirfd, dst.c_name(), cred, parent, mode, rdev, made_as_file());
        if (!err && acl) err = set_inherited_acl(proc_fd_path(dst.dirfd, dst.name), *acl);
        if (err) {
            unlinkat(dst.dirfd, dst.c_name(), is_dir ? AT_REMOVEDIR : 0);
            return err;
        }
        return finish_entry_locked(parent, name, out);
    }
    std::string tmp = work_temp_name();
    if ((err = make(stack_.work_fd(), tmp.c_str()))) return err;
    err = set_new_owner(stack_.work_fd(), tmp.c_str(), cred, parent, mode, rdev, made_as_file());
    if (!err && acl) err = set_inherited_acl(stack_.work_proc_path(tmp), *acl);
    if (!err && needs_opaque) err = set_upper_xattr(stack_.work_proc_path(tmp), "opaque", "y");
    if (!err) err = install_from_work_locked(tmp, dst, over_whiteout);
    if (err) {
        unlinkat(stack_.work_fd(), tmp.c_str(), is_dir ? AT_REMOVEDIR : 0);
        return err;
    }
    return finish_entry_locked(parent, name, out);
}

int Overlay::link(Node* node, Node* new_parent, std::string_view new_name, EntryReply& out) {
    if (int err = check_writable()) return err;
    if (node->is_dir()) return EPERM;
    if (is_reserved_name(new_name)) return EINVAL;
    std::unique_lock lock(tree_);
    bool over_whiteout;
    int err = claim_new_name_locked(new_parent, new_name, over_whiteout);
    if (err) return err;
    // An unnamed file (O_TMPFILE, or unlinked while open) is linked from its kept copy: the
    // upper filesystem allows that for an O_TMPFILE only, as the kernel's overlay does.
    bool unnamed = node->unlinked && node->in_upper && node->unlinked_fd;
    if (!unnamed && (err = copy_up_locked(node))) return err;
    Place dst;
    if ((err = prepare_new_name_locked(new_parent, new_name, dst))) return err;
    Place src;
    if (unnamed) {
        src.dirfd = AT_FDCWD;
        src.name = proc_fd_link(node->unlinked_fd.get());
    } else if ((err = upper_place(node, src))) {
        return err;
    }
    int link_flags = unnamed ? AT_SYMLINK_FOLLOW : 0;
    if (over_whiteout) {
        std::string tmp = work_temp_name();
        if (linkat(src.dirfd, src.c_name(), stack_.work_fd(), tmp.c_str(), link_flags) != 0)
            return errno;
        if ((err = install_from_work_locked(tmp, dst, true))) {
            unlinkat(stack_.work_fd(), tmp.c_str(), 0);
            return err;
        }
    } else if (linkat(src.dirfd, src.c_name(), dst.dirfd, dst.c_name(), link_flags) != 0) {
        return errno;
    }
    return finish_entry_locked(new_parent, new_name, out);
}

int Overlay::unlink(Node* parent, std::string_view name) {
    if (int err = check_writable()) return err;
    std::unique_lock lock(tree_);
    parent->name_changes++;
    std::unique_ptr<Node> child;
    struct stat st;
    if (int err = lookup_locked(parent, name, child, st)) return err;
    if (child->is_dir()) return EISDIR;
    if (int err = copy_up_locked(parent)) return err;
    if (Node* old = table_.find(parent, name)) keep_open_copy_locked(old);
    bool lower = lower_has_name(parent, name);
    Place at;
    if (int err = upper_child_place(parent, name, at)) return err;
    int err = 0;
    if (child->in_upper && lower) {
        Place work{{}, stack_.work_fd(), work_temp_name()};
        err = leave_whiteout_locked(parent, at, &work);
        if (!err) unlinkat(work.dirfd, work.c_name(), 0);
    } else if (child->in_upper) {
        if (unlinkat(at.dirfd, at.c_name(), 0) != 0) err = errno;
    } else {
        err = leave_whiteout_locked(parent, at, nullptr);
    }
    if (err) return err;
    if (Node* old = table_.find(parent, name)) {
        invalidate_peers(old);  // their st_nlink dropped
        table_.unhash(old);
    }
    return 0;
}

// Empty as the kernel's ovl_check_empty_dir decides: besides the names listed, a lower xattr
// whiteout counts as an entry (readdir hides it, the emptiness check does not), unless a
// whiteout in the upper directory covers it.
int Overlay::merged_is_empty_locked(Node* dir, bool& empty) {
    std::vector<MergedEntry> entries;
    if (int err = list_merged_locked(dir, entries, false)) return err;
    empty = entries.size() <= 2;  // "." and ".."
    if (!empty || dir->opaque || dir->lowers.empty()) return 0;
    auto index = dir_index(dir);
    UniqueFd scratch;
    int upper_fd = -1;
    if (dir->in_upper) {
        if (int err = upper_dir_fd(dir, scratch, upper_fd)) return err;
    }
    for (const LowerEntry& e : index->entries) {
        if (!e.xattr_whiteout) continue;
        struct stat st;
        // Listed nothing: whatever the upper directory holds under this name is a whiteout.
        if (upper_fd >= 0 && fstatat(upper_fd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
            continue;
        empty = false;
        return 0;
    }
    return 0;
}

// Takes an upper directory that holds nothing but whiteouts out of the tree: it is renamed into
// the work dir first (leaving a whiteout when lower layers still have the name), then emptied.
int Overlay::remove_upper_dir_locked(Node* parent, const Place& at, bool leave_whiteout) {
    int work = stack_.work_fd();
    Place taken{{}, work, work_temp_name()};
    const std::string& tmp = taken.name;
    if (leave_whiteout) {
        if (int err = leave_whiteout_locked(parent, at, &taken)) return err;
    } else if (renameat2(at.dirfd, at.c_name(), work, tmp.c_str(), 0) != 0) {
        return errno;
    }
    UniqueFd dir(openat(work, tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) {
        DIR* d = fdopendir(dup(dir.get()));
        if (d) {
            while (struct dirent* de = readdir(d)) {
                std::string_view n(de->d_name);
                if (n == "." || n == "..") continue;
                unlinkat(dir.get(), de->d_name, 0);
            }
            closedir(d);
        }
    }
    if (unlinkat(work, tmp.c_str(), AT_REMOVEDIR) != 0) return errno;
    return 0;
}

int Overlay::rmdir(Node* parent, std::string_view name) {
    if (int err = check_writable()) return err;
    std::unique_lock lock(tree_);
    parent->name_changes++;
    std::unique_ptr<Node> scratch;
    Node* child = nullptr;
    if (int err = existing_node_locked(parent, name, scratch, child)) return err;
    if (!child->is_dir()) return ENOTDIR;
    bool empty = false;
    if (int err = merged_is_empty_locked(child, empty)) return err;
    if (!empty) return ENOTEMPTY;
    if (int err = copy_up_locked(parent)) return err;
    bool lower = lower_has_name(parent, name);
    Place at;
    if (int err = upper_child_place(parent, name, at)) return err;
    int err = child->in_upper ? remove_upper_dir_locked(parent, at, lower)
                              : leave_whiteout_locked(parent, at, nullptr);
    if (err) return err;
    if (Node* old = table_.find(parent, name)) table_.unhash(old);
    return 0;
}

}  // namespace lamina
