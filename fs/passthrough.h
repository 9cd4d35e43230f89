// FUSE passthrough (protocol 7.40, Linux 6.9+) on libfuse 3.14, which predates it.
//
// With passthrough the kernel sends a file's reads, writes and mmap straight to a backing file
// the daemon registered, as overlayfs does with its real files; only the other operations reach
// laminafs. libfuse 3.14 neither offers the INIT flag nor fills in a backing id, so laminafs
// wraps the session's /dev/fuse I/O (fuse_session_custom_io) and edits two kinds of reply on the
// way out: the INIT reply (FUSE_PASSTHROUGH and a stack depth) and the OPEN/CREATE replies of
// files it passes through (FOPEN_PASSTHROUGH and the backing id). Registering a backing file
// needs CAP_SYS_ADMIN, so only a daemon running as root in the initial namespace gets it.
//
// The kernel lets every open of one inode pass through to the same backing file, or none; a
// cached (page cache) open and a passthrough open of one inode may not coexist. Backing tracks
// this per node and picks each open's mode so the kernel never sees a conflict.
#pragma once

#include <fuse_lowlevel.h>

#include <cstdint>

namespace lamina {

struct Node;

namespace passthrough {

// Wraps the session's device I/O; call after fuse_session_mount. Passthrough is then asked
// for at INIT; active() tells whether the kernel agreed. Returns false (and leaves the session
// alone) when the I/O cannot be wrapped.
bool install(fuse_session* se);
bool active();
// Why passthrough is off after INIT ("" when active), for the log.
const char* inactive_reason();

// How one open is served. Busy: the kernel already passes this node's opens through to another
// file (the lower one, before a copy-up), and it refuses to mix backing files or modes on one
// inode, so the open must fail (ETXTBSY).
enum class Mode { Cached, Passthrough, Busy };

struct Grant {
    Mode mode = Mode::Cached;
    int backing_id = 0;  // for Passthrough
};

// Chooses the mode of a new open of node whose backing file is fd. may_pass: the caller allows
// passthrough for this open (not for writes to a file with other names, whose cached
// attributes the daemon keeps coherent). Every grant but Busy is released with release().
Grant acquire(const Node* node, int fd, bool may_pass);
void release(const Node* node, const Grant& grant);

// The next OPEN or CREATE reply this thread sends carries this backing id.
void attach_to_next_reply(int backing_id);

}  // namespace passthrough
}  // namespace lamina
