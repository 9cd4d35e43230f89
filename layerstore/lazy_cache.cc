// Evicting filled files of lazy layers not yet complete, least recently fetched first, under a
// write lease so that no open descriptor anywhere ever sees a hole punched under it.
#include "lazy_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include "error.h"
#include "fd.h"
#include "fsutil.h"

namespace lamina::store {

namespace {

// An flock on path, taken (blocking, or not) or not: the descriptor is empty when it was not.
Fd lock_file(const std::string& path, bool wait) {
    Fd f(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!f) return f;
    while (::flock(f.get(), LOCK_EX | (wait ? 0 : LOCK_NB)) != 0)
        if (errno != EINTR) return Fd();
    return f;
}

bool complete_lock_free(const std::string& layer_dir) {
    return static_cast<bool>(lock_file(layer_dir + "/lazy/complete.lock", false));
}

struct Range {
    uint64_t off = 0, end = 0;
};

// lazy/ranges as lines "OFFSET LENGTH"; a torn last line is left out.
std::vector<Range> read_ranges(const std::string& path) {
    std::vector<Range> out;
    if (!path_exists(path)) return out;
    std::istringstream in(read_file(path));
    for (std::string line; std::getline(in, line) && !in.eof();) {
        std::istringstream fields(line);
        uint64_t off = 0, len = 0;
        if (fields >> off >> len) out.push_back({off, off + len});
    }
    return out;
}

// Parts of `from` that no range of `keep` (sorted, merged) covers.
std::vector<Range> minus(const std::vector<Range>& from, const std::vector<Range>& keep) {
    std::vector<Range> out;
    for (Range r : from) {
        for (const Range& k : keep) {
            if (k.end <= r.off || k.off >= r.end) continue;
            if (k.off > r.off) out.push_back({r.off, k.off});
            r.off = std::max(r.off, k.end);
            if (r.off >= r.end) break;
        }
        if (r.off < r.end) out.push_back(r);
    }
    return out;
}

std::vector<Range> merged(std::vector<Range> rs) {
    std::sort(rs.begin(), rs.end(), [](const Range& a, const Range& b) { return a.off < b.off; });
    std::vector<Range> out;
    for (const Range& r : rs) {
        if (!out.empty() && r.off <= out.back().end)
            out.back().end = std::max(out.back().end, r.end);
        else
            out.push_back(r);
    }
    return out;
}

void sync_dir(const std::string& dir) {
    Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!d || ::fsync(d.get()) != 0) throw_errno("cannot sync", dir, errno);
}

}  // namespace

LazyLocalBytes lazy_local_bytes(const std::string& layer_dir) {
    LazyLocalBytes b;
    for (const auto& [entry, bytes] : read_lazy_done(layer_dir)) b.files += bytes;
    struct stat st;
    if (::stat((layer_dir + "/lazy/blob").c_str(), &st) == 0)
        b.blob = static_cast<int64_t>(st.st_blocks) * 512;
    return b;
}

struct LazyCacheEvictor::Layer {
    std::string dir;
    LazyRecord record;
    Fd root;  // diff/, O_PATH
    std::map<size_t, std::string> paths;
};

struct LazyCacheEvictor::Victim {
    size_t entry;
    Fd file;  // holding the lease
    struct stat st;
};

LazyCacheEvictor::LazyCacheEvictor(std::string store_root, uint64_t limit)
    : root_(std::move(store_root)), limit_(limit) {}

LazyCacheEvictor::~LazyCacheEvictor() = default;

std::shared_ptr<LazyCacheEvictor::Layer> LazyCacheEvictor::layer(const std::string& dir) {
    if (auto it = layers_.find(dir); it != layers_.end()) {
        // The same layer still (not completed, removed and pulled lazily again since)?
        struct stat was, is;
        if (::fstat(it->second->root.get(), &was) == 0 &&
            ::stat((dir + "/diff").c_str(), &is) == 0 && was.st_ino == is.st_ino &&
            was.st_dev == is.st_dev)
            return it->second;
        layers_.erase(it);
    }
    auto record = read_lazy_record(dir);
    if (!record) return nullptr;
    auto l = std::make_shared<Layer>();
    l->dir = dir;
    l->record = std::move(*record);
    l->root = Fd(::open((dir + "/diff").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!l->root) throw_errno("cannot open", dir + "/diff", errno);
    for (const auto* list : {&l->record.pending, &l->record.filled})
        for (const auto& p : *list) l->paths[p.entry] = p.path;
    layers_[dir] = l;
    return l;
}

EvictionReport LazyCacheEvictor::bring_under_limit(
    const std::function<bool(const std::string&, size_t)>& busy) {
    Fd store_lock = lock_file(root_ + "/lazy-cache.lock", true);
    if (!store_lock) throw_errno("cannot lock", root_ + "/lazy-cache.lock", errno);
    // A round's estimate of what its files free may fall short (ranges shared with files
    // kept): another round then, while rounds evict anything.
    EvictionReport total;
    for (int round = 0; round < 4; ++round) {
        EvictionReport r = evict_round(busy);
        if (round == 0) total.before = r.before;
        total.after = r.after;
        total.evicted += r.evicted;
        total.skipped_open += r.skipped_open;
        if (r.after <= static_cast<int64_t>(limit_) || r.evicted == 0) break;
    }
    return total;
}

EvictionReport LazyCacheEvictor::evict_round(
    const std::function<bool(const std::string&, size_t)>& busy) {
    EvictionReport report;

    // The layers that count: lazy, and no completer at work on them (it makes them complete).
    std::vector<std::string> dirs;
    std::string layers_dir = root_ + "/layers";
    if (DIR* d = ::opendir(layers_dir.c_str())) {
        while (struct dirent* e = ::readdir(d)) {
            std::string name = e->d_name;
            if (name == "." || name == "..") continue;
            std::string dir = layers_dir + "/" + name;
            if (is_lazy_layer(dir) && complete_lock_free(dir)) dirs.push_back(dir);
        }
        ::closedir(d);
    }
    std::map<std::string, int64_t> usage;
    for (const auto& dir : dirs) {
        try {
            usage[dir] = lazy_local_bytes(dir).total();
            report.before += usage[dir];
        } catch (const StoreError&) {
            // completed meanwhile: it no longer counts
        }
    }
    report.after = report.before;
    if (report.after <= static_cast<int64_t>(limit_)) return report;

    // Candidates, least recently fetched first: a fill's last step (its chmod and mtime) sets
    // the ctime, and nothing else changes a lower file.
    struct Candidate {
        struct timespec ctime;
        std::shared_ptr<Layer> layer;
        size_t entry;
    };
    std::vector<Candidate> candidates;
    for (const auto& [dir, bytes] : usage) {
        std::shared_ptr<Layer> l;
        try {
            l = layer(dir);
        } catch (const StoreError&) {
            continue;
        }
        if (!l) continue;
        for (const auto& [entry, size] : read_lazy_done(dir)) {
            auto it = l->paths.find(static_cast<size_t>(entry));
            if (it == l->paths.end() || size <= 0) continue;
            Fd f = open_beneath(l->root.get(), it->second, O_PATH);
            struct stat st;
            if (!f || ::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
            candidates.push_back({st.st_ctim, l, static_cast<size_t>(entry)});
        }
    }
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
        return std::tie(a.ctime.tv_sec, a.ctime.tv_nsec) <
               std::tie(b.ctime.tv_sec, b.ctime.tv_nsec);
    });

    // Chosen first, each under its lease, down to seven eighths of the limit (so that a round
    // comes once per eighth of it fetched, not once per file); then each layer's records
    // rewritten once for all its files, and only then anything punched.
    const int64_t low_water = static_cast<int64_t>(limit_ - limit_ / 8);
    std::map<std::string, std::vector<Victim>> chosen;
    std::map<std::string, Fd> completer_locks;  // held for the rest of this round
    int64_t projected = report.after;
    for (const Candidate& c : candidates) {
        if (projected <= low_water) break;
        Layer& l = *c.layer;
        if (busy && busy(l.dir, c.entry)) continue;
        auto held = completer_locks.find(l.dir);
        if (held == completer_locks.end()) {
            Fd lock = lock_file(l.dir + "/lazy/complete.lock", false);
            if (!lock) continue;  // a completer started: the layer is its
            held = completer_locks.emplace(l.dir, std::move(lock)).first;
        }
        const estargz::TocEntry& t = l.record.toc.entries[c.entry];
        Fd f = open_beneath(l.root.get(), l.paths[c.entry], O_RDWR | O_NONBLOCK);
        struct stat st;
        if (!f || ::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
            static_cast<uint64_t>(st.st_size) != t.size)
            continue;
        // A write (and a punch is one) clears set-id bits and security.capability: such files
        // stay rather than be put back.
        if ((st.st_mode & (S_ISUID | S_ISGID)) ||
            ::fgetxattr(f.get(), "security.capability", nullptr, 0) >= 0)
            continue;
        // Granted only while this is the file's one open descriptor anywhere. An open elsewhere
        // from now on waits (the lease break) until it is released, when the round ends.
        if (::fcntl(f.get(), F_SETLEASE, F_WRLCK) != 0) {
            ++report.skipped_open;
            continue;
        }
        // Its content and, about as much again, its compressed ranges: the round recounts.
        projected -= 2 * static_cast<int64_t>(t.size);
        chosen[l.dir].push_back({c.entry, std::move(f), st});
    }

    for (auto& [dir, victims] : chosen) {
        Layer& l = *layer(dir);
        try {
            LazyCacheLock lock(dir);
            auto done = read_lazy_done(dir);
            std::vector<Victim*> listed;  // the others were evicted by another fetcher meanwhile
            for (auto& v : victims)
                if (done.erase(static_cast<int64_t>(v.entry))) listed.push_back(&v);
            evict_listed(l, listed, done, report);
        } catch (const StoreError&) {
            // left as it is: listed or not, what lazy/done says stays true of each file
        }
        for (auto& v : victims) ::fcntl(v.file.get(), F_SETLEASE, F_UNLCK);
        int64_t now = lazy_local_bytes(dir).total();
        report.after += now - usage[dir];
        usage[dir] = now;
    }
    return report;
}

void LazyCacheEvictor::evict_listed(Layer& l, std::vector<Victim*>& listed,
                                    const std::map<int64_t, int64_t>& done,
                                    EvictionReport& report) {
    if (listed.empty()) return;
    std::string lazy = l.dir + "/lazy";
    std::string lines;
    for (const auto& [entry, bytes] : done)
        lines += std::to_string(entry) + " " + std::to_string(bytes) + "\n";
    write_file_atomic(lazy + "/done", lines);
    // The compressed ranges that brought them go too: completion fetches them again.
    std::vector<Range> keep, drop;
    for (const Range& r : read_ranges(lazy + "/ranges")) {
        bool theirs = std::any_of(listed.begin(), listed.end(), [&](const Victim* v) {
            const auto& chunks = l.record.toc.entries[v->entry].chunks;
            return std::any_of(chunks.begin(), chunks.end(), [&](const estargz::Chunk& ch) {
                return r.off < ch.fetch_end && ch.offset < r.end;
            });
        });
        (theirs ? drop : keep).push_back(r);
    }
    if (!drop.empty()) {
        std::string kept;
        for (const Range& r : keep)
            kept += std::to_string(r.off) + " " + std::to_string(r.end - r.off) + "\n";
        write_file_atomic(lazy + "/ranges", kept);
    }
    // Nothing lists the content any more before any of it goes.
    sync_dir(lazy);
    // To whole blocks (a punch only zeroes a partial one, and a small file's range
    // shares its blocks with its neighbours'), minus what kept ranges hold: bytes no
    // range lists are never read again.
    const uint64_t block = 4096;
    Fd blob(::open((lazy + "/blob").c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
    std::vector<Range> widened;
    for (const Range& r : drop)
        widened.push_back({r.off / block * block, (r.end + block - 1) / block * block});
    for (const Range& r : minus(merged(widened), merged(keep)))
        if (blob)
            ::fallocate(blob.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(r.off), static_cast<off_t>(r.end - r.off));
    for (Victim* v : listed) {
        // The file to the end of its last block, for the same reason. A punch that
        // fails leaves the content, which done no longer lists: fetched again.
        off_t b = v->st.st_blksize > 0 ? v->st.st_blksize : 4096;
        off_t span = (v->st.st_size + b - 1) / b * b;
        if (::fallocate(v->file.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, span) != 0)
            continue;
        // The punch set the mtime; the tree's is the image's.
        struct timespec times[2] = {{0, UTIME_OMIT}, v->st.st_mtim};
        ::futimens(v->file.get(), times);
        ++report.evicted;
    }
}

}  // namespace lamina::store
