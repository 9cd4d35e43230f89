// Tar extraction with openat(O_NOFOLLOW) at every component; OCI whiteouts become overlay ones.
#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <unordered_map>

#include "archive_error.h"
#include "digest.h"
#include "error.h"
#include "fd.h"
#include "fsutil.h"
#include "overlay_names.h"
#include "posix_acl.h"

namespace lamina::store {
namespace {

// The decompressing inner reader feeds the tar parser and hashes what it hands over, so the
// diffID is the digest of exactly the uncompressed bytes that were unpacked.
// It also counts them: a few hundred compressed bytes can expand to gigabytes, so the stream
// stops at the room the store has (libarchive is C, so the error waits in `error` rather than
// being thrown through it).
struct HashingSource {
    archive* raw = nullptr;
    Sha256 hash;
    uint64_t total = 0;
    uint64_t limit = UINT64_MAX;
    std::string limit_reason;
    char buf[128 * 1024];
    std::string error;
};

la_ssize_t read_uncompressed(archive*, void* client, const void** out) {
    auto* src = static_cast<HashingSource*>(client);
    la_ssize_t n = archive_read_data(src->raw, src->buf, sizeof src->buf);
    if (n < 0) {
        src->error = archive_error_text(src->raw, "decompression failed");
        return -1;
    }
    src->total += static_cast<uint64_t>(n);
    if (src->total > src->limit) {
        src->error = "uncompressed data passes " + std::to_string(src->limit) + " bytes, " +
                     src->limit_reason;
        return -1;
    }
    src->hash.update(src->buf, static_cast<size_t>(n));
    *out = src->buf;
    return n;
}

struct Filter {
    int code;
    Compression compression;
    const char* name;
};
constexpr Filter kFilters[] = {{ARCHIVE_FILTER_NONE, kUncompressed, "uncompressed"},
                               {ARCHIVE_FILTER_GZIP, kGzip, "gzip"},
                               {ARCHIVE_FILTER_ZSTD, kZstd, "zstd"},
                               {ARCHIVE_FILTER_BZIP2, kBzip2, "bzip2"},
                               {ARCHIVE_FILTER_XZ, kXz, "xz"}};

std::string compression_names(unsigned set) {
    std::string s;
    for (const auto& f : kFilters)
        if (set & f.compression) s += std::string(s.empty() ? "" : " or ") + f.name;
    return s;
}

// One compression at most, and one the caller accepts: a blob labelled gzip that holds bzip2,
// or gzip inside gzip, is refused before its first entry.
Compression check_compression(archive* raw, unsigned accepted) {
    int filters = archive_filter_count(raw);
    int code = archive_filter_code(raw, 0);
    const char* name = archive_filter_name(raw, 0);
    if (filters > 2)
        throw StoreError(std::string("compressed more than once (") + (name ? name : "?") +
                         " around " + archive_filter_name(raw, 1) + ")");
    for (const auto& f : kFilters)
        if (f.code == code && (accepted & f.compression)) return f.compression;
    throw StoreError(std::string("the data is ") +
                     (code == ARCHIVE_FILTER_NONE ? "uncompressed"
                      : name                      ? name
                                                  : "?") +
                     ", expected " + compression_names(accepted));
}

std::string join(const std::vector<std::string>& comps, size_t n) {
    std::string s;
    for (size_t i = 0; i < n && i < comps.size(); ++i) {
        if (i) s += '/';
        s += comps[i];
    }
    return s;
}

// What an entry says about itself besides its type and content, applied once it exists.
struct Attributes {
    uid_t uid;
    gid_t gid;
    mode_t mode;
    struct timespec mtime;
    std::vector<std::pair<std::string, std::string>> xattrs;
    // Why an ACL in GNU tar's text form could not be converted ("" when none was lost).
    std::string acl_loss;
};

// security.capability goes last: any later chown or xattr change by the kernel's rules would
// drop it, as a chown drops set-id bits.
bool is_capability(const std::string& name) {
    return name == "security.capability";
}

Attributes attributes_of(archive_entry* e, bool with_xattrs) {
    Attributes at{static_cast<uid_t>(archive_entry_uid(e)),
                  static_cast<gid_t>(archive_entry_gid(e)),
                  static_cast<mode_t>(archive_entry_perm(e) & 07777),
                  {archive_entry_mtime(e), archive_entry_mtime_nsec(e)},
                  {}};
    if (!with_xattrs) return at;
    const char* name;
    const void* value;
    size_t size;
    if (archive_entry_xattr_reset(e) > 0) {
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
            // Overlay-private xattrs in an archive would forge whiteouts and redirects.
            if (is_private_xattr(name)) continue;
            at.xattrs.emplace_back(name, std::string(static_cast<const char*>(value), size));
        }
    }
    // GNU tar --acls writes ACLs as text (SCHILY.acl.*): they become the xattrs container tools
    // write, unless the entry carries those too.
    for (bool default_acl : {false, true}) {
        const char* key = default_acl ? kAclDefaultXattr : kAclAccessXattr;
        bool has_xattr = std::any_of(at.xattrs.begin(), at.xattrs.end(),
                                     [&](const auto& x) { return x.first == key; });
        if (has_xattr) continue;
        std::string acl = acl_xattr_from_entry(e, default_acl, at.acl_loss);
        if (!acl.empty()) at.xattrs.emplace_back(key, std::move(acl));
    }
    std::stable_partition(at.xattrs.begin(), at.xattrs.end(),
                          [](const auto& x) { return !is_capability(x.first); });
    return at;
}

// What an unpack could not keep (owners, xattrs, devices), said once per layer, not per entry.
class Losses {
public:
    void add(const std::string& what, const std::string& why) {
        auto& c = counts_[what];
        if (c.n++ == 0) c.why = why;
    }
    std::string summary() const {
        std::string s;
        for (const auto& [what, c] : counts_) {
            if (!s.empty()) s += "; ";
            s += what + " of " + std::to_string(c.n) + (c.n == 1 ? " entry" : " entries") + " (" +
                 c.why + ")";
        }
        return s.empty() ? s : "not kept: " + s;
    }

private:
    struct Count {
        uint64_t n = 0;
        std::string why;
    };
    std::map<std::string, Count> counts_;
};

struct PendingDir {
    std::vector<std::string> comps;
    Attributes attrs;
};

class Extractor {
public:
    Extractor(const std::string& dest, const UnpackOptions& opts, uint64_t room,
              const std::string& source_error)
        : dest_(dest), opts_(opts), free_bytes_(room), source_error_(source_error) {
        root_.reset(::open(dest.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!root_) throw_errno("cannot open", dest, errno);
    }

    void entry(archive* a, archive_entry* e, UnpackResult& result);
    void finish(UnpackResult& result);

private:
    [[noreturn]] void refuse(const std::string& path, const std::string& why) {
        throw StoreError("refusing archive entry \"" + path + "\": " + why);
    }
    // An O_PATH fd of the directory comps[0..n), created (0755) where missing when create is set.
    // Directories opened before are kept open (dirs_), so an entry costs one dup, not a walk.
    Fd open_dir(const std::vector<std::string>& comps, size_t n, bool create,
                const std::string& entry_path);
    void clear_existing(int parent, const std::string& name, bool keep_dir,
                        const std::string& entry_path);
    void apply(int parent, const std::string& name, const Attributes& at, bool symlink,
               const std::string& entry_path);
    void mark_opaque(int dirfd, const std::vector<std::string>& dir_comps,
                     const std::string& entry_path, UnpackResult& result);
    void make_whiteout(int parent, const std::string& name, const std::string& entry_path);
    void write_regular(archive* a, archive_entry* e, int parent, const std::string& name,
                       const std::string& entry_path, UnpackResult& result);

    std::string dest_;
    UnpackOptions opts_;
    Fd root_;
    uint64_t free_bytes_;  // the free space of the store less its reserve
    const std::string& source_error_;
    uint64_t written_ = 0;
    std::vector<PendingDir> dirs_;
    Losses losses_;
    // Directories opened by open_dir, by path ("a/b"; "" is the root): a layer's entries come
    // directory by directory, so most entries find their parent here. Emptied whenever an entry
    // removes anything (a removed directory's descriptor would still work, into nothing), and
    // when it grows past kOpenDirsMax (each holds a descriptor).
    static constexpr size_t kOpenDirsMax = 64;
    std::unordered_map<std::string, Fd> open_dirs_;
};

Fd Extractor::open_dir(const std::vector<std::string>& comps, size_t n, bool create,
                       const std::string& entry_path) {
    // The deepest directory of the path already open, then the walk from there.
    size_t start = n;
    std::string key = join(comps, n);
    auto known = open_dirs_.find(key);
    while (known == open_dirs_.end() && start > 0) {
        --start;
        key.resize(key.size() - comps[start].size() - (start > 0 ? 1 : 0));
        known = open_dirs_.find(key);
    }
    Fd cur(::dup(known != open_dirs_.end() ? known->second.get() : root_.get()));
    if (!cur) refuse(entry_path, std::string("cannot open a directory: ") + strerror(errno));
    if (open_dirs_.size() + (n - start) > kOpenDirsMax) open_dirs_.clear();
    for (size_t i = start; i < n; ++i) {
        const char* c = comps[i].c_str();
        int fd = ::openat(cur.get(), c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && create) {
            if (::mkdirat(cur.get(), c, 0755) != 0 && errno != EEXIST)
                refuse(entry_path,
                       "cannot create directory " + join(comps, i + 1) + ": " + strerror(errno));
            fd = ::openat(cur.get(), c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (fd < 0) {
            if (errno == ENOTDIR || errno == ELOOP)
                refuse(entry_path,
                       "its parent " + join(comps, i + 1) + " is a symlink or not a directory");
            refuse(entry_path, "cannot open " + join(comps, i + 1) + ": " + strerror(errno));
        }
        cur.reset(fd);
        Fd kept(::dup(fd));
        if (kept) open_dirs_.insert_or_assign(join(comps, i + 1), std::move(kept));
    }
    return cur;
}

// A later entry replaces an earlier one of the same name, as tar does; a directory stays when
// the new entry is a directory too (its metadata is updated instead).
void Extractor::clear_existing(int parent, const std::string& name, bool keep_dir,
                               const std::string& entry_path) {
    struct stat st;
    if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;
    if (keep_dir && S_ISDIR(st.st_mode)) return;
    open_dirs_.clear();
    try {
        remove_tree_at(parent, name);
    } catch (const StoreError& err) {
        refuse(entry_path, std::string("cannot replace the earlier entry: ") + err.what());
    }
}

// Owner first, then mode, then xattrs (capability last), then times: the kernel clears set-id
// bits and security.capability on every chown, and the ACL xattrs rewrite the group mode bits,
// so this is the one order that leaves what GNU tar -xp --xattrs leaves.
void Extractor::apply(int parent, const std::string& name, const Attributes& at, bool symlink,
                      const std::string& entry_path) {
    bool layer = opts_.mode == UnpackOptions::Mode::Layer;
    if (layer && ::fchownat(parent, name.c_str(), at.uid, at.gid, AT_SYMLINK_NOFOLLOW) != 0)
        losses_.add("owner", strerror(errno));
    // Symlinks have no mode of their own on Linux.
    if (!symlink && ::fchmodat(parent, name.c_str(), at.mode, 0) != 0)
        refuse(entry_path, std::string("cannot set mode: ") + strerror(errno));
    // The parent is held open, so the name resolves in it and is never followed.
    std::string path = "/proc/self/fd/" + std::to_string(parent) + "/" + name;
    for (const auto& [key, value] : at.xattrs) {
        if (::lsetxattr(path.c_str(), key.c_str(), value.data(), value.size(), 0) == 0) continue;
        if (errno != EPERM && errno != ENOTSUP && errno != EACCES)
            refuse(entry_path, "cannot set xattr " + key + ": " + strerror(errno));
        losses_.add("xattr " + key, strerror(errno));
    }
    if (!at.acl_loss.empty()) losses_.add("POSIX ACL in tar text form (SCHILY.acl)", at.acl_loss);
    struct timespec ts[2] = {at.mtime, at.mtime};
    ::utimensat(parent, name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
}

// Root writes trusted.overlay.opaque (what the kernel reads); others write user.overlay.opaque,
// and where no xattr fits the marker file stays, which laminafs also reads.
void Extractor::mark_opaque(int dirfd, const std::vector<std::string>& dir_comps,
                            const std::string& entry_path, UnpackResult& result) {
    std::string proc = "/proc/self/fd/" + std::to_string(dirfd);
    const char* xattr = opts_.privileged ? kOpaqueXattrs[0] : kOpaqueXattrs[1];
    if (::setxattr(proc.c_str(), xattr, &kOpaque, 1, 0) == 0) return;
    int err = errno;
    Fd f(::openat(dirfd, std::string(kOciOpaqueMarker).c_str(),
                  O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!f) refuse(entry_path, std::string("cannot mark opaque: ") + strerror(err));
    result.warnings.push_back("directory \"" + join(dir_comps, dir_comps.size()) +
                              "\": cannot set " + xattr + " (" + strerror(err) + "); kept the " +
                              std::string(kOciOpaqueMarker) + " marker");
}

// A 0/0 character device needs CAP_MKNOD; without it ".wh.NAME" stays as an empty file.
void Extractor::make_whiteout(int parent, const std::string& target,
                              const std::string& entry_path) {
    if (target.empty() || target == "." || target == ".." || target.find('/') != std::string::npos)
        refuse(entry_path, "whiteout names no file");
    clear_existing(parent, target, false, entry_path);
    if (opts_.privileged && ::mknodat(parent, target.c_str(), S_IFCHR | 0, makedev(0, 0)) == 0)
        return;
    std::string marker = oci_whiteout_name(target);
    clear_existing(parent, marker, false, entry_path);
    Fd f(::openat(parent, marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                  0600));
    if (!f) refuse(entry_path, std::string("cannot create whiteout: ") + strerror(errno));
}

void Extractor::write_regular(archive* a, archive_entry* e, int parent, const std::string& name,
                              const std::string& entry_path, UnpackResult& result) {
    la_int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    if (size < 0) refuse(entry_path, "negative size");
    auto usize = static_cast<uint64_t>(size);
    if (usize > opts_.max_entry_size)
        refuse(entry_path, "size " + std::to_string(usize) + " exceeds the limit of " +
                               std::to_string(opts_.max_entry_size) + " bytes");
    if (free_bytes_ != UINT64_MAX && written_ + usize > free_bytes_)
        refuse(entry_path,
               "size " + std::to_string(usize) +
                   " exceeds the free space of the store filesystem less its reserve (" +
                   std::to_string(free_bytes_ - std::min(free_bytes_, written_)) + " bytes)");
    // Created at once; only a name taken by an earlier entry costs the look at what is there.
    const int create = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    Fd f(::openat(parent, name.c_str(), create, 0600));
    if (!f && errno == EEXIST) {
        clear_existing(parent, name, false, entry_path);
        f.reset(::openat(parent, name.c_str(), create, 0600));
    }
    if (!f) refuse(entry_path, std::string("cannot create: ") + strerror(errno));
    const void* block;
    size_t len;
    la_int64_t offset;
    uint64_t seen = 0;
    // Without an archive the content is left a hole: a placeholder its owner fills later.
    while (a) {
        int rc = archive_read_data_block(a, &block, &len, &offset);
        if (rc == ARCHIVE_EOF) break;
        if (rc < ARCHIVE_WARN)
            refuse(entry_path,
                   "cannot read data: " + (source_error_.empty()
                                               ? archive_error_text(a, "truncated archive")
                                               : source_error_));
        if (offset < 0 || static_cast<uint64_t>(offset) + len > usize)
            refuse(entry_path, "data beyond its size");
        const char* p = static_cast<const char*>(block);
        size_t done = 0;
        while (done < len) {
            ssize_t n = ::pwrite(f.get(), p + done, len - done, offset + static_cast<off_t>(done));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) refuse(entry_path, std::string("cannot write: ") + strerror(errno));
            done += static_cast<size_t>(n);
        }
        seen += len;
    }
    if (::ftruncate(f.get(), size) != 0)
        refuse(entry_path, std::string("cannot size: ") + strerror(errno));
    written_ += usize;
    result.content_bytes += usize;
    f.reset();
    apply(parent, name, attributes_of(e, opts_.mode == UnpackOptions::Mode::Layer), false,
          entry_path);
}

void Extractor::entry(archive* a, archive_entry* e, UnpackResult& result) {
    const char* raw_path = archive_entry_pathname(e);
    std::string entry_path = raw_path ? raw_path : "";
    std::vector<std::string> comps;
    try {
        comps = split_entry_path(entry_path);
    } catch (const StoreError& err) {
        refuse(entry_path, err.what());
    }
    if (comps.empty()) return;  // "./" itself: the layer root keeps the store's permissions
    const std::string name = comps.back();
    bool plain = opts_.mode == UnpackOptions::Mode::Plain;
    mode_t type = archive_entry_filetype(e);
    const char* hardlink = archive_entry_hardlink(e);

    Fd parent = open_dir(comps, comps.size() - 1, true, entry_path);
    if (!plain && name == kOciOpaqueMarker) {
        std::vector<std::string> dir_comps(comps.begin(), comps.end() - 1);
        mark_opaque(parent.get(), dir_comps, entry_path, result);
        return;
    }
    if (!plain && name.starts_with(kOciWhiteoutPrefix)) {
        make_whiteout(parent.get(), name.substr(kOciWhiteoutPrefix.size()), entry_path);
        return;
    }

    if (hardlink) {
        std::vector<std::string> tcomps;
        try {
            tcomps = split_entry_path(hardlink);
        } catch (const StoreError& err) {
            refuse(entry_path, std::string("hard link target \"") + hardlink + "\": " + err.what());
        }
        if (tcomps.empty()) refuse(entry_path, "hard link to the layer root");
        Fd tparent = open_dir(tcomps, tcomps.size() - 1, false, entry_path);
        struct stat st;
        if (::fstatat(tparent.get(), tcomps.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
            refuse(entry_path,
                   std::string("hard link target \"") + hardlink + "\" is not in this layer");
        if (S_ISDIR(st.st_mode)) refuse(entry_path, "hard link to a directory");
        if (tcomps == comps) return;
        clear_existing(parent.get(), name, false, entry_path);
        if (::linkat(tparent.get(), tcomps.back().c_str(), parent.get(), name.c_str(), 0) != 0)
            refuse(entry_path, std::string("cannot link: ") + strerror(errno));
        return;
    }

    switch (type) {
        case AE_IFDIR: {
            clear_existing(parent.get(), name, true, entry_path);
            if (::mkdirat(parent.get(), name.c_str(), 0700) != 0 && errno != EEXIST)
                refuse(entry_path, std::string("cannot create directory: ") + strerror(errno));
            // All of a directory's attributes wait for finish(): a default ACL set now would be
            // inherited by the entries still to come, and a read-only mode would refuse them.
            dirs_.push_back({comps, attributes_of(e, !plain)});
            return;
        }
        case AE_IFREG:
            write_regular(a, e, parent.get(), name, entry_path, result);
            return;
        case AE_IFLNK: {
            const char* target = archive_entry_symlink(e);
            if (!target || !*target) refuse(entry_path, "symlink without a target");
            clear_existing(parent.get(), name, false, entry_path);
            if (::symlinkat(target, parent.get(), name.c_str()) != 0)
                refuse(entry_path, std::string("cannot create symlink: ") + strerror(errno));
            apply(parent.get(), name, attributes_of(e, !plain), true, entry_path);
            return;
        }
        case AE_IFCHR:
        case AE_IFBLK:
        case AE_IFIFO: {
            if (plain) refuse(entry_path, "device or fifo in an image archive");
            dev_t dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
            bool whiteout = type == AE_IFCHR && dev == 0;
            clear_existing(parent.get(), name, false, entry_path);
            if (type != AE_IFIFO && !opts_.privileged) {
                if (whiteout) {
                    make_whiteout(parent.get(), name, entry_path);
                } else {
                    losses_.add("device node", "creating devices needs root");
                }
                return;
            }
            mode_t kind = type == AE_IFCHR ? S_IFCHR : type == AE_IFBLK ? S_IFBLK : S_IFIFO;
            if (::mknodat(parent.get(), name.c_str(), kind | 0600, dev) != 0)
                refuse(entry_path, std::string("cannot create node: ") + strerror(errno));
            apply(parent.get(), name, attributes_of(e, true), false, entry_path);
            return;
        }
        default:
            refuse(entry_path, "unsupported entry type");
    }
}

// Directory modes and times are applied last and deepest first: a read-only directory must still
// take its children, and writing children moves the parent's mtime.
void Extractor::finish(UnpackResult& result) {
    std::stable_sort(dirs_.begin(), dirs_.end(), [](const PendingDir& x, const PendingDir& y) {
        return x.comps.size() > y.comps.size();
    });
    for (auto& pd : dirs_) {
        std::string path = join(pd.comps, pd.comps.size());
        Fd parent = open_dir(pd.comps, pd.comps.size() - 1, false, path);
        const std::string& name = pd.comps.back();
        struct stat st;
        if (::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        // Unprivileged, the store must still be able to read and remove what it unpacked.
        if (!opts_.privileged) pd.attrs.mode |= 0700;
        apply(parent.get(), name, pd.attrs, false, path);
    }
    if (std::string lost = losses_.summary(); !lost.empty()) result.warnings.push_back(lost);
}

}  // namespace

std::vector<std::string> split_entry_path(const std::string& raw) {
    if (raw.empty()) throw StoreError("empty path");
    if (raw[0] == '/') throw StoreError("absolute path");
    std::vector<std::string> comps;
    size_t pos = 0;
    while (pos <= raw.size()) {
        size_t slash = raw.find('/', pos);
        if (slash == std::string::npos) slash = raw.size();
        std::string c = raw.substr(pos, slash - pos);
        if (c == "..") throw StoreError("path has a \"..\" component");
        if (!c.empty() && c != ".") comps.push_back(std::move(c));
        pos = slash + 1;
    }
    return comps;
}

UnpackResult unpack_placeholders(const EntryFeed& next, const std::string& dest_dir,
                                 const UnpackOptions& opts) {
    std::string no_source_error;
    Extractor ex(dest_dir, opts, UINT64_MAX, no_source_error);
    UnpackResult result;
    while (archive_entry* e = next()) ex.entry(nullptr, e, result);
    ex.finish(result);
    return result;
}

uint64_t default_free_space_reserve(uint64_t filesystem_bytes) {
    return std::min(filesystem_bytes / 20, uint64_t(256) << 20);
}

UnpackResult unpack_tar(const std::string& archive_path, const std::string& dest_dir,
                        const UnpackOptions& opts) {
    // O_NONBLOCK: a FIFO must be refused, not waited on; it changes nothing for a regular file.
    Fd source(::open(archive_path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!source) throw_errno("cannot open", archive_path, errno);
    struct stat st;
    if (::fstat(source.get(), &st) != 0) throw_errno("cannot stat", archive_path, errno);
    if (!S_ISREG(st.st_mode))
        throw StoreError("cannot read " + archive_path + ": not a regular file");
    ReadArchive raw(archive_read_new());
    archive_read_support_filter_all(raw.get());
    archive_read_support_format_raw(raw.get());
    if (archive_read_open_fd(raw.get(), source.get(), 1 << 17) != ARCHIVE_OK)
        throw StoreError("cannot open " + archive_path + ": " + archive_error_text(raw.get()));
    archive_entry* raw_entry;
    HashingSource src;
    src.raw = raw.get();
    UnpackResult result;
    int rc = archive_read_next_header(raw.get(), &raw_entry);
    if (rc == ARCHIVE_EOF) throw StoreError("cannot read " + archive_path + ": empty file");
    if (rc < ARCHIVE_WARN)
        throw StoreError("cannot read " + archive_path + ": " + archive_error_text(raw.get()));
    try {
        result.compression = check_compression(raw.get(), opts.compressions);
    } catch (const StoreError& e) {
        throw StoreError("cannot read " + archive_path + ": " + e.what());
    }

    uint64_t room = UINT64_MAX;
    struct statvfs vfs;
    if (::statvfs(dest_dir.c_str(), &vfs) == 0) {
        uint64_t free_bytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
        uint64_t reserve = opts.reserve_bytes.value_or(
            default_free_space_reserve(uint64_t(vfs.f_blocks) * vfs.f_frsize));
        room = free_bytes > reserve ? free_bytes - reserve : 0;
        src.limit = room;
        src.limit_reason = "the free space of the store filesystem (" + std::to_string(free_bytes) +
                           ") less its reserve (" + std::to_string(reserve) + ")";
    }

    ReadArchive tar(archive_read_new());
    archive_read_support_format_tar(tar.get());
    if (archive_read_open(tar.get(), &src, nullptr, read_uncompressed, nullptr) != ARCHIVE_OK)
        throw StoreError("cannot read " + archive_path + " as tar: " +
                         (src.error.empty() ? archive_error_text(tar.get()) : src.error));
    Extractor ex(dest_dir, opts, room, src.error);
    archive_entry* e;
    for (;;) {
        rc = archive_read_next_header(tar.get(), &e);
        if (rc == ARCHIVE_EOF) break;
        if (rc < ARCHIVE_WARN) {
            std::string why =
                !src.error.empty() ? src.error : archive_error_text(tar.get(), "bad header");
            throw StoreError("cannot read " + archive_path + ": " + why);
        }
        ex.entry(tar.get(), e, result);
    }
    ex.finish(result);
    // Padding after the end-of-archive blocks is part of the layer's digest too, but only so
    // much of it: past that it is a stream that could run on without end.
    char sink[65536];
    uint64_t after_end = 0;
    for (;;) {
        la_ssize_t n = archive_read_data(raw.get(), sink, sizeof sink);
        if (n < 0)
            throw StoreError("cannot read " + archive_path + ": " + archive_error_text(raw.get()));
        if (n == 0) break;
        after_end += static_cast<uint64_t>(n);
        if (after_end > kMaxBytesAfterTarEnd)
            throw StoreError("cannot read " + archive_path + ": more than " +
                             std::to_string(kMaxBytesAfterTarEnd) +
                             " bytes after the end of the tar");
        src.hash.update(sink, static_cast<size_t>(n));
    }
    result.diff_id = src.hash.digest();
    return result;
}

}  // namespace lamina::store
