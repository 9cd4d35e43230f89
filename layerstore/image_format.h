// The image format, once for the store and the registry client: media types, platforms,
// manifests and indexes as types, and what an image config says of its layers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lamina::store {

// ---- Media types ------------------------------------------------------------------------------

inline constexpr const char* kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr const char* kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr const char* kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr const char* kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr const char* kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr const char* kDockerSchema1 =
    "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr const char* kDockerSchema1Signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

// The OCI index and the Docker manifest list.
bool is_index_media_type(const std::string& media_type);

// The compressions a source may use, as bits; a layer blob's media type names exactly one.
enum Compression : unsigned {
    kUncompressed = 1,
    kGzip = 2,
    kZstd = 4,
    kBzip2 = 8,
    kXz = 16,
    // What a layer media type can name: a layer blob whose type is not given is one of these.
    kLayerCompressions = kUncompressed | kGzip | kZstd,
    // What docker load and docker import accept for the archive itself.
    kArchiveCompressions = kLayerCompressions | kBzip2 | kXz,
};

// The compression a layer media type names (OCI "...tar", "...tar+gzip", "...tar+zstd" and
// Docker's "...tar", "...tar.gzip"); nullopt for any type the store does not take.
std::optional<Compression> layer_media_type_compression(const std::string& media_type);
// The OCI layer media type for a blob of compression c (one of kLayerCompressions).
std::string layer_media_type(Compression c);

// ---- Platforms --------------------------------------------------------------------------------

struct Platform {
    std::string os;
    std::string architecture;
    std::string variant;
    std::string str() const;
};

// "linux/arm64/v8" (throws std::invalid_argument when malformed).
Platform parse_platform(const std::string& text);
// linux and this machine's architecture in Go's names (amd64, arm64, ...), with the variant
// Docker gives it (arm: v7).
Platform host_platform();
// Whether an image for `offered` serves `want`: the same os and architecture, and the same
// variant when want names one (arm64 without a variant is v8, arm without one v7).
bool platform_matches(const Platform& offered, const Platform& want);

// ---- Manifests and indexes (OCI and Docker schema 2) ------------------------------------------

struct Descriptor {
    std::string media_type;
    std::string digest;
    int64_t size = -1;
    Platform platform;  // index entries only
    bool has_urls = false;
    // A layer's containerd.io/snapshot/stargz/toc.digest annotation: an eStargz layer that
    // `pull --lazy` can read by its table of contents. "" when absent.
    std::string estargz_toc_digest;
    // A zstd:chunked layer's io.containers.zstd-chunked.manifest-checksum (the digest of its
    // compressed TOC) and manifest-position ("OFFSET:LENGTH:UNCOMPRESSED:TYPE", parsed where it
    // is used). "" when absent.
    std::string zstd_chunked_checksum;
    std::string zstd_chunked_position;
};

struct Manifest {
    bool is_index = false;
    std::string media_type;
    Descriptor config;                  // image manifests
    std::vector<Descriptor> layers;     // image manifests, bottom first
    std::vector<Descriptor> manifests;  // indexes
};

// Parses a manifest body. content_type is the reply's Content-Type (used when the body has no
// mediaType). Refuses schema 1 and unknown kinds with a one-line StoreError.
Manifest parse_manifest(const std::string& body, const std::string& content_type);

// The OCI image manifest, serialised once so its digest is stable, for config and the layers'
// descriptors (a JSON array, bottom first).
std::string oci_manifest(const std::string& config, nlohmann::json layers);

// The entry of an index for want (platform_matches). Throws StoreError naming the platforms on
// offer.
const Descriptor& select_platform(const Manifest& index, const Platform& want);

// ---- Image configs ----------------------------------------------------------------------------

// rootfs.diff_ids of a parsed image config: one sha256 digest for each of its `layers` layers.
// `what` names the config in the one-line StoreError.
std::vector<std::string> image_config_diff_ids(const nlohmann::json& config, size_t layers,
                                               const std::string& what);
// The os, architecture and variant members of obj: an image config, or an index entry's
// "platform". A member of another type than string throws StoreError naming `what`.
Platform platform_member(const nlohmann::json& obj, const std::string& what);

}  // namespace lamina::store
