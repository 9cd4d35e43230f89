// `lamina push`: the stored manifest, config and layer blobs go up as they are, so the
// registry serves the same digests the store holds.
#include <sys/stat.h>

#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "digest.h"
#include "error.h"
#include "estargz.h"
#include "fsutil.h"
#include "progress.h"
#include "transfer.h"

namespace lamina::registry {

using nlohmann::json;

namespace {

int64_t file_size(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) throw RegistryError("cannot read blob " + path);
    return st.st_size;
}

// Repositories on dest's registry that this image was pulled from or tagged for: a blob the
// registry holds there can be mounted instead of uploaded.
std::vector<std::string> mount_sources(const store::ImageRecord& img, const Reference& dest) {
    std::vector<std::string> out;
    for (const auto& n : img.names) {
        try {
            Reference r = parse_reference(n);
            if (r.registry == dest.registry && r.repository != dest.repository)
                out.push_back(r.repository);
        } catch (const std::invalid_argument&) {
        }
    }
    return out;
}

}  // namespace

namespace {

std::string push_to(store::Store& store, const Settings& settings, const std::string& local,
                    const Reference& dest, const PushOptions& o, std::ostream& out) {
    store::ImageRecord img = store.image(local);
    auto hold = store.hold_blobs();  // nothing this image uses may go while it is pushed
    std::ostringstream sink;
    Progress progress(o.quiet ? static_cast<std::ostream&>(sink) : out,
                      o.live_progress && !o.quiet);
    ClientOptions copts = o.client;
    copts.push = true;
    Client client(settings, settings.push_endpoint(dest), copts);
    auto sources = mount_sources(img, dest);
    for (const auto& s : sources) client.add_pull_scope(s);
    client.ping();
    if (!o.quiet)
        out << "The push refers to repository [" << dest.registry << "/" << dest.repository
            << "]\n";

    // What goes up: the stored image as it is, or every layer rewritten (--compression-format).
    struct Outgoing {
        std::vector<std::pair<std::string, std::string>> blobs;  // digest, file; bottom first
        std::string config_digest, config, manifest, media_type;
    } up;
    std::string convert_dir;
    struct DirRemover {
        std::string& dir;
        ~DirRemover() {
            if (!dir.empty()) store::remove_tree(dir);
        }
    } remover{convert_dir};
    if (!o.convert_to) {
        try {
            up.media_type = json::parse(img.manifest).value("mediaType", store::kOciManifest);
        } catch (const json::exception& e) {
            throw RegistryError("stored manifest of " + local + " is not JSON: " + e.what());
        }
        for (auto it = img.layers.rbegin(); it != img.layers.rend(); ++it)
            up.blobs.emplace_back(it->blob, store.blob_file(it->blob));
        up.config_digest = img.id;
        up.config = img.config;
        up.manifest = img.manifest;
    } else {
        const std::string format = store::estargz::format_name(*o.convert_to);
        convert_dir = store.make_download_dir();
        if (!o.quiet) {
            size_t kept = store::estargz::layers_already_in(img, *o.convert_to);
            size_t n = img.layers.size() - kept;
            out << "Converting " << n << (n == 1 ? " layer" : " layers") << " to " << format;
            if (kept > 0)
                out << " (" << kept << (kept == 1 ? " is " : " are ") << format
                    << " already: kept as " << (kept == 1 ? "it is" : "they are") << ")";
            out << "\n";
        }
        store::estargz::ConvertedImage c;
        store::estargz::WriteOptions wo;
        wo.format = *o.convert_to;
        wo.prefetch = o.prefetch;
        try {
            c = store::estargz::convert_image(
                img, [&](const std::string& d) { return store.blob_file(d); }, convert_dir, wo);
        } catch (const store::StoreError& e) {
            throw RegistryError("cannot convert " + local + " to " + format + ": " + e.what());
        }
        for (const auto& w : c.warnings) std::cerr << "lamina: warning: " << w << "\n";
        up.blobs.assign(c.blobs.rbegin(), c.blobs.rend());
        up.config = c.config;
        up.config_digest = store::sha256_digest(c.config);
        up.manifest = c.manifest;
        up.media_type = store::kOciManifest;
    }
    std::set<std::string> done;
    for (const auto& [digest, path] : up.blobs) {
        if (!done.insert(digest).second) continue;
        std::string id = digest.substr(7, 12);
        if (client.blob_exists(digest)) {
            progress.status(id, "Layer already exists");
            continue;
        }
        bool mounted = false;
        for (const auto& from : sources) {
            if (client.mount_blob(digest, from)) {
                progress.status(id, "Mounted from " + from);
                mounted = true;
                break;
            }
        }
        if (mounted) continue;
        int64_t size = file_size(path);
        progress.add(id, "Preparing");
        client.upload_blob(digest, path, size,
                           [&](int64_t sent) { progress.bytes(id, "Pushing", sent, size); });
        progress.status(id, "Pushed");
    }
    // The config is the one blob kept in the database rather than blobs/.
    if (!client.blob_exists(up.config_digest)) {
        std::string dir = store.make_download_dir();
        std::string path = dir + "/config";
        {
            std::ofstream f(path, std::ios::binary);
            f << up.config;
        }
        try {
            client.upload_blob(up.config_digest, path, static_cast<int64_t>(up.config.size()),
                               [](int64_t) {});
        } catch (...) {
            store::remove_tree(dir);
            throw;
        }
        store::remove_tree(dir);
    }
    std::string ref = dest.digest.empty() ? dest.tag : dest.digest;
    std::string digest = client.put_manifest(ref, up.manifest, up.media_type);
    if (!o.quiet)
        out << ref << ": digest: " << digest << " size: " << up.manifest.size() << "\n";
    else
        out << dest.str() << "\n";
    return digest;
}

}  // namespace

std::string push_image(store::Store& store, const Settings& settings, const std::string& local,
                       const Reference& dest, const PushOptions& o, std::ostream& out) {
    try {
        return push_to(store, settings, local, dest, o, out);
    } catch (const TransportError& e) {
        throw RegistryError("cannot push to " + dest.str() + ": " + e.what());
    }
}

}  // namespace lamina::registry
