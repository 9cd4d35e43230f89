// The libfuse low-level operation table over an Overlay.
#pragma once

#include <fuse_lowlevel.h>

namespace lamina {

class Overlay;

fuse_lowlevel_ops make_fuse_ops();
// The userdata fuse_session_new gets; freed with free_fuse_userdata after the session ends.
void* make_fuse_userdata(Overlay& overlay, double timeout, bool fsync);
void set_fuse_session(void* userdata, fuse_session* se);
void free_fuse_userdata(void* userdata);

}  // namespace lamina
