// Lazy lower layers (docs/lazy.md): some files of a lower layer are placeholders whose content a
// helper program fetches and verifies. The daemon never reads one before the helper says it is
// complete; it holds no registry code itself.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "layers.h"
#include "options.h"

namespace lamina {

class LazyLayers {
public:
    explicit LazyLayers(const MountOptions& opts);

    // 0 when the lower file at rel in layer may be read: its layer is not lazy, or the helper
    // (`HELPER LAYER_PATH REL`) made it complete within the bound. EIO otherwise, with a log line.
    int ensure_complete(LayerNo layer, const std::string& rel);

private:
    std::string helper_;
    std::vector<std::string> layer_paths_;  // lower layers 1..N, top first
    std::vector<bool> lazy_;                // indexed by LayerNo
    int timeout_s_;
    std::mutex mu_;
    std::unordered_set<std::string> complete_;  // "LAYER/rel" the helper vouched for
};

// nullptr unless the options name lazy layers and a helper.
std::unique_ptr<LazyLayers> make_lazy_layers(const MountOptions& opts);

}  // namespace lamina
