// Converting a stored image to eStargz or zstd:chunked: estargz::convert_image writes the blobs, the store takes
// them in as it takes a pulled image (each layer unpacked and checked against its diff ID).
#include "convert.h"

#include <map>

#include "error.h"
#include "image_format.h"
#include "printable.h"

namespace lamina::store {

LoadedImage convert_stored_image(Store& store, const std::string& ref, const std::string& new_ref,
                                 const estargz::WriteOptions& options) {
    std::string name = normalize_reference(new_ref);
    for (const auto& s : store.images())
        for (const auto& n : s.image.names)
            if (n == name)
                throw StoreError("cannot convert to " + printable(name) +
                                 ": that name is taken (by image " + s.image.id.substr(7, 12) +
                                 ")");
    ImageRecord image = store.image(ref);
    std::string dir = store.make_download_dir();
    try {
        estargz::ConvertedImage c;
        {
            auto hold = store.hold_blobs();  // the source's blobs stay while they are read
            try {
                c = estargz::convert_image(
                    image, [&](const std::string& d) { return store.blob_file(d); }, dir, options);
            } catch (const StoreError& e) {
                throw StoreError("cannot convert " + printable(ref) + " to " +
                                 estargz::format_name(options.format) + ": " + e.what());
            }
        }
        std::map<std::string, std::string> paths(c.blobs.begin(), c.blobs.end());
        Manifest m = parse_manifest(c.manifest, kOciManifest);
        std::vector<PulledLayer> layers;
        for (const auto& d : m.layers) {
            PulledLayer p;
            p.path = paths.at(d.digest);
            p.digest = d.digest;
            p.media_type = d.media_type;
            p.size = d.size;
            layers.push_back(std::move(p));
        }
        LoadedImage loaded = store.store_pulled_image(c.config, c.manifest, layers, {name});
        for (auto& w : c.warnings) loaded.warnings.push_back(std::move(w));
        store.end_download_dir(dir, false);
        return loaded;
    } catch (...) {
        store.end_download_dir(dir, false);
        throw;
    }
}

}  // namespace lamina::store
