// eStargz layers: the writer (libarchive reads and re-serialises the entries, zlib cuts the gzip
// members where the format wants them; zstd:chunked's frames the same way) and the reader of
// footers, TOCs and chunks.
#include "estargz.h"
#include "printable.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "archive_error.h"
#include "digest.h"
#include "error.h"
#include "fd.h"
#include "fsutil.h"
#include "image_format.h"
#include "internal.h"
#include "json_input.h"
#include "overlay_format.h"
#include "zstd_chunked.h"

namespace lamina::store::estargz {

using nlohmann::json;

namespace {

using EntryPtr = std::unique_ptr<archive_entry, decltype(&archive_entry_free)>;

// ---- Writing ----------------------------------------------------------------------------------

// The compressed side of the writer: bytes go into the current member (a gzip member, a zstd
// frame); end_member() closes it so the next byte starts a new one at offset(). Hashes and
// counts both sides.
class Members {
public:
    explicit Members(int fd) : fd_(fd) {}
    virtual ~Members() = default;
    Members(const Members&) = delete;
    Members& operator=(const Members&) = delete;

    void write(const void* data, size_t len) {
        if (len == 0) return;
        uncompressed_.update(data, len);
        uncompressed_bytes_ += static_cast<int64_t>(len);
        in_member_ += len;
        compress(data, len);
    }
    // A member with nothing in it is not written: the next member starts where it would have.
    void end_member() {
        if (in_member_ == 0) return;
        finish_member();
        in_member_ = 0;
    }
    // Raw bytes between or after the members (the footer, a skippable frame).
    void append_raw(std::string_view bytes) { emit(bytes.data(), bytes.size()); }
    uint64_t offset() const { return compressed_bytes_; }
    int64_t uncompressed_bytes() const { return uncompressed_bytes_; }
    Sha256& compressed_hash() { return compressed_; }
    Sha256& uncompressed_hash() { return uncompressed_; }

protected:
    virtual void compress(const void* data, size_t len) = 0;
    virtual void finish_member() = 0;
    void emit(const void* p, size_t n) {
        const char* c = static_cast<const char*>(p);
        compressed_.update(c, n);
        compressed_bytes_ += n;
        while (n > 0) {
            ssize_t w = ::write(fd_, c, n);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) throw StoreError(std::string("cannot write the layer: ") + strerror(errno));
            c += w;
            n -= static_cast<size_t>(w);
        }
    }

private:
    int fd_;
    size_t in_member_ = 0;
    uint64_t compressed_bytes_ = 0;
    int64_t uncompressed_bytes_ = 0;
    Sha256 compressed_, uncompressed_;
};

class GzipMembers final : public Members {
public:
    GzipMembers(int fd, int level) : Members(fd) {
        if (deflateInit2(&z_, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            throw StoreError("cannot start gzip compression");
    }
    ~GzipMembers() override { deflateEnd(&z_); }

private:
    void compress(const void* data, size_t len) override {
        z_.next_in = static_cast<Bytef*>(const_cast<void*>(data));
        z_.avail_in = static_cast<uInt>(len);
        pump(Z_NO_FLUSH);
    }
    void finish_member() override {
        z_.avail_in = 0;
        pump(Z_FINISH);
        deflateReset(&z_);
    }
    void pump(int flush) {
        unsigned char buf[1 << 16];
        for (;;) {
            z_.next_out = buf;
            z_.avail_out = sizeof buf;
            int rc = deflate(&z_, flush);
            if (rc == Z_STREAM_ERROR) throw StoreError("gzip compression failed");
            emit(buf, sizeof buf - z_.avail_out);
            if (flush == Z_FINISH ? rc == Z_STREAM_END : z_.avail_in == 0 && z_.avail_out != 0)
                return;
        }
    }

    z_stream z_{};
};

// A zstd frame is compressed whole when it ends: a run of tar headers, or one chunk (at most
// chunk_bytes), so what is held is bounded.
class ZstdFrames final : public Members {
public:
    ZstdFrames(int fd, int level) : Members(fd), level_(level) {}

private:
    void compress(const void* data, size_t len) override {
        pending_.append(static_cast<const char*>(data), len);
    }
    void finish_member() override {
        std::string frame = zstd_chunked::compress_frame(pending_, level_);
        pending_.clear();
        emit(frame.data(), frame.size());
    }

    int level_;
    std::string pending_;
};

la_ssize_t write_to_members(archive*, void* client, const void* buf, size_t len) {
    try {
        static_cast<Members*>(client)->write(buf, len);
    } catch (const StoreError&) {
        return -1;  // libarchive is C: the failure surfaces as its write error
    }
    return static_cast<la_ssize_t>(len);
}

std::string hex16(uint64_t v) {
    char s[17];
    snprintf(s, sizeof s, "%016llx", static_cast<unsigned long long>(v));
    return s;
}

std::string rfc3339(time_t sec, long nsec) {
    struct tm tm;
    gmtime_r(&sec, &tm);
    char s[64];
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
    std::string out = s;
    if (nsec > 0) {
        char frac[32];
        snprintf(frac, sizeof frac, ".%09ld", nsec);
        std::string f = frac;
        while (f.back() == '0') f.pop_back();
        out += f;
    }
    return out + "Z";
}

std::string base64(std::string_view raw) {
    std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(raw.data()),
                            static_cast<int>(raw.size()));
    out.resize(static_cast<size_t>(n));
    return out;
}

// Each entry type with its name in the TOC and its file-type bits: stat's, which libarchive's
// AE_IF* equal. A hardlink has a regular file's bits; it comes after "reg" so that the bits
// find "reg".
struct EntryKind {
    EntryType type;
    const char* name;
    mode_t bits;
};
static_assert(AE_IFDIR == S_IFDIR && AE_IFREG == S_IFREG && AE_IFLNK == S_IFLNK &&
              AE_IFCHR == S_IFCHR && AE_IFBLK == S_IFBLK && AE_IFIFO == S_IFIFO);
constexpr EntryKind kEntryKinds[] = {
    {EntryType::kDir, "dir", S_IFDIR},           {EntryType::kReg, "reg", S_IFREG},
    {EntryType::kHardlink, "hardlink", S_IFREG}, {EntryType::kSymlink, "symlink", S_IFLNK},
    {EntryType::kChar, "char", S_IFCHR},         {EntryType::kBlock, "block", S_IFBLK},
    {EntryType::kFifo, "fifo", S_IFIFO},
};

const EntryKind& kind_of(EntryType t) {
    for (const auto& k : kEntryKinds)
        if (k.type == t) return k;
    return kEntryKinds[1];
}

// The TOC entry of a tar entry, without its chunks. eStargz's mode carries the type bits as
// stat's does (as the format's own example shows); zstd:chunked's holds the permission and
// set-id bits only and leaves out an owner of 0, as skopeo writes it.
json toc_entry_json(archive_entry* e, EntryType type, TocFormat format) {
    bool zstd = format == TocFormat::kZstdChunked;
    mode_t mode = (archive_entry_perm(e) & 07777) | (zstd ? 0 : kind_of(type).bits);
    json j = {{"name", archive_entry_pathname(e)},
              {"type", kind_of(type).name},
              {"mode", static_cast<int64_t>(mode)}};
    if (!zstd || archive_entry_uid(e) != 0) j["uid"] = archive_entry_uid(e);
    if (!zstd || archive_entry_gid(e) != 0) j["gid"] = archive_entry_gid(e);
    if (archive_entry_mtime_is_set(e))
        j["modtime"] = rfc3339(archive_entry_mtime(e), archive_entry_mtime_nsec(e));
    if (const char* u = archive_entry_uname(e); u && *u) j["userName"] = u;
    if (const char* g = archive_entry_gname(e); g && *g) j["groupName"] = g;
    if (type == EntryType::kSymlink) j["linkName"] = archive_entry_symlink(e);
    if (type == EntryType::kHardlink) j["linkName"] = archive_entry_hardlink(e);
    if (type == EntryType::kChar || type == EntryType::kBlock) {
        j["devMajor"] = archive_entry_rdevmajor(e);
        j["devMinor"] = archive_entry_rdevminor(e);
    }
    if (archive_entry_xattr_reset(e) > 0) {
        json x = json::object();
        const char* name;
        const void* value;
        size_t size;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
            x[name] = base64(std::string_view(static_cast<const char*>(value), size));
        j["xattrs"] = std::move(x);
    }
    return j;
}

EntryType type_of(archive_entry* e) {
    if (archive_entry_hardlink(e)) return EntryType::kHardlink;
    for (const auto& k : kEntryKinds)
        if (archive_entry_filetype(e) == k.bits) return k.type;
    throw StoreError(std::string("unsupported entry type in \"") + archive_entry_pathname(e) +
                     "\"");
}

// Fills buf with the next bytes of the current entry's content, or throws.
using ContentSource = std::function<void(char* buf, size_t len)>;

ContentSource content_of(archive* in, archive_entry* e) {
    return [in, e](char* buf, size_t len) {
        size_t got = 0;
        while (got < len) {
            la_ssize_t n = archive_read_data(in, buf + got, len - got);
            if (n < 0)
                throw StoreError(std::string("cannot read entry \"") + archive_entry_pathname(e) +
                                 "\": " + archive_error_text(in));
            if (n == 0)
                throw StoreError(std::string("entry \"") + archive_entry_pathname(e) +
                                 "\" is truncated");
            got += static_cast<size_t>(n);
        }
    };
}

// One tar entry through the writer; a regular file's content goes in chunks, each its own
// member, and each chunk (and the file) gets its TOC record. eStargz gives every chunk
// chunkOffset, chunkSize (0 for the last) and chunkDigest; zstd:chunked gives a file of one
// chunk its digest alone, a chunked file's chunks their real sizes, and the file's "endOffset":
// its last frame is closed after the content, so the tar padding and the next headers are a
// frame no entry names.
void copy_entry(const ContentSource& read, archive* out, archive_entry* e, Members& m,
                const WriteOptions& o, json& entries) {
    const bool zstd = o.format == TocFormat::kZstdChunked;
    EntryType type = type_of(e);
    archive_entry_sparse_clear(e);  // holes are written out as zeros, one plain entry
    if (type != EntryType::kReg) archive_entry_set_size(e, 0);
    json j = toc_entry_json(e, type, o.format);
    if (archive_write_header(out, e) != ARCHIVE_OK)
        throw StoreError(std::string("cannot write entry \"") + archive_entry_pathname(e) +
                         "\": " + archive_error_text(out));
    if (type != EntryType::kReg) {
        entries.push_back(std::move(j));
        return;
    }
    int64_t size = archive_entry_size(e);
    j["size"] = size;
    if (size == 0) {
        entries.push_back(std::move(j));
        return;
    }
    const bool one_chunk = size <= o.chunk_bytes;
    std::string buf;
    Sha256 whole;
    std::vector<json> chunks;
    for (int64_t done = 0; done < size;) {
        int64_t want = std::min<int64_t>(o.chunk_bytes, size - done);
        buf.resize(static_cast<size_t>(want));
        read(buf.data(), buf.size());
        m.end_member();
        json c = done == 0 ? j : json{{"name", j["name"]}, {"type", "chunk"}};
        c["offset"] = m.offset();
        if (!(zstd && one_chunk)) {
            c["chunkOffset"] = done;
            c["chunkSize"] = !zstd && done + want == size ? 0 : want;
            c["chunkDigest"] = sha256_digest(buf);
        }
        whole.update(buf.data(), buf.size());
        if (archive_write_data(out, buf.data(), buf.size()) != static_cast<la_ssize_t>(buf.size()))
            throw StoreError(std::string("cannot write entry \"") + archive_entry_pathname(e) +
                             "\": " + archive_error_text(out));
        chunks.push_back(std::move(c));
        done += want;
    }
    chunks.front()["digest"] = whole.digest();
    if (zstd) {
        m.end_member();
        chunks.front()["endOffset"] = m.offset();
    }
    for (auto& c : chunks) entries.push_back(std::move(c));
    if (archive_write_finish_entry(out) != ARCHIVE_OK)
        throw StoreError(std::string("cannot write entry \"") + archive_entry_pathname(e) +
                         "\": " + archive_error_text(out));
}

// A regular file of the writer's own (the landmark, the TOC): 0644, root's, mtime 0.
EntryPtr own_entry(std::string_view name, size_t size) {
    EntryPtr e(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname(e.get(), std::string(name).c_str());
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
    archive_entry_set_mtime(e.get(), 0, 0);
    return e;
}

// The TOC's entry, which the TOC does not list.
void write_toc_entry(archive* out, const std::string& content) {
    EntryPtr e = own_entry(kTocName, content.size());
    if (archive_write_header(out, e.get()) != ARCHIVE_OK ||
        archive_write_data(out, content.data(), content.size()) !=
            static_cast<la_ssize_t>(content.size()) ||
        archive_write_finish_entry(out) != ARCHIVE_OK)
        throw StoreError("cannot write the TOC: " + archive_error_text(out));
}

}  // namespace

namespace {

ReadArchive open_layer_tar(const std::string& in_path) {
    ReadArchive in(archive_read_new());
    archive_read_support_filter_gzip(in.get());
    archive_read_support_filter_zstd(in.get());
    archive_read_support_format_tar(in.get());
    if (archive_read_open_filename(in.get(), in_path.c_str(), 1 << 17) != ARCHIVE_OK)
        throw StoreError("cannot read " + in_path + ": " + archive_error_text(in.get()));
    return in;
}

// The next entry of a layer tar, or nullptr at its end.
archive_entry* next_entry(archive* in, const std::string& in_path) {
    archive_entry* e;
    int rc = archive_read_next_header(in, &e);
    if (rc == ARCHIVE_EOF) return nullptr;
    if (rc < ARCHIVE_WARN)
        throw StoreError("cannot read " + in_path + ": " + archive_error_text(in));
    return e;
}

std::string join_path(const std::vector<std::string>& comps, size_t count) {
    std::string out;
    for (size_t i = 0; i < count; ++i) out += (i ? "/" : "") + comps[i];
    return out;
}

// Which entries of a layer go first for a prefetch list, and in what order. An entry moves only
// when moving it cannot change what an unpack makes: its path and each parent's are named by
// one entry at most (a parent by a directory), nothing in the layer whites them out or lies
// below the file, and a hard link's target moves with it. Parents and targets go before.
class PrefetchPlan {
public:
    PrefetchPlan(const std::string& in_path, const std::vector<std::string>& list) {
        ReadArchive in = open_layer_tar(in_path);
        while (archive_entry* e = next_entry(in.get(), in_path)) {
            Entry x;
            x.comps = split_entry_path(archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
            x.type = type_of(e);
            if (x.type == EntryType::kHardlink) {
                std::vector<std::string> target = split_entry_path(archive_entry_hardlink(e));
                x.link = join_path(target, target.size());
            }
            std::string path = join_path(x.comps, x.comps.size());
            by_path_[path].push_back(entries_.size());
            for (size_t n = 1; n < x.comps.size(); ++n) parents_.insert(join_path(x.comps, n));
            if (!x.comps.empty()) {
                const std::string& last = x.comps.back();
                if (last.starts_with(kOciWhiteoutPrefix) && last != kOciOpaqueMarker) {
                    std::vector<std::string> target = x.comps;
                    target.back() = last.substr(kOciWhiteoutPrefix.size());
                    whited_.insert(join_path(target, target.size()));
                }
            }
            entries_.push_back(std::move(x));
        }
        for (const auto& path : list) {
            if (!by_path_.count(path)) continue;
            std::vector<size_t> moved;
            std::string why = add(path, moved, 0);
            if (!why.empty()) {
                kept_in_place_.emplace_back(path, why);
                continue;
            }
            for (size_t i : moved)
                if (chosen_.insert(i).second) order_.push_back(i);
            prioritised_.push_back(path);
        }
    }

    const std::vector<size_t>& order() const { return order_; }  // input entry indexes
    bool chosen(size_t i) const { return chosen_.count(i) > 0; }
    const std::vector<std::string>& prioritised() const { return prioritised_; }
    const std::vector<std::pair<std::string, std::string>>& kept_in_place() const {
        return kept_in_place_;
    }

private:
    struct Entry {
        std::vector<std::string> comps;
        EntryType type = EntryType::kReg;
        std::string link;  // a hard link's target path
    };

    // The one entry naming path, or why there is not exactly one that may move.
    std::string single(const std::string& path, size_t& index) const {
        auto it = by_path_.find(path);
        if (it->second.size() != 1) return "\"" + path + "\" is written more than once";
        if (whited_.count(path)) return "\"" + path + "\" is whited out in the same layer";
        index = it->second.front();
        return "";
    }

    // Appends the entries path needs before it, then its own; "" or why it cannot move.
    std::string add(const std::string& path, std::vector<size_t>& moved, int depth) {
        if (depth > 64) return "a chain of hard links too long";
        size_t index = 0;
        if (std::string why = single(path, index); !why.empty()) return why;
        const Entry& x = entries_[index];
        if (x.type == EntryType::kDir) return "a directory";
        if (parents_.count(path)) return "entries lie below it";
        if (x.comps.back().starts_with(kOciWhiteoutPrefix)) return "a whiteout";
        for (size_t n = 1; n < x.comps.size(); ++n) {
            std::string parent = join_path(x.comps, n);
            if (whited_.count(parent)) return "\"" + parent + "\" is whited out in the same layer";
            if (!by_path_.count(parent)) continue;  // made as unpack makes any missing parent
            size_t p = 0;
            if (std::string why = single(parent, p); !why.empty()) return why;
            if (entries_[p].type != EntryType::kDir)
                return "\"" + parent + "\" is not a directory entry";
            moved.push_back(p);
        }
        if (x.type == EntryType::kHardlink) {
            if (!by_path_.count(x.link)) return "its hard link target is not in the layer";
            if (std::string why = add(x.link, moved, depth + 1); !why.empty())
                return "its hard link target: " + why;
        }
        moved.push_back(index);
        return "";
    }

    std::vector<Entry> entries_;
    std::map<std::string, std::vector<size_t>> by_path_;
    std::set<std::string> parents_, whited_;
    std::vector<size_t> order_;
    std::set<size_t> chosen_;
    std::vector<std::string> prioritised_;
    std::vector<std::pair<std::string, std::string>> kept_in_place_;
};

// The prioritised entries, read out of the input in its order and kept (headers in memory,
// content in an unlinked file beside out_path) to be written before the rest.
class PrefetchSpool {
public:
    PrefetchSpool(const std::string& in_path, const std::string& out_path,
                  const PrefetchPlan& plan) {
        std::string dir = out_path.substr(0, out_path.rfind('/') + 1);
        fd_ = Fd(::open(dir.empty() ? "." : dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
        if (!fd_) throw_errno("cannot spool prioritised files in", dir, errno);
        ReadArchive in = open_layer_tar(in_path);
        std::vector<char> buf(1 << 16);
        size_t i = 0;
        for (archive_entry* e; (e = next_entry(in.get(), in_path)); ++i) {
            if (!plan.chosen(i)) continue;
            Kept k{EntryPtr(archive_entry_clone(e), archive_entry_free), end_, 0};
            if (type_of(e) == EntryType::kReg) {
                ContentSource read = content_of(in.get(), e);
                for (int64_t left = archive_entry_size(e); left > 0;) {
                    size_t n = static_cast<size_t>(std::min<int64_t>(left, buf.size()));
                    read(buf.data(), n);
                    if (::pwrite(fd_.get(), buf.data(), n, static_cast<off_t>(end_)) !=
                        static_cast<ssize_t>(n))
                        throw_errno("cannot spool", archive_entry_pathname(e), errno);
                    end_ += n;
                    left -= static_cast<int64_t>(n);
                }
            }
            kept_.emplace(i, std::move(k));
        }
    }

    archive_entry* entry(size_t i) { return kept_.at(i).entry.get(); }
    // The kept content of entry i, read in order as copy_entry asks for it.
    ContentSource content(size_t i) {
        Kept& k = kept_.at(i);
        return [this, &k](char* buf, size_t len) {
            if (::pread(fd_.get(), buf, len, static_cast<off_t>(k.offset + k.read)) !=
                static_cast<ssize_t>(len))
                throw_errno("cannot read spooled", archive_entry_pathname(k.entry.get()), errno);
            k.read += len;
        };
    }

private:
    struct Kept {
        EntryPtr entry;
        uint64_t offset;
        uint64_t read;
    };
    Fd fd_;
    uint64_t end_ = 0;
    std::map<size_t, Kept> kept_;
};

void refuse_own_file(const std::string& in_path, archive_entry* e) {
    std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    std::vector<std::string> comps = split_entry_path(name);
    if (comps.size() == 1 &&
        (comps[0] == kTocName || comps[0] == kNoPrefetchLandmark || comps[0] == kPrefetchLandmark))
        throw StoreError("cannot convert " + in_path + ": it already holds \"" + name +
                         "\" (an eStargz layer's own file)");
}

}  // namespace

std::vector<std::string> read_prefetch_list(const std::string& file) {
    std::string text;
    try {
        text = read_file(file, kMaxTocBytes);
    } catch (const StoreError& e) {
        throw StoreError(std::string("cannot read the prefetch list: ") + e.what());
    }
    std::vector<std::string> out;
    std::set<std::string> seen;
    size_t line_no = 0;
    for (size_t pos = 0; pos < text.size();) {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? nl : nl - pos);
        pos = nl == std::string::npos ? text.size() : nl + 1;
        ++line_no;
        if (line.ends_with('\r')) line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        std::vector<std::string> comps;
        try {
            comps = split_entry_path(line.starts_with('/') ? line.substr(1) : line);
        } catch (const StoreError&) {
            comps.clear();
        }
        if (comps.empty() || line.find('\0') != std::string::npos)
            throw StoreError("prefetch list " + file + ", line " + std::to_string(line_no) +
                             ": \"" + printable(line) + "\" is not a path in an image");
        std::string path = join_path(comps, comps.size());
        if (seen.insert(path).second) out.push_back(path);
    }
    return out;
}

namespace {

// Ends a zstd:chunked layer after its tar: the TOC frame inside a skippable frame (so a plain
// zstd reader passes over it), then the footer; and the annotations that locate and vouch for it.
void write_zstd_chunked_toc(Members& m, const std::string& toc_json, int level, WrittenLayer& w) {
    std::string frame = zstd_chunked::compress_frame(toc_json, level);
    if (frame.size() > kMaxTocBytes || toc_json.size() > kMaxTocBytes)
        throw StoreError("the layer's TOC is over " + std::to_string(kMaxTocBytes) + " bytes");
    zstd_chunked::TocPosition pos{m.offset() + 8, frame.size(), toc_json.size()};
    m.append_raw(zstd_chunked::skippable_frame(frame));
    m.append_raw(zstd_chunked::footer(pos));
    w.annotations = {
        {std::string(zstd_chunked::kChecksumAnnotation), sha256_digest(frame)},
        {std::string(zstd_chunked::kPositionAnnotation), zstd_chunked::position_annotation(pos)}};
}

}  // namespace

WrittenLayer write_layer(const std::string& in_path, const std::string& out_path,
                         const WriteOptions& o) {
    const bool estargz = o.format == TocFormat::kEstargz;
    const std::string name = format_name(o.format);
    if (o.chunk_bytes <= 0 || static_cast<uint64_t>(o.chunk_bytes) > kMaxChunkBytes)
        throw StoreError(name + " chunk size must be 1.." + std::to_string(kMaxChunkBytes));
    const int level = o.level >= 0 ? o.level : estargz ? 6 : 3;
    std::optional<PrefetchPlan> plan;
    if (!o.prefetch.empty()) plan.emplace(in_path, o.prefetch);
    std::optional<PrefetchSpool> spool;
    if (plan && !plan->order().empty()) spool.emplace(in_path, out_path, *plan);
    ReadArchive in = open_layer_tar(in_path);

    Fd fd(::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) throw_errno("cannot create", out_path, errno);
    std::unique_ptr<Members> m;
    if (estargz)
        m = std::make_unique<GzipMembers>(fd.get(), level);
    else
        m = std::make_unique<ZstdFrames>(fd.get(), level);
    WriteArchive out(archive_write_new());
    archive_write_set_format_pax_restricted(out.get());
    archive_write_add_filter_none(out.get());
    // Unblocked: each header and data write reaches the members at once, so the member
    // boundaries fall exactly between a file's header and its content.
    archive_write_set_bytes_per_block(out.get(), 0);
    archive_write_set_bytes_in_last_block(out.get(), 1);
    if (archive_write_open(out.get(), m.get(), nullptr, write_to_members, nullptr) != ARCHIVE_OK)
        throw StoreError("cannot start " + name + " layer: " + archive_error_text(out.get()));

    json entries = json::array();
    // The prioritised files first. eStargz: the landmark after them; without any, the landmark
    // saying so comes first, as in stargz-snapshotter. zstd:chunked's own files are none.
    if (spool)
        for (size_t i : plan->order()) {
            if (estargz) refuse_own_file(in_path, spool->entry(i));
            copy_entry(spool->content(i), out.get(), spool->entry(i), *m, o, entries);
        }
    if (estargz) {
        const char landmark = 0xf;
        copy_entry([&](char* buf, size_t len) { memcpy(buf, &landmark, len); }, out.get(),
                   own_entry(spool ? kPrefetchLandmark : kNoPrefetchLandmark, 1).get(), *m, o,
                   entries);
    }
    size_t index = 0;
    for (archive_entry* e; (e = next_entry(in.get(), in_path)); ++index) {
        if (estargz) refuse_own_file(in_path, e);
        if (spool && plan->chosen(index)) continue;
        copy_entry(content_of(in.get(), e), out.get(), e, *m, o, entries);
    }

    WrittenLayer w;
    json toc = {{"version", 1}, {"entries", std::move(entries)}};
    std::string toc_json = toc.dump();
    m->end_member();
    if (estargz) {
        uint64_t toc_offset = m->offset();
        write_toc_entry(out.get(), toc_json);
        if (archive_write_close(out.get()) != ARCHIVE_OK)
            throw StoreError("cannot finish eStargz layer: " + archive_error_text(out.get()));
        m->end_member();
        m->append_raw(footer(toc_offset));
    } else {
        if (archive_write_close(out.get()) != ARCHIVE_OK)
            throw StoreError("cannot finish zstd:chunked layer: " + archive_error_text(out.get()));
        m->end_member();
        write_zstd_chunked_toc(*m, toc_json, level, w);
    }
    if (::fsync(fd.get()) != 0) throw_errno("cannot sync", out_path, errno);

    w.digest = m->compressed_hash().digest();
    w.size = static_cast<int64_t>(m->offset());
    w.diff_id = m->uncompressed_hash().digest();
    w.uncompressed_size = m->uncompressed_bytes();
    w.toc_digest = sha256_digest(toc_json);
    if (estargz)
        w.annotations = {
            {std::string(kTocDigestAnnotation), w.toc_digest},
            {std::string(kUncompressedSizeAnnotation), std::to_string(w.uncompressed_size)}};
    if (plan) {
        w.prioritised = plan->prioritised();
        w.kept_in_place = plan->kept_in_place();
    }
    return w;
}

namespace {

// The manifest entry of layer i when it names a blob already in format (eStargz: gzip with the
// TOC digest annotation; zstd:chunked: zstd with the checksum annotation, either key form),
// else null.
json descriptor_in_format(const json& manifest, size_t i, const std::string& blob,
                          TocFormat format) {
    if (!manifest.is_object() || !manifest.contains("layers") || !manifest["layers"].is_array() ||
        i >= manifest["layers"].size())
        return nullptr;
    const json& d = manifest["layers"][i];
    if (!d.is_object() || d.value("digest", "") != blob || !d.contains("annotations") ||
        !d["annotations"].is_object())
        return nullptr;
    const json& a = d["annotations"];
    auto has = [&](std::string_view key) {
        auto it = a.find(std::string(key));
        return it != a.end() && it->is_string();
    };
    bool zstd = format == TocFormat::kZstdChunked;
    if (zstd ? !has(zstd_chunked::kChecksumAnnotation) &&
                   !has(zstd_chunked::later_key(zstd_chunked::kChecksumAnnotation))
             : !has(kTocDigestAnnotation))
        return nullptr;
    Compression want = zstd ? kZstd : kGzip;
    auto c = layer_media_type_compression(d.value("mediaType", ""));
    if (!c || *c != want) return nullptr;
    json kept = d;
    kept["mediaType"] = layer_media_type(want);
    return kept;
}

json parse_manifest_or_null(const ImageRecord& image) {
    try {
        return parse_json_limited(image.manifest, "manifest of " + image.id, kMaxManifestBytes);
    } catch (const StoreError&) {
        return nullptr;  // every layer is then converted
    }
}

}  // namespace

ConvertedImage convert_image(const ImageRecord& image,
                             const std::function<std::string(const std::string&)>& blob_path,
                             const std::string& dir, const WriteOptions& o) {
    json config = parse_json_limited(image.config, "config " + image.id, kMaxConfigBytes);
    image_config_diff_ids(config, image.layers.size(), "config " + image.id);
    json manifest = parse_manifest_or_null(image);
    const std::string format = format_name(o.format);
    json& rootfs = config["rootfs"];
    ConvertedImage out;
    json layers = json::array();
    std::map<std::string, WrittenLayer> done;  // a blob the image names twice is written once
    std::set<std::string> found;               // listed paths some layer prioritised or holds
    bool all_converted = true;  // else a kept layer may hold what no converted one does
    for (size_t i = 0; i < image.layers.size(); ++i) {
        const std::string& blob = image.layers[i].blob;
        std::string where = "layer " + std::to_string(i + 1);
        if (json kept = descriptor_in_format(manifest, i, blob, o.format); !kept.is_null()) {
            if (!done.count(blob)) out.blobs.emplace_back(blob, blob_path(blob));
            done.emplace(blob, WrittenLayer{});
            all_converted = false;
            if (!o.prefetch.empty())
                out.warnings.push_back(where + " is " + format +
                                       " already: kept as it is, with its own prioritised files");
            layers.push_back(std::move(kept));
            continue;
        }
        auto it = done.find(blob);
        if (it == done.end()) {
            std::string path = dir + "/" + digest_hex(blob) +
                               (o.format == TocFormat::kEstargz ? ".estargz" : ".zstd-chunked");
            it = done.emplace(blob, write_layer(blob_path(blob), path, o)).first;
            out.blobs.emplace_back(it->second.digest, path);
            for (const auto& p : it->second.prioritised) found.insert(p);
            for (const auto& [listed, why] : it->second.kept_in_place) {
                found.insert(listed);
                out.warnings.push_back("prefetch list: \"" + printable(listed) +
                                       "\" stays in place in " + where + ": " + printable(why));
            }
        }
        const WrittenLayer& w = it->second;
        rootfs["diff_ids"][i] = w.diff_id;
        json annotations = json::object();
        for (const auto& [key, value] : w.annotations) annotations[key] = value;
        layers.push_back(
            {{"mediaType", layer_media_type(o.format == TocFormat::kEstargz ? kGzip : kZstd)},
             {"digest", w.digest},
             {"size", w.size},
             {"annotations", std::move(annotations)}});
    }
    for (const auto& p : o.prefetch)
        if (all_converted && !found.count(p))
            out.warnings.push_back("prefetch list: \"" + printable(p) + "\" is in no layer");
    out.config = config.dump();
    out.manifest = oci_manifest(out.config, std::move(layers));
    return out;
}

size_t layers_already_in(const ImageRecord& image, TocFormat format) {
    json manifest = parse_manifest_or_null(image);
    size_t n = 0;
    for (size_t i = 0; i < image.layers.size(); ++i)
        if (!descriptor_in_format(manifest, i, image.layers[i].blob, format).is_null()) ++n;
    return n;
}

// ---- The footer -------------------------------------------------------------------------------

std::string footer(uint64_t toc_offset) {
    std::string f;
    f += std::string("\x1f\x8b\x08\x04", 4);  // gzip, deflate, FEXTRA
    f += std::string("\0\0\0\0\0\xff", 6);    // no mtime, no XFL, OS unknown
    f += std::string("\x1a\x00", 2);          // XLEN 26
    f += "SG";                                // subfield id
    f += std::string("\x16\x00", 2);          // subfield length 22
    f += hex16(toc_offset) + "STARGZ";
    f += std::string("\x01\x00\x00\xff\xff", 5);  // one final stored block, empty
    f += std::string(8, '\0');                    // CRC32 and size of nothing
    return f;
}

uint64_t parse_footer(std::string_view b, uint64_t blob_size) {
    if (b.size() != kFooterSize) throw StoreError("eStargz footer: wrong length");
    auto at = [&](size_t i) { return static_cast<unsigned char>(b[i]); };
    if (at(0) != 0x1f || at(1) != 0x8b || at(2) != 8 || !(at(3) & 4))
        throw StoreError("no eStargz footer (not a gzip header with an extra field)");
    if (at(10) != 26 || at(11) != 0 || b.substr(12, 2) != "SG" || at(14) != 22 || at(15) != 0 ||
        b.substr(32, 6) != "STARGZ")
        throw StoreError("no eStargz footer (its extra field is not STARGZ's)");
    uint64_t off = 0;
    for (char c : b.substr(16, 16)) {
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) throw StoreError("eStargz footer: the TOC offset is not hex");
        off = off << 4 | static_cast<uint64_t>(v);
    }
    if (blob_size < kFooterSize || off >= blob_size - kFooterSize)
        throw StoreError("eStargz footer: the TOC offset " + std::to_string(off) +
                         " is outside the blob");
    return off;
}

// ---- Reading ----------------------------------------------------------------------------------

namespace {

// The first gzip member of `in`, decompressed: at most `limit` bytes. With stop_at_limit the
// member may go on (a chunk's member holds the next headers too); otherwise more is an error.
std::string inflate_member(std::string_view in, uint64_t limit, bool stop_at_limit,
                           const std::string& what) {
    z_stream z{};
    if (inflateInit2(&z, 15 + 16) != Z_OK) throw StoreError("cannot start gzip decompression");
    std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&z, inflateEnd);
    std::string out;
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    char buf[1 << 16];
    for (;;) {
        z.next_out = reinterpret_cast<Bytef*>(buf);
        z.avail_out = sizeof buf;
        int rc = inflate(&z, Z_NO_FLUSH);
        size_t n = sizeof buf - z.avail_out;
        if (out.size() + n > limit) {
            if (!stop_at_limit) throw StoreError(what + ": larger than " + std::to_string(limit));
            out.append(buf, static_cast<size_t>(limit - out.size()));
            return out;
        }
        out.append(buf, n);
        if (stop_at_limit && out.size() == limit) return out;
        if (rc == Z_STREAM_END) return out;
        if (rc == Z_BUF_ERROR && z.avail_in == 0)
            throw StoreError(what + ": the gzip member is cut short");
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            throw StoreError(what + ": bad gzip data (" + (z.msg ? z.msg : "inflate failed") + ")");
    }
}

std::string base64_decode(const std::string& s, const std::string& what) {
    if (s.size() % 4 != 0) throw StoreError(what + ": not base64");
    std::string out(s.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(s.data()),
                            static_cast<int>(s.size()));
    if (n < 0) throw StoreError(what + ": not base64");
    size_t pad = 0;
    if (!s.empty() && s.back() == '=') pad = s.size() >= 2 && s[s.size() - 2] == '=' ? 2 : 1;
    out.resize(static_cast<size_t>(n) - pad);
    return out;
}

// RFC 3339: "2019-08-20T10:30:43Z", with an optional fraction and a numeric zone.
struct timespec parse_time(const std::string& s, const std::string& what) {
    struct tm tm = {};
    int consumed = 0;
    if (sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6 ||
        consumed != 19)
        throw StoreError(what + ": modtime \"" + s + "\" is not RFC 3339");
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    size_t i = 19;
    long nsec = 0;
    if (i < s.size() && s[i] == '.') {
        long scale = 100000000;
        for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, scale /= 10)
            if (scale > 0) nsec += (s[i] - '0') * scale;
    }
    long zone = 0;
    if (i < s.size() && (s[i] == '+' || s[i] == '-') && s.size() == i + 6 && s[i + 3] == ':') {
        int hh = 0, mm = 0;
        if (sscanf(s.c_str() + i + 1, "%2d:%2d", &hh, &mm) != 2)
            throw StoreError(what + ": modtime \"" + s + "\" is not RFC 3339");
        zone = (s[i] == '-' ? -1 : 1) * (hh * 3600L + mm * 60L);
    } else if (!(i + 1 == s.size() && (s[i] == 'Z' || s[i] == 'z'))) {
        throw StoreError(what + ": modtime \"" + s + "\" is not RFC 3339");
    }
    return {timegm(&tm) - zone, nsec};
}

uint64_t uint_member(const json& j, const char* key, const std::string& what, uint64_t max,
                     uint64_t fallback = 0) {
    int64_t v = int_member(j, key, what, static_cast<int64_t>(fallback));
    if (v < 0 || static_cast<uint64_t>(v) > max)
        throw StoreError(what + ": " + key + " " + std::to_string(v) + " is out of range");
    return static_cast<uint64_t>(v);
}

EntryType parse_type(const std::string& t, const std::string& what) {
    for (const auto& k : kEntryKinds)
        if (t == k.name) return k.type;
    throw StoreError(what + ": unknown type \"" + t + "\"");
}

// The path an entry names, as components; bounded, no "..", no absolute paths.
std::string normal_name(const std::string& name, const std::string& what) {
    if (name.size() > kMaxNameBytes) throw StoreError(what + ": name too long");
    if (name.find('\0') != std::string::npos) throw StoreError(what + ": NUL in name");
    std::vector<std::string> comps;
    try {
        comps = split_entry_path(name);
    } catch (const StoreError& e) {
        throw StoreError(what + ": " + e.what());
    }
    if (comps.size() > kMaxNameDepth) throw StoreError(what + ": path too deep");
    std::string out;
    for (const auto& c : comps) {
        if (c.size() > 255) throw StoreError(what + ": a name component is too long");
        out += (out.empty() ? "" : "/") + c;
    }
    return out;
}

bool valid_chunk_digest(const std::string& d) {
    return is_sha256_digest(d);
}

// A chunk's digest: chunkDigest, or for zstd:chunked a file in one frame its "digest".
std::string chunk_digest_of(const json& j, const std::string& what, TocFormat format) {
    if (format == TocFormat::kZstdChunked && !j.contains("chunkDigest"))
        return string_member(j, "digest", what);
    return string_member(j, "chunkDigest", what);
}

// zstd:chunked may mark a chunk as something other than data (newer writers: "zeros", which
// has no frame); only data chunks are read.
void require_data_chunk(const json& j, const std::string& what) {
    if (std::string t = string_member(j, "chunkType", what); !t.empty() && t != "data")
        throw StoreError(what + ": chunkType \"" + printable(t) + "\" is not read");
}

}  // namespace

const char* format_name(TocFormat format) {
    return format == TocFormat::kZstdChunked ? "zstd:chunked" : "eStargz";
}

std::optional<TocFormat> format_named(std::string_view name) {
    if (name == "estargz") return TocFormat::kEstargz;
    if (name == "zstd:chunked") return TocFormat::kZstdChunked;
    return std::nullopt;
}

std::vector<TocEntry> parse_toc_json(std::string_view text, uint64_t toc_offset, TocFormat format) {
    const std::string label = std::string(format_name(format)) + " TOC";
    std::vector<TocEntry> out;
    std::map<std::string, EntryType> seen;  // normalised name -> type, for hard links
    std::set<uint64_t> member_starts = {toc_offset};
    TocEntry* open_file = nullptr;  // the regular file whose chunks may follow
    uint64_t covered = 0;
    auto close_file = [&](const std::string& what) {
        if (open_file && covered != open_file->size)
            throw StoreError(what + ": the chunks of \"" + printable(open_file->name) +
                             "\" cover " + std::to_string(covered) + " of its " +
                             std::to_string(open_file->size) + " bytes");
        open_file = nullptr;
    };
    // Each element of "entries", in order, as the parser completes it.
    size_t i = 0;
    auto take = [&](const json& j, std::string what) {
        std::string name = string_member(j, "name", what);
        what += " (\"" + printable(name) + "\")";
        std::string norm = normal_name(name, what);
        std::string type = string_member(j, "type", what);
        if (type == "chunk") {
            if (!open_file || normal_name(open_file->name, what) != norm)
                throw StoreError(what + ": a chunk that follows no chunked file of its name");
            Chunk c;
            c.file_offset = uint_member(j, "chunkOffset", what, kMaxFileBytes);
            c.offset = uint_member(j, "offset", what, toc_offset);
            c.size = uint_member(j, "chunkSize", what, kMaxChunkBytes);
            c.digest = string_member(j, "chunkDigest", what);
            require_data_chunk(j, what);
            if (c.file_offset != covered)
                throw StoreError(what + ": chunkOffset " + std::to_string(c.file_offset) +
                                 " leaves a gap or overlap");
            if (c.size == 0) c.size = open_file->size - covered;
            if (c.size == 0 || c.size > kMaxChunkBytes || covered + c.size > open_file->size)
                throw StoreError(what + ": chunk size out of range");
            if (!valid_chunk_digest(c.digest) || c.offset >= toc_offset ||
                c.offset <= open_file->chunks.back().offset)
                throw StoreError(what + ": bad chunkDigest or offset");
            covered += c.size;
            member_starts.insert(c.offset);
            open_file->chunks.push_back(std::move(c));
            return;
        }
        close_file(what);
        if (norm.empty() && type != "dir") throw StoreError(what + ": names the layer root");
        TocEntry e;
        e.name = name;
        e.type = parse_type(type, what);
        e.mode = static_cast<mode_t>(int_member(j, "mode", what, 0) & 07777);
        e.uid = static_cast<uint32_t>(uint_member(j, "uid", what, UINT32_MAX - 1));
        e.gid = static_cast<uint32_t>(uint_member(j, "gid", what, UINT32_MAX - 1));
        if (std::string t = string_member(j, "modtime", what); !t.empty())
            e.mtime = parse_time(t, what);
        e.link_name = string_member(j, "linkName", what);
        if (e.link_name.size() > kMaxNameBytes || e.link_name.find('\0') != std::string::npos)
            throw StoreError(what + ": bad linkName");
        if ((e.type == EntryType::kSymlink || e.type == EntryType::kHardlink) &&
            e.link_name.empty())
            throw StoreError(what + ": a link without linkName");
        if (e.type == EntryType::kHardlink) {
            auto t = seen.find(normal_name(e.link_name, what));
            if (t == seen.end() || t->second == EntryType::kDir)
                throw StoreError(what + ": hard link to \"" + e.link_name +
                                 "\", which is no earlier file");
        }
        if (e.type == EntryType::kChar || e.type == EntryType::kBlock) {
            e.dev_major = static_cast<uint32_t>(uint_member(j, "devMajor", what, 0xfffff));
            e.dev_minor = static_cast<uint32_t>(uint_member(j, "devMinor", what, 0xfffff));
        }
        if (j.contains("xattrs")) {
            const json& x = require_object(j["xattrs"], what + " xattrs");
            size_t total = 0;
            for (const auto& [k, v] : x.items()) {
                if (!v.is_string()) throw StoreError(what + ": xattr " + k + " is not a string");
                std::string value = base64_decode(v.get<std::string>(), what + " xattr " + k);
                total += k.size() + value.size();
                if (total > kMaxXattrBytes || k.empty() || k.find('\0') != std::string::npos)
                    throw StoreError(what + ": xattrs too large or badly named");
                e.xattrs.emplace_back(k, std::move(value));
            }
        }
        if (e.type == EntryType::kReg) {
            e.size = uint_member(j, "size", what, kMaxFileBytes);
            if (e.size > 0) {
                Chunk c;
                c.offset = uint_member(j, "offset", what, toc_offset);
                c.size = uint_member(j, "chunkSize", what, kMaxChunkBytes);
                if (c.size == 0) c.size = e.size;
                c.digest = chunk_digest_of(j, what, format);
                require_data_chunk(j, what);
                if (!valid_chunk_digest(c.digest) || c.offset >= toc_offset)
                    throw StoreError(what + ": bad chunkDigest or offset");
                // zstd:chunked: where the file's last frame ends (the next tar header's frame
                // follows, which no entry names).
                if (format == TocFormat::kZstdChunked) {
                    uint64_t end = uint_member(j, "endOffset", what, toc_offset);
                    if (end != 0 && end <= c.offset)
                        throw StoreError(what + ": endOffset out of range");
                    if (end != 0) member_starts.insert(end);
                }
                if (c.size > kMaxChunkBytes || c.size > e.size)
                    throw StoreError(what + ": chunk size out of range");
                if (uint_member(j, "chunkOffset", what, kMaxFileBytes) != 0)
                    throw StoreError(what + ": the first chunk must start at 0");
                member_starts.insert(c.offset);
                e.chunks.push_back(std::move(c));
            }
        }
        seen[norm] = e.type;
        out.push_back(std::move(e));
        if (out.back().type == EntryType::kReg && out.back().size > 0) {
            open_file = &out.back();
            covered = open_file->chunks.front().size;
        }
        // out may grow and move: open_file is refreshed on every push.
    };
    // A TOC lists every file of a layer: tens of megabytes of JSON for a large image. Its
    // entries are taken one at a time and kept out of the document, never all held as JSON.
    using Event = json::parse_event_t;
    std::string top_key;
    bool in_entries = false, had_entries = false;
    json doc =
        parse_json_limited(text, label, kMaxTocBytes, [&](int depth, Event event, json& parsed) {
            if (depth == 1 && event == Event::key) {
                top_key = parsed.get<std::string>();
            } else if (depth == 1 && event == Event::array_start && top_key == "entries") {
                if (had_entries) throw StoreError(label + ": \"entries\" given twice");
                had_entries = in_entries = true;
            } else if (depth == 1 && event == Event::array_end && in_entries) {
                in_entries = false;
            } else if (in_entries && depth == 2 &&
                       (event == Event::object_end || event == Event::array_end ||
                        event == Event::value)) {
                std::string what = label + " entry " + std::to_string(i);
                if (++i > kMaxTocEntries)
                    throw StoreError(label + ": more than " + std::to_string(kMaxTocEntries) +
                                     " entries");
                take(require_object(parsed, what), std::move(what));
                return false;
            }
            return true;
        });
    require_object(doc, label);
    if (int_member(doc, "version", label, 0) != 1) throw StoreError(label + ": version is not 1");
    array_member(doc, "entries", label);
    close_file(label);
    for (auto& e : out)
        for (auto& c : e.chunks) c.fetch_end = *member_starts.upper_bound(c.offset);
    return out;
}

Toc parse_toc_member(std::string_view member, uint64_t toc_offset,
                     const std::string& expected_digest) {
    // The member holds the TOC's tar header, the JSON and the end-of-archive blocks.
    std::string tar = inflate_member(member, kMaxTocBytes + (64 << 10), false, "eStargz TOC");
    ReadArchive a(archive_read_new());
    archive_read_support_format_tar(a.get());
    if (archive_read_open_memory(a.get(), tar.data(), tar.size()) != ARCHIVE_OK)
        throw StoreError("eStargz TOC: " + archive_error_text(a.get()));
    archive_entry* e;
    if (archive_read_next_header(a.get(), &e) < ARCHIVE_WARN)
        throw StoreError("eStargz TOC: " + archive_error_text(a.get(), "no tar header"));
    const char* name = archive_entry_pathname(e);
    if (!name || std::string_view(name) != kTocName || archive_entry_filetype(e) != AE_IFREG ||
        archive_entry_size(e) < 0 || static_cast<uint64_t>(archive_entry_size(e)) > kMaxTocBytes)
        throw StoreError("eStargz TOC: the member does not hold " + std::string(kTocName));
    Toc toc;
    toc.json.resize(static_cast<size_t>(archive_entry_size(e)));
    if (archive_read_data(a.get(), toc.json.data(), toc.json.size()) !=
        static_cast<la_ssize_t>(toc.json.size()))
        throw StoreError("eStargz TOC: " + archive_error_text(a.get(), "cut short"));
    toc.digest = sha256_digest(toc.json);
    if (!expected_digest.empty() && toc.digest != expected_digest)
        throw StoreError("eStargz TOC digest mismatch: the manifest says " + expected_digest +
                         ", the blob holds " + toc.digest);
    toc.toc_offset = toc_offset;
    toc.self.name = name;
    toc.self.type = EntryType::kReg;
    toc.self.size = toc.json.size();
    toc.self.mode = static_cast<mode_t>(archive_entry_perm(e) & 07777);
    toc.self.uid = static_cast<uint32_t>(archive_entry_uid(e));
    toc.self.gid = static_cast<uint32_t>(archive_entry_gid(e));
    toc.self.mtime = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
    toc.entries = parse_toc_json(toc.json, toc_offset);
    return toc;
}

Toc read_toc(const RangeReader& read, uint64_t blob_size, const std::string& expected_digest) {
    if (blob_size < kFooterSize) throw StoreError("no eStargz footer: the blob is too small");
    uint64_t toc_offset = parse_footer(read(blob_size - kFooterSize, kFooterSize), blob_size);
    uint64_t member = blob_size - kFooterSize - toc_offset;
    if (member > kMaxTocBytes)
        throw StoreError("eStargz TOC: " + std::to_string(member) + " compressed bytes, over " +
                         std::to_string(kMaxTocBytes));
    return parse_toc_member(read(toc_offset, member), toc_offset, expected_digest);
}

void fetch_file(const TocEntry& entry, const RangeReader& read,
                const std::function<void(uint64_t, std::string_view)>& write, TocFormat format) {
    for (const Chunk& c : entry.chunks) {
        // Enough compressed bytes for the chunk even where deflate or zstd expands it (zlib's
        // bound, zstd's ZSTD_COMPRESSBOUND), plus a header with optional fields; never past the
        // next member (zstd:chunked: the file's endOffset).
        uint64_t expansion = format == TocFormat::kZstdChunked ? c.size / 256 : c.size / 1000;
        uint64_t bound = c.size + expansion + (64 << 10);
        uint64_t len = std::min(bound, c.fetch_end - c.offset);
        std::string what =
            "\"" + printable(entry.name) + "\" at offset " + std::to_string(c.file_offset);
        std::string data = format == TocFormat::kZstdChunked
                               ? zstd_chunked::decompress(read(c.offset, len), c.size, true, what)
                               : inflate_member(read(c.offset, len), c.size, true, what);
        if (data.size() != c.size)
            throw StoreError(what + ": the chunk holds " + std::to_string(data.size()) +
                             " bytes, the TOC says " + std::to_string(c.size));
        std::string got = sha256_digest(data);
        if (got != c.digest)
            throw StoreError(what + ": chunk digest mismatch: the TOC says " + c.digest +
                             ", the registry sent " + got);
        write(c.file_offset, data);
    }
}

// ---- Lazy layers -------------------------------------------------------------------------------

namespace {

EntryPtr archive_entry_of(const TocEntry& t) {
    EntryPtr e(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname(e.get(), t.name.c_str());
    archive_entry_set_filetype(e.get(), kind_of(t.type).bits);
    archive_entry_set_perm(e.get(), t.mode);
    archive_entry_set_uid(e.get(), t.uid);
    archive_entry_set_gid(e.get(), t.gid);
    archive_entry_set_mtime(e.get(), t.mtime.tv_sec, t.mtime.tv_nsec);
    if (t.type == EntryType::kReg) archive_entry_set_size(e.get(), static_cast<la_int64_t>(t.size));
    if (t.type == EntryType::kSymlink) archive_entry_set_symlink(e.get(), t.link_name.c_str());
    if (t.type == EntryType::kHardlink) archive_entry_set_hardlink(e.get(), t.link_name.c_str());
    if (t.type == EntryType::kChar || t.type == EntryType::kBlock) {
        archive_entry_set_rdevmajor(e.get(), t.dev_major);
        archive_entry_set_rdevminor(e.get(), t.dev_minor);
    }
    for (const auto& [k, v] : t.xattrs)
        archive_entry_xattr_add_entry(e.get(), k.c_str(), v.data(), v.size());
    return e;
}

// Which regular-file entry's inode each path holds once every entry is applied (-1: none).
class InodeMap {
public:
    void set(const std::string& path, long entry, bool is_dir) {
        if (!is_dir) drop_below(path);
        at_[path] = entry;
    }
    void remove(const std::string& path) {
        drop_below(path);
        at_.erase(path);
    }
    long at(const std::string& path) const {
        auto it = at_.find(path);
        return it == at_.end() ? -1 : it->second;
    }
    // For each entry, one path that holds it.
    std::map<long, std::string> holders() const {
        std::map<long, std::string> out;
        for (const auto& [path, entry] : at_)
            if (entry >= 0) out.emplace(entry, path);
        return out;
    }

private:
    void drop_below(const std::string& path) {
        std::string prefix = path + "/";
        auto it = at_.lower_bound(prefix);
        while (it != at_.end() && it->first.compare(0, prefix.size(), prefix) == 0)
            it = at_.erase(it);
    }
    std::map<std::string, long> at_;
};

// "a/b/c" -> {"a/b/", "c"}; "c" -> {"", "c"}.
std::pair<std::string, std::string> split_last(const std::string& path) {
    size_t cut = path.rfind('/') + 1;  // npos + 1 == 0
    return {path.substr(0, cut), path.substr(cut)};
}

// A placeholder opened for writing its content. An unprivileged store keeps each file's mode, so
// a read-only one (0444, 0555) denies even its owner: the owner then lends itself the write bit
// through a descriptor of that very inode (lent: the mode before), and fill_placeholder's last
// chmod takes it back.
Fd open_placeholder(int root, const std::string& path, std::optional<mode_t>& lent) {
    Fd f = open_beneath(root, path, O_WRONLY);
    if (f || errno != EACCES) return f;
    int saved = errno;
    Fd inode = open_beneath(root, path, O_PATH);
    struct stat st;
    if (!inode || ::fstat(inode.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
        st.st_uid != ::geteuid() || (st.st_mode & S_IWUSR)) {
        errno = saved;
        return Fd();
    }
    std::string link = "/proc/self/fd/" + std::to_string(inode.get());
    if (::chmod(link.c_str(), (st.st_mode & 07777) | S_IWUSR) != 0) return Fd();
    f = Fd(::open(link.c_str(), O_WRONLY | O_CLOEXEC));
    if (f) {
        lent = st.st_mode & 07777;
    } else {
        saved = errno;
        ::chmod(link.c_str(), st.st_mode & 07777);
        errno = saved;
    }
    return f;
}

}  // namespace

std::vector<Placeholder> unpack_toc(const Toc& toc, const std::string& dest_dir,
                                    const UnpackOptions& options, UnpackResult& result) {
    InodeMap inodes;
    size_t next = 0;
    bool self_done = false;
    EntryPtr current(nullptr, archive_entry_free);
    UnpackResult r = unpack_placeholders(
        [&]() -> archive_entry* {
            if (next < toc.entries.size()) {
                const TocEntry& t = toc.entries[next];
                std::string path = normal_name(t.name, t.name);
                auto [dir, base] = split_last(path);
                if (options.mode == UnpackOptions::Mode::Layer && base.starts_with(".wh.")) {
                    if (base != ".wh..wh..opq") inodes.remove(dir + base.substr(4));
                } else if (t.type == EntryType::kHardlink) {
                    inodes.set(path, inodes.at(normal_name(t.link_name, t.name)), false);
                } else {
                    bool has_content = t.type == EntryType::kReg && !t.chunks.empty();
                    inodes.set(path, has_content ? static_cast<long>(next) : -1,
                               t.type == EntryType::kDir);
                }
                current = archive_entry_of(toc.entries[next++]);
                return current.get();
            }
            if (!self_done && toc.format == TocFormat::kEstargz) {
                self_done = true;
                inodes.set(std::string(kTocName), -1, false);
                current = archive_entry_of(toc.self);
                return current.get();
            }
            return nullptr;
        },
        dest_dir, options);
    result.warnings.insert(result.warnings.end(), r.warnings.begin(), r.warnings.end());
    result.content_bytes += r.content_bytes;

    std::vector<Placeholder> out;
    for (const auto& [entry, path] : inodes.holders())
        out.push_back({static_cast<size_t>(entry), path});
    if (toc.format != TocFormat::kEstargz) return out;

    // The TOC's own file, whole.
    Fd root(::open(dest_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("cannot open", dest_dir, errno);
    Fd f = open_beneath(root.get(), std::string(kTocName), O_WRONLY);
    if (!f) throw_errno("cannot open", dest_dir + "/" + std::string(kTocName), errno);
    if (::pwrite(f.get(), toc.json.data(), toc.json.size(), 0) !=
        static_cast<ssize_t>(toc.json.size()))
        throw_errno("cannot write", dest_dir + "/" + std::string(kTocName), errno);
    struct timespec ts[2] = {toc.self.mtime, toc.self.mtime};
    ::futimens(f.get(), ts);
    return out;
}

void fill_placeholder(int layer_root_fd, const Toc& toc, const Placeholder& p,
                      const RangeReader& read, bool sync) {
    const TocEntry& t = toc.entries.at(p.entry);
    std::optional<mode_t> lent;
    Fd f = open_placeholder(layer_root_fd, p.path, lent);
    if (!f) throw_errno("cannot open placeholder", printable(p.path), errno);
    struct stat st;
    if (::fstat(f.get(), &st) != 0) throw_errno("cannot stat", printable(p.path), errno);
    // The image's mode: the one before a write bit was lent for the fill (open_placeholder).
    mode_t mode = lent ? *lent : st.st_mode & 07777;
    if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != t.size) {
        if (lent) ::fchmod(f.get(), mode);
        throw StoreError("placeholder " + printable(p.path) +
                         " is not the file its TOC entry describes");
    }
    // A write clears set-id bits (without CAP_FSETID) and always security.capability, and sets
    // the mtime: put back as the tree had them, also when a later chunk fails after earlier
    // ones were written (the next fill would otherwise take the write's mtime as the tree's).
    std::string proc = "/proc/self/fd/" + std::to_string(f.get());
    auto put_back = [&]() -> std::pair<const char*, int> {
        if (::fchmod(f.get(), mode) != 0) return {"cannot chmod", errno};
        for (const auto& [k, v] : t.xattrs)
            if (k == "security.capability")
                ::setxattr(proc.c_str(), k.c_str(), v.data(), v.size(), 0);
        struct timespec ts[2] = {st.st_mtim, st.st_mtim};
        if (::futimens(f.get(), ts) != 0) return {"cannot set times", errno};
        return {nullptr, 0};
    };
    auto write_at = [&](uint64_t off, std::string_view bytes) {
        size_t done = 0;
        while (done < bytes.size()) {
            ssize_t n = ::pwrite(f.get(), bytes.data() + done, bytes.size() - done,
                                 static_cast<off_t>(off + done));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("cannot write", printable(p.path), errno);
            done += static_cast<size_t>(n);
        }
    };
    try {
        fetch_file(t, read, write_at, toc.format);
    } catch (...) {
        put_back();  // the fetch's error is the one to report
        throw;
    }
    if (sync && ::fsync(f.get()) != 0) {
        int err = errno;
        put_back();
        throw_errno("cannot sync", printable(p.path), err);
    }
    if (auto [what, err] = put_back(); what) throw_errno(what, printable(p.path), err);
}

namespace {

// The gzip stream of a blob, decompressed and hashed as the tar reader takes it: the diff ID is
// the digest of exactly the bytes the entries were read from.
struct HashedStream {
    archive* raw = nullptr;
    Sha256 hash;
    char buf[128 * 1024];
};

la_ssize_t read_hashed(archive*, void* client, const void** out) {
    auto* s = static_cast<HashedStream*>(client);
    la_ssize_t n = archive_read_data(s->raw, s->buf, sizeof s->buf);
    if (n > 0) s->hash.update(s->buf, static_cast<size_t>(n));
    *out = s->buf;
    return n;
}

std::vector<std::pair<std::string, std::string>> xattrs_of(archive_entry* e) {
    std::vector<std::pair<std::string, std::string>> out;
    if (archive_entry_xattr_reset(e) > 0) {
        const char* name;
        const void* value;
        size_t size;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
            out.emplace_back(name, std::string(static_cast<const char*>(value), size));
    }
    // A pax header may carry an xattr twice (SCHILY.xattr and LIBARCHIVE.xattr): once is what
    // extraction sets. Two different values stay two, and do not match the TOC.
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

// The first way a tar entry differs from the TOC's word on it, or "".
std::string difference(archive_entry* e, const TocEntry& t) {
    if (archive_entry_pathname(e) == nullptr || t.name != archive_entry_pathname(e)) return "name";
    if (type_of(e) != t.type) return "type";
    if ((archive_entry_perm(e) & 07777) != t.mode) return "mode";
    if (archive_entry_uid(e) != t.uid || archive_entry_gid(e) != t.gid) return "owner";
    if (archive_entry_mtime_is_set(e) && (archive_entry_mtime(e) != t.mtime.tv_sec ||
                                          archive_entry_mtime_nsec(e) != t.mtime.tv_nsec))
        return "mtime";
    if (t.type == EntryType::kSymlink &&
        (!archive_entry_symlink(e) || t.link_name != archive_entry_symlink(e)))
        return "link target";
    if (t.type == EntryType::kHardlink && t.link_name != archive_entry_hardlink(e))
        return "link target";
    if ((t.type == EntryType::kChar || t.type == EntryType::kBlock) &&
        (archive_entry_rdevmajor(e) != t.dev_major || archive_entry_rdevminor(e) != t.dev_minor))
        return "device";
    if (t.type == EntryType::kReg && static_cast<uint64_t>(archive_entry_size(e)) != t.size)
        return "size";
    auto want = t.xattrs;
    std::sort(want.begin(), want.end());
    if (xattrs_of(e) != want) return "xattrs";
    return "";
}

}  // namespace

std::string check_blob_against_toc(const std::string& blob_path, const Toc& toc) {
    const bool estargz = toc.format == TocFormat::kEstargz;
    std::string what = std::string(format_name(toc.format)) + " blob " + blob_path;
    ReadArchive raw(archive_read_new());
    archive_read_support_filter_gzip(raw.get());
    archive_read_support_filter_zstd(raw.get());
    archive_read_support_format_raw(raw.get());
    archive_entry* e;
    if (archive_read_open_filename(raw.get(), blob_path.c_str(), 1 << 17) != ARCHIVE_OK ||
        archive_read_next_header(raw.get(), &e) != ARCHIVE_OK)
        throw StoreError("cannot read " + what + ": " + archive_error_text(raw.get()));
    if (archive_filter_code(raw.get(), 0) != (estargz ? ARCHIVE_FILTER_GZIP : ARCHIVE_FILTER_ZSTD))
        throw StoreError(what + (estargz ? " is not gzip" : " is not zstd"));
    HashedStream stream;
    stream.raw = raw.get();
    ReadArchive tar(archive_read_new());
    archive_read_support_format_tar(tar.get());
    if (archive_read_open(tar.get(), &stream, nullptr, read_hashed, nullptr) != ARCHIVE_OK)
        throw StoreError("cannot read " + what + " as tar: " + archive_error_text(tar.get()));
    std::string content;
    auto read_content = [&](size_t n) {
        content.resize(n);
        content_of(tar.get(), e)(content.data(), n);
    };
    // eStargz: one tar entry more than the TOC lists, the TOC's own.
    const size_t tar_entries = toc.entries.size() + (estargz ? 1 : 0);
    for (size_t i = 0; i < tar_entries; ++i) {
        int rc = archive_read_next_header(tar.get(), &e);
        if (rc == ARCHIVE_EOF)
            throw StoreError(what + " ends before its TOC's entry " + std::to_string(i));
        if (rc < ARCHIVE_WARN)
            throw StoreError("cannot read " + what + ": " + archive_error_text(tar.get()));
        std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
        if (i == toc.entries.size()) {
            // The TOC's own entry, last, holding exactly the TOC that was checked.
            if (name != kTocName || archive_entry_size(e) < 0 ||
                static_cast<uint64_t>(archive_entry_size(e)) != toc.json.size())
                throw StoreError(what + ": the entry after the TOC's last is \"" + printable(name) +
                                 "\", not the TOC");
            read_content(toc.json.size());
            if (content != toc.json)
                throw StoreError(what + ": its TOC entry is not the TOC it was read by");
            break;
        }
        const TocEntry& t = toc.entries[i];
        if (std::string d = difference(e, t); !d.empty())
            throw StoreError(what + ": tar entry " + std::to_string(i) + " (\"" + printable(name) +
                             "\") differs from its TOC entry in " + d);
        if (t.type != EntryType::kReg) continue;
        for (const Chunk& c : t.chunks) {
            read_content(static_cast<size_t>(c.size));
            if (sha256_digest(content) != c.digest)
                throw StoreError(what + ": \"" + printable(name) + "\" at " +
                                 std::to_string(c.file_offset) +
                                 " does not match its chunk digest");
        }
    }
    if (archive_read_next_header(tar.get(), &e) != ARCHIVE_EOF)
        throw StoreError(what + ": entries follow its TOC's last");
    // The end-of-archive blocks and the footer's empty member (zstd:chunked: its skippable
    // frames give no bytes): hashed, bounded.
    uint64_t after_end = 0;
    for (char sink[65536];;) {
        la_ssize_t n = archive_read_data(raw.get(), sink, sizeof sink);
        if (n < 0) throw StoreError("cannot read " + what + ": " + archive_error_text(raw.get()));
        if (n == 0) break;
        after_end += static_cast<uint64_t>(n);
        if (after_end > (uint64_t(1) << 20))
            throw StoreError(what + ": more than 1 MiB after the end of the tar");
        stream.hash.update(sink, static_cast<size_t>(n));
    }
    return stream.hash.digest();
}

}  // namespace lamina::store::estargz
