// The layer stack: the upper directory, the lower directories top first, and the work directory.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "options.h"
#include "path_util.h"
#include "unique_fd.h"

namespace lamina {

// Layer numbers: 0 is the upper layer (when there is one), lowers follow top first. A stack
// without upper still keeps number 0 free so that numbers, and with them st_ino, do not depend
// on whether the mount is writable.
using LayerNo = uint16_t;
inline constexpr LayerNo kUpperLayer = 0;

struct Layer {
    // The path it was opened by, for messages only: once the mount is up it may name nothing
    // (the caller may detach it), so every access goes through fd.
    std::string path;
    // O_PATH|O_DIRECTORY descriptor of the root, inside a private clone of the layer's mount
    // taken at start (see open_layer), so that no mount made later is crossed through it.
    UniqueFd fd;
    // 0 when fd lies in a private clone; otherwise why none could be made (EPERM without
    // CAP_SYS_ADMIN over the mount namespace), and fd is on the layer's own mount.
    int clone_error = 0;
    // O_NOATIME or 0 for the daemon's reads of the layer's files and directories: 0 where the
    // private clone carries the mount's atime rule itself (LayerStack::open), O_NOATIME where it
    // cannot and the rule says the atime must not move.
    int file_noatime = 0;
    int dir_noatime = 0;
    dev_t dev = 0;
    // A lower layer on an idmapped mount, under uidmapping=/gidmapping=: its owners are host ids
    // already. containers/storage before 1.47 (podman 4.3) passes such lowers together with the
    // mapping, which would otherwise be applied twice.
    bool idmapped = false;
};

class LayerStack {
public:
    // Opens every layer. Returns "" or a one-line error.
    std::string open(const MountOptions& opts);

    bool has_upper() const { return has_upper_; }
    const Layer& layer(LayerNo n) const { return layers_[n]; }
    int fd(LayerNo n) const { return layers_[n].fd.get(); }
    // The flag a read of the layer's files or directories adds (Layer::file_noatime).
    int noatime_flag(LayerNo n, bool dir) const {
        return dir ? layers_[n].dir_noatime : layers_[n].file_noatime;
    }
    LayerNo first_lower() const { return 1; }
    LayerNo end() const { return static_cast<LayerNo>(layers_.size()); }
    // The work dir's "work" subdirectory, where entries are made before they are renamed into
    // the upper layer (prepare_work_dir opens it).
    int work_fd() const { return work_dir_.get(); }

    // Creates the work dir's "work" subdirectory (the kernel's name for it) and removes what
    // an interrupted copy-up left there. Returns "" or an error line.
    std::string prepare_work_dir();

    // A path to `rel` inside layer n ("" is the root), or inside the work dir's "work", for the calls that
    // have no *at() form (lgetxattr and friends). It goes through the layer's descriptor
    // (proc_fd_path), never through the layer's own path.
    std::string proc_path(LayerNo n, std::string_view rel) const;
    std::string work_proc_path(std::string_view rel) const;

private:
    std::vector<Layer> layers_;  // [0] upper (empty when read-only), [1..] lowers
    Layer work_;
    UniqueFd work_dir_;
    bool has_upper_ = false;
};

}  // namespace lamina
