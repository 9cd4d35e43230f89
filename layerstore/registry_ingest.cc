// The store's side of a registry pull or push: which layers it already has, where downloads
// wait, and taking a fetched image in through the same verified path as `load`.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdlib>

#include "db.h"
#include "digest.h"
#include "error.h"
#include "estargz.h"
#include "fsutil.h"
#include "internal.h"
#include "lazy_layer.h"
#include "lock.h"
#include "store.h"
#include "unpack.h"

namespace lamina::store {

namespace {

bool blob_recorded(Db& db, const std::string& digest) {
    Stmt st(db, "SELECT 1 FROM blobs WHERE digest = ?");
    st.bind(1, digest);
    return st.step();
}

}  // namespace

std::string Store::lazy_layer_dir(const std::string& chain_id) const {
    return Layout{root_}.layers() + "/" + digest_hex(chain_id);
}

namespace {

// The blob is the one the layer came from, its tar is what the TOC said, and its content the
// config's diff ID. Read only: no lock held while a large blob is hashed.
void check_lazy_blob_against(const std::string& chain_id, const LayerRecord& rec,
                             const LazyRecord& lazy, const std::string& blob_path) {
    std::string what = "lazy layer " + chain_id;
    std::string digest = file_sha256(blob_path);
    if (digest != lazy.source.digest)
        throw StoreError(what + ": the assembled blob is " + digest + ", not " +
                         lazy.source.digest);
    std::string diff_id = estargz::check_blob_against_toc(blob_path, lazy.toc);
    if (diff_id != rec.diff_id)
        throw StoreError(what + ": diffID mismatch: the config says " + rec.diff_id +
                         ", the content is " + diff_id);
}

}  // namespace

void Store::check_lazy_blob(const std::string& chain_id, const std::string& blob_path) {
    auto rec = layer(chain_id);
    if (!rec) throw StoreError("no such layer: " + chain_id);
    auto lazy = read_lazy_record(lazy_layer_dir(chain_id));
    if (lazy) check_lazy_blob_against(chain_id, *rec, *lazy, blob_path);
}

void Store::finish_lazy_layer(const std::string& chain_id, const std::string& blob_path,
                              bool checked) {
    Layout l{root_};
    std::string dir = lazy_layer_dir(chain_id);
    auto rec = layer(chain_id);
    if (!rec) throw StoreError("no such layer: " + chain_id);
    auto lazy = read_lazy_record(dir);
    if (!lazy) return;
    if (!lazy->pending.empty())
        throw StoreError("lazy layer " + chain_id + ": " + std::to_string(lazy->pending.size()) +
                         " files are still to fetch");
    if (!checked) check_lazy_blob_against(chain_id, *rec, *lazy, blob_path);
    const std::string& digest = lazy->source.digest;
    struct stat st;
    if (::stat(blob_path.c_str(), &st) != 0) throw_errno("cannot stat", blob_path, errno);

    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    if (!is_lazy_layer(dir)) return;  // another completer was first
    if (!blob_recorded(*db_, digest) || !path_exists(l.blob(digest))) {
        if (::rename(blob_path.c_str(), l.blob(digest).c_str()) != 0)
            throw_errno("cannot move blob into", l.blob(digest), errno);
        Fd rootfd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (rootfd) ::syncfs(rootfd.get());
    }
    Transaction tx(*db_);
    Stmt(*db_, "INSERT OR IGNORE INTO blobs(digest, size) VALUES(?, ?)")
        .bind(1, digest)
        .bind(2, static_cast<int64_t>(st.st_size))
        .run();
    Stmt(*db_, "UPDATE layers SET size = ? WHERE id = ?")
        .bind(1, static_cast<int64_t>(tree_size(dir + "/diff")))
        .bind(2, chain_id)
        .run();
    tx.commit();
    // Last: from here the layer is ordinary (a crash before leaves a lazy layer with its blob,
    // which the next completion finishes at once).
    drop_lazy_record(dir);
}

bool Store::has_layer_blob(const std::string& chain_id, const std::string& blob_digest) {
    return layer(chain_id) && blob_recorded(*db_, blob_digest) &&
           path_exists(Layout{root_}.blob(blob_digest));
}

LoadedImage Store::store_pulled_image(const std::string& config, const std::string& manifest,
                                      const std::vector<PulledLayer>& layers,
                                      const std::vector<std::string>& names) {
    Layout l{root_};
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    std::vector<SourceLayer> sources;
    for (size_t i = 0; i < layers.size(); ++i) {
        const PulledLayer& p = layers[i];
        // A layer skipped as "Already exists" may have been removed since (rmi, prune).
        if (p.path.empty() && !p.lazy && !blob_recorded(*db_, p.digest))
            throw StoreError("layer " + std::to_string(i + 1) + " (" + p.digest +
                             ") was removed from the store during the pull; pull again");
        SourceLayer s;
        s.path = p.path;
        s.digest = p.digest;
        s.media_type = p.media_type;
        s.size = p.size;
        s.lazy = p.lazy;
        sources.push_back(std::move(s));
    }
    StagingDir staging(l, "pull");
    return store_image(config, manifest, sources, names, staging.path());
}

namespace {

// "HEX" (a blob a pull verified) or "HEX.partial" (one still arriving): the hex of its digest,
// or "" for any other name.
std::string download_digest_hex(const std::string& name) {
    std::string hex = name.ends_with(".partial") ? name.substr(0, name.size() - 8) : name;
    return hex.size() == 64 && is_sha256_digest("sha256:" + hex) ? hex : "";
}

}  // namespace

void Store::check_free_space(uint64_t bytes, const std::string& what) const {
    struct statvfs vfs;
    if (::statvfs(root_.c_str(), &vfs) != 0) return;
    uint64_t free_bytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
    uint64_t reserve =
        reserve_.value_or(default_free_space_reserve(uint64_t(vfs.f_blocks) * vfs.f_frsize));
    if (bytes <= free_bytes && free_bytes - bytes >= reserve) return;
    throw StoreError("not enough free space in " + root_ + " for " + what + ": " +
                     std::to_string(bytes) + " bytes, with " + std::to_string(free_bytes) +
                     " free and a reserve of " + std::to_string(reserve) + " (see --reserve)");
}

namespace {

// "PID-RANDOM" is a pull's own while it runs; "kept-RANDOM" (pid 0) one that failed.
bool download_dir_in_use(const std::string& name) {
    pid_t pid = static_cast<pid_t>(std::atol(name.c_str()));
    return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
}

}  // namespace

int64_t Store::kept_downloads_size() const {
    std::string parent = root_ + "/downloads";
    std::vector<std::string> names;
    int64_t size = 0;
    if (sorted_names_at(AT_FDCWD, parent, names))
        for (const auto& n : names)
            if (!download_dir_in_use(n)) size += static_cast<int64_t>(tree_size(parent + "/" + n));
    return size;
}

int64_t Store::remove_kept_downloads() {
    std::string parent = root_ + "/downloads";
    std::vector<std::string> names;
    int64_t freed = 0;
    if (sorted_names_at(AT_FDCWD, parent, names))
        for (const auto& n : names) {
            if (download_dir_in_use(n)) continue;
            freed += static_cast<int64_t>(tree_size(parent + "/" + n));
            remove_tree(parent + "/" + n);
        }
    return freed;
}

std::string Store::make_download_dir() {
    std::string parent = root_ + "/downloads";
    make_dirs(parent, 0700);
    std::string dir = parent + "/" + std::to_string(getpid()) + "-" + random_hex(8);
    make_dirs(dir, 0700);
    std::vector<std::string> names;
    if (!sorted_names_at(AT_FDCWD, parent, names)) return dir;
    for (const auto& n : names) {
        if (parent + "/" + n == dir || download_dir_in_use(n)) continue;
        // A pull that died or gave up: its blobs move here as partial ones (even those it had
        // verified are hashed again), so this pull can resume them; the rest goes.
        std::vector<std::string> files;
        if (sorted_names_at(AT_FDCWD, parent + "/" + n, files))
            for (const auto& f : files)
                if (std::string hex = download_digest_hex(f); !hex.empty())
                    ::rename((parent + "/" + n + "/" + f).c_str(),
                             (dir + "/" + hex + ".partial").c_str());
        remove_tree(parent + "/" + n);
    }
    return dir;
}

void Store::end_download_dir(const std::string& dir, bool keep_blobs) {
    std::vector<std::string> files;
    bool kept = false;
    if (keep_blobs && sorted_names_at(AT_FDCWD, dir, files))
        for (const auto& f : files) {
            struct stat st;
            std::string p = dir + "/" + f;
            if (download_digest_hex(f).empty() || ::lstat(p.c_str(), &st) != 0 ||
                !S_ISREG(st.st_mode) || st.st_size == 0)
                remove_tree(p);
            else
                kept = true;
        }
    if (!kept) {
        remove_tree(dir);
        return;
    }
    // Renamed so that the next pull takes the blobs over even while this process lives on;
    // should that fail, the PID in the name lets it do so once this process is gone.
    ::rename(dir.c_str(), (root_ + "/downloads/kept-" + random_hex(8)).c_str());
}

std::string Store::blob_file(const std::string& digest) const {
    return Layout{root_}.blob(digest);
}

std::shared_ptr<void> Store::hold_blobs() {
    return std::make_shared<StoreLock>(Layout{root_}.lock(), StoreLock::Mode::Shared);
}

}  // namespace lamina::store
