// zstd:chunked layers: where the TOC is (annotation or footer), its frame checked and
// decompressed, and zstd frames decompressed with a bound (libarchive's zstd filter, as unpack
// reads zstd layers). Every byte from the blob is hostile.
#include "zstd_chunked.h"

#include <archive.h>
#include <archive_entry.h>

#include <charconv>
#include <memory>

#include "archive_error.h"
#include "digest.h"
#include "error.h"

namespace lamina::store::zstd_chunked {

namespace {

// The TOC frame must lie inside the blob, before the footer, within the TOC limits.
TocPosition checked(TocPosition p, uint64_t type, uint64_t blob_size, const std::string& what) {
    if (type != kTocTypeJson)
        throw StoreError(what + ": TOC type " + std::to_string(type) + " is not JSON (1)");
    if (p.length == 0 || p.length > estargz::kMaxTocBytes || p.uncompressed_length == 0 ||
        p.uncompressed_length > estargz::kMaxTocBytes)
        throw StoreError(what + ": TOC lengths out of range (at most " +
                         std::to_string(estargz::kMaxTocBytes) + ")");
    if (blob_size < kFooterSize || p.offset > blob_size - kFooterSize ||
        p.length > blob_size - kFooterSize - p.offset)
        throw StoreError(what + ": the TOC at " + std::to_string(p.offset) + "+" +
                         std::to_string(p.length) + " is outside the blob");
    return p;
}

uint64_t little_endian_u64(std::string_view b) {
    uint64_t v = 0;
    for (size_t i = 8; i-- > 0;) v = v << 8 | static_cast<unsigned char>(b[i]);
    return v;
}

void append_little_endian(std::string& out, uint64_t v, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i) out += static_cast<char>(v >> (8 * i) & 0xff);
}

// The skippable frame's magic (0x184D2A50), as it appears in the blob.
constexpr std::string_view kSkippableMagic("\x50\x2a\x4d\x18", 4);

la_ssize_t append_to_string(archive*, void* client, const void* buf, size_t len) {
    static_cast<std::string*>(client)->append(static_cast<const char*>(buf), len);
    return static_cast<la_ssize_t>(len);
}

}  // namespace

TocPosition parse_position(std::string_view text, uint64_t blob_size) {
    const std::string what = "zstd:chunked position annotation";
    uint64_t v[4];
    const char* p = text.data();
    const char* end = text.data() + text.size();
    for (int i = 0; i < 4; ++i) {
        auto [next, ec] = std::from_chars(p, end, v[i]);
        if (ec != std::errc() || next == p || (i < 3 ? next == end || *next != ':' : next != end))
            throw StoreError(what + " is not OFFSET:LENGTH:UNCOMPRESSED:TYPE");
        p = next + (i < 3 ? 1 : 0);
    }
    return checked({v[0], v[1], v[2]}, v[3], blob_size, what);
}

TocPosition parse_footer(std::string_view b, uint64_t blob_size) {
    const std::string what = "zstd:chunked footer";
    // The skippable frame's magic (0x184D2A50, little-endian) and its length, 40.
    if (b.size() != kFooterSize ||
        b.substr(0, 8) != std::string(kSkippableMagic) + std::string("\x28\0\0\0", 4) ||
        b.substr(40) != kFooterMagic)
        throw StoreError("no zstd:chunked footer");
    return checked({little_endian_u64(b.substr(8)), little_endian_u64(b.substr(16)),
                    little_endian_u64(b.substr(24))},
                   little_endian_u64(b.substr(32)), blob_size, what);
}

std::string decompress(std::string_view in, uint64_t limit, bool stop_at_limit,
                       const std::string& what) {
    ReadArchive a(archive_read_new());
    archive_read_support_filter_zstd(a.get());
    archive_read_support_format_raw(a.get());
    archive_entry* e;
    if (archive_read_open_memory(a.get(), in.data(), in.size()) != ARCHIVE_OK ||
        archive_read_next_header(a.get(), &e) != ARCHIVE_OK)
        throw StoreError(what + ": not zstd (" + archive_error_text(a.get()) + ")");
    if (archive_filter_code(a.get(), 0) != ARCHIVE_FILTER_ZSTD)
        throw StoreError(what + ": not zstd");
    std::string out;
    char buf[1 << 16];
    for (;;) {
        la_ssize_t n = archive_read_data(a.get(), buf, sizeof buf);
        if (n < 0) throw StoreError(what + ": bad zstd data (" + archive_error_text(a.get()) + ")");
        if (n == 0) return out;
        if (out.size() + static_cast<size_t>(n) > limit) {
            if (!stop_at_limit) throw StoreError(what + ": larger than " + std::to_string(limit));
            out.append(buf, static_cast<size_t>(limit - out.size()));
            return out;
        }
        out.append(buf, static_cast<size_t>(n));
        if (stop_at_limit && out.size() == limit) return out;
    }
}

std::string compress_frame(std::string_view data, int level) {
    std::string out;
    WriteArchive a(archive_write_new());
    archive_write_set_format_raw(a.get());
    archive_write_add_filter_zstd(a.get());
    // Unblocked: the frame ends where zstd ends it, with no padding after it.
    archive_write_set_bytes_per_block(a.get(), 0);
    archive_write_set_bytes_in_last_block(a.get(), 1);
    std::unique_ptr<archive_entry, decltype(&archive_entry_free)> e(archive_entry_new(),
                                                                    archive_entry_free);
    archive_entry_set_pathname(e.get(), "frame");
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
    std::string lvl = std::to_string(level);
    if (archive_write_set_filter_option(a.get(), "zstd", "compression-level", lvl.c_str()) !=
            ARCHIVE_OK ||
        archive_write_open(a.get(), &out, nullptr, append_to_string, nullptr) != ARCHIVE_OK ||
        archive_write_header(a.get(), e.get()) != ARCHIVE_OK ||
        archive_write_data(a.get(), data.data(), data.size()) !=
            static_cast<la_ssize_t>(data.size()) ||
        archive_write_close(a.get()) != ARCHIVE_OK)
        throw StoreError("zstd compression failed: " + archive_error_text(a.get()));
    return out;
}

std::string skippable_frame(std::string_view payload) {
    std::string out(kSkippableMagic);
    append_little_endian(out, payload.size(), 4);
    return out.append(payload);
}

std::string footer(const TocPosition& pos) {
    std::string f;
    for (uint64_t v : {pos.offset, pos.length, pos.uncompressed_length, kTocTypeJson})
        append_little_endian(f, v, 8);
    return skippable_frame(f + std::string(kFooterMagic));
}

std::string position_annotation(const TocPosition& pos) {
    return std::to_string(pos.offset) + ":" + std::to_string(pos.length) + ":" +
           std::to_string(pos.uncompressed_length) + ":" + std::to_string(kTocTypeJson);
}

estargz::Toc parse_toc_frame(std::string_view frame, const TocPosition& pos,
                             const std::string& checksum) {
    // The annotation vouches for the compressed bytes: checked before they are decompressed.
    std::string got = sha256_digest(frame);
    if (got != checksum)
        throw StoreError("zstd:chunked TOC digest mismatch: the manifest says " + checksum +
                         ", the blob holds " + got);
    estargz::Toc toc;
    toc.format = estargz::TocFormat::kZstdChunked;
    toc.json = decompress(frame, pos.uncompressed_length, false, "zstd:chunked TOC");
    if (toc.json.size() != pos.uncompressed_length)
        throw StoreError("zstd:chunked TOC: " + std::to_string(toc.json.size()) +
                         " bytes, the position says " + std::to_string(pos.uncompressed_length));
    toc.digest = sha256_digest(toc.json);
    toc.toc_offset = pos.offset;
    toc.entries = estargz::parse_toc_json(toc.json, pos.offset, toc.format);
    return toc;
}

estargz::Toc read_toc(const estargz::RangeReader& read, uint64_t blob_size,
                      std::string_view position_annotation, const std::string& checksum) {
    if (!is_sha256_digest(checksum))
        throw StoreError("zstd:chunked: no TOC checksum annotation to check the TOC against");
    TocPosition pos =
        position_annotation.empty()
            ? parse_footer(blob_size < kFooterSize ? std::string()
                                                   : read(blob_size - kFooterSize, kFooterSize),
                           blob_size)
            : parse_position(position_annotation, blob_size);
    return parse_toc_frame(read(pos.offset, pos.length), pos, checksum);
}

}  // namespace lamina::store::zstd_chunked
