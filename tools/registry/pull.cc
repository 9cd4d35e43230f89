// `lamina pull`: mirrors, manifest and platform, parallel verified downloads, then the store.
#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "digest.h"
#include "error.h"
#include "image_format.h"
#include "json_input.h"
#include "lazy_layer.h"
#include "progress.h"
#include "transfer.h"
#include "zstd_chunked.h"

namespace lamina::registry {

using nlohmann::json;

namespace {

std::string short_digest(const std::string& digest) {
    return digest.substr(7, 12);
}

// Ends a pull's download directory however the pull ends: what a failed pull fetched stays
// for the next one to resume.
struct DownloadDir {
    store::Store& store;
    std::string path;
    bool stored = false;  // the image is in the store: nothing here is needed any more
    ~DownloadDir() {
        if (path.empty()) return;
        try {
            store.end_download_dir(path, !stored);
        } catch (const std::exception&) {
        }
    }
};

struct Source {
    Reference ref;  // the candidate that served the manifest
    std::unique_ptr<Client> client;
    FetchedManifest top;  // what the reference named (perhaps an index)
};

// The first candidate (a short name may have several) whose mirrors or registry have the
// manifest; mirrors first, each given one quick try, with the registry to fall back on.
Source find_source(const Settings& settings, const std::vector<Reference>& candidates,
                   const PullOptions& o, Progress& progress) {
    for (size_t c = 0; c < candidates.size(); ++c) {
        const Reference& ref = candidates[c];
        std::vector<Endpoint> endpoints = settings.pull_endpoints(ref);
        for (size_t i = 0; i < endpoints.size(); ++i) {
            const Endpoint& ep = endpoints[i];
            try {
                Source s{ref, std::make_unique<Client>(settings, ep, o.client), {}};
                s.client->set_probing(ep.mirror);
                s.client->ping();
                s.top = s.client->get_manifest(ref.manifest_ref());
                s.client->set_probing(false);
                return s;
            } catch (const std::runtime_error& e) {  // RegistryError, TransportError
                if (ep.mirror) {
                    progress.note("mirror " + ep.label + " skipped",
                                  std::string(e.what()) + "; trying " +
                                      (endpoints[i + 1].mirror ? "the next mirror" : ref.registry));
                    continue;
                }
                if (c + 1 == candidates.size()) throw;
                progress.note(ref.str(),
                              std::string(e.what()) + "; trying " + candidates[c + 1].registry);
            }
        }
    }
    throw RegistryError("no registry to pull from");  // not reached: the last endpoint throws
}

// A lazy read that the registry answered with the whole blob, now verified at the download
// path: the layer is downloaded, not lazy.
struct WholeBlobSent {};

// A layer's TOC, checked against the manifest's annotation: eStargz's footer and TOC (two
// ranges), or zstd:chunked's TOC frame where its position annotation says (one range; the footer
// first without it). nullptr for a layer with neither. Throws when it cannot be read or checked,
// and WholeBlobSent when a range was answered with the whole blob, taken as its download at
// whole_path() (Client::get_blob_range_or_whole).
std::shared_ptr<const store::LazyPull> read_lazily(Client& client, const store::Descriptor& d,
                                                   const Reference& ref,
                                                   const std::function<std::string()>& whole_path) {
    auto compression = store::layer_media_type_compression(d.media_type);
    bool estargz = !d.estargz_toc_digest.empty() && compression == store::kGzip;
    bool zstd_chunked = !d.zstd_chunked_checksum.empty() && compression == store::kZstd;
    if (!estargz && !zstd_chunked) return nullptr;
    auto read = [&](uint64_t off, uint64_t len) {
        auto range = client.get_blob_range_or_whole(d, static_cast<int64_t>(off),
                                                    static_cast<int64_t>(len), whole_path);
        if (!range) throw WholeBlobSent{};
        return std::move(*range);
    };
    auto lazy = std::make_shared<store::LazyPull>();
    lazy->toc =
        estargz
            ? store::estargz::read_toc(read, static_cast<uint64_t>(d.size), d.estargz_toc_digest)
            : store::zstd_chunked::read_toc(read, static_cast<uint64_t>(d.size),
                                            d.zstd_chunked_position, d.zstd_chunked_checksum);
    lazy->source = {ref.registry, ref.repository, d.digest, d.media_type, d.size, lazy->toc.digest};
    return lazy;
}

// A lazy layer of this blob (a lazy pull left it): a full pull completes it in place, fetching
// only what is missing, rather than downloading it again and swapping it.
bool completes_in_place(store::Store& store, const std::string& chain, const std::string& digest) {
    std::string dir = store.lazy_layer_dir(chain);
    if (!store.layer(chain) || !store::is_lazy_layer(dir)) return false;
    try {
        auto rec = store::read_lazy_record(dir);
        return rec && rec->source.digest == digest;
    } catch (const store::StoreError&) {
        return false;  // a record that does not parse: the whole download replaces it
    }
}

// pull_image without its last word on transport failures.
std::string pull_from(store::Store& store, const Settings& settings,
                      const std::vector<Reference>& candidates, const PullOptions& o,
                      std::ostream& out) {
    std::ostringstream sink;
    Progress progress(o.quiet ? static_cast<std::ostream&>(sink) : out,
                      o.live_progress && !o.quiet);
    Source src = find_source(settings, candidates, o, progress);
    const Reference& ref = src.ref;
    Client& client = *src.client;
    if (!o.quiet) out << ref.manifest_ref() << ": Pulling from " << ref.repository << "\n";

    store::Manifest m;
    FetchedManifest image_manifest = src.top;
    try {
        m = store::parse_manifest(src.top.body, src.top.media_type);
        if (m.is_index) {
            const store::Descriptor& d = store::select_platform(m, o.platform);
            image_manifest = client.get_manifest(d.digest);
            m = store::parse_manifest(image_manifest.body, image_manifest.media_type);
            if (m.is_index)
                throw RegistryError("the index for " + o.platform.str() +
                                    " names another index; lamina reads one level");
        }
    } catch (const std::invalid_argument& e) {
        throw RegistryError(ref.str() + ": " + e.what());
    } catch (const RegistryError&) {
        throw;
    } catch (const std::runtime_error& e) {
        throw RegistryError(ref.str() + ": " + e.what());
    }
    for (const auto& l : m.layers) {
        if (!store::layer_media_type_compression(l.media_type))
            throw RegistryError(ref.str() + ": layer " + l.digest + " has media type \"" +
                                l.media_type + "\", which lamina cannot unpack");
        if (l.has_urls)
            throw RegistryError(ref.str() + ": layer " + l.digest +
                                " is a foreign layer (urls), which lamina does not fetch");
    }

    std::string config = client.get_blob(m.config);
    std::vector<std::string> diff_ids;
    store::Platform got;
    try {
        json cfg = store::parse_json_limited(config, "image config", store::kMaxConfigBytes);
        diff_ids = store::image_config_diff_ids(cfg, m.layers.size(), "image config");
        if (o.platform_given) got = store::platform_member(cfg, "image config");
    } catch (const store::StoreError& e) {
        throw RegistryError(ref.str() + ": " + e.what());
    }
    if (o.platform_given) {
        if (got.os != o.platform.os || got.architecture != o.platform.architecture)
            progress.note("warning", "the image's platform " + got.str() +
                                         " does not match the requested " + o.platform.str());
    }

    // Which blobs to fetch: each distinct digest once, none the store already has. A lazy read
    // the registry answers with the whole blob leaves it downloaded (sent_whole).
    std::vector<store::PulledLayer> layers(m.layers.size());
    std::vector<size_t> to_fetch, to_complete, sent_whole;
    DownloadDir dir{store, ""};
    auto download_path = [&](const store::Descriptor& d) {
        if (dir.path.empty()) dir.path = store.make_download_dir();
        return dir.path + "/" + d.digest.substr(7);
    };
    std::set<std::string> seen;
    std::string chain;
    for (size_t i = 0; i < m.layers.size(); ++i) {
        const store::Descriptor& d = m.layers[i];
        chain = store::chain_id(chain, diff_ids[i]);
        layers[i] = {"", d.digest, d.media_type, d.size};
        if (store.has_layer_blob(chain, d.digest)) {
            if (seen.insert(d.digest).second)
                progress.status(short_digest(d.digest), "Already exists");
            continue;
        }
        if (!seen.insert(d.digest).second) continue;
        if (!o.lazy && completes_in_place(store, chain, d.digest)) {
            to_complete.push_back(i);
            progress.add(short_digest(d.digest), "Lazy: completing in place");
            continue;
        }
        if (o.lazy) {
            // Whatever keeps the TOC from being read (none, a registry without Range, a TOC
            // that does not check out) leaves the layer to an ordinary, verified download.
            std::string why = "no eStargz or zstd:chunked table of contents";
            auto whole_path = [&] {
                store.check_free_space(static_cast<uint64_t>(std::max<int64_t>(d.size, 0)),
                                       "layer " + d.digest);
                progress.add(short_digest(d.digest), "Downloading (sent whole for a range)");
                return download_path(d);
            };
            try {
                if (auto lazy = read_lazily(client, d, ref, whole_path)) {
                    layers[i].lazy = std::move(lazy);
                    progress.status(short_digest(d.digest), "Table of contents read (lazy)");
                    continue;
                }
            } catch (const WholeBlobSent&) {
                sent_whole.push_back(i);
                progress.status(short_digest(d.digest),
                                "Download complete (the registry sent the whole blob for a "
                                "range: not lazy)");
                continue;
            } catch (const std::runtime_error& e) {  // RegistryError, TransportError
                why = e.what();
            }
            progress.note(short_digest(d.digest), why + ": pulled whole");
        }
        to_fetch.push_back(i);
        progress.add(short_digest(d.digest), "Pulling fs layer");
    }
    // A lazy layer the image names twice is read once.
    for (auto& l : layers)
        for (const auto& other : layers)
            if (!l.lazy && other.lazy && other.digest == l.digest) l.lazy = other.lazy;

    // Declared sizes are checked before the first byte arrives, so a registry that lies cannot
    // fill the disk (the download stops at the declared size, and unpacking at the free space).
    uint64_t declared = 0;
    for (size_t i : to_fetch)
        declared += static_cast<uint64_t>(std::max<int64_t>(m.layers[i].size, 0));
    if (!to_fetch.empty()) store.check_free_space(declared, "the layers of " + ref.str());

    if (!to_fetch.empty() && dir.path.empty()) dir.path = store.make_download_dir();
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex error_mu;
    std::string first_error;
    auto worker = [&] {
        for (;;) {
            size_t k = next.fetch_add(1);
            if (k >= to_fetch.size() || failed) return;
            const store::Descriptor& d = m.layers[to_fetch[k]];
            std::string id = short_digest(d.digest);
            std::string path = dir.path + "/" + d.digest.substr(7);
            try {
                client.download_blob(
                    d, path,
                    [&](int64_t done) {
                        if (failed) throw RegistryError("stopped: another layer failed");
                        progress.bytes(id, "Downloading", done, d.size);
                    },
                    [&](const std::string& text) { progress.note(id, text); });
                progress.status(id, "Download complete");
            } catch (const std::exception& e) {
                std::lock_guard lk(error_mu);
                if (!failed.exchange(true)) first_error = e.what();
                return;
            }
        }
    };
    size_t threads = std::min<size_t>(static_cast<size_t>(std::max(1, o.max_concurrent_downloads)),
                                      to_fetch.size());
    std::vector<std::thread> pool;
    for (size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
    if (failed) throw RegistryError(ref.str() + ": " + first_error);

    // Lazy layers: each missing file, then the rest of the blob, checked against the blob's
    // digest, the TOC and the diff ID; the layer is ordinary after (docs/lazy.md).
    for (size_t i : to_complete) {
        const store::Descriptor& d = m.layers[i];
        std::string id = short_digest(d.digest);
        std::string chain_of_i;
        for (size_t k = 0; k <= i; ++k) chain_of_i = store::chain_id(chain_of_i, diff_ids[k]);
        try {
            complete_lazy_layer(
                store, chain_of_i, settings, o.client, lazy_timeout_seconds(), true,
                [&](const std::string& text) { progress.status(id, "Completing: " + text); }, &ref);
        } catch (const std::runtime_error& e) {
            throw RegistryError(ref.str() + ": cannot complete lazy layer " + d.digest + ": " +
                                e.what());
        }
        progress.status(id, "Pull complete (completed in place)");
    }

    // Every fetched blob (and duplicates of it) points at its verified file.
    to_fetch.insert(to_fetch.end(), sent_whole.begin(), sent_whole.end());
    for (auto& l : layers)
        for (size_t i : to_fetch)
            if (m.layers[i].digest == l.digest) l.path = dir.path + "/" + l.digest.substr(7);

    std::string name = ref.store_name();
    bool existed = false;
    try {
        existed = store.image(store::sha256_digest(config)).id.size() > 0;
    } catch (const store::StoreError&) {
    }
    for (size_t i : to_fetch) progress.status(short_digest(m.layers[i].digest), "Extracting");
    store::LoadedImage img;
    try {
        img = store.store_pulled_image(
            config, image_manifest.body, layers,
            name.empty() ? std::vector<std::string>{} : std::vector<std::string>{name});
    } catch (const store::StoreError& e) {
        throw RegistryError(ref.str() + ": " + e.what());
    }
    dir.stored = true;
    store.record_repo_digest(img.id, ref.registry + "/" + ref.repository, src.top.digest);
    for (size_t i : to_fetch) progress.status(short_digest(m.layers[i].digest), "Pull complete");
    for (const auto& w : img.warnings) progress.note("warning", w);
    if (!o.quiet) {
        out << "Digest: " << src.top.digest << "\n";
        bool fresh = !existed || img.new_layers > 0;
        out << "Status: " << (fresh ? "Downloaded newer image for " : "Image is up to date for ")
            << (name.empty() ? ref.str() : name) << "\n";
    }
    out << ref.str() << "\n";
    return img.id;
}

}  // namespace

std::string pull_image(store::Store& store, const Settings& settings,
                       const std::vector<Reference>& candidates, const PullOptions& o,
                       std::ostream& out) {
    try {
        return pull_from(store, settings, candidates, o, out);
    } catch (const TransportError& e) {
        throw RegistryError("cannot pull " + candidates.back().str() + ": " + e.what());
    }
}

}  // namespace lamina::registry
