// The size limit on what lazy layers not yet complete keep locally (config.json's
// "lazy-cache-size", docs/lazy.md "Cache limit"): filled placeholders and the compressed ranges
// kept in lazy/blob, evicted least recently fetched first while no one has the file open.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lazy_layer.h"

namespace lamina::store {

// What one lazy layer keeps locally: the content of its filled placeholders (lazy/done's bytes)
// and the disk lazy/blob takes (its kept ranges).
struct LazyLocalBytes {
    int64_t files = 0;
    int64_t blob = 0;
    int64_t total() const { return files + blob; }
};
LazyLocalBytes lazy_local_bytes(const std::string& layer_dir);

struct EvictionReport {
    int64_t before = 0, after = 0;  // the counted layers' local bytes
    size_t evicted = 0;             // files
    size_t skipped_open = 0;        // files someone had open (the lease was refused)
};

// Evicts files of the store's lazy layers until what they keep is at most `limit` bytes.
class LazyCacheEvictor {
public:
    // store_root holds layers/; limit in bytes.
    LazyCacheEvictor(std::string store_root, uint64_t limit);
    ~LazyCacheEvictor();
    LazyCacheEvictor(const LazyCacheEvictor&) = delete;
    LazyCacheEvictor& operator=(const LazyCacheEvictor&) = delete;

    // Counts every lazy layer no completer holds (complete.lock); over the limit, evicts the
    // files filled longest ago (by ctime: a fill's last change) until under it. A file is
    // evicted only under a write lease (F_SETLEASE), which the kernel grants only while no other
    // descriptor of it is open anywhere: a reader's, a daemon's read or passthrough descriptor, a
    // fill's. Its entry leaves lazy/done (synced) before its hole is punched, so nothing ever
    // lists punched content as filled. busy(layer_dir, entry) names files to leave alone (a fill
    // of this process at work). One evictor at a time per store (lazy-cache.lock).
    EvictionReport bring_under_limit(
        const std::function<bool(const std::string&, size_t)>& busy = nullptr);

private:
    struct Layer;
    struct Victim;
    std::shared_ptr<Layer> layer(const std::string& dir);
    EvictionReport evict_round(const std::function<bool(const std::string&, size_t)>& busy);
    // Under the layer's cache lock, with each file's lease held: done (without them) and
    // ranges rewritten and synced, then their blocks punched.
    void evict_listed(Layer& l, std::vector<Victim*>& listed,
                      const std::map<int64_t, int64_t>& done, EvictionReport& report);

    std::string root_;
    uint64_t limit_;
    std::map<std::string, std::shared_ptr<Layer>> layers_;  // records parsed once, by directory
};

}  // namespace lamina::store
