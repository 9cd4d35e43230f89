// A FUSE mount whose daemon is gone, found at the mount point and cleared before mounting there.
#pragma once

#include <string>

namespace lamina {

// When the mount at mountpoint is a FUSE mount whose daemon is gone (ENOTCONN), unmounts it
// (umount2 with MNT_DETACH, or fusermount3 -u -z without the privilege), as often as dead mounts
// are stacked there, so that laminafs never mounts on top of one. Returns "" or a one-line error
// saying how to clear it by hand.
std::string clear_dead_mount(const std::string& mountpoint);

}  // namespace lamina
