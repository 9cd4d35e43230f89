// The store: layers by chain ID, images and containers in SQLite, content under one root directory.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "records.h"

namespace lamina::store {

class Db;

enum class ArchiveFormat { DockerArchive, OciArchive };

struct LoadedImage {
    std::string id;
    std::vector<std::string> names;
    int new_layers = 0;  // layers unpacked by this load (0 when everything was already stored)
    std::vector<std::string> warnings;
};

struct ContainerState {
    ContainerRecord record;
    bool mounted = false;
    int64_t size = -1;          // writable layer bytes (computed only when asked)
    int64_t virtual_size = -1;  // writable + image
};

struct ImageSummary {
    ImageRecord image;
    int64_t created = 0;      // from the config
    int64_t size = 0;         // all layers
    int64_t shared_size = 0;  // layers another image also uses
    int containers = 0;
};

struct DiskUsage {
    int images = 0, images_active = 0;
    int64_t images_size = 0, images_reclaimable = 0;  // distinct layers
    int containers = 0, containers_active = 0;
    int64_t containers_size = 0, containers_reclaimable = 0;
    int layers = 0;
    int64_t layers_size = 0;
    int64_t blobs_size = 0;
    std::vector<ImageSummary> image_details;
};

struct PruneReport {
    std::vector<std::string> containers;
    std::vector<std::string> images;
    int layers = 0;
    int64_t reclaimed = 0;
};

struct StoreInfo {
    std::string root;
    std::string driver = "laminafs";
    std::string driver_version;
    std::string laminafs_path;
    std::string backing_filesystem;
    bool kernel_whiteouts = false;  // mknod 0/0 works in the store
    bool trusted_xattrs = false;
    bool user_xattrs = false;
    int images = 0, containers = 0, containers_mounted = 0, layers = 0;
};

class Store {
public:
    // Opens (creating as needed) the store at root and finishes or removes half-done work
    // when no other process is using the store.
    explicit Store(const std::string& root);
    ~Store();
    Store(const Store&) = delete;
    Store& operator=(const Store&) = delete;

    const std::string& root() const { return root_; }

    // Images.
    std::vector<LoadedImage> load(const std::string& path);  // archive file or OCI layout dir
    LoadedImage import_tarball(const std::string& tarball, const std::string& ref,
                               const std::string& message = "");
    void save(const std::vector<std::string>& refs, const std::string& output,
              ArchiveFormat format);
    std::vector<ImageSummary> images();
    ImageRecord image(const std::string& ref);  // by name, name without :latest, ID or ID prefix
    std::vector<HistoryEntry> history(const std::string& ref);
    void tag(const std::string& ref, const std::string& name);
    // Untags names or removes the image (refused while a container uses it unless force, which
    // removes those containers too). Returns "Untagged: X" / "Deleted: ID" lines.
    std::vector<std::string> remove_image(const std::string& ref, bool force);
    std::vector<LayerRecord> layers();
    std::optional<LayerRecord> layer(const std::string& chain_id);
    std::string layer_dir(const std::string& chain_id) const;

    // Containers.
    ContainerRecord create_container(const std::string& image_ref, const std::string& name);
    std::vector<ContainerState> containers(bool sizes);
    ContainerRecord container(const std::string& ref);  // by name, ID or ID prefix
    std::string mount(const std::string& ref);          // the merged path
    void unmount(const std::string& ref);
    void remove_container(const std::string& ref, bool force);
    std::vector<Change> diff(const std::string& ref);
    LoadedImage commit(const std::string& container_ref, const std::string& ref,
                       const std::string& message);
    std::string container_dir(const std::string& id) const { return root_ + "/containers/" + id; }
    bool is_mounted(const ContainerRecord& c) const;

    // System.
    DiskUsage disk_usage();
    PruneReport prune(bool all_unused_images);
    StoreInfo info();

    // The laminafs binary: $LAMINAFS, ../fs/laminafs next to this executable, or PATH.
    static std::string laminafs_binary();

private:
    class Recovery;
    void recover();
    void ensure_layout();
    std::vector<std::string> lower_links(const ImageRecord& img);
    std::string squash_lowest(const ImageRecord& img, size_t count);
    void delete_unreferenced();
    LoadedImage store_image(const std::string& config, const std::string& manifest,
                            const std::vector<struct SourceLayer>& layers,
                            const std::vector<std::string>& names, const std::string& staging);
    ImageRecord read_image(const std::string& id);
    std::string resolve_image_id(const std::string& ref);
    void set_name(const std::string& name, const std::string& image_id);

    std::string root_;
    std::unique_ptr<Db> db_;
};

// "busybox" -> "busybox:latest"; validates the characters of a reference.
std::string normalize_reference(const std::string& ref);
// Splits "repo:tag" at the tag's colon (a port in the registry part is not a tag).
std::pair<std::string, std::string> split_reference(const std::string& name);
// Seconds since the epoch from an RFC 3339 time ("2024-01-02T03:04:05.123Z"), 0 when unparsable.
int64_t parse_rfc3339(const std::string& s);
std::string format_rfc3339(int64_t seconds);

}  // namespace lamina::store
