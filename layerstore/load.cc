// Taking images in: every blob and layer is staged under tmp/ and verified, then renamed into
// place, and one database transaction makes the image exist.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "config_changes.h"
#include "db.h"
#include "digest.h"
#include "error.h"
#include "fsutil.h"
#include "image_format.h"
#include "internal.h"
#include "json_input.h"
#include "lazy_layer.h"
#include "lock.h"
#include "store.h"
#include "unpack.h"

namespace lamina::store {

using nlohmann::json;

namespace {

struct StagedLayer {
    LayerRecord record;
    std::string dir;  // staged layer directory (holds diff/)
    // It takes the place of a lazy layer of the same chain ID: verified whole, it is what that
    // layer's placeholders promised (docs/lazy.md).
    bool replaces_lazy = false;
};

struct StagedBlob {
    std::string digest;
    int64_t size;
    std::string path;
};

bool blob_known(Db& db, const std::string& digest) {
    Stmt st(db, "SELECT 1 FROM blobs WHERE digest = ?");
    st.bind(1, digest);
    return st.step();
}

}  // namespace

LoadedImage Store::store_image(const std::string& config, const std::string& manifest_in,
                               const std::vector<SourceLayer>& layers,
                               const std::vector<std::string>& names_in,
                               const std::string& staging) {
    Layout l{root_};
    const std::string what = "image config " + sha256_digest(config);
    const std::vector<std::string> diff_ids = image_config_diff_ids(
        parse_json_limited(config, what, kMaxConfigBytes), layers.size(), what);
    std::vector<std::string> names;
    for (const auto& n : names_in) names.push_back(normalize_reference(n));

    UnpackOptions opts;
    opts.mode = UnpackOptions::Mode::Layer;
    opts.privileged = geteuid() == 0;
    opts.reserve_bytes = reserve_;

    LoadedImage result;
    result.id = sha256_digest(config);
    result.names = names;
    std::vector<LayerRef> refs;
    std::vector<StagedLayer> new_layers;
    std::vector<StagedBlob> new_blobs;
    std::set<std::string> staged_chain_ids;
    std::string chain;
    for (size_t i = 0; i < layers.size(); ++i) {
        const SourceLayer& src = layers[i];
        std::string where =
            "layer " + std::to_string(i + 1) + " of " + std::to_string(layers.size());
        const std::string& diff_id = diff_ids[i];
        std::string parent = chain;
        chain = chain_id(chain, diff_id);
        auto existing = layer(chain);
        bool staged = staged_chain_ids.count(chain) > 0;
        LayerRef ref{chain, src.digest, src.media_type, src.size};

        if ((existing || staged) && src.digest.empty()) {
            // docker-archive names no blob: the layer's own blob serves.
            if (existing) {
                ref.blob = existing->blob;
                ref.blob_media_type = existing->blob_media_type;
                ref.blob_size = existing->blob_size;
            } else {
                for (const auto& s : new_layers)
                    if (s.record.id == chain) {
                        ref.blob = s.record.blob;
                        ref.blob_media_type = s.record.blob_media_type;
                        ref.blob_size = s.record.blob_size;
                    }
            }
            refs.push_back(ref);
            continue;
        }
        // A lazily pulled layer: its verified TOC becomes the tree, its contents placeholders.
        // Its diff ID is the config's word only (docs/lazy.md, "Verification"), so it shares a
        // chain ID with no layer of another blob.
        std::string existing_dir = l.layers() + "/" + digest_hex(chain);
        if (src.lazy) {
            if (existing || staged) {
                auto rec = existing ? read_lazy_record(existing_dir) : std::nullopt;
                if (rec && (rec->source.digest != src.digest ||
                            rec->source.toc_digest != src.lazy->source.toc_digest))
                    throw StoreError(where + ": the store holds layer " + chain +
                                     " lazily from another blob (" + rec->source.digest + ")");
                refs.push_back(ref);
                continue;
            }
            std::string stage = staging + "/layer-" + std::to_string(i);
            make_dirs(stage + "/layer/diff", 0700);
            UnpackResult r;
            std::vector<estargz::Placeholder> pending;
            try {
                pending = estargz::unpack_toc(src.lazy->toc, stage + "/layer/diff", opts, r);
                write_lazy_record(stage + "/layer", src.lazy->source, src.lazy->toc, pending);
            } catch (const StoreError& e) {
                throw StoreError(where + ": " + e.what());
            }
            for (const auto& w : r.warnings) result.warnings.push_back(where + ": " + w);
            StagedLayer s;
            s.dir = stage + "/layer";
            s.record = LayerRecord{chain,          parent,   diff_id, new_link_name(), src.digest,
                                   src.media_type, src.size, 0,       now_seconds()};
            new_layers.push_back(std::move(s));
            staged_chain_ids.insert(chain);
            refs.push_back(ref);
            continue;
        }
        // Named without content (commit names its image's layers so): a lazy layer stays lazy;
        // save and push complete it first (docs/lazy.md).
        if (existing && src.path.empty() && is_lazy_layer(existing_dir)) {
            refs.push_back(ref);
            continue;
        }
        // A lazy layer no mounted container uses is swapped for this one once it is unpacked
        // and its diff ID checked.
        std::string lazy_link;
        if (existing && is_lazy_layer(existing_dir)) {
            // A mounted container reads the lazy tree: it cannot be swapped under it.
            Stmt users(*db_,
                       "SELECT DISTINCT c.id FROM containers c JOIN image_layers il "
                       "ON il.image_id = c.image_id WHERE il.layer_id = ?");
            users.bind(1, chain);
            while (users.step())
                if (is_mounted(container(users.text(0))))
                    throw StoreError(where + ": layer " + chain +
                                     " is lazy and a mounted container uses it; unmount it "
                                     "before pulling the image whole");
            lazy_link = existing->link;
            existing.reset();
        }
        bool have_blob = !src.digest.empty() &&
                         (blob_known(*db_, src.digest) ||
                          std::any_of(new_blobs.begin(), new_blobs.end(),
                                      [&](const StagedBlob& b) { return b.digest == src.digest; }));
        if ((existing || staged) && have_blob) {
            refs.push_back(ref);
            continue;
        }
        std::string stage = staging + "/layer-" + std::to_string(i);
        make_dirs(stage + "/layer/diff", 0700);
        std::string blob_file = have_blob ? l.blob(src.digest) : stage + "/blob";
        if (!have_blob) {
            auto [digest, size] = copy_and_hash(src.path, blob_file);
            if (!src.digest.empty() && digest != src.digest)
                throw StoreError(where + ": blob digest mismatch: the manifest says " + src.digest +
                                 ", the archive holds " + digest);
            if (src.size >= 0 && size != src.size)
                throw StoreError(where + ": blob size mismatch: the manifest says " +
                                 std::to_string(src.size) + ", the archive holds " +
                                 std::to_string(size));
            ref.blob = digest;
            ref.blob_size = size;
            const std::string& blob_digest = digest;  // C++20 lets a lambda capture a structured
                                                      // binding; clang 14 does not yet
            bool dup = std::any_of(new_blobs.begin(), new_blobs.end(),
                                   [&](const StagedBlob& b) { return b.digest == blob_digest; });
            if (!dup && !blob_known(*db_, digest)) new_blobs.push_back({digest, size, blob_file});
        }
        UnpackResult r;
        try {
            // A blob's compression must be the one its media type names; one without a media
            // type (docker-archive, import) may be any a media type can name.
            opts.compressions = kLayerCompressions;
            if (!src.media_type.empty()) {
                auto c = layer_media_type_compression(src.media_type);
                if (!c) throw StoreError("unsupported media type \"" + src.media_type + "\"");
                opts.compressions = *c;
            }
            r = unpack_tar(blob_file, stage + "/layer/diff", opts);
        } catch (const StoreError& e) {
            throw StoreError(where + ": " + e.what());
        }
        if (ref.blob_media_type.empty()) ref.blob_media_type = layer_media_type(r.compression);
        if (r.diff_id != diff_id)
            throw StoreError(where + ": diffID mismatch: the config says " + diff_id +
                             ", the content is " + r.diff_id);
        for (const auto& w : r.warnings) result.warnings.push_back(where + ": " + w);
        if (!existing && !staged) {
            StagedLayer s;
            s.dir = stage + "/layer";
            s.replaces_lazy = !lazy_link.empty();
            s.record =
                LayerRecord{chain,         parent,
                            diff_id,       s.replaces_lazy ? lazy_link : new_link_name(),
                            ref.blob,      ref.blob_media_type,
                            ref.blob_size, static_cast<int64_t>(tree_size(stage + "/layer/diff")),
                            now_seconds()};
            new_layers.push_back(std::move(s));
            staged_chain_ids.insert(chain);
        }
        refs.push_back(ref);
    }
    std::string manifest = manifest_in.empty() ? make_manifest(config, refs) : manifest_in;

    // Everything is verified; move it into place. Names the database does not know yet are
    // debris until the transaction below commits.
    for (const auto& b : new_blobs) {
        if (::rename(b.path.c_str(), l.blob(b.digest).c_str()) != 0)
            throw_errno("cannot move blob into", l.blob(b.digest), errno);
    }
    for (const auto& s : new_layers) {
        std::string dest = l.layers() + "/" + digest_hex(s.record.id);
        if (s.replaces_lazy) {
            // One atomic swap: the lazy one lands in staging and goes with it; its link and row
            // stay, and at no moment is the row without its directory.
            if (::renameat2(AT_FDCWD, s.dir.c_str(), AT_FDCWD, dest.c_str(), RENAME_EXCHANGE) != 0)
                throw_errno("cannot swap the lazy layer for the pulled one at", dest, errno);
            ++result.new_layers;
            continue;
        }
        if (::rename(s.dir.c_str(), dest.c_str()) != 0)
            throw_errno("cannot move layer into", dest, errno);
        std::string link = l.links() + "/" + s.record.link;
        std::string target = "../layers/" + digest_hex(s.record.id) + "/diff";
        if (::symlink(target.c_str(), link.c_str()) != 0)
            throw_errno("cannot create link", link, errno);
        ++result.new_layers;
    }
    if (!new_layers.empty() || !new_blobs.empty()) {
        Fd rootfd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (rootfd) ::syncfs(rootfd.get());
    }
    Transaction tx(*db_);
    for (const auto& b : new_blobs)
        Stmt(*db_, "INSERT OR IGNORE INTO blobs(digest, size) VALUES(?, ?)")
            .bind(1, b.digest)
            .bind(2, b.size)
            .run();
    for (const auto& s : new_layers) {
        const auto& r = s.record;
        if (s.replaces_lazy) {
            Stmt(*db_,
                 "UPDATE layers SET blob = ?, blob_media_type = ?, blob_size = ?, size = ? "
                 "WHERE id = ?")
                .bind_all(r.blob, r.blob_media_type, r.blob_size, r.size, r.id)
                .run();
            continue;
        }
        Stmt(*db_,
             "INSERT INTO layers(id, parent, diff_id, link, blob, blob_media_type, blob_size, "
             "size, created) "
             "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind_all(r.id, r.parent, r.diff_id, r.link, r.blob, r.blob_media_type, r.blob_size,
                      r.size, r.created)
            .run();
    }
    Stmt exists(*db_, "SELECT 1 FROM images WHERE id = ?");
    exists.bind(1, result.id);
    if (!exists.step()) {
        Stmt(*db_, "INSERT INTO images(id, manifest, config, stored) VALUES(?, ?, ?, ?)")
            .bind(1, result.id)
            .bind(2, manifest)
            .bind(3, config)
            .bind(4, now_seconds())
            .run();
        for (size_t i = 0; i < refs.size(); ++i)
            Stmt(*db_,
                 "INSERT INTO image_layers(image_id, idx, layer_id, blob, blob_media_type, "
                 "blob_size) VALUES(?, ?, ?, ?, ?, ?)")
                .bind(1, result.id)
                .bind(2, static_cast<int64_t>(i))
                .bind(3, refs[i].chain_id)
                .bind(4, refs[i].blob)
                .bind(5, refs[i].blob_media_type)
                .bind(6, refs[i].blob_size)
                .run();
    }
    for (const auto& n : names) set_name(n, result.id);
    tx.commit();
    return result;
}

std::vector<LoadedImage> Store::load(const std::string& path) {
    Layout l{root_};
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) throw_errno("cannot load", path, errno);
    StagingDir staging(l, "load");
    std::vector<LoadedImage> out;
    try {
        std::string source = path;
        if (!S_ISDIR(st.st_mode)) {
            source = staging.path() + "/archive";
            make_dirs(source, 0700);
            UnpackOptions opts;
            opts.mode = UnpackOptions::Mode::Plain;
            opts.compressions = kArchiveCompressions;
            opts.reserve_bytes = reserve_;
            unpack_tar(path, source, opts);
        }
        auto images = read_image_source(source);
        for (size_t i = 0; i < images.size(); ++i) {
            std::string dir = staging.path() + "/image-" + std::to_string(i);
            make_dirs(dir, 0700);
            out.push_back(store_image(images[i].config, images[i].manifest, images[i].layers,
                                      images[i].names, dir));
        }
    } catch (const StoreError& e) {
        throw StoreError("cannot load " + path + ": " + e.what());
    }
    return out;
}

LoadedImage Store::import_tarball(const std::string& tarball, const std::string& ref,
                                  const ImageMetadata& meta, const std::string& shown_as) {
    Layout l{root_};
    std::string name = ref.empty() ? "" : normalize_reference(ref);
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    StagingDir staging(l, "import");
    try {
        // The diffID is known only after reading the tar once.
        std::string probe = staging.path() + "/probe";
        make_dirs(probe, 0700);
        UnpackOptions opts;
        opts.privileged = geteuid() == 0;
        opts.reserve_bytes = reserve_;
        std::string diff_id = unpack_tar(tarball, probe, opts).diff_id;
        remove_tree(probe);
        std::string now = format_rfc3339(now_seconds());
        std::string source = shown_as.empty() ? tarball : shown_as;
        Platform host = host_platform();
        json cfg = {{"architecture", host.architecture},
                    {"os", host.os},
                    {"created", now},
                    {"config", json::object()},
                    {"rootfs", {{"type", "layers"}, {"diff_ids", {diff_id}}}},
                    {"history", {{{"created", now}, {"created_by", "lamina import " + source}}}}};
        if (!host.variant.empty()) cfg["variant"] = host.variant;
        if (!meta.message.empty()) cfg["history"][0]["comment"] = meta.message;
        try {
            apply_config_changes(cfg, meta.changes);
        } catch (const std::invalid_argument& e) {
            throw StoreError(e.what());
        }
        SourceLayer sl;
        sl.path = tarball;
        return store_image(cfg.dump(), "", {sl},
                           name.empty() ? std::vector<std::string>{} : std::vector{name},
                           staging.path());
    } catch (const StoreError& e) {
        throw StoreError("cannot import " + tarball + ": " + e.what());
    }
}

}  // namespace lamina::store
