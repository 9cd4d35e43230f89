// "mount -o remount,...": changing a running laminafs mount's flags without a new daemon.
#pragma once

#include <string>

#include "options.h"

namespace lamina {

// Applies the flags in opts (ro/rw, nosuid, nodev, noexec, the atime options) to the laminafs
// mount at opts.mountpoint with mount(2) MS_REMOUNT, as the kernel's overlayfs takes them.
// Returns "" or a one-line error.
std::string remount_laminafs(const MountOptions& opts);

}  // namespace lamina
