// Opening files: read-only opens use the copy where it lies; opens for writing copy up first.
#include <fcntl.h>
#include <sys/stat.h>

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

int Overlay::open(Node* node, int flags, const Credentials&, std::unique_ptr<FileHandle>& out) {
    if (node->unlinked) return ENOENT;  // raced with unlink: its path names something else
    auto fh = std::make_unique<FileHandle>();
    fh->node = node;
    fh->flags = flags;
    if (wants_write(flags)) {
        if (int err = check_writable()) return err;
        std::unique_lock lock(tree_);
        if (int err = copy_up_locked(node)) return err;
        std::string p = path_of(node);
        fh->fd.reset(openat(stack_.fd(kUpperLayer), p.c_str(), layer_open_flags(flags)));
        if (!fh->fd) return errno;
        if (flags & O_TRUNC) invalidate_peers(node);  // other names of the file were truncated too
    } else {
        std::shared_lock lock(tree_);
        if (node->in_upper) {
            std::string p = path_of(node);
            fh->fd.reset(openat(stack_.fd(kUpperLayer), p.c_str(), layer_open_flags(flags)));
        } else {
            fh->fd.reset(openat(stack_.fd(node->top_layer()), node->lower_path.c_str(),
                                layer_open_flags(flags)));
            fh->on_lower = true;
        }
        if (!fh->fd) return errno;
    }
    node->open_count++;
    out = std::move(fh);
    return 0;
}

void Overlay::release(std::unique_ptr<FileHandle> fh) {
    if (fh && fh->node) fh->node->open_count--;
}

int Overlay::sync_handle(FileHandle& fh) {
    std::shared_lock lock(tree_);
    const Node* node = fh.node;
    if (!fh.on_lower || !node->in_upper) return 0;
    int flags = layer_open_flags(fh.flags & ~O_TRUNC);
    UniqueFd fd;
    if (!node->unlinked) {
        fd.reset(openat(stack_.fd(kUpperLayer), path_of(node).c_str(), flags));
    } else if (node->unlinked_fd) {
        // The name is gone; the upper copy lives on through the descriptor kept at unlink.
        std::string proc = "/proc/self/fd/" + std::to_string(node->unlinked_fd.get());
        fd.reset(::open(proc.c_str(), flags & ~O_NOFOLLOW));
    } else {
        return 0;
    }
    if (!fd) return errno;
    fh.retired_fd = std::move(fh.fd);
    fh.fd = std::move(fd);
    fh.on_lower = false;
    return 0;
}

}  // namespace lamina
