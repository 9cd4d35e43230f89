// Safe extraction of a (possibly compressed) tar into a directory, converting OCI whiteouts.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "image_format.h"

struct archive_entry;

namespace lamina::store {

// Bytes kept free on the store filesystem when no reserve is configured: 5% of its size, at
// most 256 MiB.
uint64_t default_free_space_reserve(uint64_t filesystem_bytes);

// What may follow the tar's end-of-archive blocks (tar pads to its record size; more is junk).
inline constexpr uint64_t kMaxBytesAfterTarEnd = uint64_t(4) << 20;

struct UnpackOptions {
    // Layer: ".wh.NAME" becomes a 0/0 character device, ".wh..wh..opq" an opaque xattr.
    // Plain: entries are written as they are (an image archive staged for reading); only
    // directories, regular files, symlinks and hard links are accepted.
    enum class Mode { Layer, Plain } mode = Mode::Layer;
    // Root may chown, mknod devices and whiteouts, and write trusted.* xattrs.
    bool privileged = false;
    // Refuse any entry larger than this (besides the free-space check).
    uint64_t max_entry_size = uint64_t(1) << 40;
    // Which compressions the source may use; anything else, or a second layer of compression,
    // is refused before an entry is written.
    unsigned compressions = kLayerCompressions;
    // The uncompressed stream may not pass the free space of dest_dir's filesystem less this
    // reserve (nullopt: default_free_space_reserve), which stops decompression bombs.
    std::optional<uint64_t> reserve_bytes;
};

struct UnpackResult {
    std::string diff_id;                      // sha256 of the uncompressed tar stream
    Compression compression = kUncompressed;  // what the source was compressed with
    uint64_t content_bytes = 0;               // regular-file bytes written
    std::vector<std::string> warnings;
};

// Reads the tar at archive_path (a regular file; none, gzip, zstd, bzip2 or xz compressed as
// opts.compressions allows) and writes its entries
// below dest_dir, which must exist. Never creates, changes or follows anything outside dest_dir:
// every path is walked component by component with openat(O_NOFOLLOW) from dest_dir's fd.
// Absolute paths, ".." components, entries through symlinks, hard links out of the tree and
// truncated or oversized entries are refused with a StoreError naming the entry.
UnpackResult unpack_tar(const std::string& archive_path, const std::string& dest_dir,
                        const UnpackOptions& opts);

// The next entry for unpack_placeholders, or nullptr at the end.
using EntryFeed = std::function<archive_entry*()>;
// Writes the entries next() gives as unpack_tar writes a tar's (whiteouts, opaque markers, set-id
// bits, owners, xattrs, times), except that each regular file is a hole of its size: a
// placeholder whose content the caller fills later (a lazy layer, see docs/lazy.md).
UnpackResult unpack_placeholders(const EntryFeed& next, const std::string& dest_dir,
                                 const UnpackOptions& opts);

// Splits a tar entry path into components: "./a//b/" -> {a, b}. Throws on absolute paths and "..".
std::vector<std::string> split_entry_path(const std::string& raw);

}  // namespace lamina::store
