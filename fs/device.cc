// The /dev/fuse traffic beneath libfuse 3.14: see wire.h.
#include "wire.h"

#include <linux/fuse.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include <spdlog/spdlog.h>

#include "passthrough.h"
#include "uring.h"

namespace lamina::wire {
namespace {

// Protocol 7.40 names that Debian 12's <linux/fuse.h> (7.37) does not have yet.
constexpr uint32_t kOpenPassthrough = 1U << 7;  // FOPEN_PASSTHROUGH
static_assert(sizeof(fuse_init_out) == 64 && sizeof(fuse_open_out) == 16);

struct State {
    int devfd = -1;
    Wanted wanted;
    std::atomic<bool> installed{false};
    std::atomic<bool> init_replied{false};
    std::atomic<bool> killpriv{false};
    // Set and read by the thread that handles INIT, before any other request is read.
    uint64_t init_unique = 0;
    uint64_t kernel_flags = 0;
};

State& state() {
    static State s;
    return s;
}

thread_local bool kills_setid = false;
thread_local int pending_backing_id = 0;

// Reads one field of a request's argument, if the request is long enough to have it.
template <class Arg>
bool request_arg(const void* buf, ssize_t n, Arg& arg) {
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header) + sizeof arg)) return false;
    std::memcpy(&arg, static_cast<const char*>(buf) + sizeof(fuse_in_header), sizeof arg);
    return true;
}

bool carries_kill_flag(uint32_t opcode, const void* buf, ssize_t n) {
    switch (opcode) {
        case FUSE_WRITE: {
            fuse_write_in in;
            return request_arg(buf, n, in) && (in.write_flags & FUSE_WRITE_KILL_SUIDGID);
        }
        case FUSE_SETATTR: {
            fuse_setattr_in in;
            return request_arg(buf, n, in) && (in.valid & FATTR_KILL_SUIDGID);
        }
        case FUSE_OPEN: {
            fuse_open_in in;
            return request_arg(buf, n, in) && (in.open_flags & FUSE_OPEN_KILL_SUIDGID);
        }
        case FUSE_CREATE: {
            fuse_create_in in;
            return request_arg(buf, n, in) && (in.open_flags & FUSE_OPEN_KILL_SUIDGID);
        }
        default:
            return false;
    }
}

}  // namespace

void note_request(void* buf, ssize_t n) {
    kills_setid = false;
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return;
    auto* h = static_cast<fuse_in_header*>(buf);
    if (h->opcode == FUSE_TMPFILE) h->opcode = FUSE_CREATE;
    if (!state().killpriv.load(std::memory_order_relaxed)) return;
    kills_setid = carries_kill_flag(h->opcode, buf, n);
}

namespace {

ssize_t dev_read(int fd, void* buf, size_t len, void*) {
    ssize_t n = ::read(fd, buf, len);
    note_request(buf, n);
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return n;
    const auto* h = static_cast<const fuse_in_header*>(buf);
    State& s = state();
    if (h->opcode == FUSE_INIT && !s.init_replied.load(std::memory_order_relaxed)) {
        fuse_init_in in;
        if (request_arg(buf, n, in)) {
            uint64_t flags = in.flags;
            if (flags & FUSE_INIT_EXT) flags |= static_cast<uint64_t>(in.flags2) << 32;
            s.kernel_flags = flags;
            s.init_unique = h->unique;
            uring::note_init_request(flags);
        }
    }
    return n;
}

// Our additions to libfuse's INIT reply.
void patch_init(fuse_init_out& out) {
    State& s = state();
    if (s.wanted.killpriv && (s.kernel_flags & FUSE_HANDLE_KILLPRIV_V2)) {
        out.flags &= ~FUSE_HANDLE_KILLPRIV;
        out.flags |= FUSE_HANDLE_KILLPRIV_V2;
        s.killpriv.store(true);
        spdlog::info("killpriv: on; laminafs clears set-id bits on write, truncate and chown");
    } else if (s.wanted.killpriv) {
        spdlog::info("killpriv: off; the kernel does not offer FUSE_HANDLE_KILLPRIV_V2");
    }
    if (s.wanted.passthrough)
        passthrough::negotiate(s.kernel_flags, &out, s.wanted.insist_passthrough);
    uring::patch_init_reply(out);
}

// Replies to requests that came through io_uring go back into their ring entry.
ssize_t send(int fd, const iovec* iov, int count) {
    ssize_t sent;
    if (uring::send_reply(iov, count, sent)) return sent;
    return ::writev(fd, iov, count);
}

// An OPEN reply is a fuse_open_out; a CREATE reply has it after the fuse_entry_out.
ssize_t write_with_backing_id(int fd, iovec* iov, int id) {
    char copy[256];
    std::memcpy(copy, iov[1].iov_base, iov[1].iov_len);
    fuse_open_out out;
    char* at = copy + iov[1].iov_len - sizeof out;
    std::memcpy(&out, at, sizeof out);
    out.open_flags |= kOpenPassthrough;
    out.open_flags &= ~(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE);
    out.padding = static_cast<uint32_t>(id);  // fuse_open_out.backing_id since 7.40
    std::memcpy(at, &out, sizeof out);
    iovec patched[2] = {iov[0], {copy, iov[1].iov_len}};
    return send(fd, patched, 2);
}

ssize_t dev_writev(int fd, iovec* iov, int count, void*) {
    State& s = state();
    if (count == 2 && iov[0].iov_len == sizeof(fuse_out_header)) {
        const auto* h = static_cast<const fuse_out_header*>(iov[0].iov_base);
        if (pending_backing_id && h->unique != 0) {
            int id = pending_backing_id;
            pending_backing_id = 0;
            if (h->error == 0 && iov[1].iov_len >= sizeof(fuse_open_out) && iov[1].iov_len <= 256)
                return write_with_backing_id(fd, iov, id);
        } else if (!s.init_replied.load(std::memory_order_relaxed) && s.init_unique &&
                   h->unique == s.init_unique) {
            s.init_replied.store(true);
            if (h->error == 0 && iov[1].iov_len == sizeof(fuse_init_out)) {
                fuse_init_out out;
                std::memcpy(&out, iov[1].iov_base, sizeof out);
                patch_init(out);
                iovec patched[2] = {iov[0], {&out, sizeof out}};
                ssize_t n = ::writev(fd, patched, 2);
                if (n >= 0) uring::start(fd);
                return n;
            }
            if (s.wanted.passthrough)
                passthrough::negotiate(0, nullptr, s.wanted.insist_passthrough);
        }
    }
    return send(fd, iov, count);
}

ssize_t dev_splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                        unsigned flags, void*) {
    return ::splice(fdin, offin, fdout, offout, len, flags);
}

}  // namespace

bool install(fuse_session* se, Wanted wanted) {
    State& s = state();
    int fd = fuse_session_fd(se);
    if (fd < 0) return false;
    // No splice_receive: requests are read with read(2), so each can be seen (op_init never
    // asks for spliced requests). Replies may still be spliced.
    static const fuse_custom_io io = {
        .writev = dev_writev,
        .read = dev_read,
        .splice_receive = nullptr,
        .splice_send = dev_splice_send,
    };
    s.wanted = wanted;
    if (fuse_session_custom_io(se, &io, fd) != 0) return false;
    s.devfd = fd;
    s.installed.store(true);
    return true;
}

bool installed() {
    return state().installed.load(std::memory_order_relaxed);
}

int device_fd() {
    return state().devfd;
}

bool killpriv_active() {
    return state().killpriv.load(std::memory_order_relaxed);
}

bool request_kills_setid() {
    return kills_setid;
}

void attach_backing_id(int backing_id) {
    pending_backing_id = backing_id;
}

}  // namespace lamina::wire
