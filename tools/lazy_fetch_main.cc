// lamina-lazy-fetch: the helper of lazy layers (docs/lazy.md), with registry code kept out of the
// daemon and out of lamina's foreground.
//   lamina-lazy-fetch --serve LAYER...: the fetcher laminafs starts (lazy_fetch= mount option)
//     on the first open of a file in a lazy lower layer, one per mount, talking over its stdin
//     and stdout (common/lazy_protocol.h). Keeps each layer's record parsed and its registry
//     connections open, answers requests as they come (a few at once; two for one file share
//     its fetch) and exits when its input ends: when laminafs goes.
//   lamina-lazy-fetch LAYER PATH: the same for one file, one process. Exits 0 once PATH has its
//     verified content, or was never a placeholder; 1 with one line on stderr otherwise.
//   lamina-lazy-fetch --complete [--tls-verify=false] STORE_ROOT CHAIN_ID...: the background
//     completer `pull --lazy --background` starts, detached. Completes each layer in turn (one
//     another completer holds is left to it); a failure is one line in the layer's
//     lazy/complete.log, and the next layer goes on.
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "lazy_cache.h"
#include "lazy_protocol.h"
#include "registry/transfer.h"

namespace {

using namespace lamina;

// The line a failed background completion leaves where `lamina inspect` users can find it.
void log_failure(const std::string& layer_dir, const std::string& text) {
    std::string path = layer_dir + "/lazy/complete.log";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return;
    std::string line = text + "\n";
    if (::write(fd, line.data(), line.size()) < 0) {
    }
    ::close(fd);
}

int complete_layers(int argc, char** argv) {
    registry::ClientOptions options;
    int i = 2;
    if (i < argc && strcmp(argv[i], "--tls-verify=false") == 0) {
        options.tls_verify = false;
        ++i;
    }
    if (argc - i < 2) {
        fprintf(stderr,
                "usage: lamina-lazy-fetch --complete [--tls-verify=false] STORE_ROOT "
                "CHAIN_ID...\n");
        return 2;
    }
    int failed = 0;
    try {
        store::Store st(argv[i]);
        registry::Settings settings = registry::Settings::load();
        for (int k = i + 1; k < argc; ++k) {
            std::string chain = argv[k];
            try {
                registry::complete_lazy_layer(st, chain, settings, options,
                                              registry::lazy_timeout_seconds(), false,
                                              [](const std::string&) {});
            } catch (const std::exception& e) {
                ++failed;
                fprintf(stderr, "lamina-lazy-fetch: %s: %s\n", chain.c_str(), e.what());
                try {
                    log_failure(st.lazy_layer_dir(chain), e.what());
                } catch (const std::exception&) {
                }
            }
        }
    } catch (const std::exception& e) {
        fprintf(stderr, "lamina-lazy-fetch: %s\n", e.what());
        return 1;
    }
    return failed ? 1 : 0;
}

// The layer directory (layers/<hex>) of a store layer's diff directory; "" when it is none.
std::string layer_dir_of(const char* diff_path) {
    std::unique_ptr<char, decltype(&free)> real(realpath(diff_path, nullptr), free);
    std::string diff = real ? real.get() : "";
    if (!diff.ends_with("/diff")) return "";
    return diff.substr(0, diff.size() - 5);
}

// One lazy layer as the fetcher serves it: its record parsed once, the files known filled (when
// it was read, or by this fetcher since), and the fetch at work for each file, which a second
// request for that file waits on.
class ServedLayer {
public:
    ServedLayer(std::string arg, std::string dir, const registry::Settings& settings)
        : arg_(std::move(arg)), dir_(std::move(dir)), settings_(settings) {}

    const std::string& dir() const { return dir_; }
    bool fetching(size_t entry) {
        std::lock_guard lock(mu_);
        return fetching_.count(entry) > 0;
    }

    // "" once path has its verified content (or never was a placeholder); else why not.
    // filled: this call fetched it.
    std::string complete(const std::string& path, bool& filled) {
        filled = false;
        if (dir_.empty()) return arg_ + " is not a store layer's diff directory";
        std::unique_lock lock(mu_);
        std::shared_future<std::string> running;
        std::promise<std::string> mine;
        const store::estargz::Placeholder* p = nullptr;
        try {
            // Completed meanwhile (a pull, a completer): the record is gone, every file whole.
            if (!store::is_lazy_layer(dir_)) {
                filler_.reset();
                return "";
            }
            if (!filler_) {
                filler_ = std::make_shared<registry::LazyLayerFiller>(
                    dir_, settings_, registry::ClientOptions{}, registry::lazy_timeout_seconds());
                for (const auto& [entry, bytes] : store::read_lazy_done(dir_))
                    filled_.insert(static_cast<size_t>(entry));
            }
            p = filler_->placeholder_for(path);
            if (!p) return "";
            if (auto it = fetching_.find(p->entry); it != fetching_.end()) {
                running = it->second;
                lock.unlock();
                return running.get();
            }
            // laminafs asks only for a file that looks unfilled, holding it open (so no one
            // evicts it meanwhile): one known filled was evicted since (lazy/done no longer
            // lists it), or is a file the filesystem keeps without blocks (it still does).
            if (filled_.count(p->entry)) {
                if (store::read_lazy_done(dir_).count(static_cast<int64_t>(p->entry))) return "";
                filled_.erase(p->entry);
            }
        } catch (const std::exception& e) {
            return e.what();
        }
        fetching_[p->entry] = mine.get_future().share();
        std::shared_ptr<registry::LazyLayerFiller> filler = filler_;
        lock.unlock();
        std::string error;
        try {
            filler->fill(*p);
        } catch (const std::exception& e) {
            error = e.what();
        }
        lock.lock();
        if (error.empty()) filled_.insert(p->entry);
        fetching_.erase(p->entry);
        mine.set_value(error);
        filled = error.empty();
        return error;
    }

private:
    std::string arg_, dir_;
    const registry::Settings& settings_;
    std::mutex mu_;
    // Kept while the layer is lazy; a fill at work holds it (and the placeholder in it) too.
    std::shared_ptr<registry::LazyLayerFiller> filler_;
    std::set<size_t> filled_;
    std::map<size_t, std::shared_future<std::string>> fetching_;
};

// How many requests are served at once: a slow file does not hold up the others.
constexpr int kServeThreads = 4;

int serve(int argc, char** argv) {
    // laminafs gone: its end of the socket closes and the input ends; should anything keep the
    // socket open, the kernel ends this process with it too.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::signal(SIGPIPE, SIG_IGN);
    registry::Settings settings;
    try {
        settings = registry::Settings::load();
    } catch (const std::exception& e) {
        fprintf(stderr, "lamina-lazy-fetch: %s\n", e.what());
        return 1;
    }
    // With config.json's "lazy-cache-size", each fill is followed by an eviction over the
    // whole store's incomplete lazy layers (one at a time in this process; lazy-cache.lock
    // across processes). Its write leases are broken by any open of the file: the signal that
    // says so is not needed, the lease is released as soon as the eviction is done.
    ::signal(SIGIO, SIG_IGN);
    std::vector<std::unique_ptr<ServedLayer>> layers;
    std::unique_ptr<store::LazyCacheEvictor> evictor;
    std::mutex evict_mu;
    auto evict = [&] {
        std::lock_guard lock(evict_mu);
        if (!evictor) return;
        auto busy = [&](const std::string& dir, size_t entry) {
            for (const auto& l : layers)
                if (l->dir() == dir && l->fetching(entry)) return true;
            return false;
        };
        try {
            evictor->bring_under_limit(busy);
        } catch (const std::exception& e) {
            fprintf(stderr, "lamina-lazy-fetch: cache limit: %s\n", e.what());
        }
    };
    for (int i = 2; i < argc; ++i)
        layers.push_back(std::make_unique<ServedLayer>(argv[i], layer_dir_of(argv[i]), settings));
    if (settings.lazy_cache_size)
        for (const auto& l : layers)
            if (!l->dir().empty()) {
                // layers/<hex> below the store's root
                std::string root = l->dir().substr(0, l->dir().rfind('/'));
                root = root.substr(0, root.rfind('/'));
                evictor =
                    std::make_unique<store::LazyCacheEvictor>(root, *settings.lazy_cache_size);
                break;
            }

    std::mutex queue_mu, out_mu;
    std::condition_variable queued;
    std::deque<lazy_protocol::Request> queue;
    auto answer = [&](uint64_t id, const std::string& error) {
        std::lock_guard lock(out_mu);
        if (!lazy_protocol::send_line(1, lazy_protocol::reply_line(id, error))) std::_Exit(0);
    };
    std::vector<std::thread> workers;
    for (int i = 0; i < kServeThreads; ++i)
        workers.emplace_back([&] {
            for (;;) {
                std::unique_lock lock(queue_mu);
                queued.wait(lock, [&] { return !queue.empty(); });
                lazy_protocol::Request r = std::move(queue.front());
                queue.pop_front();
                lock.unlock();
                bool filled = false;
                std::string error = r.layer < layers.size()
                                        ? layers[r.layer]->complete(r.path, filled)
                                        : "no lazy layer " + std::to_string(r.layer);
                answer(r.id, error);
                // After the answer, so the open does not wait for it: the asker holds the
                // file open until it has read it, so this cannot evict it.
                if (filled) evict();
            }
        });
    lazy_protocol::LineReader in(0);
    std::string line;
    int r;
    while ((r = in.next(line)) > 0) {
        auto req = lazy_protocol::parse_request(line);
        if (!req) {
            fprintf(stderr, "lamina-lazy-fetch: a request that does not parse\n");
            continue;
        }
        std::lock_guard lock(queue_mu);
        queue.push_back(std::move(*req));
        queued.notify_one();
    }
    // The input ended (laminafs unmounted or died): fills at work are dropped unmarked, so the
    // next fetcher fetches those files again.
    std::_Exit(r == 0 ? 0 : 1);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && strcmp(argv[1], "--serve") == 0) return serve(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "--complete") == 0) return complete_layers(argc, argv);
    if (argc != 3) {
        fprintf(stderr,
                "usage: lamina-lazy-fetch --serve LAYER_DIR... | LAYER_DIR PATH (run by "
                "laminafs)\n");
        return 2;
    }
    std::string layer_dir = layer_dir_of(argv[1]);
    if (layer_dir.empty()) {
        fprintf(stderr, "lamina-lazy-fetch: %s is not a store layer's diff directory\n", argv[1]);
        return 1;
    }
    try {
        registry::LazyLayerFiller filler(layer_dir, registry::Settings::load(), {},
                                         registry::lazy_timeout_seconds());
        const auto* p = filler.placeholder_for(argv[2]);
        if (p && !store::read_lazy_done(layer_dir).count(static_cast<int64_t>(p->entry)))
            filler.fill(*p);
        return 0;
    } catch (const std::exception& e) {
        fprintf(stderr, "lamina-lazy-fetch: %s: %s\n", argv[2], e.what());
        return 1;
    }
}
