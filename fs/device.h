// The /dev/fuse traffic beneath libfuse 3.14, for the protocol that libfuse predates or drops.
//
// libfuse 3.14 speaks protocol 7.37 and passes on of each request only what its API has room
// for. laminafs wraps the session's device I/O (fuse_session_custom_io) to see and edit three
// things on the way:
//  * the INIT reply: FUSE_HANDLE_KILLPRIV_V2, which makes the daemon, not the kernel, clear
//    set-id bits, so the kernel stops asking for security.capability before every write; and
//    FUSE passthrough (passthrough.h);
//  * the kernel's "clear set-id bits" flag on WRITE, SETATTR, OPEN and CREATE requests, which
//    libfuse drops. A worker thread serves the request it has just read, so the flag is kept
//    per thread until that thread reads the next request;
//  * the OPEN and CREATE replies of files passed through: FOPEN_PASSTHROUGH and a backing id.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <cstdint>

namespace lamina::wire {

struct Wanted {
    bool killpriv = true;
    bool passthrough = false;
    // Passthrough was asked for by name: say so as a warning when it cannot be had.
    bool insist_passthrough = false;
};

// Wraps the session's device I/O; call after fuse_session_mount. Returns false (and leaves the
// session alone) when it cannot.
bool install(fuse_session* se, Wanted wanted);
bool installed();
// The /dev/fuse descriptor, for the passthrough ioctls (-1 before install).
int device_fd();

// After INIT: the kernel leaves clearing set-id bits to the daemon (FUSE_HANDLE_KILLPRIV_V2).
bool killpriv_active();

// Notes what the thread about to serve the request in buf (n bytes, as /dev/fuse delivers it)
// must know of it: the set-id flag below. dev_read calls it; so does a ring thread (uring.h).
// It also turns a TMPFILE request (O_TMPFILE, protocol 7.37), which libfuse 3.14 does not know,
// into the CREATE it is shaped as: the same arguments and reply, with the name "/" that no real
// create can carry (op_create tells them apart by it).
void note_request(void* buf, ssize_t n);

// The request this thread serves carries the kernel's flag to clear set-id bits: a write,
// truncation or O_TRUNC open by a caller without CAP_FSETID, or a chown of a non-directory.
bool request_kills_setid();

// The next OPEN or CREATE reply this thread sends carries this backing id (0: none).
void attach_backing_id(int backing_id);

}  // namespace lamina::wire
