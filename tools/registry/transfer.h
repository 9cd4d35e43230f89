// Pulling an image from a registry into the store, and pushing a stored image to a registry.
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "client.h"
#include "estargz.h"
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

// How long a lazy fetch waits for a registry that does not answer: $LAMINA_LAZY_TIMEOUT seconds,
// default 30.
int lazy_timeout_seconds();

// Completes lazy layer chain_id (docs/lazy.md, "Completion"): fetches every file still missing
// (prioritised ones first), then whatever of the blob no file fetch brought, and makes it an
// ordinary layer (Store::finish_lazy_layer checks the blob's digest, its TOC and its diff ID).
// What is fetched stays, so an interrupted completion resumes. One completer per layer (a lock
// in its record): with wait, a second waits for the first; without, it returns false at once.
// note(text) reports progress. from, when given, is where to fetch (a pull's reference: the
// same blob, perhaps by another registry or mirror than the lazy pull used); else the record's
// registry and repository. Throws RegistryError or StoreError with one line.
bool complete_lazy_layer(store::Store& store, const std::string& chain_id, const Settings& settings,
                         const ClientOptions& options, int timeout_s, bool wait,
                         const std::function<void(const std::string&)>& note,
                         const Reference* from = nullptr);

// The placeholders of one lazy layer (layer_dir is layers/<hex>), filled from the registry the
// layer came from: the fetcher laminafs runs asks it on the first open of such a file
// (tools/lazy_fetch_main.cc). placeholder_for and fill may be called from several threads.
class LazyLayerFiller {
public:
    // timeout_s bounds each fill while the registry does not answer.
    LazyLayerFiller(const std::string& layer_dir, const Settings& settings,
                    const ClientOptions& options, int timeout_s);
    ~LazyLayerFiller();
    // The placeholder at path (relative to diff/), by name or by inode (a hard link to one),
    // pending or filled when the record was read; nullptr when that file never was one (or the
    // layer is complete).
    const store::estargz::Placeholder* placeholder_for(const std::string& path);
    // Fetches, checks and writes it, then marks it done. Throws RegistryError: at once for a
    // chunk that does not match its digest, after timeout_s for a registry that does not answer.
    void fill(const store::estargz::Placeholder& p);
    // The placeholders still to fill, in TOC order: the files a `.prefetch.landmark` marks as
    // prioritised come before it in the TOC, so this order fetches them first.
    std::vector<store::estargz::Placeholder> pending() const;
    // Fetches the parts of the blob no fill has kept (lazy/blob, lazy/ranges), so that lazy/blob
    // is the whole blob; returns its path. Every byte is checked later, by the blob's digest.
    std::string assemble_blob();
    // Forgets what of the blob is kept (a blob that did not match its digest).
    void drop_blob();
    // Fills every pending placeholder from the whole blob at blob_path (assemble_blob's, its
    // digest checked): no registry, every chunk checked against the TOC as always, one sync
    // before they are all marked done. Returns how many were filled.
    size_t fill_all_from(const std::string& blob_path);
    // Fetches from registry/repository (and its mirrors) rather than where the record says.
    void fetch_from(const Reference& ref);

private:
    // Runs fetch with a client of its own, retrying while the registry does not answer (see
    // fill). Fills of different files may run at once (lamina-lazy-fetch --serve): each takes
    // an idle client or makes one, and gives it back for the next (its connections stay open).
    void with_registry(const std::function<void(Client&)>& fetch);
    std::string range_fetch(Client& client, uint64_t offset, uint64_t length);
    // Keeps what a range brought (compressed, as sent) for the whole blob a completion needs.
    void keep_range(uint64_t offset, const std::string& bytes);

    std::string layer_dir_;
    Settings settings_;
    ClientOptions options_;
    int timeout_s_;
    std::optional<store::LazyRecord> record_;
    std::unique_ptr<store::Fd> root_;
    std::mutex clients_mu_;
    std::vector<std::unique_ptr<Client>> idle_clients_;
};

struct PushOptions {
    ClientOptions client;
    // None sends the stored blobs as they are; eStargz or zstd:chunked rewrites every layer
    // not in that format already (and so the config and manifest), lazily pullable
    // (docs/lazy.md).
    std::optional<store::estargz::TocFormat> convert_to;
    // With convert_to: the prefetch list's paths, written first in each layer holding them.
    std::vector<std::string> prefetch;
    bool live_progress = false;
    bool quiet = false;
};

// Pushes the stored image `local` as dest: blobs the registry has are skipped, others are
// mounted from a repository of the same registry that holds them or uploaded, then the
// manifest goes up. Returns the manifest digest. Throws RegistryError.
std::string push_image(store::Store& store, const Settings& settings, const std::string& local,
                       const Reference& dest, const PushOptions& options, std::ostream& out);

}  // namespace lamina::registry
