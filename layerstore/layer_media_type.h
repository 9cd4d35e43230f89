// Layer media types and the compression each names: the one table load and pull share.
#pragma once

#include <optional>
#include <string>

namespace lamina::store {

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

}  // namespace lamina::store
