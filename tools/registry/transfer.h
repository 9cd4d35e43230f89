// Pulling an image from a registry into the store, and pushing a stored image to a registry.
#pragma once

#include <ostream>
#include <string>

#include "client.h"
#include "fd.h"
#include "image_format.h"
#include "lazy_layer.h"
#include "reference.h"
#include "settings.h"
#include "store.h"

namespace lamina::registry {

struct PullOptions {
    store::Platform platform = store::host_platform();
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

// The placeholders of one lazy layer (layer_dir is layers/<hex>), filled one at a time from the
// registry the layer came from: the helper laminafs runs on the first open of such a file
// (tools/lazy_fetch_main.cc).
class LazyLayerFiller {
public:
    // timeout_s bounds each fill while the registry does not answer.
    LazyLayerFiller(const std::string& layer_dir, const Settings& settings,
                    const ClientOptions& options, int timeout_s);
    ~LazyLayerFiller();
    // The placeholder at path (relative to diff/), by name or by inode (a hard link to one);
    // nullptr when that file is complete (or the layer is).
    const store::estargz::Placeholder* placeholder_for(const std::string& path);
    // Fetches, checks and writes it, then marks it done. Throws RegistryError: at once for a
    // chunk that does not match its digest, after timeout_s for a registry that does not answer.
    void fill(const store::estargz::Placeholder& p);

private:
    std::string layer_dir_;
    Settings settings_;
    ClientOptions options_;
    int timeout_s_;
    std::optional<store::LazyRecord> record_;
    std::unique_ptr<store::Fd> root_;
    std::unique_ptr<Client> client_;
};

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
