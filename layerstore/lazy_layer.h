// A lazy layer's record in the store: what `pull --lazy` keeps beside a layer's diff/ (never in
// it, so nothing of it shows in a mount) until every placeholder has its verified content.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "estargz.h"

namespace lamina::store {

// Where a lazy layer's content comes from: the blob of an eStargz or zstd:chunked layer in a
// registry (which of the two its media type says: gzip or zstd).
struct LazySource {
    std::string registry;    // "127.0.0.1:5000"
    std::string repository;  // "test/app"
    std::string digest;      // the layer blob's, as the manifest gives it
    std::string media_type;
    int64_t size = 0;
    // sha256 of the TOC JSON: eStargz's manifest annotation; for zstd:chunked that of the JSON
    // the annotation's checksum (of the compressed TOC) vouched for.
    std::string toc_digest;
};

// The TOC format of a lazy layer's blob, by its media type.
estargz::TocFormat toc_format_of(const std::string& media_type);

// What a lazy pull hands the store for one layer, in place of a downloaded blob.
struct LazyPull {
    LazySource source;
    estargz::Toc toc;  // checked against source.toc_digest
};

struct LazyRecord {
    LazySource source;
    estargz::Toc toc;
    std::vector<estargz::Placeholder> pending;
    // The placeholders lazy/done listed when the record was read: filled then, though a cache
    // limit may evict them since (lazy_cache.h).
    std::vector<estargz::Placeholder> filled;
};

// layer_dir is layers/<hex> (the parent of diff/). The record is <layer_dir>/lazy/.
void write_lazy_record(const std::string& layer_dir, const LazySource& source,
                       const estargz::Toc& toc, const std::vector<estargz::Placeholder>& pending);
bool is_lazy_layer(const std::string& layer_dir);
// Reads the record back, checking the TOC against its digest again; nullopt for a complete
// layer. pending leaves out the placeholders marked done. Throws StoreError for a record that
// does not parse.
std::optional<LazyRecord> read_lazy_record(const std::string& layer_dir);
// The entries lazy/done lists now, with their bytes.
std::map<int64_t, int64_t> read_lazy_done(const std::string& layer_dir);
// Holds lazy/cache.lock (flock) while it lives: lazy/done and lazy/ranges are appended and
// rewritten only under it, so an eviction's rewrite never loses a line appended meanwhile.
class LazyCacheLock {
public:
    explicit LazyCacheLock(const std::string& layer_dir);
    ~LazyCacheLock();
    LazyCacheLock(const LazyCacheLock&) = delete;
    LazyCacheLock& operator=(const LazyCacheLock&) = delete;

private:
    int fd_ = -1;
};
// A placeholder (by its TOC entry, of `bytes` bytes) is filled: one line "ENTRY BYTES" appended to
// lazy/done, synced.
void mark_lazy_done(const std::string& layer_dir, size_t entry, uint64_t bytes);
// The same for many files at once (entry, bytes), with one sync.
void mark_lazy_done(const std::string& layer_dir,
                    const std::vector<std::pair<size_t, uint64_t>>& files);

// How much of a lazy layer is local: the placeholders the pull left (files, content bytes) and
// how many of them are filled since. Read from source.json (the totals) and lazy/done, never from
// the tree or the TOC, so it is cheap enough for every `ps -s`.
struct LazyProgress {
    int64_t files = 0, files_local = 0;
    int64_t bytes = 0, bytes_local = 0;
    // The last line a background completer left in lazy/complete.log: why it failed ("" if it
    // never did).
    std::string last_error;
    bool complete() const { return files_local >= files; }
};
// nullopt for a layer that is not lazy.
std::optional<LazyProgress> read_lazy_progress(const std::string& layer_dir);
// Every placeholder is filled: the layer is complete and the record goes.
void drop_lazy_record(const std::string& layer_dir);

}  // namespace lamina::store
