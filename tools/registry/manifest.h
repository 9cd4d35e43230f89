// Manifests and indexes (OCI and Docker schema 2) as types, apart from how they are fetched.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lamina::registry {

inline constexpr const char* kMediaOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* kMediaOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr const char* kMediaDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr const char* kMediaDockerList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr const char* kMediaDockerSchema1 =
    "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr const char* kMediaDockerSchema1Signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

// The Accept header for manifest requests: every kind lamina reads.
std::string manifest_accept_header();

struct Platform {
    std::string os;
    std::string architecture;
    std::string variant;
    std::string str() const;
};

// "linux/arm64/v8" (throws std::invalid_argument when malformed).
Platform parse_platform(const std::string& text);
// linux and this machine's architecture in Go's names (amd64, arm64, ...).
Platform host_platform();

struct Descriptor {
    std::string media_type;
    std::string digest;
    int64_t size = -1;
    Platform platform;  // index entries only
    bool has_urls = false;
    // A layer's containerd.io/snapshot/stargz/toc.digest annotation: an eStargz layer that
    // `pull --lazy` can read by its table of contents. "" when absent.
    std::string estargz_toc_digest;
};

struct Manifest {
    bool is_index = false;
    std::string media_type;
    Descriptor config;                  // image manifests
    std::vector<Descriptor> layers;     // image manifests, bottom first
    std::vector<Descriptor> manifests;  // indexes
};

// Parses a manifest body. content_type is the reply's Content-Type (used when the body has no
// mediaType). Refuses schema 1 and unknown kinds with a one-line std::runtime_error.
Manifest parse_manifest(const std::string& body, const std::string& content_type);

// The entry of an index for want: os and architecture must match, the variant too when asked
// for (arm64 treats a missing variant as v8). Throws naming the platforms on offer.
const Descriptor& select_platform(const Manifest& index, const Platform& want);

// Layer media types lamina can unpack (tar, gzip, zstd; OCI and Docker spellings).
bool is_supported_layer(const std::string& media_type);

}  // namespace lamina::registry
