// FUSE passthrough negotiated beneath libfuse 3.14: see passthrough.h.
#include "passthrough.h"

#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <spdlog/spdlog.h>

namespace lamina::passthrough {
namespace {

// Protocol 7.40 names that Debian 12's <linux/fuse.h> (7.37) does not have yet.
constexpr uint64_t kInitPassthrough = 1ULL << 37;  // FUSE_PASSTHROUGH, in flags2 as bit 5
constexpr uint32_t kOpenPassthrough = 1U << 7;     // FOPEN_PASSTHROUGH
struct BackingMap {                                // struct fuse_backing_map
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
constexpr unsigned long kBackingOpen = _IOW(229, 1, BackingMap);  // FUSE_DEV_IOC_BACKING_OPEN
constexpr unsigned long kBackingClose = _IOW(229, 2, uint32_t);   // FUSE_DEV_IOC_BACKING_CLOSE
// fuse_init_out.max_stack_depth took the first of 7.37's unused words; fuse_open_out.backing_id
// took its padding. The layers must not themselves be stacked filesystems (overlayfs, FUSE):
// with a depth of 1, laminafs can still be a lower layer of a kernel overlay.
constexpr uint32_t kMaxStackDepth = 1;
static_assert(sizeof(fuse_init_out) == 64 && sizeof(fuse_open_out) == 16);

// Open modes of one node that the kernel must not see mixed.
struct NodeModes {
    int backing_id = 0;
    int passthrough_opens = 0;
    int cached_opens = 0;
    dev_t dev = 0;  // the backing file, so an open of the same file can share it
    ino_t ino = 0;
};

struct State {
    int devfd = -1;
    std::atomic<bool> installed{false};
    std::atomic<bool> init_replied{false};
    std::atomic<bool> active{false};
    uint64_t init_unique = 0;  // set and read by the thread that handles INIT, before any other
    bool kernel_offers = false;
    const char* reason = "the passthrough option is off";
    std::mutex mu;
    std::unordered_map<const Node*, NodeModes> nodes;
};

State& state() {
    static State s;
    return s;
}

thread_local int pending_backing_id = 0;

}  // namespace

bool active();

namespace {

ssize_t dev_read(int fd, void* buf, size_t len, void*) {
    ssize_t n = ::read(fd, buf, len);
    State& s = state();
    if (!s.init_replied.load(std::memory_order_relaxed) &&
        n >= static_cast<ssize_t>(sizeof(fuse_in_header) + sizeof(fuse_init_in))) {
        const auto* h = static_cast<const fuse_in_header*>(buf);
        if (h->opcode == FUSE_INIT) {
            fuse_init_in in;
            std::memcpy(&in, static_cast<const char*>(buf) + sizeof *h, sizeof in);
            uint64_t flags = in.flags;
            if (flags & FUSE_INIT_EXT) flags |= static_cast<uint64_t>(in.flags2) << 32;
            s.kernel_offers = (flags & kInitPassthrough) != 0;
            s.init_unique = h->unique;
        }
    }
    return n;
}

// The INIT reply gains FUSE_PASSTHROUGH when the kernel offered it.
void patch_init(fuse_init_out& out) {
    State& s = state();
    if (!s.kernel_offers) {
        s.reason = "the kernel does not offer FUSE passthrough (Linux 6.9+ with FUSE_PASSTHROUGH)";
        return;
    }
    if (out.flags & FUSE_WRITEBACK_CACHE) {
        s.reason = "the writeback cache is on, and the kernel allows one or the other";
        return;
    }
    out.flags |= FUSE_INIT_EXT;
    out.flags2 |= static_cast<uint32_t>(kInitPassthrough >> 32);
    out.unused[0] = kMaxStackDepth;
    s.reason = "";
    s.active.store(true);
}

void log_outcome() {
    if (active())
        spdlog::info("passthrough: on; open files are read and written by the kernel directly");
    else
        spdlog::warn("passthrough: off: {}", state().reason);
}

ssize_t dev_writev(int fd, iovec* iov, int count, void*) {
    State& s = state();
    if (count == 2 && iov[0].iov_len == sizeof(fuse_out_header)) {
        const auto* h = static_cast<const fuse_out_header*>(iov[0].iov_base);
        if (pending_backing_id && h->unique != 0) {
            int id = pending_backing_id;
            pending_backing_id = 0;
            // An OPEN reply is a fuse_open_out; a CREATE reply has it after the fuse_entry_out.
            if (h->error == 0 && iov[1].iov_len >= sizeof(fuse_open_out) && iov[1].iov_len <= 256) {
                char copy[256];
                std::memcpy(copy, iov[1].iov_base, iov[1].iov_len);
                fuse_open_out out;
                char* at = copy + iov[1].iov_len - sizeof out;
                std::memcpy(&out, at, sizeof out);
                out.open_flags |= kOpenPassthrough;
                out.open_flags &= ~(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE);
                out.padding = static_cast<uint32_t>(id);
                std::memcpy(at, &out, sizeof out);
                iovec patched[2] = {iov[0], {copy, iov[1].iov_len}};
                return ::writev(fd, patched, 2);
            }
        } else if (!s.init_replied.load(std::memory_order_relaxed) && s.init_unique &&
                   h->unique == s.init_unique) {
            if (h->error == 0 && iov[1].iov_len == sizeof(fuse_init_out)) {
                fuse_init_out out;
                std::memcpy(&out, iov[1].iov_base, sizeof out);
                patch_init(out);
                iovec patched[2] = {iov[0], {&out, sizeof out}};
                s.init_replied.store(true);
                log_outcome();
                return ::writev(fd, patched, 2);
            }
            s.init_replied.store(true);
            log_outcome();
        }
    }
    return ::writev(fd, iov, count);
}

ssize_t dev_splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                        unsigned flags, void*) {
    return ::splice(fdin, offin, fdout, offout, len, flags);
}

}  // namespace

bool install(fuse_session* se) {
    State& s = state();
    int fd = fuse_session_fd(se);
    if (fd < 0) return false;
    // No splice_receive: requests are read with read(2), so INIT can be seen (laminafs never
    // asks for spliced requests anyway). Replies may still be spliced.
    static const fuse_custom_io io = {
        .writev = dev_writev,
        .read = dev_read,
        .splice_receive = nullptr,
        .splice_send = dev_splice_send,
    };
    if (fuse_session_custom_io(se, &io, fd) != 0) return false;
    s.devfd = fd;
    s.reason = "the INIT exchange has not happened";
    s.installed.store(true);
    return true;
}

bool active() {
    return state().active.load(std::memory_order_relaxed);
}

const char* inactive_reason() {
    return state().reason;
}

Grant acquire(const Node* node, int fd, bool may_pass) {
    State& s = state();
    if (!active()) return {};
    std::lock_guard lock(s.mu);
    auto it = s.nodes.find(node);
    if (it != s.nodes.end() && it->second.passthrough_opens > 0) {
        // Every open of an inode that has passthrough opens must pass through, to the same file.
        struct stat st;
        NodeModes& m = it->second;
        if (fstat(fd, &st) != 0 || st.st_dev != m.dev || st.st_ino != m.ino) return {Mode::Busy, 0};
        m.passthrough_opens++;
        return {Mode::Passthrough, m.backing_id};
    }
    NodeModes& m = s.nodes[node];
    struct stat st;
    if (!may_pass || m.cached_opens > 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        m.cached_opens++;
        return {};
    }
    BackingMap map{fd, 0, 0};
    int id = ioctl(s.devfd, kBackingOpen, &map);
    if (id <= 0) {
        int err = errno;
        if (err == EPERM) {
            s.reason = "registering backing files needs CAP_SYS_ADMIN";
            s.active.store(false);
        }
        spdlog::debug("passthrough: backing open failed: {}", std::strerror(err));
        m.cached_opens++;
        return {};
    }
    m.backing_id = id;
    m.passthrough_opens = 1;
    m.dev = st.st_dev;
    m.ino = st.st_ino;
    return {Mode::Passthrough, id};
}

void release(const Node* node, const Grant& grant) {
    State& s = state();
    if (grant.mode == Mode::Busy || !s.installed.load(std::memory_order_relaxed)) return;
    std::lock_guard lock(s.mu);
    auto it = s.nodes.find(node);
    if (it == s.nodes.end()) return;
    NodeModes& m = it->second;
    if (grant.mode == Mode::Passthrough) {
        if (--m.passthrough_opens == 0) {
            uint32_t id = static_cast<uint32_t>(m.backing_id);
            if (ioctl(s.devfd, kBackingClose, &id) != 0)
                spdlog::debug("passthrough: backing close failed: {}", std::strerror(errno));
            m.backing_id = 0;
        }
    } else if (m.cached_opens > 0) {
        m.cached_opens--;
    }
    if (m.passthrough_opens == 0 && m.cached_opens == 0) s.nodes.erase(it);
}

void attach_to_next_reply(int backing_id) {
    pending_backing_id = backing_id;
}

}  // namespace lamina::passthrough
