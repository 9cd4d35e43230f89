// libFuzzer target: the eStargz and zstd:chunked readers (layerstore/estargz, zstd_chunked) on any
// bytes, as a registry could send them. The first byte picks what the rest is: an eStargz footer,
// TOC JSON or TOC member (gzip); a zstd:chunked position annotation, footer or TOC JSON.
// Anything refused must be refused with one line (StoreError), never a crash or another exception;
// a TOC accepted must hold what the fetcher relies on: each file's chunks tile it from 0, every
// chunk lies below the TOC, and its fetch range is non-empty and ends by the TOC. The normal build
// replays the corpus through it (fuzz_corpus_test).
#include <cstddef>
#include <cstdint>
#include <string>

#include "error.h"
#include "estargz.h"
#include "fuzz_check.h"
#include "zstd_chunked.h"

namespace {

using namespace lamina::store;

constexpr uint64_t kTocOffset = 1 << 20;

void check_one_line(const StoreError& e) {
    lamina::fuzz::check(std::string(e.what()).find('\n') == std::string::npos,
                        std::string("a refusal is one line: ") + e.what());
}

// A position accepted names a TOC frame inside the blob, before the footer, within the limits.
void check_position(const zstd_chunked::TocPosition& p, uint64_t blob_size) {
    lamina::fuzz::check(p.length > 0 && p.length <= estargz::kMaxTocBytes &&
                            p.uncompressed_length > 0 &&
                            p.uncompressed_length <= estargz::kMaxTocBytes,
                        "the TOC's lengths are within the limits");
    lamina::fuzz::check(p.offset + p.length <= blob_size - zstd_chunked::kFooterSize,
                        "the TOC frame lies inside the blob, before the footer");
}

void check_entries(const std::vector<estargz::TocEntry>& entries, uint64_t toc_offset) {
    for (const auto& e : entries) {
        uint64_t covered = 0;
        for (const auto& c : e.chunks) {
            lamina::fuzz::check(c.file_offset == covered, "chunks tile the file from 0");
            lamina::fuzz::check(c.size > 0 && c.size <= estargz::kMaxChunkBytes,
                                "a chunk has a size within the limit");
            lamina::fuzz::check(c.offset < c.fetch_end && c.fetch_end <= toc_offset,
                                "a chunk's fetch range is non-empty and ends by the TOC");
            covered += c.size;
        }
        lamina::fuzz::check(e.chunks.empty() || covered == e.size, "chunks cover the file");
        lamina::fuzz::check(e.type == estargz::EntryType::kReg || e.chunks.empty(),
                            "only regular files have content");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        switch (data[0] % 6) {
            case 0: {
                uint64_t off = estargz::parse_footer(body, kTocOffset * 2);
                lamina::fuzz::check(off < kTocOffset * 2 - estargz::kFooterSize,
                                    "the footer's offset lies inside the blob");
                break;
            }
            case 1:
                check_entries(estargz::parse_toc_json(body, kTocOffset), kTocOffset);
                break;
            case 2: {
                estargz::Toc toc = estargz::parse_toc_member(body, kTocOffset, "");
                check_entries(toc.entries, kTocOffset);
                break;
            }
            case 3:
                check_position(zstd_chunked::parse_position(body, kTocOffset * 2), kTocOffset * 2);
                break;
            case 4:
                check_position(zstd_chunked::parse_footer(body, kTocOffset * 2), kTocOffset * 2);
                break;
            default:
                check_entries(
                    estargz::parse_toc_json(body, kTocOffset, estargz::TocFormat::kZstdChunked),
                    kTocOffset);
                break;
        }
    } catch (const StoreError& e) {
        check_one_line(e);
    }
    return 0;
}
