// Filling a lazy layer's placeholders from the registry the layer came from, by Range requests,
// each chunk checked against the TOC before a byte is written (docs/lazy.md).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <sstream>
#include <thread>

#include "digest.h"
#include "error.h"
#include "fd.h"
#include "fsutil.h"
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
    store::Fd f = store::open_beneath(root, rel, O_PATH);
    struct stat st;
    if (!f || ::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    return st.st_ino;
}

}  // namespace

LazyLayerFiller::LazyLayerFiller(const std::string& layer_dir, const Settings& settings,
                                 const ClientOptions& options, int timeout_s)
    : layer_dir_(layer_dir), settings_(settings), options_(options), timeout_s_(timeout_s) {
    try {
        record_ = store::read_lazy_record(layer_dir);
    } catch (const store::StoreError&) {
        // A completer dropped the record while it was read: the layer is whole.
        if (store::is_lazy_layer(layer_dir)) throw;
    }
    root_ = std::make_unique<store::Fd>(
        ::open((layer_dir + "/diff").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!*root_) store::throw_errno("cannot open", layer_dir + "/diff", errno);
}

LazyLayerFiller::~LazyLayerFiller() = default;

const store::estargz::Placeholder* LazyLayerFiller::placeholder_for(const std::string& path) {
    if (!record_) return nullptr;
    std::string rel = path;
    while (!rel.empty() && rel[0] == '/') rel.erase(0, 1);
    // Those filled when the record was read too: a cache limit may have evicted one since.
    for (const auto* list : {&record_->pending, &record_->filled})
        for (const auto& p : *list)
            if (p.path == rel) return &p;
    // Another name of a placeholder (a hard link): the same inode.
    ino_t ino = regular_inode(root_->get(), rel);
    if (ino == 0) return nullptr;
    for (const auto* list : {&record_->pending, &record_->filled})
        for (const auto& p : *list)
            if (regular_inode(root_->get(), p.path) == ino) return &p;
    return nullptr;
}

// A registry that is down is tried again until the bound; a chunk that does not match its
// digest, or anything else the store refuses, ends it at once.
void LazyLayerFiller::with_registry(const std::function<void(Client&)>& fetch) {
    std::string what = "lazy layer " + record_->source.digest;
    std::unique_ptr<Client> client;
    {
        std::lock_guard lock(clients_mu_);
        if (!idle_clients_.empty()) {
            client = std::move(idle_clients_.back());
            idle_clients_.pop_back();
        }
    }
    const auto deadline = Clock::now() + std::chrono::seconds(timeout_s_);
    for (auto pause = std::chrono::milliseconds(250);;
         pause = std::min(pause * 2, std::chrono::milliseconds(4000))) {
        try {
            if (!client) client = client_for(settings_, record_->source, options_);
            fetch(*client);
            std::lock_guard lock(clients_mu_);
            idle_clients_.push_back(std::move(client));
            return;
        } catch (const store::StoreError& e) {
            throw RegistryError(what + ": " + e.what());
        } catch (const std::runtime_error& e) {  // RegistryError, TransportError
            client.reset();
            if (Clock::now() + pause >= deadline)
                throw RegistryError(what + ": no reply within " + std::to_string(timeout_s_) +
                                    " s: " + e.what());
            std::this_thread::sleep_for(pause);
        }
    }
}

void LazyLayerFiller::fill(const store::estargz::Placeholder& p) {
    with_registry([&](Client& client) {
        store::estargz::fill_placeholder(
            root_->get(), record_->toc, p,
            [&](uint64_t off, uint64_t len) { return range_fetch(client, off, len); });
    });
    store::mark_lazy_done(layer_dir_, p.entry, record_->toc.entries[p.entry].size);
}

std::string LazyLayerFiller::range_fetch(Client& client, uint64_t offset, uint64_t length) {
    const store::LazySource& src = record_->source;
    store::Descriptor d;
    d.digest = src.digest;
    d.size = src.size;
    d.media_type = src.media_type;
    std::string bytes =
        client.get_blob_range(d, static_cast<int64_t>(offset), static_cast<int64_t>(length));
    keep_range(offset, bytes);
    return bytes;
}

// Best effort: a range not kept is fetched again by the completion. The bytes are synced before
// the range is listed, so a listed range holds what the registry sent (right or not: the blob's
// digest decides at the end).
void LazyLayerFiller::keep_range(uint64_t offset, const std::string& bytes) {
    std::string dir = layer_dir_ + "/lazy";
    // An eviction rewrites ranges and punches blob under this lock (lazy_cache.h).
    std::optional<store::LazyCacheLock> lock;
    try {
        lock.emplace(layer_dir_);
    } catch (const store::StoreError&) {
        return;
    }
    store::Fd blob(
        ::open((dir + "/blob").c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!blob) return;
    for (size_t done = 0; done < bytes.size();) {
        ssize_t n = ::pwrite(blob.get(), bytes.data() + done, bytes.size() - done,
                             static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        done += static_cast<size_t>(n);
    }
    if (::fdatasync(blob.get()) != 0) return;
    store::Fd list(::open((dir + "/ranges").c_str(),
                          O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!list) return;
    std::string line = std::to_string(offset) + " " + std::to_string(bytes.size()) + "\n";
    if (::write(list.get(), line.data(), line.size()) == static_cast<ssize_t>(line.size()))
        ::fdatasync(list.get());
}

std::vector<store::estargz::Placeholder> LazyLayerFiller::pending() const {
    if (!record_) return {};
    auto out = record_->pending;
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.entry < b.entry; });
    return out;
}

void LazyLayerFiller::drop_blob() {
    std::string dir = layer_dir_ + "/lazy";
    for (const char* f : {"/ranges", "/blob"})
        if (::unlink((dir + f).c_str()) != 0 && errno != ENOENT)
            store::throw_errno("cannot remove", dir + f, errno);
}

std::string LazyLayerFiller::assemble_blob() {
    if (!record_) throw RegistryError("layer " + layer_dir_ + " is not lazy");
    const uint64_t size = static_cast<uint64_t>(record_->source.size);
    std::string dir = layer_dir_ + "/lazy";
    // What is kept, merged: offset -> end. A torn last line is left out.
    std::map<uint64_t, uint64_t> kept;
    if (store::path_exists(dir + "/ranges")) {
        std::istringstream in(store::read_file(dir + "/ranges"));
        for (std::string line; std::getline(in, line) && !in.eof();) {
            std::istringstream fields(line);
            uint64_t off = 0, len = 0;
            if (!(fields >> off >> len) || off >= size || len > size - off) continue;
            uint64_t& end = kept[off];
            end = std::max(end, off + len);
        }
    }
    std::vector<std::pair<uint64_t, uint64_t>> gaps;  // offset, length
    uint64_t at = 0;
    for (const auto& [off, end] : kept) {
        if (off > at) gaps.emplace_back(at, off - at);
        at = std::max(at, end);
    }
    if (at < size) gaps.emplace_back(at, size - at);
    const uint64_t piece = uint64_t(8) << 20;
    // Not a structured binding: a lambda may not capture one before C++20 as clang 14 has it.
    for (const auto& gap : gaps) {
        uint64_t off = gap.first, len = gap.second;
        for (uint64_t done = 0; done < len; done += piece)
            with_registry([&](Client& client) {
                range_fetch(client, off + done, std::min(piece, len - done));
            });
    }
    // Kept only if every write went through: check the file holds the whole blob.
    struct stat st;
    if (::stat((dir + "/blob").c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != size)
        throw RegistryError("cannot keep the blob of lazy layer " + record_->source.digest +
                            " in " + dir);
    return dir + "/blob";
}

size_t LazyLayerFiller::fill_all_from(const std::string& blob_path) {
    auto todo = pending();
    if (todo.empty()) return 0;
    store::Fd blob(::open(blob_path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!blob) store::throw_errno("cannot open", blob_path, errno);
    auto read_local = [&](uint64_t off, uint64_t len) {
        std::string bytes(len, '\0');
        size_t got = 0;
        while (got < len) {
            ssize_t n =
                ::pread(blob.get(), bytes.data() + got, len - got, static_cast<off_t>(off + got));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) store::throw_errno("cannot read", blob_path, n < 0 ? errno : EIO);
            got += static_cast<size_t>(n);
        }
        return bytes;
    };
    std::vector<std::pair<size_t, uint64_t>> filled;
    for (const auto& p : todo) {
        store::estargz::fill_placeholder(root_->get(), record_->toc, p, read_local, false);
        filled.emplace_back(p.entry, record_->toc.entries[p.entry].size);
    }
    // Their content reaches the disk before any of them is marked done.
    store::Fd tree(::open((layer_dir_ + "/diff").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!tree || ::syncfs(tree.get()) != 0) store::throw_errno("cannot sync", layer_dir_, errno);
    store::mark_lazy_done(layer_dir_, filled);
    return filled.size();
}

int lazy_timeout_seconds() {
    const char* t = getenv("LAMINA_LAZY_TIMEOUT");
    return t ? std::max(1, atoi(t)) : 30;
}

void LazyLayerFiller::fetch_from(const Reference& ref) {
    if (!record_) return;
    record_->source.registry = ref.registry;
    record_->source.repository = ref.repository;
    std::lock_guard lock(clients_mu_);
    idle_clients_.clear();
}

bool complete_lazy_layer(store::Store& store, const std::string& chain_id, const Settings& settings,
                         const ClientOptions& options, int timeout_s, bool wait,
                         const std::function<void(const std::string&)>& note,
                         const Reference* from) {
    std::string dir = store.lazy_layer_dir(chain_id);
    if (!store::is_lazy_layer(dir)) return true;
    std::string lock_path = dir + "/lazy/complete.lock";
    store::Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!lock) {
        if (!store::is_lazy_layer(dir)) return true;  // completed meanwhile
        store::throw_errno("cannot open", lock_path, errno);
    }
    if (::flock(lock.get(), LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
        if (errno == EWOULDBLOCK) return false;
        store::throw_errno("cannot lock", lock_path, errno);
    }
    if (!store::is_lazy_layer(dir)) return true;  // the completer we waited for finished it
    LazyLayerFiller filler(dir, settings, options, timeout_s);
    if (from) filler.fetch_from(*from);
    std::string want = store::read_lazy_record(dir)->source.digest;
    // A completion that stopped after moving the blob into the store (and before dropping the
    // record) left it there: it is checked again like any other.
    std::string blob = store.blob_file(want);
    if (!store::path_exists(blob)) {
        // The blob first, in order and in large ranges (what single files brought is kept and
        // not asked for again): the prioritised files lie at its start, before the landmark. A
        // file at a time cost a request and several syncs each, ten times a whole pull.
        note("fetching the blob");
        blob = filler.assemble_blob();
        if (store::file_sha256(blob) != want) {
            // Something kept was not what the blob holds: fetch it all again, once.
            note("the kept ranges do not make " + want + "; fetching the blob whole");
            filler.drop_blob();
            blob = filler.assemble_blob();
            if (store::file_sha256(blob) != want)
                throw RegistryError("lazy layer " + want +
                                    ": the blob the registry sent has another digest");
        }
    }
    // Filling the missing files and checking the blob (its tar against the TOC, its diff ID)
    // each read all of it: on two threads, since neither needs the other. A file filled from
    // a blob whose check then fails was still checked chunk by chunk against the TOC.
    note("filling missing files and verifying");
    std::exception_ptr check_failed;
    std::thread checker([&] {
        try {
            store.check_lazy_blob(chain_id, blob);
        } catch (...) {
            check_failed = std::current_exception();
        }
    });
    size_t filled = 0;
    try {
        filled = filler.fill_all_from(blob);
    } catch (...) {
        checker.join();
        throw;
    }
    checker.join();
    if (check_failed) std::rethrow_exception(check_failed);
    if (filled) note("filled " + std::to_string(filled) + " missing files from it");
    store.finish_lazy_layer(chain_id, blob, true);
    return true;
}

}  // namespace lamina::registry
