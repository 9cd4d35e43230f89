// Opening files: read-only opens use the copy where it lies; opens for writing copy up first.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include "overlay.h"

namespace lamina {

namespace {

bool wants_write(int flags) {
    return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

// The flags a layer open gets: creation is done already, and never follow a symlink. O_DIRECT
// is the kernel's business (the handle is opened direct_io): our buffers are not aligned.
int layer_open_flags(int flags) {
    return (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT)) | O_CLOEXEC | O_NOFOLLOW;
}

}  // namespace

int Overlay::open(Node* node, int flags, const Credentials& cred,
                  std::unique_ptr<FileHandle>& out) {
    // Raced with unlink: its path names something else; or superseded: look the name up again.
    if (node->unlinked) return gone_error(node);
    if (int err = complete_lazy_lower(node)) return err;
    auto fh = std::make_unique<FileHandle>();
    fh->node = node;
    fh->flags = flags;
    if (wants_write(flags)) {
        if (int err = check_writable()) return err;
        std::unique_lock lock(tree_);
        if (int err = copy_up_locked(node)) return err;
        Place at;
        if (int err = upper_place(node, at)) return err;
        int dirfd = at.dirfd;
        fh->fd.reset(open_maybe_noatime(layer_open_flags(flags) | atime_flag(true, false),
                                        [&](int f) { return openat(dirfd, at.c_name(), f); }));
        if (!fh->fd) return errno;
        if (flags & O_TRUNC) {
            invalidate_peers(node);  // other names of the file were truncated too
            mode_t clear;
            struct stat st;
            if (int err = setid_to_clear_locked(node, fh->fd.get(), cred, false, clear, st))
                return err;
            if (int err = clear_setid_locked(node, fh->fd.get(), clear, st)) return err;
        }
    } else {
        // Borrowing the descriptor once now reports a failing open at open(2), as the kernel
        // would, and leaves it pooled for the reads that follow.
        std::shared_lock lock(tree_);
        FileFd probe;
        if (int err = file_fd_locked(*fh, probe)) return err;
    }
    node->open_count++;
    out = std::move(fh);
    return 0;
}

// A lower copy in a lazy layer may be a placeholder: the helper completes it first (a read or
// a copy-up). The wait happens outside the tree lock, so nothing else waits on a slow registry.
int Overlay::complete_lazy_lower(const Node* node) {
    if (!lazy_) return 0;
    LayerNo layer = 0;
    std::string rel;
    {
        std::shared_lock lock(tree_);
        if (node->in_upper || node->lowers.empty()) return 0;
        layer = node->lowers[0];
        rel = node->lower_path_in(0);
    }
    return lazy_->ensure_complete(layer, rel);
}

int Overlay::atime_flag(bool upper, bool dir) const {
    if (!upper || opts_.noatime || (dir && opts_.nodiratime)) return O_NOATIME;
    return 0;
}

void Overlay::supersede(Node* node) {
    std::unique_lock lock(tree_);
    if (node->unlinked) return;
    keep_open_copy_locked(node);  // what its handles and attribute requests reach from now on
    node->superseded = true;
    table_.unhash(node);
}

void Overlay::release(std::unique_ptr<FileHandle> fh) {
    if (!fh || !fh->node) return;
    // The last handle of the node: nothing will read through its pooled descriptor any more.
    if (fh->node->open_count.fetch_sub(1) == 1) read_fds_.drop(fh->node);
}

int Overlay::file_fd(FileHandle& fh, FileFd& out) {
    if (fh.fd) return file_fd_locked(fh, out);  // its own descriptor needs no lock
    // A pooled descriptor needs no lock either: in_upper only ever turns true, and until a
    // copy-up has finished the lower copy is the file.
    bool upper = fh.node->in_upper;
    if (ReadFdPool::Fd fd = read_fds_.find(fh.node, upper)) {
        out = FileFd{fd->get(), upper, std::move(fd)};
        return 0;
    }
    std::shared_lock lock(tree_);
    return file_fd_locked(fh, out);
}

int Overlay::file_fd_locked(FileHandle& fh, FileFd& out) {
    if (fh.fd) {
        out = FileFd{fh.fd.get(), true, nullptr};
        return 0;
    }
    const Node* node = fh.node;
    bool upper = node->in_upper;
    ReadFdPool::Fd fd = read_fds_.find(node, upper);
    if (!fd) {
        constexpr int kReadFlags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW;
        UniqueFd opened;
        if (node->unlinked) {
            // The name is gone; the copy lives on through the descriptor kept at unlink.
            if (!node->unlinked_fd) return ENOENT;
            std::string proc = "/proc/self/fd/" + std::to_string(node->unlinked_fd.get());
            opened.reset(::open(proc.c_str(), kReadFlags & ~O_NOFOLLOW));
        } else {
            Place at;
            if (int err = upper ? upper_place(node, at) : lower_place(node, at)) return err;
            opened.reset(open_maybe_noatime(kReadFlags | atime_flag(upper, false), [&](int f) {
                return openat(at.dirfd, at.c_name(), f);
            }));
        }
        if (!opened) return errno;
        fd = read_fds_.insert(node, upper, std::move(opened));
    }
    out = FileFd{fd->get(), upper, std::move(fd)};
    return 0;
}

int Overlay::fstat_open(FileHandle& fh, struct stat& st) {
    std::shared_lock lock(tree_);  // fix_stat may need the node's path
    FileFd fd;
    if (int err = file_fd_locked(fh, fd)) return err;
    if (fstat(fd.fd, &st) != 0) return errno;
    fix_stat(fh.node, st);
    return 0;
}

size_t read_fd_pool_limit() {
    // A fraction of the descriptor limit, leaving the rest to write handles, directories and
    // the kept copies of unlinked files; beyond 1024 idle descriptors reopening is cheap enough.
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 64;
    return std::clamp<size_t>(rl.rlim_cur / 8, 64, 1024);
}

}  // namespace lamina
