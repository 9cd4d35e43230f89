// Pieces shared by the store's source files and kept out of its public interface.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "fd.h"
#include "image_format.h"
#include "records.h"

namespace lamina::store {

class Db;

// A layer blob offered by an image source, opened inside the source so that symlinks in the
// archive cannot lead the reader out of it.
struct SourceLayer {
    std::shared_ptr<Fd> fd;
    std::string path;    // /proc/self/fd/N of fd
    std::string digest;  // the manifest's digest; "" when the source gives none (docker-archive)
    std::string media_type;  // the manifest's media type; "" for docker-archive
    int64_t size = -1;
    std::shared_ptr<const struct LazyPull> lazy;  // a lazy layer (PulledLayer::lazy)
};

struct SourceImage {
    std::string config;
    std::string manifest;  // "" when the source has none (docker-archive): one is made
    std::vector<SourceLayer> layers;
    std::vector<std::string> names;
};

// Reads a docker-archive (manifest.json) or an OCI layout (index.json) unpacked at dir.
std::vector<SourceImage> read_image_source(const std::string& dir);

// Opens rel below dir for reading, resolving every symlink as if dir were "/".
std::shared_ptr<Fd> open_in_root(const std::string& dir, const std::string& rel);

// Copies the file at src to dst while hashing it; returns the digest and size.
std::pair<std::string, int64_t> copy_and_hash(const std::string& src, const std::string& dst);
std::pair<std::string, int64_t> hash_file(const std::string& path);

// The OCI manifest for config and layers, serialised once so its digest is stable.
std::string make_manifest(const std::string& config, const std::vector<LayerRef>& layers);

// The paths of the store's parts.
struct Layout {
    std::string root;
    std::string db() const { return root + "/lamina.db"; }
    std::string lock() const { return root + "/storage.lock"; }
    std::string tmp() const { return root + "/tmp"; }
    std::string layers() const { return root + "/layers"; }
    std::string squashes() const { return root + "/squash"; }
    std::string links() const { return root + "/l"; }
    std::string blobs() const { return root + "/blobs/sha256"; }
    std::string containers() const { return root + "/containers"; }
    // Room kept for a full disk (store.cc, "space reserve").
    std::string space_reserve() const { return root + "/space.reserve"; }
    std::string blob(const std::string& digest) const;
};

// Unmounts everything at and below a container's merged directory, lazily where busy: volumes
// first, then the union (fusermount3 -u -z, a lazy umount2 as a last resort), then whatever the
// union hid, until nothing is left.
void unmount_merged(const std::string& merged);

// A fresh directory under <root>/tmp for one operation's half-done work.
std::string make_staging_dir(const Layout& layout, const std::string& tag);

// A staging directory removed when the operation ends, however it ends: a refused archive must
// not leave its half-unpacked copy behind until the next command's recovery.
class StagingDir {
public:
    StagingDir(const Layout& layout, const std::string& tag);
    ~StagingDir();
    StagingDir(const StagingDir&) = delete;
    StagingDir& operator=(const StagingDir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};
// A 26-character name for <root>/l/.
std::string new_link_name();

}  // namespace lamina::store
