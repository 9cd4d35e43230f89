// The libfuse low-level operation table over an Overlay.
#pragma once

#include <fuse_lowlevel.h>

namespace lamina {

class Overlay;
class FuseDevice;

struct GlueConfig {
    double timeout = 86400.0;    // entry, attribute and negative-entry cache lifetime, seconds
    bool posix_acl = true;       // let the kernel enforce and cache POSIX ACLs
    bool export_support = true;  // the kernel may look up "." and ".." to decode file handles
    bool dont_mask = false;      // set at INIT: the daemon applies the umask (acl.h)
    // The readahead window offered at INIT: it caps what main.cc writes to the mount's bdi.
    uint32_t max_readahead = 1 << 20;
    // Set at INIT: the kernel can do without OPENDIR (and so without RELEASEDIR).
    bool no_opendir = false;
};

// What every handler reaches through fuse_req_userdata(): main owns it for the session's life.
struct FuseContext {
    Overlay* overlay = nullptr;
    FuseDevice* device = nullptr;  // the connection beneath libfuse (device.h)
    GlueConfig config;
    fuse_session* se = nullptr;  // set once the session exists; needed to send invalidations
};

fuse_lowlevel_ops make_fuse_ops();

}  // namespace lamina
