// The files of a lazy layer's record: lazy/source.json, lazy/toc.json (the TOC as the registry
// sent it), lazy/pending.json; each replaced atomically, source.json last.
#include "lazy_layer.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "digest.h"
#include "error.h"
#include "fd.h"
#include "fsutil.h"
#include "image_format.h"
#include "json_input.h"
#include "lazy_record.h"

namespace lamina::store {

using nlohmann::json;

namespace {

std::string record_dir(const std::string& layer_dir) {
    return lazy_record::record_dir(layer_dir);
}

// lazy/done: one line per filled placeholder, "ENTRY BYTES" (a record from before the byte count
// has "ENTRY"); an entry filled twice (two mounts at once) counts once. A torn last line (a crash
// mid-append) is left out, and the entry fetched again.
std::map<int64_t, int64_t> read_done(const std::string& dir) {
    std::map<int64_t, int64_t> done;
    std::string path = dir + "/done";
    if (!path_exists(path)) return done;
    std::istringstream in(read_file(path));
    for (std::string line; std::getline(in, line);) {
        if (in.eof()) break;  // no newline: not synced whole
        std::istringstream fields(line);
        int64_t entry = -1, bytes = 0;
        if (!(fields >> entry) || entry < 0) continue;
        fields >> bytes;
        done[entry] = std::max<int64_t>(bytes, 0);
    }
    return done;
}

// The last line of a log file, from at most its last 4 KiB; "" when there is none.
std::string last_line_of_log(const std::string& path) {
    Fd f(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!f) return "";
    off_t size = ::lseek(f.get(), 0, SEEK_END);
    off_t from = std::max<off_t>(0, size - 4096);
    std::string tail(static_cast<size_t>(size - from), '\0');
    ssize_t n = ::pread(f.get(), tail.data(), tail.size(), from);
    tail.resize(n > 0 ? static_cast<size_t>(n) : 0);
    while (!tail.empty() && tail.back() == '\n') tail.pop_back();
    return tail.substr(tail.rfind('\n') + 1);
}

}  // namespace

void write_lazy_record(const std::string& layer_dir, const LazySource& s, const estargz::Toc& toc,
                       const std::vector<estargz::Placeholder>& pending) {
    std::string dir = record_dir(layer_dir);
    make_dirs(dir, 0700);
    json source = {{"registry", s.registry},
                   {"repository", s.repository},
                   {"digest", s.digest},
                   {"mediaType", s.media_type},
                   {"size", s.size},
                   {"tocDigest", s.toc_digest},
                   {"tocOffset", toc.toc_offset}};
    json list = json::array();
    int64_t bytes = 0;
    for (const auto& p : pending) {
        list.push_back({{"entry", p.entry}, {"path", p.path}});
        bytes += static_cast<int64_t>(toc.entries[p.entry].size);
    }
    // What progress counts against (read_lazy_progress), kept here so it never needs the TOC.
    source["files"] = static_cast<int64_t>(pending.size());
    source["bytes"] = bytes;
    write_file_atomic(dir + "/toc.json", toc.json);
    write_file_atomic(dir + "/pending.json", list.dump());
    // Last: a record without source.json is no record (is_lazy_layer reads it).
    write_file_atomic(dir + "/source.json", source.dump());
}

estargz::TocFormat toc_format_of(const std::string& media_type) {
    return layer_media_type_compression(media_type) == kZstd ? estargz::TocFormat::kZstdChunked
                                                             : estargz::TocFormat::kEstargz;
}

bool is_lazy_layer(const std::string& layer_dir) {
    return lazy_record::is_lazy(layer_dir);
}

std::optional<LazyRecord> read_lazy_record(const std::string& layer_dir) {
    if (!is_lazy_layer(layer_dir)) return std::nullopt;
    std::string dir = record_dir(layer_dir);
    std::string what = dir + "/source.json";
    json s = parse_json_limited(read_file(what), what, 64 << 10);
    LazyRecord r;
    r.source.registry = string_member(s, "registry", what);
    r.source.repository = string_member(s, "repository", what);
    r.source.digest = string_member(s, "digest", what);
    r.source.media_type = string_member(s, "mediaType", what);
    r.source.size = int_member(s, "size", what, 0);
    r.source.toc_digest = string_member(s, "tocDigest", what);
    int64_t toc_offset = int_member(s, "tocOffset", what, -1);
    if (toc_offset < 0 || r.source.size <= toc_offset || !is_sha256_digest(r.source.digest))
        throw StoreError(what + ": bad blob size, digest or TOC offset");
    r.toc.toc_offset = static_cast<uint64_t>(toc_offset);
    r.toc.json = read_file(dir + "/toc.json");
    r.toc.digest = sha256_digest(r.toc.json);
    if (r.toc.digest != r.source.toc_digest)
        throw StoreError(dir + "/toc.json does not match its digest " + r.source.toc_digest);
    r.toc.format = toc_format_of(r.source.media_type);
    r.toc.entries = estargz::parse_toc_json(r.toc.json, r.toc.toc_offset, r.toc.format);
    std::map<int64_t, int64_t> done = read_done(dir);
    std::string pwhat = dir + "/pending.json";
    json p = parse_json_limited(read_file(pwhat), pwhat, 256 << 20);
    if (!p.is_array()) throw StoreError(pwhat + " is not a list");
    for (const auto& e : p) {
        require_object(e, pwhat);
        int64_t entry = int_member(e, "entry", pwhat, -1);
        if (entry < 0 || static_cast<uint64_t>(entry) >= r.toc.entries.size())
            throw StoreError(pwhat + ": entry out of range");
        estargz::Placeholder ph{static_cast<size_t>(entry), string_member(e, "path", pwhat)};
        (done.count(entry) ? r.filled : r.pending).push_back(std::move(ph));
    }
    return r;
}

std::map<int64_t, int64_t> read_lazy_done(const std::string& layer_dir) {
    return read_done(record_dir(layer_dir));
}

LazyCacheLock::LazyCacheLock(const std::string& layer_dir) {
    std::string path = record_dir(layer_dir) + "/cache.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd_ < 0) throw_errno("cannot open", path, errno);
    while (::flock(fd_, LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd_);
        throw_errno("cannot lock", path, err);
    }
}

LazyCacheLock::~LazyCacheLock() {
    ::close(fd_);
}

void mark_lazy_done(const std::string& layer_dir, size_t entry, uint64_t bytes) {
    mark_lazy_done(layer_dir, {{entry, bytes}});
}

void mark_lazy_done(const std::string& layer_dir,
                    const std::vector<std::pair<size_t, uint64_t>>& files) {
    if (files.empty()) return;
    LazyCacheLock lock(layer_dir);
    std::string path = record_dir(layer_dir) + "/done";
    Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!f) throw_errno("cannot open", path, errno);
    std::string lines;
    for (const auto& [entry, bytes] : files)
        lines += std::to_string(entry) + " " + std::to_string(bytes) + "\n";
    // Whole lines only: the reader leaves out a torn last one.
    for (size_t done = 0; done < lines.size();) {
        ssize_t n = ::write(f.get(), lines.data() + done, lines.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw_errno("cannot write", path, errno);
        done += static_cast<size_t>(n);
    }
    if (::fsync(f.get()) != 0) throw_errno("cannot sync", path, errno);
}

std::optional<LazyProgress> read_lazy_progress(const std::string& layer_dir) {
    if (!is_lazy_layer(layer_dir)) return std::nullopt;
    std::string dir = record_dir(layer_dir);
    std::string what = dir + "/source.json";
    LazyProgress p;
    std::map<int64_t, int64_t> done;
    try {
        json s = parse_json_limited(read_file(what), what, 64 << 10);
        done = read_done(dir);
        if (s.is_object() && s.contains("files") && s.contains("bytes")) {
            p.files = int_member(s, "files", what, 0);
            p.bytes = int_member(s, "bytes", what, 0);
        } else {
            // A record from before the totals were kept: count them from the record.
            auto r = read_lazy_record(layer_dir);
            if (!r) return std::nullopt;
            p.files = static_cast<int64_t>(r->pending.size() + done.size());
            for (const auto& ph : r->pending)
                p.bytes += static_cast<int64_t>(r->toc.entries[ph.entry].size);
            for (const auto& [entry, bytes] : done) p.bytes += bytes;
        }
    } catch (const StoreError&) {
        // The record went while it was read: a completer made the layer whole.
        if (!is_lazy_layer(layer_dir)) return std::nullopt;
        throw;
    }
    p.last_error = last_line_of_log(dir + "/complete.log");
    p.files_local = std::min<int64_t>(static_cast<int64_t>(done.size()), p.files);
    for (const auto& [entry, bytes] : done) p.bytes_local += bytes;
    p.bytes_local = std::min(p.bytes_local, p.bytes);
    return p;
}

void drop_lazy_record(const std::string& layer_dir) {
    std::string dir = record_dir(layer_dir);
    // source.json first: from then on the layer is complete, whatever is left of the rest.
    if (::unlink((dir + "/source.json").c_str()) != 0 && errno != ENOENT)
        throw_errno("cannot remove", dir + "/source.json", errno);
    remove_tree(dir);
}

}  // namespace lamina::store
