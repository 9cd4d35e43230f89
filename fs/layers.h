// The layer stack: the upper directory, the lower directories top first, and the work directory.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "options.h"
#include "unique_fd.h"

namespace lamina {

// Layer numbers: 0 is the upper layer (when there is one), lowers follow top first. A stack
// without upper still keeps number 0 free so that numbers, and with them st_ino, do not depend
// on whether the mount is writable.
using LayerNo = uint16_t;
inline constexpr LayerNo kUpperLayer = 0;

struct Layer {
    std::string path;  // absolute path of the layer root
    UniqueFd fd;       // O_PATH|O_DIRECTORY descriptor of the root
    dev_t dev = 0;
};

class LayerStack {
public:
    // Opens every layer. Returns "" or a one-line error.
    std::string open(const MountOptions& opts);

    bool has_upper() const { return has_upper_; }
    const Layer& layer(LayerNo n) const { return layers_[n]; }
    int fd(LayerNo n) const { return layers_[n].fd.get(); }
    LayerNo first_lower() const { return 1; }
    LayerNo end() const { return static_cast<LayerNo>(layers_.size()); }
    int work_fd() const { return work_.fd.get(); }
    const std::string& work_path() const { return work_.path; }

    // Creates the work dir's "work" subdirectory (the kernel's name for it) and removes what
    // an interrupted copy-up left there. Returns "" or an error line.
    std::string prepare_work_dir();

    // Absolute path of `rel` inside layer n ("" or "." is the root), for calls that have no
    // *at() form (lgetxattr and friends).
    std::string abs_path(LayerNo n, std::string_view rel) const;

private:
    std::vector<Layer> layers_;  // [0] upper (empty when read-only), [1..] lowers
    Layer work_;
    bool has_upper_ = false;
};

}  // namespace lamina
