// FUSE passthrough (protocol 7.40, Linux 6.9+) on libfuse 3.14, which predates it.
//
// With passthrough the kernel sends a file's reads, writes and mmap straight to a backing file
// the daemon registered, as overlayfs does with its real files; only the other operations reach
// laminafs. libfuse 3.14 neither offers the INIT flag nor fills in a backing id, so the device
// layer (device.h) edits two kinds of reply on the way out: the INIT reply (FUSE_PASSTHROUGH and a
// stack depth, decided here) and the OPEN/CREATE replies of files passed through
// (FOPEN_PASSTHROUGH and the backing id). Registering a backing file needs CAP_SYS_ADMIN, so
// only a daemon running as root in the initial namespace gets it.
//
// The kernel lets every open of one inode pass through to the same backing file, or none; a
// cached (page cache) open and a passthrough open of one inode may not coexist. Backing tracks
// this per node and picks each open's mode so the kernel never sees a conflict.
#pragma once

#include <linux/fuse.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace lamina {

struct Node;

namespace passthrough {

// How one open is served. Busy: the kernel refuses to mix backing files or modes on one inode,
// and this open cannot join the node's passthrough opens (they pass through to another file,
// the lower one before a copy-up, or this open must stay with the daemon), so it must fail
// (ETXTBSY).
enum class Mode { Cached, Passthrough, Busy };

// What the caller allows for one open. Pass: passthrough where the kernel lets it. Prefer
// cached: not for this open alone, but it joins the node's passthrough opens if there are any
// (writes to a file with other names, whose cached attributes the daemon keeps coherent).
// Cached only: the daemon must serve this open's writes itself (it clears set-id bits on them,
// which a passthrough write would not), so it is Busy next to passthrough opens.
enum class Allow { Pass, PreferCached, CachedOnly };

struct Grant {
    Mode mode = Mode::Cached;
    int backing_id = 0;  // for Passthrough
    bool held = false;   // counted in the node's opens, until release()
};

}  // namespace passthrough

// The backing files of one FUSE connection (FuseDevice owns it).
class Passthrough {
public:
    Passthrough() = default;
    Passthrough(const Passthrough&) = delete;
    Passthrough& operator=(const Passthrough&) = delete;

    // The connection's /dev/fuse descriptor, which the backing file ioctls go to.
    void set_device(int devfd) { devfd_ = devfd; }

    // Called with libfuse's INIT reply when passthrough is wanted: adds FUSE_PASSTHROUGH if the
    // kernel offered it (kernel_flags: the 64 INIT flags it sent). `out` is null when libfuse
    // answered INIT with an error. active() then tells whether it is on. insist: passthrough
    // was asked for by name, so its absence is a warning rather than a note.
    void negotiate(uint64_t kernel_flags, fuse_init_out* out, bool insist);
    bool active() const { return active_.load(std::memory_order_relaxed); }
    // Why passthrough is off after INIT ("" when active), for the log.
    const char* inactive_reason() const { return reason_; }

    // Chooses the mode of a new open of node whose backing file is fd. A grant that is held is
    // given back with release(), once; one that is not (never acquired, or Busy) may be too.
    passthrough::Grant acquire(const Node* node, int fd, passthrough::Allow allow);
    void release(const Node* node, passthrough::Grant& grant);

private:
    // Open modes of one node that the kernel must not see mixed.
    struct NodeModes {
        int backing_id = 0;
        int passthrough_opens = 0;
        int cached_opens = 0;
        dev_t dev = 0;  // the backing file, so an open of the same file can share it
        ino_t ino = 0;
    };

    void log_outcome(bool insist) const;

    int devfd_ = -1;
    std::atomic<bool> active_{false};
    const char* reason_ = "the INIT exchange has not happened";
    std::mutex mu_;
    std::unordered_map<const Node*, NodeModes> nodes_;
};

}  // namespace lamina
