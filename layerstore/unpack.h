// Safe extraction of a (possibly compressed) tar into a directory, converting OCI whiteouts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lamina::store {

struct UnpackOptions {
    // Layer: ".wh.NAME" becomes a 0/0 character device, ".wh..wh..opq" an opaque xattr.
    // Plain: entries are written as they are (an image archive staged for reading); only
    // directories, regular files, symlinks and hard links are accepted.
    enum class Mode { Layer, Plain } mode = Mode::Layer;
    // Root may chown, mknod devices and whiteouts, and write trusted.* xattrs.
    bool privileged = false;
    // Refuse any entry larger than this (besides the free-space check).
    uint64_t max_entry_size = uint64_t(1) << 40;
};

struct UnpackResult {
    std::string diff_id;         // sha256 of the uncompressed tar stream
    uint64_t content_bytes = 0;  // regular-file bytes written
    std::vector<std::string> warnings;
};

// Reads the tar at archive_path (none, gzip, zstd, bzip2 or xz compressed) and writes its entries
// below dest_dir, which must exist. Never creates, changes or follows anything outside dest_dir:
// every path is walked component by component with openat(O_NOFOLLOW) from dest_dir's fd.
// Absolute paths, ".." components, entries through symlinks, hard links out of the tree and
// truncated or oversized entries are refused with a StoreError naming the entry.
UnpackResult unpack_tar(const std::string& archive_path, const std::string& dest_dir,
                        const UnpackOptions& opts);

// Splits a tar entry path into components: "./a//b/" -> {a, b}. Throws on absolute paths and "..".
std::vector<std::string> split_entry_path(const std::string& raw);

}  // namespace lamina::store
