// Pulling an image from a registry into the store, and pushing a stored image to a registry.
#pragma once

#include <ostream>
#include <string>

#include "client.h"
#include "manifest.h"
#include "reference.h"
#include "settings.h"
#include "store.h"

namespace lamina::registry {

struct PullOptions {
    Platform platform = host_platform();
    bool platform_given = false;
    int max_concurrent_downloads = 3;
    ClientOptions client;
    bool live_progress = false;  // redraw per-layer bars (a terminal)
    bool quiet = false;          // print only the image name at the end
    // Layers with an eStargz TOC are stored lazily: footer and TOC only (docs/lazy.md).
    bool lazy = false;
};

// Fetches the first of candidates (Settings::resolve) that a mirror or its registry holds,
// verifies the manifest, config and every layer, and stores the image under that reference's
// name. Returns the image ID. Throws RegistryError.
std::string pull_image(store::Store& store, const Settings& settings,
                       const std::vector<Reference>& candidates, const PullOptions& options,
                       std::ostream& out);

// Fills every placeholder of the image's lazy layers from the registry each came from, each
// chunk checked, so the layers are complete (what `lamina mount` does before mounting). A
// placeholder that cannot be fetched within timeout_s (a registry that is down) ends it with a
// RegistryError; a chunk that does not match its digest at once.
void complete_lazy_layers(store::Store& store, const Settings& settings,
                          const store::ImageRecord& image, const ClientOptions& client,
                          int timeout_s, std::ostream& out);

struct PushOptions {
    ClientOptions client;
    // "" sends the stored blobs as they are; "estargz" rewrites every layer (and so the config
    // and manifest) as eStargz, lazily pullable (docs/lazy.md).
    std::string compression_format;
    bool live_progress = false;
    bool quiet = false;
};

// Pushes the stored image `local` as dest: blobs the registry has are skipped, others are
// mounted from a repository of the same registry that holds them or uploaded, then the
// manifest goes up. Returns the manifest digest. Throws RegistryError.
std::string push_image(store::Store& store, const Settings& settings, const std::string& local,
                       const Reference& dest, const PushOptions& options, std::ostream& out);

}  // namespace lamina::registry
