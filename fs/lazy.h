// Lazy lower layers (docs/lazy.md): some files of a lower layer are placeholders whose content a
// fetcher program fetches and verifies. The daemon never reads one before the fetcher says it is
// complete; it holds no registry code itself. It remembers nothing of which files are complete:
// a file's holes say it may not be (never filled, or evicted by a cache limit), and the
// descriptor it holds while it asks keeps the fetcher from evicting it (docs/lazy.md).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "layers.h"
#include "options.h"

namespace lamina {

class LazyLayers {
public:
    explicit LazyLayers(const MountOptions& opts);
    ~LazyLayers();
    LazyLayers(const LazyLayers&) = delete;
    LazyLayers& operator=(const LazyLayers&) = delete;

    bool is_lazy(LayerNo layer) const {
        return layer < lazy_index_.size() && lazy_index_[layer] >= 0;
    }
    // A regular file with content whose blocks may not all be there: none allocated, or a hole
    // before its end. A file written whole has neither (a sparse image file is written out with
    // its zeros), so this costs a needless ask only for files the filesystem keeps without
    // blocks (tiny inline files, compressed zeros).
    static bool looks_unfilled(int fd);
    // 0 when the lower file at rel in layer, open as fd, may be read: its layer is not lazy, it
    // does not look unfilled, or the fetcher (`HELPER --serve LAZY_LAYER_PATH...`, one per mount,
    // started on the first ask) said it is complete within the bound. EIO otherwise, with a log
    // line. The caller holds fd open throughout and reads through it: while any descriptor of
    // the file is open, no fetcher can evict it (it needs a write lease), so what the fetcher
    // vouched for is what fd reads.
    int ensure_complete(LayerNo layer, const std::string& rel, int fd);

private:
    struct Fetcher;
    // One question to the fetcher; opens of the same file while it is out wait on it too.
    struct Request {
        uint64_t id = 0;
        std::string key, root, rel;
        std::shared_ptr<Fetcher> fetcher;
        bool done = false, ok = false;
    };

    // The running fetcher, started when there is none (under mu_); nullptr with a log line
    // when it cannot be.
    std::shared_ptr<Fetcher> running_fetcher();
    // The fetcher's replies until its end (its own thread, which also starts it, so that
    // PR_SET_PDEATHSIG in the child follows this thread's life: the fetcher's).
    void serve_replies(Fetcher* f);
    void finish(Request& r, bool ok);

    std::string helper_;
    std::vector<std::string> layer_paths_;  // lower layers 1..N, top first
    std::vector<int> lazy_index_;           // by LayerNo: its place among the lazy ones, or -1
    std::vector<std::string> lazy_paths_;   // the fetcher's arguments
    int timeout_s_;
    std::mutex mu_;
    std::condition_variable replied_;
    std::unordered_map<uint64_t, std::shared_ptr<Request>> by_id_;
    std::unordered_map<std::string, std::shared_ptr<Request>> by_key_;
    uint64_t next_id_ = 1;
    std::shared_ptr<Fetcher> fetcher_;
};

// nullptr unless the options name lazy layers and a helper.
std::unique_ptr<LazyLayers> make_lazy_layers(const MountOptions& opts);

}  // namespace lamina
