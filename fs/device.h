// The FUSE connection beneath libfuse 3.14, for the protocol that libfuse predates or drops.
//
// libfuse 3.14 speaks protocol 7.37 and passes on of each request only what its API has room
// for. laminafs wraps the session's device I/O (fuse_session_custom_io) to see and edit, on the
// way:
//  * the INIT exchange: FUSE_HANDLE_KILLPRIV_V2, which makes the daemon, not the kernel, clear
//    set-id bits, so the kernel stops asking for security.capability before every write; FUSE
//    passthrough (passthrough.h); FUSE over io_uring (uring.h);
//  * each request's bytes, for what libfuse drops (request_flags.h);
//  * the OPEN and CREATE replies of files passed through: FOPEN_PASSTHROUGH and a backing id.
//
// One FuseDevice per connection holds all of it: the /dev/fuse descriptor, what INIT settled,
// and the fast paths that hang off the connection, each told only what it needs (passthrough
// the descriptor for its ioctls, the rings the session and the request hook). It reaches its I/O
// callbacks as the session's userdata (FuseContext::device).
#pragma once

#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "passthrough.h"
#include "uring.h"

namespace lamina {

class FuseDevice {
public:
    struct Wanted {
        bool killpriv = true;
        bool passthrough = false;
        // Passthrough was asked for by name: say so as a warning when it cannot be had.
        bool insist_passthrough = false;
        bool io_uring = false;
        bool insist_io_uring = false;
    };

    explicit FuseDevice(Wanted wanted) : wanted_(wanted) {}
    FuseDevice(const FuseDevice&) = delete;
    FuseDevice& operator=(const FuseDevice&) = delete;

    // Wraps the session's device I/O; call after fuse_session_mount, with the session whose
    // userdata is a FuseContext pointing here. Returns false (and leaves the session alone)
    // when it cannot.
    bool install(fuse_session* se);

    // After INIT: the kernel leaves clearing set-id bits to the daemon (FUSE_HANDLE_KILLPRIV_V2).
    bool killpriv_active() const { return killpriv_.load(std::memory_order_relaxed); }
    Passthrough& passthrough() { return passthrough_; }
    // io_uring was asked for and the kernel offered it at INIT.
    bool uring_offered() const { return uring_ && uring_->offered(); }
    uint64_t uring_requests_served() const { return uring_ ? uring_->requests_served() : 0; }
    // Stops the ring threads, once the session loop has ended.
    void stop();

    // The custom I/O, reached through the session's userdata.
    ssize_t read(int fd, void* buf, size_t len);
    ssize_t writev(int fd, iovec* iov, int count);

private:
    void note_request(void* buf, ssize_t n);
    void patch_init(fuse_init_out& out);
    ssize_t send(int fd, const iovec* iov, int count);
    ssize_t write_with_backing_id(int fd, iovec* iov, int id);

    Wanted wanted_;
    int devfd_ = -1;
    Passthrough passthrough_;
    std::unique_ptr<UringQueues> uring_;
    std::atomic<bool> init_replied_{false};
    std::atomic<bool> killpriv_{false};
    // Set and read by the thread that handles INIT, before any other request is read.
    uint64_t init_unique_ = 0;
    uint64_t kernel_flags_ = 0;
};

}  // namespace lamina
