// eStargz (stargz-snapshotter's docs/estargz.md): a gzip tar layer whose file contents start
// new gzip members, with a table of contents (TOC) as its last tar entry and a footer pointing
// at it, so one file can be fetched with a byte range and checked on its own. Writing (eStargz,
// and zstd:chunked with the same code: zstd_chunked.h), and reading with every byte from the
// blob treated as hostile.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "records.h"
#include "unpack.h"

namespace lamina::store::estargz {

inline constexpr std::string_view kTocName = "stargz.index.json";
// The manifest annotation (on the layer's descriptor) holding the digest of the TOC JSON.
inline constexpr std::string_view kTocDigestAnnotation = "containerd.io/snapshot/stargz/toc.digest";
// The uncompressed size, as containers/image writes it beside the TOC digest.
inline constexpr std::string_view kUncompressedSizeAnnotation =
    "io.containers.estargz.uncompressed-size";
inline constexpr std::string_view kPrefetchLandmark = ".prefetch.landmark";
inline constexpr std::string_view kNoPrefetchLandmark = ".no.prefetch.landmark";
inline constexpr size_t kFooterSize = 51;

// Limits on what a blob may make a reader hold.
inline constexpr uint64_t kMaxTocBytes = uint64_t(64) << 20;  // the TOC JSON
inline constexpr uint64_t kMaxTocEntries = 1'000'000;
inline constexpr uint64_t kMaxChunkBytes = uint64_t(64) << 20;  // one chunk, decompressed
inline constexpr size_t kMaxNameBytes = 4096;
inline constexpr size_t kMaxNameDepth = 256;
inline constexpr size_t kMaxXattrBytes = 64 << 10;  // all of one entry's xattrs
inline constexpr uint64_t kMaxFileBytes = uint64_t(1) << 40;

// Which layer format a TOC came from: the entries are the same JSON, but where the TOC lives,
// how chunks are compressed and whether the TOC is a tar entry of its own differ.
enum class TocFormat { kEstargz, kZstdChunked };
// "eStargz" or "zstd:chunked", for messages.
const char* format_name(TocFormat format);
// The format a command line names: "estargz" or "zstd:chunked"; nullopt for anything else.
std::optional<TocFormat> format_named(std::string_view name);

inline constexpr int64_t kDefaultChunkBytes = int64_t(4) << 20;

struct WriteOptions {
    TocFormat format = TocFormat::kEstargz;    // the layer format written
    int64_t chunk_bytes = kDefaultChunkBytes;  // regular files above this are split in chunks
    int level = -1;  // gzip 0-9 or zstd 1-19; -1: the format's default (gzip 6, zstd 3)
    // Prioritised files (read_prefetch_list's paths): those in the layer go first, in this
    // order. eStargz then writes kPrefetchLandmark (none of them in the layer, or no list:
    // kNoPrefetchLandmark first); zstd:chunked has no landmarks, its tree stays the input's.
    std::vector<std::string> prefetch;
};

// A prefetch list: one path per line as in the image's root ("etc/os-release"; a leading "/"
// is allowed), blank lines skipped, a repeated path kept once. Returns the paths as
// "comp/comp"; throws StoreError naming the line for a path a layer could not hold.
std::vector<std::string> read_prefetch_list(const std::string& file);

struct WrittenLayer {
    std::string digest;  // of the blob written
    int64_t size = 0;
    std::string diff_id;  // of its uncompressed tar (eStargz: TOC entry and all)
    int64_t uncompressed_size = 0;
    std::string toc_digest;  // of the TOC JSON (eStargz: kTocDigestAnnotation's value)
    // What the layer's manifest entry carries: eStargz kTocDigestAnnotation and
    // kUncompressedSizeAnnotation; zstd:chunked the TOC frame's checksum and position.
    std::vector<std::pair<std::string, std::string>> annotations;
    // Of WriteOptions::prefetch: the paths written first, and (path, why) for each one the
    // layer holds but that stays in place (moving it would change what an unpack makes).
    std::vector<std::string> prioritised;
    std::vector<std::pair<std::string, std::string>> kept_in_place;
};

// Reads the layer tar at in_path (uncompressed, gzip or zstd) and writes it to out_path in
// options.format: the prioritised files (each after its parent directories and, for a hard
// link, its target), then the other entries in their order, each regular file's content in gzip
// members (zstd frames) of at most chunk_bytes each. eStargz: the prefetch landmark after the
// prioritised files (or the no-prefetch landmark first), the TOC entry last, then the footer.
// zstd:chunked: after the tar, the TOC frame in a skippable frame, then the footer. The entries'
// metadata (owners, modes with set-id bits, xattrs, devices, hard links, mtimes) carry over; a
// full unpack gives the tree the input's gives (eStargz: and its own files).
WrittenLayer write_layer(const std::string& in_path, const std::string& out_path,
                         const WriteOptions& options = {});

// The 51-byte footer for a TOC at toc_offset, and the TOC offset a footer names. parse_footer
// throws StoreError unless bytes is exactly such a footer with the offset inside the blob.
std::string footer(uint64_t toc_offset);
uint64_t parse_footer(std::string_view bytes, uint64_t blob_size);

enum class EntryType { kDir, kReg, kSymlink, kHardlink, kChar, kBlock, kFifo };

struct Chunk {
    uint64_t offset = 0;       // of its gzip member (zstd frame) in the blob
    uint64_t fetch_end = 0;    // where a range to fetch it may stop (next member, endOffset, TOC)
    uint64_t file_offset = 0;  // chunkOffset
    uint64_t size = 0;         // decompressed bytes (chunkSize, or the rest of the file)
    std::string digest;        // chunkDigest
};

struct TocEntry {
    std::string name;  // as in the tar ("./a/b", "dir/")
    EntryType type = EntryType::kReg;
    uint64_t size = 0;
    mode_t mode = 0;  // permission and set-id bits
    uint32_t uid = 0, gid = 0;
    struct timespec mtime = {0, 0};
    std::string link_name;  // symlink target, or the hard link's target entry
    uint32_t dev_major = 0, dev_minor = 0;
    std::vector<std::pair<std::string, std::string>> xattrs;  // name, raw value
    std::vector<Chunk> chunks;  // a non-empty regular file's content, in file order
};

struct Toc {
    std::vector<TocEntry> entries;
    std::string json;    // the TOC as stored
    std::string digest;  // sha256 of json
    uint64_t toc_offset = 0;
    TocFormat format = TocFormat::kEstargz;
    // eStargz only: the TOC's own tar entry (a full pull unpacks it as a file): its header's
    // metadata. A zstd:chunked TOC is in a skippable frame, no tar entry.
    TocEntry self;
};

// Parses and checks TOC JSON: version 1, bounded names without ".." or absolute paths, known
// types, chunks that tile each file exactly, offsets inside [0, toc_offset), hard links to
// earlier entries. Throws StoreError naming the entry. zstd:chunked differs only in that a
// file in one frame may give its digest as "digest" alone, and "endOffset" ends its last frame.
std::vector<TocEntry> parse_toc_json(std::string_view json, uint64_t toc_offset,
                                     TocFormat format = TocFormat::kEstargz);

// Decompresses the TOC member (the blob's bytes from toc_offset up to the footer), reads its tar
// entry and parses it. expected_digest ("sha256:...") must match the JSON unless empty.
Toc parse_toc_member(std::string_view member, uint64_t toc_offset,
                     const std::string& expected_digest);

// Returns exactly `length` bytes of the blob at `offset`, or throws.
using RangeReader = std::function<std::string(uint64_t offset, uint64_t length)>;

// Reads the footer, then the TOC member, with two ranges.
Toc read_toc(const RangeReader& read, uint64_t blob_size, const std::string& expected_digest);

// Fetches a regular file's chunks one by one, decompresses each and checks it against its
// chunkDigest; only then is it passed to write(file_offset, bytes). A chunk that does not
// check out throws StoreError before any of its bytes are written.
void fetch_file(const TocEntry& entry, const RangeReader& read,
                const std::function<void(uint64_t, std::string_view)>& write,
                TocFormat format = TocFormat::kEstargz);

// An image with every layer rewritten in options.format: the config with the new diff IDs, an
// OCI manifest whose layers carry the format's annotations (WrittenLayer::annotations), and the
// blobs written under dir. A layer whose manifest entry already says it is in that format (its
// media type and TOC annotation) is kept as it is: blob, diff ID and annotations (not converted
// twice).
struct ConvertedImage {
    std::string config;
    std::string manifest;
    std::vector<std::pair<std::string, std::string>> blobs;  // digest, path; bottom first
    // One line each: a listed path in no layer, a listed path kept in place, a layer kept as
    // it was with its own order.
    std::vector<std::string> warnings;
};
// How many of the image's layers convert_image would keep as they are, already in format.
size_t layers_already_in(const ImageRecord& image, TocFormat format);
// blob_path gives the stored file of a layer blob.
ConvertedImage convert_image(const ImageRecord& image,
                             const std::function<std::string(const std::string&)>& blob_path,
                             const std::string& dir, const WriteOptions& options = {});

// A regular file of a lazy layer whose content is still to come: the TOC entry and a path in the
// layer (relative to its root) that holds its inode. Later entries of the same name, whiteouts and
// hard links decide which path that is, as they decide it for a full unpack.
struct Placeholder {
    size_t entry = 0;  // index into Toc::entries
    std::string path;
};

// Writes the tree the TOC describes below dest_dir as unpack_tar writes the layer's tar, except
// that regular files are placeholders of their size; the TOC's own file is written whole (its
// content is at hand). Returns the placeholders still to fill.
std::vector<Placeholder> unpack_toc(const Toc& toc, const std::string& dest_dir,
                                    const UnpackOptions& options, UnpackResult& result);

// Fetches a placeholder's content (fetch_file: every chunk checked first) and writes it into the
// file at p.path beneath the layer root (no symlink followed, nothing outside it reached), then
// puts back what writing takes away: the set-id bits, security.capability and the mtime.
// sync: the content is on disk before it returns; without, the caller syncs (a completion
// filling many files syncs the filesystem once, before it marks any of them done).
void fill_placeholder(int layer_root_fd, const Toc& toc, const Placeholder& p,
                      const RangeReader& read, bool sync = true);

// Reads a whole eStargz or zstd:chunked blob (its digest already checked by the caller) and
// checks that the TOC tells the truth about it: the tar entries, in order, are the TOC's entries
// (name, type, mode, owner, mtime, link, device, xattrs), each regular file's content matches
// its chunk digests, and (eStargz) the last entry is the TOC itself. A tree built from the TOC and filled chunk by chunk is
// then the tree a full unpack of the blob gives. Returns the diff ID (the digest of the
// uncompressed stream); throws StoreError naming the first difference.
std::string check_blob_against_toc(const std::string& blob_path, const Toc& toc);

}  // namespace lamina::store::estargz
