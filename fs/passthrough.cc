// FUSE passthrough negotiated beneath libfuse 3.14: see passthrough.h.
#include "passthrough.h"

#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <spdlog/spdlog.h>

namespace lamina {

using passthrough::Allow;
using passthrough::Grant;
using passthrough::Mode;

namespace {

// Protocol 7.40 names that Debian 12's <linux/fuse.h> (7.37) does not have yet.
constexpr uint64_t kInitPassthrough = 1ULL << 37;  // FUSE_PASSTHROUGH, in flags2 as bit 5
struct BackingMap {                                // struct fuse_backing_map
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
constexpr unsigned long kBackingOpen = _IOW(229, 1, BackingMap);  // FUSE_DEV_IOC_BACKING_OPEN
constexpr unsigned long kBackingClose = _IOW(229, 2, uint32_t);   // FUSE_DEV_IOC_BACKING_CLOSE
// fuse_init_out.max_stack_depth took the first of 7.37's unused words. The layers must not
// themselves be stacked filesystems (overlayfs, FUSE): with a depth of 1, laminafs can still be a
// lower layer of a kernel overlay.
constexpr uint32_t kMaxStackDepth = 1;

}  // namespace

void Passthrough::log_outcome(bool insist) const {
    if (active())
        spdlog::info("passthrough: on; open files are read and written by the kernel directly");
    else if (insist)
        spdlog::warn("passthrough: off: {}", reason_);
    else
        spdlog::info("passthrough: off: {}", reason_);
}

void Passthrough::negotiate(uint64_t kernel_flags, fuse_init_out* out, bool insist) {
    if (!out) {
        reason_ = "libfuse refused the INIT request";
    } else if (!(kernel_flags & kInitPassthrough)) {
        reason_ = "the kernel does not offer FUSE passthrough (Linux 6.9+ with FUSE_PASSTHROUGH)";
    } else if (out->flags & FUSE_WRITEBACK_CACHE) {
        reason_ = "the writeback cache is on, and the kernel allows one or the other";
    } else {
        out->flags |= FUSE_INIT_EXT;
        out->flags2 |= static_cast<uint32_t>(kInitPassthrough >> 32);
        out->unused[0] = kMaxStackDepth;
        reason_ = "";
        active_.store(true);
    }
    log_outcome(insist);
}

Grant Passthrough::acquire(const Node* node, int fd, Allow allow) {
    if (!active()) return {};
    std::lock_guard lock(mu_);
    auto it = nodes_.find(node);
    if (it != nodes_.end() && it->second.passthrough_opens > 0) {
        // Every open of an inode that has passthrough opens must pass through, to the same file.
        struct stat st;
        NodeModes& m = it->second;
        if (allow == Allow::CachedOnly) return {Mode::Busy, 0};
        if (fstat(fd, &st) != 0 || st.st_dev != m.dev || st.st_ino != m.ino) return {Mode::Busy, 0};
        m.passthrough_opens++;
        return {Mode::Passthrough, m.backing_id, true};
    }
    NodeModes& m = nodes_[node];
    struct stat st;
    if (allow != Allow::Pass || m.cached_opens > 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        m.cached_opens++;
        return {Mode::Cached, 0, true};
    }
    BackingMap map{fd, 0, 0};
    int id = ioctl(devfd_, kBackingOpen, &map);
    if (id <= 0) {
        int err = errno;
        if (err == EPERM) {
            reason_ = "registering backing files needs CAP_SYS_ADMIN";
            active_.store(false);
        }
        spdlog::debug("passthrough: backing open failed: {}", std::strerror(err));
        m.cached_opens++;
        return {Mode::Cached, 0, true};
    }
    m.backing_id = id;
    m.passthrough_opens = 1;
    m.dev = st.st_dev;
    m.ino = st.st_ino;
    return {Mode::Passthrough, id, true};
}

void Passthrough::release(const Node* node, Grant& grant) {
    if (!grant.held) return;
    grant.held = false;
    std::lock_guard lock(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return;
    NodeModes& m = it->second;
    if (grant.mode == Mode::Passthrough) {
        if (--m.passthrough_opens == 0) {
            uint32_t id = static_cast<uint32_t>(m.backing_id);
            if (ioctl(devfd_, kBackingClose, &id) != 0)
                spdlog::debug("passthrough: backing close failed: {}", std::strerror(errno));
            m.backing_id = 0;
        }
    } else if (m.cached_opens > 0) {
        m.cached_opens--;
    }
    if (m.passthrough_opens == 0 && m.cached_opens == 0) nodes_.erase(it);
}

}  // namespace lamina
