// The libfuse low-level operation table over an Overlay.
#pragma once

#include <fuse_lowlevel.h>

namespace lamina {

class Overlay;

struct GlueConfig {
    double timeout = 86400.0;  // entry, attribute and negative-entry cache lifetime, seconds
    bool fsync = true;         // false: fsync and fsyncdir return at once (fsync=0)
    bool posix_acl = true;     // let the kernel enforce and cache POSIX ACLs
};

fuse_lowlevel_ops make_fuse_ops();
// The userdata fuse_session_new gets; freed with free_fuse_userdata after the session ends.
void* make_fuse_userdata(Overlay& overlay, const GlueConfig& config);
void set_fuse_session(void* userdata, fuse_session* se);
void free_fuse_userdata(void* userdata);

}  // namespace lamina
