// Completing lazy layers: every placeholder filled from the registry its layer came from, by
// Range requests, each chunk checked against the TOC before a byte is written (docs/lazy.md).
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "digest.h"
#include "error.h"
#include "fd.h"
#include "lazy_layer.h"
#include "transfer.h"

namespace lamina::registry {

namespace {

using Clock = std::chrono::steady_clock;

// A client for where the layer came from: its mirrors first, then the registry, as a pull.
std::unique_ptr<Client> client_for(const Settings& settings, const store::LazySource& src,
                                   const ClientOptions& options) {
    Reference ref{src.registry, src.repository, "latest", ""};
    std::string why;
    for (const Endpoint& ep : settings.pull_endpoints(ref)) {
        try {
            auto c = std::make_unique<Client>(settings, ep, options);
            c->set_probing(ep.mirror);
            c->ping();
            c->set_probing(false);
            return c;
        } catch (const std::runtime_error& e) {  // RegistryError, TransportError
            why = e.what();
        }
    }
    throw RegistryError("cannot reach " + src.registry + "/" + src.repository + ": " + why);
}

void complete_layer(const std::string& layer_dir, const Settings& settings,
                    const ClientOptions& options, int timeout_s, std::ostream& out) {
    auto rec = store::read_lazy_record(layer_dir);
    if (!rec) return;
    const store::LazySource& src = rec->source;
    std::string what = "lazy layer " + src.digest;
    Descriptor d;
    d.digest = src.digest;
    d.size = src.size;
    d.media_type = src.media_type;
    store::Fd root(::open((layer_dir + "/diff").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) store::throw_errno("cannot open", layer_dir + "/diff", errno);

    // A registry that is down is tried again until the bound; a chunk that does not match its
    // digest, or anything else the store refuses, ends it at once.
    const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
    std::unique_ptr<Client> client;
    auto with_retries = [&](const std::function<void()>& step) {
        for (auto pause = std::chrono::milliseconds(250);;
             pause = std::min(pause * 2, std::chrono::milliseconds(4000))) {
            try {
                if (!client) client = client_for(settings, src, options);
                step();
                return;
            } catch (const std::runtime_error& e) {
                if (dynamic_cast<const store::StoreError*>(&e)) throw;
                client.reset();
                if (Clock::now() + pause >= deadline)
                    throw RegistryError(what + ": no reply within " + std::to_string(timeout_s) +
                                        " s: " + e.what());
                std::this_thread::sleep_for(pause);
            }
        }
    };
    out << "Fetching " << rec->pending.size() << " files of " << what << "\n";
    for (const auto& p : rec->pending) {
        try {
            with_retries([&] {
                store::estargz::fill_placeholder(
                    root.get(), rec->toc, p, [&](uint64_t off, uint64_t len) {
                        return client->get_blob_range(d, static_cast<int64_t>(off),
                                                      static_cast<int64_t>(len));
                    });
            });
        } catch (const store::StoreError& e) {
            throw RegistryError(what + ": " + e.what());
        }
    }
    store::drop_lazy_record(layer_dir);
}

}  // namespace

void complete_lazy_layers(store::Store& store, const Settings& settings,
                          const store::ImageRecord& image, const ClientOptions& client,
                          int timeout_s, std::ostream& out) {
    for (const auto& l : image.layers) {
        std::string diff = store.layer_dir(l.chain_id);
        std::string layer_dir = diff.substr(0, diff.size() - 5);  // without "/diff"
        try {
            complete_layer(layer_dir, settings, client, timeout_s, out);
        } catch (const TransportError& e) {
            throw RegistryError("lazy layer " + l.blob + ": " + e.what());
        }
    }
}

}  // namespace lamina::registry
