// Volumes: their records and directories, the -v and --mount syntax, and which container uses which.
#include "volumes.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "db.h"
#include "error.h"
#include "fsutil.h"
#include "lock.h"

namespace lamina::store {

namespace {

using nlohmann::json;

constexpr const char* kVolumeSchema = R"(
CREATE TABLE IF NOT EXISTS volumes(
    name TEXT PRIMARY KEY, driver TEXT NOT NULL, created INTEGER NOT NULL,
    anonymous INTEGER NOT NULL, labels TEXT NOT NULL, options TEXT NOT NULL,
    populated INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS container_mounts(
    container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
    type TEXT NOT NULL, source TEXT NOT NULL, destination TEXT NOT NULL,
    readonly INTEGER NOT NULL, nocopy INTEGER NOT NULL, volume TEXT REFERENCES volumes(name),
    PRIMARY KEY(container_id, idx));
CREATE INDEX IF NOT EXISTS container_mounts_by_volume ON container_mounts(volume);
)";

constexpr const char* kVolumeColumns =
    "SELECT name, driver, created, anonymous, labels, options FROM volumes";

std::string to_json(const std::map<std::string, std::string>& m) {
    return json(m).dump();
}

std::map<std::string, std::string> from_json(const std::string& s) {
    try {
        return json::parse(s).get<std::map<std::string, std::string>>();
    } catch (const json::exception&) {
        return {};
    }
}

std::string volume_dir(const Layout& l, const std::string& name) {
    return volumes_dir(l) + "/" + name;
}

VolumeRecord volume_from_row(Db& db, const Layout& l, Stmt& st) {
    VolumeRecord v;
    v.name = st.text(0);
    v.driver = st.text(1);
    v.created = st.integer(2);
    v.anonymous = st.integer(3) != 0;
    v.labels = from_json(st.text(4));
    v.options = from_json(st.text(5));
    v.mountpoint = volume_dir(l, v.name) + "/_data";
    Stmt users(db,
               "SELECT DISTINCT container_id FROM container_mounts WHERE volume = ? ORDER BY 1");
    users.bind(1, v.name);
    while (users.step()) v.users.push_back(users.text(0));
    return v;
}

std::optional<VolumeRecord> find_volume(Db& db, const Layout& l, const std::string& name) {
    Stmt st(db, std::string(kVolumeColumns) + " WHERE name = ?");
    st.bind(1, name);
    if (!st.step()) return std::nullopt;
    return volume_from_row(db, l, st);
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    for (;;) {
        size_t pos = s.find(sep, start);
        out.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
        if (pos == std::string::npos) return out;
        start = pos + 1;
    }
}

// The generic mount flags mount(8) knows by name: what each sets and what it clears.
struct MountFlagName {
    const char* name;
    unsigned long set;
    unsigned long clear;
};
constexpr MountFlagName kMountFlagNames[] = {
    {"defaults", 0, 0},
    {"ro", MS_RDONLY, 0},
    {"rw", 0, MS_RDONLY},
    {"noexec", MS_NOEXEC, 0},
    {"exec", 0, MS_NOEXEC},
    {"nosuid", MS_NOSUID, 0},
    {"suid", 0, MS_NOSUID},
    {"nodev", MS_NODEV, 0},
    {"dev", 0, MS_NODEV},
    {"sync", MS_SYNCHRONOUS, 0},
    {"async", 0, MS_SYNCHRONOUS},
    {"dirsync", MS_DIRSYNC, 0},
    {"noatime", MS_NOATIME, 0},
    {"atime", 0, MS_NOATIME},
    {"nodiratime", MS_NODIRATIME, 0},
    {"diratime", 0, MS_NODIRATIME},
    {"relatime", MS_RELATIME, MS_STRICTATIME},
    {"norelatime", 0, MS_RELATIME},
    {"strictatime", MS_STRICTATIME, MS_RELATIME},
    {"nostrictatime", 0, MS_STRICTATIME},
    {"lazytime", MS_LAZYTIME, 0},
    {"nolazytime", 0, MS_LAZYTIME},
    {"silent", MS_SILENT, 0},
    {"loud", 0, MS_SILENT},
};

bool is_bind_volume(const std::map<std::string, std::string>& options) {
    auto type = options.find("type");
    return type != options.end() && type->second == "none";
}

// Checks the local driver's options as Docker's local driver reads them, and makes sure a
// tmpfs's options mount (as root) so that a bad size is refused at create, not at mount.
void check_local_options(const std::map<std::string, std::string>& options) {
    for (const auto& [k, v] : options)
        if (k != "type" && k != "o" && k != "device")
            throw StoreError("invalid volume option \"" + k +
                             "\" for the local driver (type, o, device)");
    if (options.empty()) return;
    auto get = [&](const char* k) {
        auto it = options.find(k);
        return it == options.end() ? std::string() : it->second;
    };
    std::string type = get("type");
    if (type.empty())
        throw StoreError("local volume options need type= (tmpfs, or none with o=bind)");
    if (type == "tmpfs") {
        if (geteuid() != 0) return;
        std::string probe = "/tmp/lamina-tmpfs-probe-" + random_hex(12);
        if (::mkdir(probe.c_str(), 0700) != 0) return;
        auto o = parse_tmpfs_options(get("o"));
        int rc = ::mount("tmpfs", probe.c_str(), "tmpfs", o.flags, o.data.c_str());
        int err = errno;
        if (rc == 0) ::umount2(probe.c_str(), MNT_DETACH);
        ::rmdir(probe.c_str());
        if (rc != 0 && err == EINVAL)
            throw StoreError("invalid tmpfs volume options o=" + get("o") + ": " + strerror(err));
        return;
    }
    if (type == "none") {
        bool bind = false;
        for (const auto& o : split(get("o"), ',')) {
            if (o == "bind" || o == "rbind") {
                bind = true;
            } else if (!o.empty()) {
                throw StoreError("volume option o=" + get("o") + ": \"" + o +
                                 "\" is not supported with type=none (bind, rbind)");
            }
        }
        if (!bind) throw StoreError("type=none volumes need o=bind and device=/path");
        std::string device = get("device");
        if (device.empty() || device[0] != '/')
            throw StoreError("type=none volumes need device=/absolute/path");
        struct stat st;
        if (::stat(device.c_str(), &st) != 0)
            throw_errno("cannot use volume device", device, errno);
        if (!S_ISDIR(st.st_mode))
            throw StoreError("cannot use volume device " + device + ": not a directory");
        return;
    }
    throw StoreError("volume type \"" + type +
                     "\" is not supported by the local driver (tmpfs, or none with o=bind)");
}

// A directory for a new volume, under tmp/ until it is renamed into volumes/.
std::string stage_volume(const Layout& l) {
    std::string staging = make_staging_dir(l, "volume");
    if (::mkdir((staging + "/_data").c_str(), 0755) != 0)
        throw_errno("cannot create directory", staging + "/_data", errno);
    return staging;
}

void fsync_dir(const std::string& dir) {
    Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0) throw_errno("cannot sync", dir, errno);
}

void place_volume(const Layout& l, const std::string& staging, const std::string& name) {
    fsync_dir(staging);
    std::string dst = volume_dir(l, name);
    if (::rename(staging.c_str(), dst.c_str()) != 0)
        throw_errno("cannot create volume", dst, errno);
    fsync_dir(volumes_dir(l));
}

void insert_volume(Db& db, const VolumeRecord& v) {
    Stmt(db,
         "INSERT INTO volumes(name, driver, created, anonymous, labels, options) "
         "VALUES(?, ?, ?, ?, ?, ?)")
        .bind(1, v.name)
        .bind(2, v.driver)
        .bind(3, v.created)
        .bind(4, static_cast<int64_t>(v.anonymous))
        .bind(5, to_json(v.labels))
        .bind(6, to_json(v.options))
        .run();
}

// "/var//log/./x" -> "/var/log/x"; refuses relative paths, "..", and "/" itself.
std::string clean_destination(const std::string& spec, const std::string& path) {
    if (path.empty() || path[0] != '/')
        throw StoreError("invalid mount \"" + spec + "\": the destination " +
                         (path.empty() ? "is missing" : "\"" + path + "\" is not absolute"));
    std::string out;
    for (const auto& c : split(path, '/')) {
        if (c.empty() || c == ".") continue;
        if (c == "..")
            throw StoreError("invalid mount \"" + spec + "\": \"..\" in the destination");
        out += "/" + c;
    }
    if (out.empty()) throw StoreError("invalid mount \"" + spec + "\": cannot mount over /");
    return out;
}

size_t depth(const std::string& path) {
    return static_cast<size_t>(std::count(path.begin(), path.end(), '/'));
}

bool parse_bool(const std::string& spec, const std::string& key, const std::string& v) {
    if (v.empty() || v == "true" || v == "1") return true;
    if (v == "false" || v == "0") return false;
    throw StoreError("invalid mount \"" + spec + "\": " + key + "=" + v + " is not true or false");
}

}  // namespace

TmpfsMountOptions parse_tmpfs_options(const std::string& o) {
    TmpfsMountOptions out;
    out.flags = MS_NOSUID | MS_NODEV;
    for (const auto& opt : split(o, ',')) {
        if (opt.empty()) continue;
        auto known = std::find_if(std::begin(kMountFlagNames), std::end(kMountFlagNames),
                                  [&](const MountFlagName& f) { return opt == f.name; });
        if (known == std::end(kMountFlagNames)) {
            out.data += (out.data.empty() ? "" : ",") + opt;
            continue;
        }
        out.flags = (out.flags & ~known->clear) | known->set;
    }
    return out;
}

void create_volume_schema(Db& db) {
    db.exec(kVolumeSchema);
}

void recover_volumes(Db& db, const Layout& l) {
    std::set<std::string> known;
    {
        Stmt st(db, "SELECT name FROM volumes");
        while (st.step()) known.insert(st.text(0));
    }
    std::vector<std::string> names;
    sorted_names_at(AT_FDCWD, volumes_dir(l), names);
    for (const auto& n : names)
        if (!known.count(n)) remove_tree(volume_dir(l, n));
}

void check_volume_name(const std::string& name) {
    bool ok =
        name.size() >= 2 && name.size() <= 255 && isalnum(static_cast<unsigned char>(name[0]));
    for (char c : name)
        ok = ok && (isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-');
    if (!ok)
        throw StoreError("invalid volume name \"" + name +
                         "\": use [a-zA-Z0-9][a-zA-Z0-9_.-]+ (for a host directory, give an "
                         "absolute path)");
}

bool VolumeFilter::matches(const VolumeRecord& v) const {
    if (dangling && *dangling != v.users.empty()) return false;
    for (const auto& want : labels) {
        auto eq = want.find('=');
        auto it = v.labels.find(want.substr(0, eq));
        if (it == v.labels.end()) return false;
        if (eq != std::string::npos && it->second != want.substr(eq + 1)) return false;
    }
    if (!names.empty() && std::none_of(names.begin(), names.end(), [&](const std::string& n) {
            return v.name.find(n) != std::string::npos;
        }))
        return false;
    if (!drivers.empty() && std::find(drivers.begin(), drivers.end(), v.driver) == drivers.end())
        return false;
    return true;
}

VolumeFilter parse_volume_filters(const std::vector<std::string>& filters) {
    VolumeFilter f;
    for (const auto& s : filters) {
        auto eq = s.find('=');
        if (eq == std::string::npos || eq + 1 >= s.size())
            throw StoreError("invalid filter \"" + s + "\": use KEY=VALUE");
        std::string key = s.substr(0, eq), value = s.substr(eq + 1);
        if (key == "dangling") {
            if (value == "true" || value == "1") {
                f.dangling = true;
            } else if (value == "false" || value == "0") {
                f.dangling = false;
            } else {
                throw StoreError("invalid filter \"" + s + "\": dangling is true or false");
            }
        } else if (key == "label") {
            f.labels.push_back(value);
        } else if (key == "name") {
            f.names.push_back(value);
        } else if (key == "driver") {
            f.drivers.push_back(value);
        } else {
            throw StoreError("invalid filter \"" + key + "\" (dangling, label, name, driver)");
        }
    }
    return f;
}

MountSpec parse_volume_flag(const std::string& flag) {
    auto parts = split(flag, ':');
    auto valid_modes = [&](const std::string& m) {
        for (const auto& o : split(m, ','))
            if (o != "ro" && o != "rw" && o != "nocopy" && o != "z" && o != "Z" && o != "private" &&
                o != "rprivate")
                return false;
        return true;
    };
    MountSpec m;
    std::string source, dest, modes;
    if (parts.size() == 1) {
        dest = parts[0];
    } else if (parts.size() == 2 && parts[0].starts_with("/") && valid_modes(parts[1])) {
        dest = parts[0];
        modes = parts[1];
    } else if (parts.size() == 2) {
        source = parts[0];
        dest = parts[1];
    } else if (parts.size() == 3) {
        source = parts[0];
        dest = parts[1];
        modes = parts[2];
    } else {
        throw StoreError("invalid volume \"" + flag + "\": use [SOURCE:]DESTINATION[:OPTIONS]");
    }
    m.destination = clean_destination(flag, dest);
    if (parts.size() > 1 && source.empty())
        throw StoreError("invalid volume \"" + flag + "\": empty source");
    if (source.starts_with("/")) {
        m.type = MountType::Bind;
        m.source = source;
    } else if (!source.empty()) {
        check_volume_name(source);
        m.source = source;
    }
    bool ro = false, rw = false;
    if (!modes.empty()) {
        for (const auto& o : split(modes, ',')) {
            if (o == "ro") {
                ro = true;
            } else if (o == "rw") {
                rw = true;
            } else if (o == "nocopy") {
                m.nocopy = true;
            } else if (o == "z" || o == "Z" || o == "private" || o == "rprivate") {
                // SELinux relabelling does not apply; propagation is always private.
            } else {
                throw StoreError("invalid volume \"" + flag + "\": unknown option \"" + o +
                                 "\" (ro, rw, nocopy)");
            }
        }
    }
    if (ro && rw) throw StoreError("invalid volume \"" + flag + "\": both ro and rw");
    if (m.nocopy && m.type == MountType::Bind)
        throw StoreError("invalid volume \"" + flag + "\": nocopy applies to volumes, not binds");
    m.readonly = ro;
    return m;
}

MountSpec parse_mount_flag(const std::string& flag) {
    MountSpec m;
    std::string type = "volume", dest;
    bool has_source = false;
    for (const auto& field : split(flag, ',')) {
        if (field.empty()) continue;
        auto eq = field.find('=');
        std::string key = field.substr(0, eq);
        std::string value = eq == std::string::npos ? "" : field.substr(eq + 1);
        if (key == "type") {
            type = value;
        } else if (key == "source" || key == "src") {
            m.source = value;
            has_source = true;
        } else if (key == "destination" || key == "dst" || key == "target") {
            dest = value;
        } else if (key == "readonly" || key == "ro") {
            m.readonly = parse_bool(flag, key, value);
        } else if (key == "volume-nocopy") {
            m.nocopy = parse_bool(flag, key, value);
        } else if (key == "bind-propagation") {
            if (value != "private" && value != "rprivate")
                throw StoreError("invalid mount \"" + flag +
                                 "\": lamina mounts with private propagation only");
        } else if (key == "consistency") {
            // macOS only in Docker; nothing to do here.
        } else {
            throw StoreError("invalid mount \"" + flag + "\": unknown field \"" + key +
                             "\" (type, src, dst, readonly, volume-nocopy)");
        }
    }
    m.destination = clean_destination(flag, dest);
    if (type == "bind") {
        m.type = MountType::Bind;
        if (!m.source.starts_with("/"))
            throw StoreError("invalid mount \"" + flag + "\": a bind needs an absolute src");
        if (m.nocopy)
            throw StoreError("invalid mount \"" + flag + "\": volume-nocopy applies to volumes");
    } else if (type == "volume") {
        if (has_source && !m.source.empty()) check_volume_name(m.source);
    } else {
        throw StoreError("invalid mount \"" + flag + "\": type must be volume or bind");
    }
    return m;
}

PreparedMounts prepare_container_mounts(Db& db, const Layout& l,
                                        const std::vector<MountSpec>& requested,
                                        const std::string& image_config) {
    PreparedMounts p;
    std::set<std::string> destinations;
    for (const auto& m : requested) {
        if (!destinations.insert(m.destination).second)
            throw StoreError("duplicate mount point: " + m.destination);
        p.mounts.push_back(m);
    }
    // The image's VOLUMEs become anonymous volumes unless the caller mounts something there.
    try {
        auto cfg = json::parse(image_config);
        if (cfg.contains("config") && cfg["config"].is_object() &&
            cfg["config"].contains("Volumes") && cfg["config"]["Volumes"].is_object()) {
            for (const auto& [path, unused] : cfg["config"]["Volumes"].items()) {
                MountSpec m;
                m.destination = clean_destination("VOLUME " + path, path);
                if (destinations.insert(m.destination).second) p.mounts.push_back(m);
            }
        }
    } catch (const json::exception&) {
        // An image config that is not JSON was refused at load; nothing to add.
    }
    for (const auto& m : p.mounts) {
        struct stat st;
        if (m.type == MountType::Bind && ::stat(m.source.c_str(), &st) != 0)
            throw_errno("cannot bind-mount", m.source, errno);
    }
    int64_t now = now_seconds();
    for (auto& m : p.mounts) {
        if (m.type == MountType::Bind) continue;
        bool anonymous = m.source.empty();
        if (anonymous) m.source = random_hex(64);
        if (find_volume(db, l, m.source)) continue;
        bool made = std::any_of(p.new_volumes.begin(), p.new_volumes.end(),
                                [&](const VolumeRecord& v) { return v.name == m.source; });
        if (made) continue;
        VolumeRecord v;
        v.name = m.source;
        v.created = now;
        v.anonymous = anonymous;
        p.new_volumes.push_back(v);
        p.staged.emplace_back(stage_volume(l), v.name);
    }
    // Parents first, so /a is mounted before /a/b lands inside it.
    std::stable_sort(p.mounts.begin(), p.mounts.end(), [](const MountSpec& a, const MountSpec& b) {
        return depth(a.destination) < depth(b.destination);
    });
    return p;
}

void place_staged_volumes(const Layout& l, const PreparedMounts& p) {
    for (const auto& [staging, name] : p.staged) place_volume(l, staging, name);
}

void record_container_mounts(Db& db, const std::string& container_id, const PreparedMounts& p) {
    for (const auto& v : p.new_volumes) insert_volume(db, v);
    int64_t idx = 0;
    for (const auto& m : p.mounts) {
        Stmt st(db,
                "INSERT INTO container_mounts(container_id, idx, type, source, destination, "
                "readonly, nocopy, volume) VALUES(?, ?, ?, ?, ?, ?, ?, ?)");
        st.bind(1, container_id)
            .bind(2, idx++)
            .bind(3, m.type == MountType::Bind ? "bind" : "volume")
            .bind(4, m.source)
            .bind(5, m.destination)
            .bind(6, static_cast<int64_t>(m.readonly))
            .bind(7, static_cast<int64_t>(m.nocopy));
        if (m.type == MountType::Volume) {
            st.bind(8, m.source);
        } else {
            st.bind_null(8);
        }
        st.run();
    }
}

std::vector<ContainerMount> read_container_mounts(Db& db, const Layout& l,
                                                  const std::string& container_id) {
    std::vector<ContainerMount> out;
    Stmt st(db,
            "SELECT type, source, destination, readonly, nocopy FROM container_mounts "
            "WHERE container_id = ? ORDER BY idx");
    st.bind(1, container_id);
    while (st.step()) {
        ContainerMount m;
        m.spec.type = st.text(0) == "bind" ? MountType::Bind : MountType::Volume;
        m.spec.source = st.text(1);
        m.spec.destination = st.text(2);
        m.spec.readonly = st.integer(3) != 0;
        m.spec.nocopy = st.integer(4) != 0;
        out.push_back(std::move(m));
    }
    for (auto& m : out) {
        if (m.spec.type == MountType::Bind) {
            m.host_path = m.spec.source;
            continue;
        }
        auto v = find_volume(db, l, m.spec.source);
        if (!v)
            throw StoreError("container " + container_id.substr(0, 12) + ": volume " +
                             m.spec.source + " is missing");
        m.driver = v->driver;
        auto type = v->options.find("type");
        m.tmpfs = type != v->options.end() && type->second == "tmpfs";
        if (m.tmpfs) m.mount_options = v->options["o"];
        m.host_path = is_bind_volume(v->options) ? v->options["device"] : v->mountpoint;
        Stmt p(db, "SELECT populated FROM volumes WHERE name = ?");
        p.bind(1, m.spec.source);
        m.populated = p.step() && p.integer(0) != 0;
    }
    return out;
}

VolumeRecord Store::create_volume(const VolumeCreateOptions& opts) {
    Layout l{root_};
    if (opts.driver != "local")
        throw StoreError("volume driver \"" + opts.driver + "\" is not supported (local)");
    VolumeRecord v;
    v.anonymous = opts.name.empty();
    v.name = v.anonymous ? random_hex(64) : opts.name;
    check_volume_name(v.name);
    check_local_options(opts.options);
    v.driver = opts.driver;
    v.labels = opts.labels;
    v.options = opts.options;
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    if (auto existing = find_volume(*db_, l, v.name)) {
        // Docker answers a second create of the same name with the volume it already has.
        if (existing->driver != v.driver || existing->options != v.options)
            throw StoreError("volume " + v.name + " already exists with other options");
        return *existing;
    }
    v.created = now_seconds();
    v.mountpoint = volume_dir(l, v.name) + "/_data";
    place_volume(l, stage_volume(l), v.name);
    Transaction tx(*db_);
    insert_volume(*db_, v);
    tx.commit();
    return v;
}

std::vector<VolumeRecord> Store::volumes() {
    Layout l{root_};
    std::vector<VolumeRecord> out;
    Stmt st(*db_, std::string(kVolumeColumns) + " ORDER BY name");
    while (st.step()) out.push_back(volume_from_row(*db_, l, st));
    return out;
}

VolumeRecord Store::volume(const std::string& name) {
    auto v = find_volume(*db_, Layout{root_}, name);
    if (!v) throw StoreError("no such volume: " + name);
    return *v;
}

void Store::remove_volume(const std::string& name) {
    Layout l{root_};
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    auto v = find_volume(*db_, l, name);
    if (!v) throw StoreError("no such volume: " + name);
    if (!v->users.empty())
        throw StoreError(
            "volume " + name + " is in use by container " + v->users[0].substr(0, 12) +
            (v->users.size() > 1 ? " and " + std::to_string(v->users.size() - 1) + " more" : "") +
            " (remove it first)");
    Transaction tx(*db_);
    Stmt(*db_, "DELETE FROM volumes WHERE name = ?").bind(1, name).run();
    tx.commit();
    remove_tree(volume_dir(l, name));
}

VolumePruneReport Store::prune_volumes(bool all_unused) {
    Layout l{root_};
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    VolumePruneReport report;
    for (const auto& v : volumes()) {
        if (!v.users.empty() || (!v.anonymous && !all_unused)) continue;
        report.volumes.push_back(v.name);
        report.reclaimed += static_cast<int64_t>(tree_size(v.mountpoint));
    }
    Transaction tx(*db_);
    for (const auto& n : report.volumes)
        Stmt(*db_, "DELETE FROM volumes WHERE name = ?").bind(1, n).run();
    tx.commit();
    for (const auto& n : report.volumes) remove_tree(volume_dir(l, n));
    return report;
}

VolumeUsage Store::volume_usage() {
    VolumeUsage u;
    for (auto& v : volumes()) {
        v.size = static_cast<int64_t>(tree_size(v.mountpoint));
        ++u.total;
        u.size += v.size;
        if (v.users.empty()) {
            u.reclaimable += v.size;
        } else {
            ++u.active;
        }
        u.details.push_back(std::move(v));
    }
    return u;
}

std::vector<ContainerMount> Store::container_mounts(const std::string& container_ref) {
    return read_container_mounts(*db_, Layout{root_}, container(container_ref).id);
}

}  // namespace lamina::store
