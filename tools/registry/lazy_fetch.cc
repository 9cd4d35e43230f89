// Filling a lazy layer's placeholders from the registry the layer came from, by Range requests,
// each chunk checked against the TOC before a byte is written (docs/lazy.md).
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

// The inode of rel beneath root, without following symlinks; 0 when it is no regular file.
ino_t regular_inode(int root, const std::string& rel) {
    struct open_how how = {};
    how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    store::Fd f(static_cast<int>(::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how)));
    struct stat st;
    if (!f || ::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    return st.st_ino;
}

}  // namespace

LazyLayerFiller::LazyLayerFiller(const std::string& layer_dir, const Settings& settings,
                                 const ClientOptions& options, int timeout_s)
    : layer_dir_(layer_dir), settings_(settings), options_(options), timeout_s_(timeout_s) {
    record_ = store::read_lazy_record(layer_dir);
    root_ = std::make_unique<store::Fd>(
        ::open((layer_dir + "/diff").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!*root_) store::throw_errno("cannot open", layer_dir + "/diff", errno);
}

LazyLayerFiller::~LazyLayerFiller() = default;

const store::estargz::Placeholder* LazyLayerFiller::placeholder_for(const std::string& path) {
    if (!record_) return nullptr;
    std::string rel = path;
    while (!rel.empty() && rel[0] == '/') rel.erase(0, 1);
    for (const auto& p : record_->pending)
        if (p.path == rel) return &p;
    // Another name of a placeholder (a hard link): the same inode.
    ino_t ino = regular_inode(root_->get(), rel);
    if (ino == 0) return nullptr;
    for (const auto& p : record_->pending)
        if (regular_inode(root_->get(), p.path) == ino) return &p;
    return nullptr;
}

// A registry that is down is tried again until the bound; a chunk that does not match its
// digest, or anything else the store refuses, ends it at once.
void LazyLayerFiller::fill(const store::estargz::Placeholder& p) {
    const store::LazySource& src = record_->source;
    std::string what = "lazy layer " + src.digest;
    store::Descriptor d;
    d.digest = src.digest;
    d.size = src.size;
    d.media_type = src.media_type;
    const auto deadline = Clock::now() + std::chrono::seconds(timeout_s_);
    for (auto pause = std::chrono::milliseconds(250);;
         pause = std::min(pause * 2, std::chrono::milliseconds(4000))) {
        try {
            if (!client_) client_ = client_for(settings_, src, options_);
            store::estargz::fill_placeholder(
                root_->get(), record_->toc, p, [&](uint64_t off, uint64_t len) {
                    return client_->get_blob_range(d, static_cast<int64_t>(off),
                                                   static_cast<int64_t>(len));
                });
            store::mark_lazy_done(layer_dir_, p.entry);
            return;
        } catch (const store::StoreError& e) {
            throw RegistryError(what + ": " + e.what());
        } catch (const std::runtime_error& e) {  // RegistryError, TransportError
            client_.reset();
            if (Clock::now() + pause >= deadline)
                throw RegistryError(what + ": no reply within " + std::to_string(timeout_s_) +
                                    " s: " + e.what());
            std::this_thread::sleep_for(pause);
        }
    }
}

}  // namespace lamina::registry
