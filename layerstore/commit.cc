// `lamina commit`: the container's changes become one new layer on top of the image's layers.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "config_changes.h"
#include "db.h"
#include "error.h"
#include "fsutil.h"
#include "internal.h"
#include "layer_tar.h"
#include "lock.h"
#include "store.h"

namespace lamina::store {

using nlohmann::json;

LoadedImage Store::commit(const std::string& container_ref, const std::string& ref,
                          const ImageMetadata& meta) {
    Layout l{root_};
    std::string name = ref.empty() ? "" : normalize_reference(ref);
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    ContainerRecord c = container(container_ref);
    ImageRecord img = read_image(c.image_id);
    StagingDir staging(l, "commit");
    try {
        std::string tar = staging.path() + "/layer.tar";
        std::string diff_id = write_layer_tar(container_paths(c.id).upper(), tar);
        auto [digest, size] = hash_file(tar);
        json cfg = json::parse(img.config);
        std::string now = format_rfc3339(now_seconds());
        cfg["created"] = now;
        cfg["rootfs"]["diff_ids"].push_back(diff_id);
        if (!cfg.contains("history") || !cfg["history"].is_array()) cfg["history"] = json::array();
        json h = {{"created", now}, {"created_by", "lamina commit " + c.name}};
        if (!meta.message.empty()) h["comment"] = meta.message;
        if (!meta.author.empty()) {
            cfg["author"] = meta.author;
            h["author"] = meta.author;
        }
        cfg["history"].push_back(h);
        // The container's -e and --label, then the --change lines, as docker commit.
        json& config = cfg["config"];
        if (!config.is_object()) config = json::object();
        if (!c.env.empty() && (!config.contains("Env") || !config["Env"].is_array()))
            config["Env"] = json::array();
        for (const auto& e : c.env) set_env(config["Env"], e);
        if (!c.labels.empty() && (!config.contains("Labels") || !config["Labels"].is_object()))
            config["Labels"] = json::object();
        for (const auto& [k, v] : c.labels) config["Labels"][k] = v;
        try {
            apply_config_changes(cfg, meta.changes);
        } catch (const std::invalid_argument& e) {
            throw StoreError(e.what());
        }

        std::vector<SourceLayer> sources;
        for (const auto& lr : img.layers) {
            SourceLayer s;
            s.digest = lr.blob;
            s.media_type = lr.blob_media_type;
            s.size = lr.blob_size;
            sources.push_back(s);
        }
        SourceLayer top;
        top.path = tar;
        top.digest = digest;
        top.media_type = kOciLayerTar;
        top.size = size;
        sources.push_back(top);
        return store_image(cfg.dump(), "", sources,
                           name.empty() ? std::vector<std::string>{} : std::vector{name},
                           staging.path());
    } catch (const json::exception& e) {
        throw StoreError("cannot commit " + c.name + ": image config: " + e.what());
    } catch (const StoreError& e) {
        throw StoreError("cannot commit " + c.name + ": " + e.what());
    }
}

}  // namespace lamina::store
