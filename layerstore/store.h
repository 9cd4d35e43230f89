// The store: layers by chain ID, images and containers in SQLite, content under one root directory.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lazy_layer.h"
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

// What commit and import record in the new image's config besides its layer.
struct ImageMetadata {
    std::string message;               // the history entry's comment
    std::string author;                // commit --author
    std::vector<std::string> changes;  // --change: Dockerfile instructions (config_changes.h)
};

// Where a container's parts live, named once: dir holds the writable layer (upper), the
// overlay's work directory, the mount point of the union (merged), and the file saying the
// union's volumes are all mounted.
struct ContainerPaths {
    std::string dir;  // <root>/containers/<id>, or containers/<id> relative to the root
    std::string upper() const { return dir + "/upper"; }
    std::string work() const { return dir + "/work"; }
    std::string merged() const { return dir + "/merged"; }
    std::string volumes_done() const { return dir + "/volumes-mounted"; }
    // Relative to the store root: what the mount options name, to stay within a page.
    static ContainerPaths relative(const std::string& id) { return {"containers/" + id}; }
};

struct ContainerState {
    ContainerRecord record;
    bool mounted = false;
    // Mounted, but with no working union there: its laminafs daemon was killed (docker's
    // "Dead"). `lamina mount` puts up a fresh one, `lamina umount` clears it.
    bool dead = false;
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
    int64_t downloads_size = 0;  // partial downloads of failed pulls, kept for resuming
    std::vector<ImageSummary> image_details;
};

struct PruneReport {
    std::vector<std::string> containers;
    std::vector<std::string> images;
    int layers = 0;
    int64_t reclaimed = 0;
    int64_t downloads_reclaimed = 0;  // kept partial downloads removed (in reclaimed too)
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

// ---- Volumes: data that outlives its containers (docs/store.md, "Volumes") ----

// A volume under <root>/volumes/NAME/_data; the local driver's options as Docker's:
// {type=tmpfs, o=size=...} mounts a fresh tmpfs per container mount, {type=none, o=bind,
// device=/path} binds a host directory; no options is a plain directory.
struct VolumeRecord {
    std::string name;
    std::string driver = "local";
    int64_t created = 0;
    bool anonymous = false;  // made for a container (-v /path, image VOLUME), named by 64 hex
    std::map<std::string, std::string> labels;
    std::map<std::string, std::string> options;
    std::string mountpoint;          // <root>/volumes/NAME/_data
    std::vector<std::string> users;  // IDs of the containers that use it
    int64_t size = -1;               // bytes below _data, when asked (volume_usage)
};

struct VolumeCreateOptions {
    std::string name;  // "" makes an anonymous volume
    std::string driver = "local";
    std::map<std::string, std::string> labels;
    std::map<std::string, std::string> options;
};

// `volume ls --filter`: every filter given must match (dangling=, label=K[=V], name=, driver=).
struct VolumeFilter {
    std::optional<bool> dangling;
    std::vector<std::string> labels;  // "K" or "K=V"
    std::vector<std::string> names;   // substrings
    std::vector<std::string> drivers;
    bool matches(const VolumeRecord& v) const;
};
// Parses "dangling=true", "label=K=V", ...; throws StoreError naming a bad filter.
VolumeFilter parse_volume_filters(const std::vector<std::string>& filters);

struct VolumePruneReport {
    std::vector<std::string> volumes;
    int64_t reclaimed = 0;
};

struct VolumeUsage {
    int total = 0, active = 0;  // active: used by at least one container
    int64_t size = 0, reclaimable = 0;
    std::vector<VolumeRecord> details;  // each with its size
};

// A volume or bind in a container's mount, as -v and --mount describe it.
enum class MountType { Volume, Bind };
struct MountSpec {
    MountType type = MountType::Volume;
    std::string source;       // volume name ("" = a new anonymous volume) or absolute host path
    std::string destination;  // absolute, cleaned path inside the container
    bool readonly = false;
    bool nocopy = false;  // volumes only: no copy of the image's content into a new volume
};
// -v NAME:/path[:ro,nocopy], -v /host:/path[:ro], -v /path; throws StoreError when malformed.
MountSpec parse_volume_flag(const std::string& flag);
// --mount type=volume|bind,src=...,dst=...[,readonly][,volume-nocopy]
MountSpec parse_mount_flag(const std::string& flag);

// A mount recorded for a container; anonymous volumes made for it at create are named here.
struct ContainerMount {
    MountSpec spec;
    std::string host_path;      // what is bound in: the volume's data, its device, the bind source
    std::string driver;         // "local" for volumes, "" for binds
    bool tmpfs = false;         // a tmpfs volume: host_path is not used
    std::string mount_options;  // a tmpfs volume's o=
    bool populated = false;     // a volume that has had the image's content copied in once
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
    // Bytes of the store filesystem that unpacking leaves free; nullopt: the default (5% of the
    // filesystem, at most 256 MiB). An image that needs more is refused.
    void set_free_space_reserve(std::optional<uint64_t> bytes) { reserve_ = bytes; }
    // Throws unless the store filesystem has `bytes` free beyond the reserve; `what` names them
    // in the message. A pull checks its layers' declared sizes before downloading any.
    void check_free_space(uint64_t bytes, const std::string& what) const;

    // Images.
    std::vector<LoadedImage> load(const std::string& path);  // archive file or OCI layout dir
    // shown_as names the tarball in the image's history instead of its path ("-" for stdin).
    LoadedImage import_tarball(const std::string& tarball, const std::string& ref,
                               const ImageMetadata& meta = {}, const std::string& shown_as = "");
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
    // The lazy layers (docs/lazy.md) by chain ID, with how much of each is local: one small
    // file pair read per lazy layer, no tree walked.
    std::map<std::string, LazyProgress> lazy_layers();
    // Records that repo (a name with or without tag, or registry/path) has the image's manifest
    // under digest in its registry: `images --digests` and RepoDigests show it.
    void record_repo_digest(const std::string& image_id, const std::string& repo,
                            const std::string& digest);
    // Images no container uses: unnamed ones, or with all_unused every one (image prune).
    PruneReport prune_images(bool all_unused);

    // Containers.
    // Volumes and binds are checked and anonymous volumes (-v /path, the image's VOLUMEs) made
    // in the same transaction as the container.
    // From settings: the name ("" for lamina-ID), env and labels (create -e, --label).
    ContainerRecord create_container(const std::string& image_ref, const ContainerRecord& settings,
                                     const std::vector<MountSpec>& mounts = {});
    void rename_container(const std::string& ref, const std::string& new_name);
    // Unmounted containers (container prune).
    PruneReport prune_containers();
    std::vector<ContainerState> containers(bool sizes);
    ContainerRecord container(const std::string& ref);  // by name, ID or ID prefix
    // The merged path; the container's volumes and binds are mounted inside it, after the union.
    std::string mount(const std::string& ref);
    void unmount(const std::string& ref);  // volumes and binds first, in reverse order
    // remove_anonymous_volumes (rm -v) also removes the anonymous volumes no other container uses.
    void remove_container(const std::string& ref, bool force,
                          bool remove_anonymous_volumes = false);
    std::vector<Change> diff(const std::string& ref);
    LoadedImage commit(const std::string& container_ref, const std::string& ref,
                       const ImageMetadata& meta);
    ContainerPaths container_paths(const std::string& id) const {
        return {root_ + "/" + ContainerPaths::relative(id).dir};
    }
    // Anything mounted at or below its merged directory: the union, or volume mounts a half
    // mount left without it (`umount` clears those too).
    bool is_mounted(const ContainerRecord& c) const;

    // Volumes.
    // Creating an existing name returns that volume when driver and options agree.
    VolumeRecord create_volume(const VolumeCreateOptions& opts);
    std::vector<VolumeRecord> volumes();
    VolumeRecord volume(const std::string& name);
    void remove_volume(const std::string& name);  // refused while a container uses it
    // Unused anonymous volumes; all_unused also named ones.
    VolumePruneReport prune_volumes(bool all_unused);
    VolumeUsage volume_usage();
    std::vector<ContainerMount> container_mounts(const std::string& container_ref);

    // System.
    DiskUsage disk_usage();
    PruneReport prune(bool all_unused_images);
    StoreInfo info();

    // The laminafs binary: $LAMINAFS, ../fs/laminafs next to this executable, or PATH.
    static std::string laminafs_binary();

    // ---- Registry: what `lamina pull` and `push` need (layerstore/registry_ingest.cc) ----

    // True when the layer with this chain ID is stored together with the blob digest, so a
    // pull need not fetch that blob ("Already exists").
    bool has_layer_blob(const std::string& chain_id, const std::string& blob_digest);
    // Where a lazy layer's record and its completion's blob live: layers/<hex> (docs/lazy.md).
    // The helper laminafs runs for lazy layers and the background completer: $LAMINA_LAZY_FETCH,
    // else beside lamina, else on PATH. Throws StoreError when it is nowhere.
    static std::string lazy_fetch_binary();
    std::string lazy_layer_dir(const std::string& chain_id) const;
    // A lazy layer whose every placeholder is filled becomes an ordinary one. blob_path holds the
    // whole blob (anywhere on the store's filesystem; it is moved): its digest must be the one
    // the layer came from, its tar what the TOC said (estargz::check_blob_against_toc) and its
    // diff ID the config's. Then the blob is kept for save and push, the layer's size recorded
    // and the record dropped. Throws StoreError on any mismatch, the layer left lazy. Nothing
    // to do for a layer that is not lazy.
    // checked: check_lazy_blob passed for this blob_path already, so its checks are not made
    // twice.
    void finish_lazy_layer(const std::string& chain_id, const std::string& blob_path,
                           bool checked = false);
    // finish_lazy_layer's checks alone. They only read (the record, the blob), so they may run
    // beside the filling of the layer's placeholders.
    void check_lazy_blob(const std::string& chain_id, const std::string& blob_path);
    // Stores an image fetched from a registry: manifest and config byte for byte, each layer
    // unpacked and checked against the config's diff_ids before one transaction commits it all.
    // A layer with path "" must be one has_layer_blob() reported.
    LoadedImage store_pulled_image(const std::string& config, const std::string& manifest,
                                   const std::vector<struct PulledLayer>& layers,
                                   const std::vector<std::string>& names);
    // A fresh directory for one pull's downloads, <root>/downloads/PID-RANDOM: outside tmp/,
    // which every writer empties. The directories of pulls that are gone (killed, or kept by
    // end_download_dir) are removed here, after their blobs (files "HEX" and "HEX.partial")
    // move into the new one as HEX.partial, to be hashed again and resumed.
    std::string make_download_dir();
    // The partial downloads failed pulls kept (what a running pull holds is not counted), and
    // their removal by system prune; returns the bytes.
    int64_t kept_downloads_size() const;
    int64_t remove_kept_downloads();
    // Ends a pull's download directory: removed, or with keep_blobs (the pull failed) its
    // non-empty blob files stay for the next pull, under <root>/downloads/kept-RANDOM.
    void end_download_dir(const std::string& dir, bool keep_blobs);
    // The file holding a stored blob (for push).
    std::string blob_file(const std::string& digest) const;
    // Keeps every stored blob in place while the returned holder lives (a shared store lock).
    std::shared_ptr<void> hold_blobs();

private:
    class Recovery;
    void recover();
    void ensure_layout();
    std::vector<std::string> lower_links(const ImageRecord& img, std::vector<size_t>& lazy);
    std::string squash_lowest(const ImageRecord& img, size_t count);
    void delete_unreferenced();
    LoadedImage store_image(const std::string& config, const std::string& manifest,
                            const std::vector<struct SourceLayer>& layers,
                            const std::vector<std::string>& names, const std::string& staging);
    ImageRecord read_image(const std::string& id);
    std::string resolve_image_id(const std::string& ref);
    void set_name(const std::string& name, const std::string& image_id);

    std::string root_;
    std::optional<uint64_t> reserve_;
    std::unique_ptr<Db> db_;
};

// Registry: a layer blob a pull fetched and verified against digest (path "" when the store
// already has it).
struct LazyPull;
struct PulledLayer {
    std::string path;
    std::string digest;
    std::string media_type;
    int64_t size = 0;
    // Set for a layer `pull --lazy` read by its TOC (path is then empty): it is stored as a
    // lazy layer (lazy_layer.h, docs/lazy.md).
    std::shared_ptr<const LazyPull> lazy;
};

// "busybox" -> "busybox:latest"; validates the characters of a reference.
std::string normalize_reference(const std::string& ref);
// Splits "repo:tag" at the tag's colon (a port in the registry part is not a tag).
std::pair<std::string, std::string> split_reference(const std::string& name);
// Seconds since the epoch from an RFC 3339 time ("2024-01-02T03:04:05.123Z"), 0 when unparsable.
int64_t parse_rfc3339(const std::string& s);
std::string format_rfc3339(int64_t seconds);

}  // namespace lamina::store
