// FUSE over io_uring (protocol 7.42, Linux 6.14+) beneath libfuse 3.14, which predates it.
//
// Over /dev/fuse every request wakes whichever daemon thread is reading, usually on another CPU,
// and that cross-CPU wakeup is most of a metadata round trip. Over io_uring the kernel keeps one
// request queue per CPU: a request from a task on CPU n goes to queue n, which a daemon thread
// pinned to CPU n serves. The kernel offers FUSE_OVER_IO_URING at INIT only while the fuse module
// parameter enable_uring is Y.
//
// laminafs asks for it from the device I/O wrapper (device.cc): the INIT reply gains the
// flag, and once the reply is written a few threads per possible CPU (up to 4, at most 128 in
// all), each with its own ring and one entry, register for that CPU's queue: a handler that
// waits on the disk holds up only its own entry. Each request that arrives in an entry is rebuilt as the byte stream /dev/fuse would have
// delivered and handed to libfuse; the reply libfuse writes from that thread goes back into the
// entry instead of to /dev/fuse. FORGET, INTERRUPT and notifications still use /dev/fuse, so the
// normal libfuse loop keeps running.
//
// Once the INIT reply carries the flag, the kernel holds every new request until all queues have
// registered an entry, or until a registration fails. So the rings are built before the flag is
// granted, and a thread that cannot serve its queue makes the kernel give up on io_uring by
// failing a registration on purpose: the mount then works over /dev/fuse.
#pragma once

#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>

namespace lamina {
namespace uring {

// Whether the kernel lets daemons ask for FUSE over io_uring: its fuse module's enable_uring is
// Y. When it is N and may_enable (a root daemon in the initial namespace), it is set to Y: the
// parameter only allows daemons to ask, nothing changes for a FUSE daemon that does not.
bool allowed_on_this_machine(bool may_enable);

}  // namespace uring

// The io_uring queues of one FUSE connection (FuseDevice owns them, when io_uring is asked for).
class UringQueues {
public:
    // se: the session whose requests the rings serve. note: what the device does with each
    // request's bytes before libfuse handles it. insist: asked for by name, so its absence is a
    // warning rather than a note.
    UringQueues(fuse_session* se, bool insist, std::function<void(void*, ssize_t)> note);
    ~UringQueues();  // stops the ring threads
    UringQueues(const UringQueues&) = delete;
    UringQueues& operator=(const UringQueues&) = delete;

    // The INIT request offered it: the rings will be tried.
    bool offered() const;
    // From the device, the INIT request's flags (flags2 shifted into the high word).
    void note_init_request(uint64_t flags);
    // From the device, before the INIT reply is written: builds the rings and, when that
    // worked, adds FUSE_OVER_IO_URING to the reply.
    void patch_init_reply(fuse_init_out& out);
    // After the INIT reply is written to devfd: starts the ring threads (no-op unless granted).
    void start(int devfd);

    // From the device: when the calling thread is serving a ring entry and this is that
    // request's reply, the reply goes into the entry and true is returned (written: its length).
    bool send_reply(const iovec* iov, int count, ssize_t& written);

    // Stops the ring threads (when the session loop has ended); safe to call when none run.
    void stop();

    // Requests served through the rings so far.
    uint64_t requests_served() const;

    struct State;

private:
    std::unique_ptr<State> s_;
};

}  // namespace lamina
