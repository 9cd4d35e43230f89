// zstd:chunked (containers/storage's pkg/chunked): a zstd tar layer whose file contents (or
// chunks of them) are zstd frames of their own, with a table of contents in a skippable frame
// near the end that the manifest's annotations locate and vouch for. The TOC's entries are
// eStargz's (estargz::parse_toc_json checks them, with this format's differences); the writer is
// estargz::write_layer with TocFormat::kZstdChunked, built on the frames and footer below.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "estargz.h"

namespace lamina::store::zstd_chunked {

// Digest (sha256) of the TOC's compressed bytes: the zstd frame the position names. skopeo 1.9.3
// (containers/image 5.23) writes these keys; later writers spell them "io.github.containers...".
inline constexpr std::string_view kChecksumAnnotation =
    "io.containers.zstd-chunked.manifest-checksum";
// "OFFSET:LENGTH:UNCOMPRESSED_LENGTH:TYPE" of that frame in the blob.
inline constexpr std::string_view kPositionAnnotation =
    "io.containers.zstd-chunked.manifest-position";
// The same key as later writers spell it: "io.github.containers.zstd-chunked...".
inline std::string later_key(std::string_view key) {
    return "io.github." + std::string(key.substr(3));
}
// A skippable frame (8-byte header) holding four little-endian u64 (the position's numbers)
// and the magic "GnUlInUx": the blob's last 48 bytes.
inline constexpr size_t kFooterSize = 48;
inline constexpr std::string_view kFooterMagic = "GnUlInUx";
// The only TOC type there is: eStargz's JSON ("CRFS" in containers/storage).
inline constexpr uint64_t kTocTypeJson = 1;

struct TocPosition {
    uint64_t offset = 0;  // of the TOC's zstd frame (after its skippable frame's header)
    uint64_t length = 0;  // compressed
    uint64_t uncompressed_length = 0;
};

// The position annotation, or the footer, checked: type 1, the frame inside the blob before
// the footer, both lengths within estargz::kMaxTocBytes. Throw StoreError otherwise.
TocPosition parse_position(std::string_view annotation, uint64_t blob_size);
TocPosition parse_footer(std::string_view bytes, uint64_t blob_size);

// Decompresses zstd frames (skippable ones skipped): at most `limit` bytes. With stop_at_limit
// the input may hold more (the range reaches past a chunk); otherwise more is an error.
std::string decompress(std::string_view in, uint64_t limit, bool stop_at_limit,
                       const std::string& what);

// Checks the TOC frame's bytes against checksum ("sha256:..."), decompresses them to exactly
// the uncompressed length and parses the JSON. The Toc's digest is that of the JSON (what a
// lazy record keeps); its format is kZstdChunked, and it has no tar entry of its own.
estargz::Toc parse_toc_frame(std::string_view frame, const TocPosition& pos,
                             const std::string& checksum);

// Writing: one zstd frame of data (libarchive's zstd filter, so no second zstd library); a
// skippable frame holding payload; the footer and the position annotation for a TOC frame.
std::string compress_frame(std::string_view data, int level);
std::string skippable_frame(std::string_view payload);
std::string footer(const TocPosition& pos);
std::string position_annotation(const TocPosition& pos);

// Reads the TOC with one range (two without a position annotation: the footer first).
estargz::Toc read_toc(const estargz::RangeReader& read, uint64_t blob_size,
                      std::string_view position_annotation, const std::string& checksum);

}  // namespace lamina::store::zstd_chunked
