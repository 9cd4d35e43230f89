// Opening files: read-only opens use the copy where it lies; opens for writing copy up first.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

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
        fh->fd.reset(
            open_maybe_noatime(layer_open_flags(flags) | stack_.noatime_flag(kUpperLayer, false),
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
        lock.unlock();
        if (int err = complete_lazy_lower(*fh, probe)) return err;
    }
    node->open_count++;
    out = std::move(fh);
    return 0;
}

// A lower copy in a lazy layer may be a placeholder, or evicted: the fetcher completes it while
// fd, which the handle keeps, holds it (copy-up does the same with its own descriptor). The
// wait happens outside the tree lock, so nothing else waits on a slow registry.
int Overlay::complete_lazy_lower(FileHandle& fh, const FileFd& fd) {
    if (!lazy_ || fd.upper || !fd.borrowed) return 0;
    LayerNo layer = 0;
    std::string rel;
    {
        std::shared_lock lock(tree_);
        const Node* node = fh.node;
        if (node->lowers.empty() || !lazy_->is_lazy(node->lowers[0])) return 0;
        layer = node->lowers[0];
        rel = node->lower_path_in(0);
    }
    fh.lazy_lower = fd.borrowed;
    return lazy_->ensure_complete(layer, rel, fd.fd);
}

void Overlay::supersede(Node* node) {
    std::unique_lock lock(tree_);
    if (node->unlinked) return;
    keep_open_copy_locked(node);  // what its handles and attribute requests reach from now on
    node->superseded = true;
    table_.unhash(node);
}

void Overlay::hand_over(std::unique_ptr<FileHandle> fh) {
    std::lock_guard lock(handed_mu_);
    handed_.insert(fh.release());
}

std::unique_ptr<FileHandle> Overlay::take_back(FileHandle* fh) {
    std::lock_guard lock(handed_mu_);
    handed_.erase(fh);
    return std::unique_ptr<FileHandle>(fh);
}

void Overlay::release(std::unique_ptr<FileHandle> fh) {
    if (!fh || !fh->node) return;
    if (passthrough_) passthrough_->release(fh->node, fh->grant);
    // The last handle of the node: nothing will read through its pooled descriptor any more.
    if (fh->node->open_count.fetch_sub(1) == 1) read_fds_.drop(fh->node);
}

int Overlay::file_fd(FileHandle& fh, FileFd& out) {
    if (fh.fd) return file_fd_locked(fh, out);  // its own descriptor needs no lock
    // A pooled descriptor needs no lock either: in_upper only ever turns true, and until a
    // copy-up has finished the lower copy is the file.
    bool upper = fh.node->in_upper;
    if (!upper && fh.lazy_lower) {
        out = FileFd{fh.lazy_lower->get(), false, fh.lazy_lower};
        return 0;
    }
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
    if (!upper && fh.lazy_lower) {
        out = FileFd{fh.lazy_lower->get(), false, fh.lazy_lower};
        return 0;
    }
    ReadFdPool::Fd fd = read_fds_.find(node, upper);
    if (!fd) {
        constexpr int kReadFlags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW;
        UniqueFd opened;
        if (node->unlinked) {
            // The name is gone; the copy lives on through the descriptor kept at unlink.
            if (!node->unlinked_fd) return ENOENT;
            std::string proc = proc_fd_link(node->unlinked_fd.get());
            opened.reset(::open(proc.c_str(), kReadFlags & ~O_NOFOLLOW));
        } else {
            Place at;
            if (int err = upper ? upper_place(node, at) : lower_place(node, at)) return err;
            opened.reset(open_maybe_noatime(
                kReadFlags | stack_.noatime_flag(upper ? kUpperLayer : node->lowers[0], false),
                [&](int f) { return openat(at.dirfd, at.c_name(), f); }));
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

int Overlay::open_mode(FileHandle& fh, int flags, OpenMode& out) {
    // Lower files never change, and upper files change only through this mount, so the page
    // cache stays valid across opens. O_DIRECT opens bypass it, as on the layer's filesystem.
    auto cached = [&] {
        out.kind = (flags & O_DIRECT) ? OpenMode::Direct : OpenMode::Cached;
        return 0;
    };
    if (!passthrough_ || !passthrough_->active()) return cached();
    // Writes to a file with other names stay with the daemon, which keeps the other names'
    // cached attributes coherent, and so do writes to a file with set-id bits, which the daemon
    // clears on a write (a passthrough write would keep them).
    bool writes = (flags & O_ACCMODE) != O_RDONLY;
    auto allow = passthrough::Allow::Pass;
    if ((flags & O_DIRECT) || (writes && fh.node->has_peers))
        allow = passthrough::Allow::PreferCached;
    if (writes && has_setid(fh)) allow = passthrough::Allow::CachedOnly;
    FileFd fd;
    if (int err = file_fd(fh, fd)) return err;
    fh.grant = passthrough_->acquire(fh.node, fd.fd, allow);
    switch (fh.grant.mode) {
        case passthrough::Mode::Passthrough:
            out.kind = OpenMode::Passthrough;
            out.backing_id = fh.grant.backing_id;
            return 0;
        case passthrough::Mode::Busy:
            // The kernel would refuse this open beside the node's others (they pass through to
            // the lower copy): the name gets a new node (see supersede).
            supersede(fh.node);
            out.kind = OpenMode::Superseded;
            return 0;
        case passthrough::Mode::Cached:
            return cached();
    }
    return cached();
}

int Overlay::before_write(FileHandle& fh, const Credentials& cred) {
    return cred.kill_setid ? clear_setid_for_write(fh, cred) : 0;
}

void Overlay::after_write(FileHandle& fh) {
    // Other names of the file changed size or data too: their cached attributes go.
    if (fh.node->has_peers) invalidate_peers(fh.node);
}

int Overlay::fsync(FileHandle& fh, bool datasync) {
    if (!opts_.fsync) return 0;
    FileFd fd;
    if (int err = file_fd(fh, fd)) return err;
    return (datasync ? fdatasync(fd.fd) : ::fsync(fd.fd)) == 0 ? 0 : errno;
}

int Overlay::fallocate(FileHandle& fh, int mode, off_t offset, off_t length,
                       const Credentials& cred) {
    if (int err = before_write(fh, cred)) return err;
    FileFd fd;
    if (int err = file_fd(fh, fd)) return err;
    if (::fallocate(fd.fd, mode, offset, length) != 0) return errno;
    after_write(fh);
    return 0;
}

int Overlay::lseek(FileHandle& fh, off_t off, int whence, off_t& out) {
    FileFd fd;
    if (int err = file_fd(fh, fd)) return err;
    out = ::lseek(fd.fd, off, whence);
    return out < 0 ? errno : 0;
}

int Overlay::copy_file_range(FileHandle& in, off_t off_in, FileHandle& out, off_t off_out,
                             size_t len, int flags, const Credentials& cred, size_t& copied) {
    if (int err = before_write(out, cred)) return err;
    FileFd from, to;
    if (int err = file_fd(in, from)) return err;
    if (int err = file_fd(out, to)) return err;
    ssize_t n =
        ::copy_file_range(from.fd, &off_in, to.fd, &off_out, len, static_cast<unsigned>(flags));
    if (n < 0) return errno;
    copied = static_cast<size_t>(n);
    after_write(out);
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
