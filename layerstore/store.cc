// Opening the store, putting right what an interrupted command left behind, and image queries.
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "db.h"
#include "digest.h"
#include "error.h"
#include "fsutil.h"
#include "internal.h"
#include "lazy_layer.h"
#include "lock.h"
#include "reference_grammar.h"
#include "volumes.h"

namespace lamina::store {

namespace {

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS layers(
    id TEXT PRIMARY KEY, parent TEXT NOT NULL, diff_id TEXT NOT NULL, link TEXT NOT NULL UNIQUE,
    blob TEXT NOT NULL, blob_media_type TEXT NOT NULL, blob_size INTEGER NOT NULL,
    size INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blobs(digest TEXT PRIMARY KEY, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images(
    id TEXT PRIMARY KEY, manifest TEXT NOT NULL, config TEXT NOT NULL, stored INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS image_layers(
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
    layer_id TEXT NOT NULL REFERENCES layers(id), blob TEXT NOT NULL, blob_media_type TEXT NOT NULL,
    blob_size INTEGER NOT NULL, PRIMARY KEY(image_id, idx));
CREATE INDEX IF NOT EXISTS image_layers_by_layer ON image_layers(layer_id);
CREATE TABLE IF NOT EXISTS names(
    name TEXT PRIMARY KEY, image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS containers(
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, image_id TEXT NOT NULL REFERENCES images(id),
    created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS container_settings(
    container_id TEXT PRIMARY KEY REFERENCES containers(id) ON DELETE CASCADE,
    env TEXT NOT NULL, labels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repo_digests(
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE, repo TEXT NOT NULL,
    digest TEXT NOT NULL, PRIMARY KEY(image_id, repo));
CREATE TABLE IF NOT EXISTS squashes(
    id TEXT PRIMARY KEY, link TEXT NOT NULL UNIQUE, layers INTEGER NOT NULL, created INTEGER NOT NULL);
)";

std::vector<std::string> list_dir(const std::string& path) {
    std::vector<std::string> names;
    sorted_names_at(AT_FDCWD, path, names);  // a missing directory lists as empty
    return names;
}

std::set<std::string> column_set(Db& db, const char* sql, bool strip_digest) {
    std::set<std::string> out;
    Stmt st(db, sql);
    while (st.step()) {
        std::string v = st.text(0);
        out.insert(strip_digest && v.starts_with("sha256:") ? v.substr(7) : v);
    }
    return out;
}

// A file of this size is kept in the store and dropped when its filesystem is full, so that
// SQLite has the room that even a delete needs: rm, rmi and prune then work on a full disk.
constexpr uint64_t kSpaceReserve = 1 << 20;

uint64_t free_bytes(const std::string& path) {
    struct statvfs v;
    if (::statvfs(path.c_str(), &v) != 0) return UINT64_MAX;
    return static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
}

// The reserve goes when less than it is free: this command may need the room.
void release_space_reserve(const Layout& l) {
    if (free_bytes(l.root) < kSpaceReserve) ::unlink(l.space_reserve().c_str());
}

// The reserve is made again once there is room for it several times over.
void keep_space_reserve(const Layout& l) {
    std::string path = l.space_reserve();
    if (path_exists(path) || free_bytes(l.root) < 4 * kSpaceReserve) return;
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) return;
    if (::posix_fallocate(fd.get(), 0, kSpaceReserve) != 0) ::unlink(path.c_str());
}

}  // namespace

std::string Layout::blob(const std::string& digest) const {
    return blobs() + "/" + digest_hex(digest);
}

std::string make_staging_dir(const Layout& layout, const std::string& tag) {
    std::string dir = layout.tmp() + "/" + tag + "-" + random_hex(12);
    if (::mkdir(dir.c_str(), 0700) != 0) throw_errno("cannot create staging directory", dir, errno);
    return dir;
}

StagingDir::StagingDir(const Layout& layout, const std::string& tag)
    : path_(make_staging_dir(layout, tag)) {}

StagingDir::~StagingDir() {
    try {
        remove_tree(path_);
    } catch (const StoreError&) {
        // Left for the next command's recovery, which empties tmp/.
    }
}

std::string new_link_name() {
    static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    std::string hex = random_hex(52);
    std::string out;
    for (size_t i = 0; i < 26; ++i) {
        int v = std::stoi(hex.substr(i * 2, 2), nullptr, 16);
        out.push_back(alphabet[v & 31]);
    }
    return out;
}

Store::Store(const std::string& root) : root_(root) {
    if (path_exists(root_)) release_space_reserve(Layout{root_});
    ensure_layout();
    {
        // Opening a new store writes (WAL mode, the schema). Two processes doing it at once race
        // from a read into a write, which SQLite answers with SQLITE_BUSY at once instead of
        // waiting (two concurrent first pulls into an empty store failed so), so the opening
        // is serialized on its own short lock, apart from the store lock writers hold for long.
        StoreLock opening(root_ + "/open.lock", StoreLock::Mode::Exclusive);
        db_ = std::make_unique<Db>(Layout{root_}.db());
        db_->exec(kSchema);
        create_volume_schema(*db_);
    }
    // Only a process alone with the store may judge what is half-done; otherwise the next
    // writer (which takes the lock exclusively) does it.
    StoreLock lock(Layout{root_}.lock(), StoreLock::Mode::Exclusive, true);
    if (lock) recover();
    keep_space_reserve(Layout{root_});
}

Store::~Store() = default;

void Store::ensure_layout() {
    Layout l{root_};
    make_dirs(root_, 0700);
    for (const auto& d : {l.tmp(), l.layers(), l.squashes(), l.links(), l.blobs(), l.containers()})
        make_dirs(d, 0700);
    make_dirs(volumes_dir(l), 0700);
}

// Every write first lands in tmp/ or under a name the database does not know yet, and the
// database transaction is the commit point; so whatever the database does not mention is
// debris of an interrupted command and is removed here, under the exclusive lock.
void Store::recover() {
    Layout l{root_};
    for (const auto& n : list_dir(l.tmp())) remove_tree(l.tmp() + "/" + n);

    auto known_layers = column_set(*db_, "SELECT id FROM layers", true);
    for (const auto& n : list_dir(l.layers()))
        if (!known_layers.count(n)) remove_tree(l.layers() + "/" + n);
    auto known_squashes = column_set(*db_, "SELECT id FROM squashes", true);
    for (const auto& n : list_dir(l.squashes()))
        if (!known_squashes.count(n)) remove_tree(l.squashes() + "/" + n);
    auto links = column_set(*db_, "SELECT link FROM layers UNION SELECT link FROM squashes", false);
    for (const auto& n : list_dir(l.links()))
        if (!links.count(n)) ::unlink((l.links() + "/" + n).c_str());
    auto blobs = column_set(*db_, "SELECT digest FROM blobs", true);
    for (const auto& n : list_dir(l.blobs()))
        if (!blobs.count(n)) ::unlink((l.blobs() + "/" + n).c_str());
    auto containers = column_set(*db_, "SELECT id FROM containers", false);
    for (const auto& n : list_dir(l.containers())) {
        if (containers.count(n)) continue;
        unmount_merged(container_paths(n).merged());
        remove_tree(l.containers() + "/" + n);
    }
    recover_volumes(*db_, l);
}

std::string Store::layer_dir(const std::string& chain_id) const {
    return Layout{root_}.layers() + "/" + digest_hex(chain_id) + "/diff";
}

static LayerRecord layer_from_row(Stmt& st) {
    LayerRecord r;
    r.id = st.text(0);
    r.parent = st.text(1);
    r.diff_id = st.text(2);
    r.link = st.text(3);
    r.blob = st.text(4);
    r.blob_media_type = st.text(5);
    r.blob_size = st.integer(6);
    r.size = st.integer(7);
    r.created = st.integer(8);
    return r;
}

constexpr const char* kLayerColumns =
    "SELECT id, parent, diff_id, link, blob, blob_media_type, blob_size, size, created FROM layers";

std::vector<LayerRecord> Store::layers() {
    std::vector<LayerRecord> out;
    Stmt st(*db_, std::string(kLayerColumns) + " ORDER BY created, id");
    while (st.step()) out.push_back(layer_from_row(st));
    return out;
}

std::optional<LayerRecord> Store::layer(const std::string& chain_id) {
    Stmt st(*db_, std::string(kLayerColumns) + " WHERE id = ?");
    st.bind(1, chain_id);
    if (!st.step()) return std::nullopt;
    return layer_from_row(st);
}

std::map<std::string, LazyProgress> Store::lazy_layers() {
    std::map<std::string, LazyProgress> out;
    Stmt st(*db_, "SELECT id FROM layers");
    while (st.step()) {
        std::string id = st.text(0);
        if (auto p = read_lazy_progress(Layout{root_}.layers() + "/" + digest_hex(id)))
            out[id] = *p;
    }
    return out;
}

ImageRecord Store::read_image(const std::string& id) {
    ImageRecord img;
    Stmt st(*db_, "SELECT id, manifest, config, stored FROM images WHERE id = ?");
    st.bind(1, id);
    if (!st.step()) throw StoreError("no such image: " + id);
    img.id = st.text(0);
    img.manifest = st.text(1);
    img.config = st.text(2);
    img.stored = st.integer(3);
    Stmt names(*db_, "SELECT name FROM names WHERE image_id = ? ORDER BY name");
    names.bind(1, id);
    while (names.step()) img.names.push_back(names.text(0));
    Stmt layers(*db_,
                "SELECT layer_id, blob, blob_media_type, blob_size FROM image_layers WHERE "
                "image_id = ? ORDER BY idx");
    layers.bind(1, id);
    while (layers.step())
        img.layers.push_back({layers.text(0), layers.text(1), layers.text(2), layers.integer(3)});
    Stmt digests(*db_, "SELECT repo, digest FROM repo_digests WHERE image_id = ? ORDER BY repo");
    digests.bind(1, id);
    while (digests.step()) img.repo_digests.push_back(digests.text(0) + "@" + digests.text(1));
    return img;
}

void Store::record_repo_digest(const std::string& image_id, const std::string& repo,
                               const std::string& digest) {
    if (!is_sha256_digest(digest)) throw StoreError("not a sha256 digest: " + printable(digest));
    std::string familiar = split_reference(normalize_reference(repo)).first;
    StoreLock lock(Layout{root_}.lock(), StoreLock::Mode::Exclusive);
    Transaction tx(*db_);
    Stmt(*db_,
         "INSERT INTO repo_digests(image_id, repo, digest) VALUES(?, ?, ?) ON CONFLICT(image_id, "
         "repo) DO UPDATE SET digest = excluded.digest")
        .bind(1, image_id)
        .bind(2, familiar)
        .bind(3, digest)
        .run();
    tx.commit();
}

std::string Store::resolve_image_id(const std::string& ref) {
    if (ref.empty()) throw StoreError("no such image: empty reference");
    if (is_sha256_digest(ref)) {
        Stmt st(*db_, "SELECT id FROM images WHERE id = ?");
        st.bind(1, ref);
        if (st.step()) return st.text(0);
        throw StoreError("no such image: " + printable(ref));
    }
    std::string familiar;
    try {
        familiar = normalize_reference(ref);
    } catch (const StoreError&) {
    }
    for (const std::string& name : {ref, ref + ":latest", familiar}) {
        Stmt st(*db_, "SELECT image_id FROM names WHERE name = ?");
        st.bind(1, name);
        if (st.step()) return st.text(0);
    }
    std::string hex = ref.starts_with("sha256:") ? ref.substr(7) : ref;
    bool is_hex = hex.size() >= 3 && std::all_of(hex.begin(), hex.end(), [](char c) {
                      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                  });
    if (is_hex) {
        Stmt st(*db_, "SELECT id FROM images WHERE substr(id, 8, ?) = ?");
        st.bind(1, static_cast<int64_t>(hex.size())).bind(2, hex);
        std::vector<std::string> hits;
        while (st.step()) hits.push_back(st.text(0));
        if (hits.size() == 1) return hits[0];
        if (hits.size() > 1) throw StoreError("image ID prefix " + ref + " is ambiguous");
    }
    throw StoreError("no such image: " + printable(ref));
}

ImageRecord Store::image(const std::string& ref) {
    return read_image(resolve_image_id(ref));
}

std::vector<ImageSummary> Store::images() {
    std::vector<ImageSummary> out;
    std::map<std::string, int> layer_users;
    {
        Stmt st(*db_,
                "SELECT layer_id, COUNT(DISTINCT image_id) FROM image_layers GROUP BY layer_id");
        while (st.step()) layer_users[st.text(0)] = static_cast<int>(st.integer(1));
    }
    std::map<std::string, int64_t> sizes;
    for (const auto& l : layers()) sizes[l.id] = l.size;
    Stmt st(*db_, "SELECT id FROM images ORDER BY stored DESC, id");
    std::vector<std::string> ids;
    while (st.step()) ids.push_back(st.text(0));
    for (const auto& id : ids) {
        ImageSummary s;
        s.image = read_image(id);
        try {
            s.created = parse_rfc3339(nlohmann::json::parse(s.image.config).value("created", ""));
        } catch (const nlohmann::json::exception&) {
        }
        std::set<std::string> seen;
        for (const auto& l : s.image.layers) {
            if (!seen.insert(l.chain_id).second) continue;
            s.size += sizes[l.chain_id];
            if (layer_users[l.chain_id] > 1) s.shared_size += sizes[l.chain_id];
        }
        Stmt c(*db_, "SELECT COUNT(*) FROM containers WHERE image_id = ?");
        c.bind(1, id);
        if (c.step()) s.containers = static_cast<int>(c.integer(0));
        out.push_back(std::move(s));
    }
    return out;
}

std::vector<HistoryEntry> Store::history(const std::string& ref) {
    ImageRecord img = image(ref);
    nlohmann::json cfg;
    try {
        cfg = nlohmann::json::parse(img.config);
    } catch (const nlohmann::json::exception& e) {
        throw StoreError("image " + img.id + ": config is not JSON: " + e.what());
    }
    std::vector<HistoryEntry> out;
    size_t next_layer = 0;
    auto take_layer = [&](HistoryEntry& h) {
        if (next_layer >= img.layers.size()) return;
        h.layer = img.layers[next_layer++].chain_id;
        if (auto l = layer(h.layer)) h.size = l->size;
    };
    if (cfg.contains("history") && cfg["history"].is_array()) {
        for (const auto& j : cfg["history"]) {
            HistoryEntry h;
            h.created = parse_rfc3339(j.value("created", ""));
            h.created_by = j.value("created_by", "");
            h.comment = j.value("comment", "");
            h.empty_layer = j.value("empty_layer", false);
            if (!h.empty_layer) take_layer(h);
            out.push_back(std::move(h));
        }
    }
    // Layers the history does not account for still appear, as Docker shows them.
    while (next_layer < img.layers.size()) {
        HistoryEntry h;
        take_layer(h);
        out.push_back(std::move(h));
    }
    std::reverse(out.begin(), out.end());
    return out;
}

void Store::set_name(const std::string& name, const std::string& image_id) {
    Stmt st(*db_,
            "INSERT INTO names(name, image_id) VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET "
            "image_id = excluded.image_id");
    st.bind(1, name).bind(2, image_id).run();
}

void Store::tag(const std::string& ref, const std::string& name) {
    std::string normalized = normalize_reference(name);
    StoreLock lock(Layout{root_}.lock(), StoreLock::Mode::Exclusive);
    recover();
    std::string id = resolve_image_id(ref);
    Transaction tx(*db_);
    set_name(normalized, id);
    tx.commit();
}

// Drops layers no image lists, then blobs nothing names, in one transaction; their files go
// afterwards (a crash in between leaves files that recover() removes).
void Store::delete_unreferenced() {
    Layout l{root_};
    std::vector<LayerRecord> doomed;
    std::vector<std::string> doomed_blobs;
    std::vector<std::pair<std::string, std::string>> doomed_squashes;
    {
        Transaction tx(*db_);
        Stmt q(*db_,
               std::string(kLayerColumns) + " WHERE id NOT IN (SELECT layer_id FROM image_layers)");
        while (q.step()) doomed.push_back(layer_from_row(q));
        for (const auto& d : doomed)
            Stmt(*db_, "DELETE FROM layers WHERE id = ?").bind(1, d.id).run();
        Stmt b(*db_,
               "SELECT digest FROM blobs WHERE digest NOT IN (SELECT blob FROM image_layers) "
               "AND digest NOT IN (SELECT blob FROM layers)");
        while (b.step()) doomed_blobs.push_back(b.text(0));
        for (const auto& d : doomed_blobs)
            Stmt(*db_, "DELETE FROM blobs WHERE digest = ?").bind(1, d).run();
        Stmt s(*db_,
               "SELECT id, link FROM squashes WHERE id NOT IN (SELECT layer_id FROM image_layers)");
        while (s.step()) doomed_squashes.emplace_back(s.text(0), s.text(1));
        for (const auto& d : doomed_squashes)
            Stmt(*db_, "DELETE FROM squashes WHERE id = ?").bind(1, d.first).run();
        tx.commit();
    }
    for (const auto& d : doomed) {
        ::unlink((l.links() + "/" + d.link).c_str());
        remove_tree(l.layers() + "/" + digest_hex(d.id));
    }
    for (const auto& d : doomed_squashes) {
        ::unlink((l.links() + "/" + d.second).c_str());
        remove_tree(l.squashes() + "/" + digest_hex(d.first));
    }
    for (const auto& d : doomed_blobs) ::unlink(l.blob(d).c_str());
}

std::vector<std::string> Store::remove_image(const std::string& ref, bool force) {
    StoreLock lock(Layout{root_}.lock(), StoreLock::Mode::Exclusive);
    recover();
    std::string id = resolve_image_id(ref);
    ImageRecord img = read_image(id);
    std::vector<std::string> out;
    // Removing one of several names only untags, as docker rmi does.
    std::string name;
    for (const std::string& n : {ref, ref + ":latest"})
        if (std::find(img.names.begin(), img.names.end(), n) != img.names.end()) name = n;
    if (!name.empty() && img.names.size() > 1) {
        Transaction tx(*db_);
        Stmt(*db_, "DELETE FROM names WHERE name = ?").bind(1, name).run();
        tx.commit();
        return {"Untagged: " + name};
    }
    // By ID, an image named in more than one repository goes only with force, as docker rmi.
    if (name.empty() && !force) {
        std::set<std::string> repos;
        for (const auto& n : img.names) repos.insert(split_reference(n).first);
        if (repos.size() > 1) {
            std::string listed;
            for (const auto& r : repos) listed += (listed.empty() ? "" : ", ") + r;
            throw StoreError("image " + ref + " is named in several repositories (" + listed +
                             "): remove the names, or use -f");
        }
    }
    std::vector<std::string> users;
    {
        Stmt st(*db_, "SELECT id FROM containers WHERE image_id = ?");
        st.bind(1, id);
        while (st.step()) users.push_back(st.text(0));
    }
    if (!users.empty() && !force)
        throw StoreError(
            "image " + ref + " is used by container " + users[0].substr(0, 12) +
            (users.size() > 1 ? " and " + std::to_string(users.size() - 1) + " more" : "") +
            " (remove it first, or use -f)");
    for (const auto& c : users) unmount_merged(container_paths(c).merged());
    {
        Transaction tx(*db_);
        for (const auto& c : users)
            Stmt(*db_, "DELETE FROM containers WHERE id = ?").bind(1, c).run();
        Stmt(*db_, "DELETE FROM images WHERE id = ?").bind(1, id).run();
        tx.commit();
    }
    for (const auto& c : users) {
        remove_tree(container_paths(c).dir);
        out.push_back("Deleted container: " + c.substr(0, 12));
    }
    for (const auto& n : img.names) out.push_back("Untagged: " + n);
    out.push_back("Deleted: " + id);
    delete_unreferenced();
    return out;
}

std::string normalize_reference(const std::string& ref) {
    ReferenceParts r = parse_normalized_reference(ref);
    if (!r.digest.empty())
        throw StoreError("invalid reference \"" + printable(ref) +
                         "\": a name cannot hold a digest");
    return familiar_name(r.domain, r.path) + ":" + (r.tag.empty() ? "latest" : r.tag);
}

std::pair<std::string, std::string> split_reference(const std::string& name) {
    auto colon = name.rfind(':');
    auto slash = name.rfind('/');
    if (colon == std::string::npos || (slash != std::string::npos && colon < slash))
        return {name, ""};
    return {name.substr(0, colon), name.substr(colon + 1)};
}

int64_t parse_rfc3339(const std::string& s) {
    struct tm tm {};
    const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) return 0;
    int64_t t = timegm(&tm);
    if (*end == '.')
        while (*++end >= '0' && *end <= '9') {
        }
    if (*end == '+' || *end == '-') {
        int hh = 0, mm = 0;
        if (sscanf(end + 1, "%d:%d", &hh, &mm) == 2)
            t -= (*end == '+' ? 1 : -1) * (hh * 3600 + mm * 60);
    }
    return t;
}

std::string format_rfc3339(int64_t seconds) {
    time_t t = static_cast<time_t>(seconds);
    struct tm tm {};
    gmtime_r(&t, &tm);
    char buf[64];
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

}  // namespace lamina::store
