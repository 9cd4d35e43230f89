// libFuzzer target: the eStargz reader (layerstore/estargz) on any bytes, as a registry could send
// them. The first byte picks what the rest is: a footer, TOC JSON, or a TOC member (gzip).
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

namespace {

using namespace lamina::store;

constexpr uint64_t kTocOffset = 1 << 20;

void check_one_line(const StoreError& e) {
    lamina::fuzz::check(std::string(e.what()).find('\n') == std::string::npos,
                        std::string("a refusal is one line: ") + e.what());
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
        switch (data[0] % 3) {
            case 0: {
                uint64_t off = estargz::parse_footer(body, kTocOffset * 2);
                lamina::fuzz::check(off < kTocOffset * 2 - estargz::kFooterSize,
                                    "the footer's offset lies inside the blob");
                break;
            }
            case 1:
                check_entries(estargz::parse_toc_json(body, kTocOffset), kTocOffset);
                break;
            default: {
                estargz::Toc toc = estargz::parse_toc_member(body, kTocOffset, "");
                check_entries(toc.entries, kTocOffset);
                break;
            }
        }
    } catch (const StoreError& e) {
        check_one_line(e);
    }
    return 0;
}
