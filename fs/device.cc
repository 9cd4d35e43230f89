// The FUSE connection beneath libfuse 3.14: see device.h.
#include "device.h"

#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "fuse_ops.h"
#include "request_flags.h"

namespace lamina {
namespace {

// Protocol 7.40 names that Debian 12's <linux/fuse.h> (7.37) does not have yet.
constexpr uint32_t kOpenPassthrough = 1U << 7;  // FOPEN_PASSTHROUGH
static_assert(sizeof(fuse_init_out) == 64 && sizeof(fuse_open_out) == 16);

FuseDevice& device_of(void* userdata) {
    return *static_cast<FuseContext*>(userdata)->device;
}

ssize_t dev_read(int fd, void* buf, size_t len, void* userdata) {
    return device_of(userdata).read(fd, buf, len);
}

ssize_t dev_writev(int fd, iovec* iov, int count, void* userdata) {
    return device_of(userdata).writev(fd, iov, count);
}

ssize_t dev_splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                        unsigned flags, void*) {
    return ::splice(fdin, offin, fdout, offout, len, flags);
}

}  // namespace

bool FuseDevice::install(fuse_session* se) {
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
    if (wanted_.io_uring) {
        uring_ = std::make_unique<UringQueues>(
            se, wanted_.insist_io_uring, [this](void* buf, ssize_t n) { note_request(buf, n); });
    }
    if (fuse_session_custom_io(se, &io, fd) != 0) {
        uring_.reset();
        return false;
    }
    devfd_ = fd;
    passthrough_.set_device(fd);
    return true;
}

void FuseDevice::stop() {
    if (uring_) uring_->stop();
}

void FuseDevice::note_request(void* buf, ssize_t n) {
    request::note(buf, n, killpriv_active());
}

ssize_t FuseDevice::read(int fd, void* buf, size_t len) {
    ssize_t n = ::read(fd, buf, len);
    note_request(buf, n);
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return n;
    const auto* h = static_cast<const fuse_in_header*>(buf);
    if (h->opcode == FUSE_INIT && !init_replied_.load(std::memory_order_relaxed) &&
        n >= static_cast<ssize_t>(sizeof(fuse_in_header) + sizeof(fuse_init_in))) {
        fuse_init_in in;
        std::memcpy(&in, static_cast<const char*>(buf) + sizeof(fuse_in_header), sizeof in);
        uint64_t flags = in.flags;
        if (flags & FUSE_INIT_EXT) flags |= static_cast<uint64_t>(in.flags2) << 32;
        kernel_flags_ = flags;
        init_unique_ = h->unique;
        if (uring_) uring_->note_init_request(flags);
    }
    return n;
}

// Our additions to libfuse's INIT reply.
void FuseDevice::patch_init(fuse_init_out& out) {
    if (wanted_.killpriv && (kernel_flags_ & FUSE_HANDLE_KILLPRIV_V2)) {
        out.flags &= ~FUSE_HANDLE_KILLPRIV;
        out.flags |= FUSE_HANDLE_KILLPRIV_V2;
        killpriv_.store(true);
        spdlog::info("killpriv: on; laminafs clears set-id bits on write, truncate and chown");
    } else if (wanted_.killpriv) {
        spdlog::info("killpriv: off; the kernel does not offer FUSE_HANDLE_KILLPRIV_V2");
    }
    if (wanted_.passthrough)
        passthrough_.negotiate(kernel_flags_, &out, wanted_.insist_passthrough);
    if (uring_) uring_->patch_init_reply(out);
}

// Replies to requests that came through io_uring go back into their ring entry.
ssize_t FuseDevice::send(int fd, const iovec* iov, int count) {
    ssize_t sent;
    if (uring_ && uring_->send_reply(iov, count, sent)) return sent;
    return ::writev(fd, iov, count);
}

// An OPEN reply is a fuse_open_out; a CREATE reply has it after the fuse_entry_out.
ssize_t FuseDevice::write_with_backing_id(int fd, iovec* iov, int id) {
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

ssize_t FuseDevice::writev(int fd, iovec* iov, int count) {
    if (count == 2 && iov[0].iov_len == sizeof(fuse_out_header)) {
        const auto* h = static_cast<const fuse_out_header*>(iov[0].iov_base);
        if (int id = request::attached_backing_id(); id && h->unique != 0) {
            request::attach_backing_id(0);
            if (h->error == 0 && iov[1].iov_len >= sizeof(fuse_open_out) && iov[1].iov_len <= 256)
                return write_with_backing_id(fd, iov, id);
        } else if (!init_replied_.load(std::memory_order_relaxed) && init_unique_ &&
                   h->unique == init_unique_) {
            init_replied_.store(true);
            if (h->error == 0 && iov[1].iov_len == sizeof(fuse_init_out)) {
                fuse_init_out out;
                std::memcpy(&out, iov[1].iov_base, sizeof out);
                patch_init(out);
                iovec patched[2] = {iov[0], {&out, sizeof out}};
                ssize_t n = ::writev(fd, patched, 2);
                if (n >= 0 && uring_) uring_->start(fd);
                return n;
            }
            if (wanted_.passthrough) passthrough_.negotiate(0, nullptr, wanted_.insist_passthrough);
        }
    }
    return send(fd, iov, count);
}

}  // namespace lamina
