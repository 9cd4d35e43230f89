// Containers: a writable layer (upper and work dirs) over an image, mounted by laminafs.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "db.h"
#include "digest.h"
#include "error.h"
#include "fsutil.h"
#include "internal.h"
#include "lazy_layer.h"
#include "lock.h"
#include "mount_table.h"
#include "process.h"
#include "program_path.h"
#include "reference_grammar.h"
#include "store.h"
#include "volumes.h"

namespace lamina::store {

namespace {

// The kernel's option page: overlay refuses longer mount data, so the store keeps to it too.
constexpr size_t kMountOptionLimit = 4095;
// laminafs stacks at most this many lower layers.
constexpr size_t kMaxLowers = 128;
// Unions stacked at one merged directory that an unmount takes down before giving up.
constexpr int kMaxUnmountRounds = 8;

bool valid_container_name(const std::string& n) {
    if (n.empty() || n.size() > 128 || !isalnum(static_cast<unsigned char>(n[0]))) return false;
    return std::all_of(n.begin(), n.end(), [](char c) {
        return isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
    });
}

void check_container_name(const std::string& n, bool empty_ok) {
    if ((n.empty() && empty_ok) || valid_container_name(n)) return;
    throw StoreError("invalid container name \"" + printable(n) +
                     "\": use letters, digits, '_', '.' and '-'");
}

void check_name_free(Db& db, const std::string& name) {
    Stmt st(db, "SELECT id FROM containers WHERE name = ?");
    st.bind(1, name);
    if (st.step())
        throw StoreError("container name \"" + name + "\" is already in use by " +
                         st.text(0).substr(0, 12));
}

// create -e and --label; containers made before they were kept have none.
void read_container_settings(Db& db, ContainerRecord& c) {
    Stmt st(db, "SELECT env, labels FROM container_settings WHERE container_id = ?");
    st.bind(1, c.id);
    if (!st.step()) return;
    auto env = nlohmann::json::parse(st.text(0), nullptr, false);
    auto labels = nlohmann::json::parse(st.text(1), nullptr, false);
    if (env.is_array())
        for (const auto& e : env)
            if (e.is_string()) c.env.push_back(e.get<std::string>());
    if (labels.is_object())
        for (const auto& [k, v] : labels.items())
            if (v.is_string()) c.labels[k] = v.get<std::string>();
}

// ContainerPaths::volumes_done says that the union at merged has all its volumes: the union's
// mount ID and device, written after the last volume is up and removed before anything is
// mounted or unmounted there. A mount killed part way leaves it missing, so the next mount knows
// to redo the volumes.
std::string union_identity(const MountEntry& e) {
    return std::to_string(e.id) + " " + e.device + "\n";
}

std::string read_volumes_done(const std::string& path) {
    return path_exists(path) ? read_file(path) : std::string();
}

// The live laminafs union at merged when it is the only mount there and every mount below merged
// sits inside it; nothing for a dead union, unions stacked by a killed mount, or mounts the union
// hides (made before it, so left by an earlier mount that stopped half way).
std::optional<MountEntry> usable_union(const std::string& merged) {
    std::optional<MountEntry> top;
    std::set<int> inside;
    for (const auto& e : mounts_at_or_below(merged)) {
        if (e.mount_point == merged) {
            if (top) return std::nullopt;
            top = e;
        } else if (!inside.count(e.parent)) {
            return std::nullopt;
        }
        inside.insert(e.id);
    }
    if (!top || top->fstype != "fuse.laminafs") return std::nullopt;
    // ENOTCONN: its daemon is gone. statfs always asks the daemon, where stat may be answered
    // from the kernel's attribute cache.
    struct statfs sf;
    if (::statfs(merged.c_str(), &sf) != 0) return std::nullopt;
    return top;
}

// Mounts the container's volumes inside its union, then records that they are all up; on
// failure unmounts everything, the union too.
void mount_volumes_and_mark_done(Db& db, const Layout& l, const std::string& id,
                                 const ContainerPaths& paths) {
    std::string merged = paths.merged();
    try {
        mount_container_volumes(db, l, id, merged);
        auto u = usable_union(merged);
        if (!u) throw StoreError("cannot mount " + merged + ": the union went away");
        write_file_atomic(paths.volumes_done(), union_identity(*u));
    } catch (...) {
        unmount_merged(merged);
        throw;
    }
}

}  // namespace

void unmount_merged(const std::string& merged) {
    // In rounds: a union's lazy unmount uncovers whatever it hid below merged (volume mounts
    // left by a mount that was killed before the union went up over them).
    for (int round = 0; round < kMaxUnmountRounds && !mounts_at_or_below(merged).empty(); ++round) {
        unmount_below(merged);
        if (!is_mount_point(merged)) continue;
        auto r = run_process({"fusermount3", "-u", "-z", merged});
        if (r.status != 0 && is_mount_point(merged)) ::umount2(merged.c_str(), MNT_DETACH);
    }
}

std::string Store::laminafs_binary() {
    std::string p = find_program("LAMINAFS", "../fs/laminafs", "laminafs");
    if (p.empty()) throw StoreError("cannot find laminafs: set LAMINAFS, or put it on PATH");
    return p;
}

bool Store::is_mounted(const ContainerRecord& c) const {
    return !mounts_at_or_below(container_paths(c.id).merged()).empty();
}

ContainerRecord Store::container(const std::string& ref) {
    auto row = [&](Stmt& st) {
        ContainerRecord c{st.text(0), st.text(1), st.text(2), st.integer(3)};
        read_container_settings(*db_, c);
        return c;
    };
    {
        Stmt st(*db_,
                "SELECT id, name, image_id, created FROM containers WHERE name = ? OR id = ?");
        st.bind(1, ref).bind(2, ref);
        if (st.step()) return row(st);
    }
    if (ref.size() >= 3) {
        Stmt st(*db_,
                "SELECT id, name, image_id, created FROM containers WHERE substr(id, 1, ?) = ?");
        st.bind(1, static_cast<int64_t>(ref.size())).bind(2, ref);
        std::vector<ContainerRecord> hits;
        while (st.step()) hits.push_back(row(st));
        if (hits.size() == 1) return hits[0];
        if (hits.size() > 1) throw StoreError("container ID prefix " + ref + " is ambiguous");
    }
    throw StoreError("no such container: " + ref);
}

ContainerRecord Store::create_container(const std::string& image_ref,
                                        const ContainerRecord& settings,
                                        const std::vector<MountSpec>& mounts) {
    Layout l{root_};
    check_container_name(settings.name, true);
    for (const auto& e : settings.env)
        if (e.empty() || e[0] == '=')
            throw StoreError("invalid environment variable \"" + e + "\": use KEY=VALUE");
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    ContainerRecord c = settings;
    c.image_id = resolve_image_id(image_ref);
    c.id = random_hex(64);
    if (c.name.empty()) c.name = "lamina-" + c.id.substr(0, 12);
    c.created = now_seconds();
    check_name_free(*db_, c.name);
    PreparedMounts prepared =
        prepare_container_mounts(*db_, l, mounts, read_image(c.image_id).config);
    ContainerPaths paths = container_paths(c.id);
    make_dirs(paths.dir, 0700);
    for (const auto& sub : {paths.upper(), paths.work(), paths.merged()}) make_dirs(sub, 0755);
    place_staged_volumes(l, prepared);
    Transaction tx(*db_);
    Stmt(*db_, "INSERT INTO containers(id, name, image_id, created) VALUES(?, ?, ?, ?)")
        .bind(1, c.id)
        .bind(2, c.name)
        .bind(3, c.image_id)
        .bind(4, c.created)
        .run();
    Stmt(*db_, "INSERT INTO container_settings(container_id, env, labels) VALUES(?, ?, ?)")
        .bind(1, c.id)
        .bind(2, nlohmann::json(c.env).dump())
        .bind(3, nlohmann::json(c.labels).dump())
        .run();
    record_container_mounts(*db_, c.id, prepared);
    tx.commit();
    return c;
}

std::vector<ContainerState> Store::containers(bool sizes) {
    std::vector<ContainerState> out;
    std::vector<ContainerRecord> recs;
    {
        Stmt st(*db_,
                "SELECT id, name, image_id, created FROM containers ORDER BY created DESC, id");
        while (st.step()) recs.push_back({st.text(0), st.text(1), st.text(2), st.integer(3)});
    }
    for (auto& r : recs) {
        read_container_settings(*db_, r);
        ContainerState s;
        s.mounted = is_mounted(r);
        s.dead = s.mounted && !usable_union(container_paths(r.id).merged());
        if (sizes) {
            s.size = static_cast<int64_t>(tree_size(container_paths(r.id).upper()));
            int64_t image_size = 0;
            Stmt st(*db_,
                    "SELECT COALESCE(SUM(size), 0) FROM layers WHERE id IN "
                    "(SELECT layer_id FROM image_layers WHERE image_id = ?)");
            st.bind(1, r.image_id);
            if (st.step()) image_size = st.integer(0);
            s.virtual_size = s.size + image_size;
        }
        s.record = std::move(r);
        out.push_back(std::move(s));
    }
    return out;
}

// The lowerdir entries, top first, as paths relative to the store root through the short
// links: 128 of them stay within one page of mount options however long the root is. lazy gets
// the numbers (1: the top) of the lazy layers among them, which laminafs completes through its
// helper on first open (docs/lazy.md); a lazy layer cannot go into a squash.
std::vector<std::string> Store::lower_links(const ImageRecord& img, std::vector<size_t>& lazy) {
    std::vector<std::string> out;
    size_t n = img.layers.size();
    size_t squashed = n > kMaxLowers ? n - kMaxLowers + 1 : 0;
    for (size_t i = n; i-- > squashed;) {
        auto l = layer(img.layers[i].chain_id);
        if (!l)
            throw StoreError("image " + img.id + ": layer " + img.layers[i].chain_id +
                             " is missing");
        out.push_back("l/" + l->link);
        if (is_lazy_layer(Layout{root_}.layers() + "/" + digest_hex(l->id)))
            lazy.push_back(out.size());
    }
    if (squashed) {
        for (size_t i = 0; i < squashed; ++i)
            if (is_lazy_layer(Layout{root_}.layers() + "/" + digest_hex(img.layers[i].chain_id)))
                throw StoreError("image " + img.id + ": layer " + img.layers[i].chain_id +
                                 " is lazy and would be squashed; pull the image whole");
        out.push_back("l/" + squash_lowest(img, squashed));
    }
    return out;
}

std::string Store::lazy_fetch_binary() {
    std::string p = find_program("LAMINA_LAZY_FETCH", "lamina-lazy-fetch", "lamina-lazy-fetch");
    if (p.empty())
        throw StoreError(
            "cannot find lamina-lazy-fetch, which mounts lazy layers: set "
            "LAMINA_LAZY_FETCH, or put it on PATH");
    return p;
}

std::string Store::mount(const std::string& ref) {
    Layout l{root_};
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    ContainerRecord c = container(ref);
    ContainerPaths paths = container_paths(c.id);
    std::string merged = paths.merged();
    std::string done = paths.volumes_done();
    if (is_mount_point(merged)) {
        if (auto u = usable_union(merged)) {
            if (read_volumes_done(done) == union_identity(*u)) return merged;
            // The union is up but its volumes are not all there: a mount killed between the
            // two, or an unmount whose union would not come down. Put them up afresh.
            ::unlink(done.c_str());
            unmount_below(merged);
            mount_volumes_and_mark_done(*db_, l, c.id, paths);
            return merged;
        }
        unmount_merged(merged);
        if (!mounts_at_or_below(merged).empty())
            throw StoreError("cannot mount " + c.name + ": " + merged +
                             " is still mounted after unmounting what was left there");
    }
    ::unlink(done.c_str());
    // Volume mounts left without their union (by hand, or a union that went away under them)
    // would be hidden by the new union and never come down.
    unmount_below(merged);
    ImageRecord img = read_image(c.image_id);
    if (img.layers.empty())
        throw StoreError("cannot mount " + c.name + ": image " + img.id + " has no layers");
    std::string lowers;
    std::vector<size_t> lazy;
    for (const auto& link : lower_links(img, lazy)) lowers += (lowers.empty() ? "" : ":") + link;
    ContainerPaths rel = ContainerPaths::relative(c.id);
    std::string opts = "lowerdir=" + lowers + ",upperdir=" + rel.upper() + ",workdir=" + rel.work();
    // Without redirects a directory rename copies (EXDEV, as the kernel does with
    // redirect_dir=off), so every commit is expressible in OCI whiteouts alone.
    opts += ",redirect_dir=off";
    if (geteuid() != 0) opts += ",userxattr";
    if (!lazy.empty()) {
        std::string numbers;
        for (size_t n : lazy) numbers += (numbers.empty() ? "" : ":") + std::to_string(n);
        int timeout_s = 30;
        if (const char* t = getenv("LAMINA_LAZY_TIMEOUT")) timeout_s = std::max(1, atoi(t));
        opts += ",lazy_fetch=" + lazy_fetch_binary() + ",lazy_layers=" + numbers +
                ",lazy_timeout=" + std::to_string(timeout_s);
    }
    if (opts.size() > kMountOptionLimit)
        throw StoreError("cannot mount " + c.name + ": mount options are " +
                         std::to_string(opts.size()) + " bytes, over the " +
                         std::to_string(kMountOptionLimit) + "-byte page limit");
    auto r = run_process({laminafs_binary(), "-o", opts, merged}, root_);
    if (r.status != 0)
        throw StoreError("cannot mount " + c.name + ": laminafs failed: " +
                         (r.err.empty() ? "exit status " + std::to_string(r.status) : r.err));
    mount_volumes_and_mark_done(*db_, l, c.id, paths);
    return merged;
}

void Store::unmount(const std::string& ref) {
    Layout l{root_};
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    ContainerRecord c = container(ref);
    ContainerPaths paths = container_paths(c.id);
    std::string merged = paths.merged();
    // Gone first: an unmount that stops half way leaves a union the next mount completes.
    ::unlink(paths.volumes_done().c_str());
    // Below merged first, whether or not a union is there: volume mounts outlive a union that
    // went away under them. Then each union (a killed mount can stack two), then what it hid.
    unmount_below(merged);
    for (int round = 0; round < kMaxUnmountRounds && is_mount_point(merged); ++round) {
        auto r = run_process({"fusermount3", "-u", merged});
        if (r.status != 0 && is_mount_point(merged) && ::umount(merged.c_str()) != 0) {
            int err = errno;
            // Busy: a process works in the tree. Its volumes go back up, so the container is
            // whole as it was, rather than a union with its volumes gone from under it.
            if (err == EBUSY && usable_union(merged)) {
                mount_volumes_and_mark_done(*db_, l, c.id, paths);
                throw StoreError("cannot unmount " + c.name + ": " + merged +
                                 " is busy (a process has a file or directory open in it); it "
                                 "stays mounted");
            }
            throw StoreError("cannot unmount " + merged + ": " +
                             (r.err.empty() ? strerror(err) : r.err));
        }
        unmount_below(merged);
    }
}

void Store::remove_container(const std::string& ref, bool force, bool remove_anonymous_volumes) {
    Layout l{root_};
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    ContainerRecord c = container(ref);
    std::string merged = container_paths(c.id).merged();
    // A volume mount without its union counts too: removing the directory would otherwise
    // delete through it into the volume.
    if (is_mounted(c)) {
        if (!force)
            throw StoreError("container " + c.name +
                             " is mounted (lamina umount it first, or use -f)");
        unmount_merged(merged);
    }
    // rm -v: the anonymous volumes only this container uses go with it.
    std::vector<std::string> doomed_volumes;
    if (remove_anonymous_volumes) {
        Stmt st(*db_,
                "SELECT name FROM volumes WHERE anonymous = 1 AND name IN (SELECT volume FROM "
                "container_mounts WHERE container_id = ?) AND name NOT IN (SELECT volume FROM "
                "container_mounts WHERE container_id != ? AND volume IS NOT NULL)");
        st.bind(1, c.id).bind(2, c.id);
        while (st.step()) doomed_volumes.push_back(st.text(0));
    }
    Transaction tx(*db_);
    Stmt(*db_, "DELETE FROM containers WHERE id = ?").bind(1, c.id).run();
    for (const auto& v : doomed_volumes)
        Stmt(*db_, "DELETE FROM volumes WHERE name = ?").bind(1, v).run();
    tx.commit();
    remove_tree(container_paths(c.id).dir);
    for (const auto& v : doomed_volumes) remove_tree(volumes_dir(l) + "/" + v);
}

}  // namespace lamina::store

namespace lamina::store {

void Store::rename_container(const std::string& ref, const std::string& new_name) {
    check_container_name(new_name, false);
    StoreLock lock(Layout{root_}.lock(), StoreLock::Mode::Exclusive);
    recover();
    ContainerRecord c = container(ref);
    if (c.name == new_name) throw StoreError("container " + c.name + " is already named so");
    check_name_free(*db_, new_name);
    Transaction tx(*db_);
    Stmt(*db_, "UPDATE containers SET name = ? WHERE id = ?").bind(1, new_name).bind(2, c.id).run();
    tx.commit();
}

PruneReport Store::prune_containers() {
    PruneReport report;
    for (const auto& c : containers(false)) {
        if (c.mounted) continue;
        auto size = static_cast<int64_t>(tree_size(container_paths(c.record.id).upper()));
        remove_container(c.record.id, false);
        report.containers.push_back(c.record.id);
        report.reclaimed += size;
    }
    return report;
}

}  // namespace lamina::store
