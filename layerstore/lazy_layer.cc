// The files of a lazy layer's record: lazy/source.json, lazy/toc.json (the TOC as the registry
// sent it), lazy/pending.json; each replaced atomically, source.json last.
#include "lazy_layer.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "digest.h"
#include "error.h"
#include "fd.h"
#include "fsutil.h"
#include "json_input.h"

namespace lamina::store {

using nlohmann::json;

namespace {

std::string record_dir(const std::string& layer_dir) {
    return layer_dir + "/lazy";
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
    for (const auto& p : pending) list.push_back({{"entry", p.entry}, {"path", p.path}});
    write_file_atomic(dir + "/toc.json", toc.json);
    write_file_atomic(dir + "/pending.json", list.dump());
    // Last: a record without source.json is no record (is_lazy_layer reads it).
    write_file_atomic(dir + "/source.json", source.dump());
}

bool is_lazy_layer(const std::string& layer_dir) {
    return ::access((record_dir(layer_dir) + "/source.json").c_str(), F_OK) == 0;
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
    r.toc.entries = estargz::parse_toc_json(r.toc.json, r.toc.toc_offset);
    std::set<int64_t> done;
    if (path_exists(dir + "/done")) {
        std::istringstream in(read_file(dir + "/done"));
        for (int64_t n; in >> n;) done.insert(n);
    }
    std::string pwhat = dir + "/pending.json";
    json p = parse_json_limited(read_file(pwhat), pwhat, 256 << 20);
    if (!p.is_array()) throw StoreError(pwhat + " is not a list");
    for (const auto& e : p) {
        require_object(e, pwhat);
        int64_t entry = int_member(e, "entry", pwhat, -1);
        if (entry < 0 || static_cast<uint64_t>(entry) >= r.toc.entries.size())
            throw StoreError(pwhat + ": entry out of range");
        if (done.count(entry)) continue;
        r.pending.push_back({static_cast<size_t>(entry), string_member(e, "path", pwhat)});
    }
    return r;
}

void mark_lazy_done(const std::string& layer_dir, size_t entry) {
    std::string path = record_dir(layer_dir) + "/done";
    Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!f) throw_errno("cannot open", path, errno);
    std::string line = std::to_string(entry) + "\n";
    if (::write(f.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()) ||
        ::fsync(f.get()) != 0)
        throw_errno("cannot write", path, errno);
}

void drop_lazy_record(const std::string& layer_dir) {
    std::string dir = record_dir(layer_dir);
    // source.json first: from then on the layer is complete, whatever is left of the rest.
    if (::unlink((dir + "/source.json").c_str()) != 0 && errno != ENOENT)
        throw_errno("cannot remove", dir + "/source.json", errno);
    remove_tree(dir);
}

}  // namespace lamina::store
