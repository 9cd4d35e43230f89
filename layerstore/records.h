// What the store records about layers, images and containers, apart from how it is kept.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lamina::store {

// A layer is known by its chain ID; two images with the same layer stack share the directory.
struct LayerRecord {
    std::string id;       // chain ID "sha256:..."
    std::string parent;   // parent's chain ID, "" for a bottom layer
    std::string diff_id;  // sha256 of the uncompressed tar
    std::string link;     // short name under <root>/l/
    std::string blob;     // digest of the blob kept for save (compressed as received)
    std::string blob_media_type;
    int64_t blob_size = 0;
    int64_t size = 0;     // bytes of file content in the unpacked directory
    int64_t created = 0;  // when the store unpacked it (seconds)
};

struct LayerRef {
    std::string chain_id;
    std::string blob;  // the blob this image's manifest names for the layer
    std::string blob_media_type;
    int64_t blob_size = 0;
};

struct ImageRecord {
    std::string id;                  // config digest "sha256:..."
    std::string manifest;            // OCI image manifest JSON, exactly as its digest was taken
    std::string config;              // image config JSON
    int64_t stored = 0;              // when the store took it in
    std::vector<std::string> names;  // "repo:tag"
    std::vector<LayerRef> layers;    // bottom first
    // "repo@sha256:..." for each repository the image was pulled from or pushed to.
    std::vector<std::string> repo_digests;
};

struct ContainerRecord {
    std::string id;  // 64 hex digits
    std::string name;
    std::string image_id;
    int64_t created = 0;
    // create -e and --label: what commit takes into the image's config.
    std::vector<std::string> env;  // "KEY=VALUE"
    std::map<std::string, std::string> labels;
};

// One line of `docker diff`: 'A'dded, 'C'hanged or 'D'eleted, path absolute in the container.
struct Change {
    char kind;
    std::string path;
};

// A history entry of an image config, with the layer it made (empty for metadata-only steps).
struct HistoryEntry {
    int64_t created = 0;
    std::string created_by;
    std::string comment;
    bool empty_layer = false;
    std::string layer;  // chain ID
    int64_t size = 0;
};

}  // namespace lamina::store
