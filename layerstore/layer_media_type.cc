// The layer media types the store takes, with the compression each names.
#include "layer_media_type.h"

#include <utility>

namespace lamina::store {

std::optional<Compression> layer_media_type_compression(const std::string& media_type) {
    static const std::pair<const char*, Compression> kTypes[] = {
        {"application/vnd.oci.image.layer.v1.tar", kUncompressed},
        {"application/vnd.oci.image.layer.v1.tar+gzip", kGzip},
        {"application/vnd.oci.image.layer.v1.tar+zstd", kZstd},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar", kUncompressed},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", kGzip},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", kZstd},
        {"application/vnd.docker.image.rootfs.diff.tar", kUncompressed},
        {"application/vnd.docker.image.rootfs.diff.tar.gzip", kGzip},
        {"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", kGzip},
    };
    for (const auto& [type, compression] : kTypes)
        if (media_type == type) return compression;
    return std::nullopt;
}

}  // namespace lamina::store
