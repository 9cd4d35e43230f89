// The deterministic layer tar of `lamina commit`: overlay whiteouts turned back into OCI form.
#include "layer_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "archive_error.h"
#include "digest.h"
#include "error.h"
#include "fd.h"
#include "fsutil.h"
#include "overlay_names.h"
#include "posix_acl.h"

namespace lamina::store {

namespace {

struct Sink {
    Fd fd;
    Sha256 hash;
    std::string path;
    std::string error;
};

la_ssize_t sink_write(archive*, void* client, const void* buf, size_t len) {
    auto* s = static_cast<Sink*>(client);
    const char* p = static_cast<const char*>(buf);
    size_t done = 0;
    while (done < len) {
        ssize_t n = ::write(s->fd.get(), p + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            s->error = strerror(errno);
            return -1;
        }
        done += static_cast<size_t>(n);
    }
    s->hash.update(buf, len);
    return static_cast<la_ssize_t>(len);
}

struct EntryDeleter {
    void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using EntryPtr = std::unique_ptr<archive_entry, EntryDeleter>;

std::vector<std::string> sorted_names(int dirfd) {
    std::vector<std::string> names;
    if (!sorted_names_at(dirfd, ".", names))
        throw StoreError(std::string("cannot list a directory of the writable layer: ") +
                         strerror(errno));
    return names;
}

class TarWriter {
public:
    TarWriter(archive* a, const std::string& upper) : a_(a), upper_(upper) {}

    void walk(int dirfd, const std::string& rel) {
        for (const auto& n : sorted_names(dirfd)) {
            std::string path = rel.empty() ? n : rel + "/" + n;
            struct stat st;
            if (::fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
                throw StoreError("cannot stat " + upper_ + "/" + path + ": " + strerror(errno));
            if (is_whiteout_at(dirfd, n, st)) {
                marker(rel.empty() ? oci_whiteout_name(n) : rel + "/" + oci_whiteout_name(n));
                continue;
            }
            if (S_ISSOCK(st.st_mode)) continue;  // sockets do not travel in layers
            if (S_ISDIR(st.st_mode)) {
                if (redirect_at(dirfd, n))
                    throw StoreError("cannot commit " + upper_ + "/" + path +
                                     ": a redirected (renamed) directory has no OCI form");
                Fd sub(::openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
                if (!sub)
                    throw StoreError("cannot open " + upper_ + "/" + path + ": " + strerror(errno));
                entry(dirfd, n, path, st, sub.get());
                if (is_opaque_at(dirfd, n)) marker(path + "/" + std::string(kOciOpaqueMarker));
                walk(sub.get(), path);
                continue;
            }
            entry(dirfd, n, path, st, -1);
        }
    }

private:
    void write_header(archive_entry* e, const std::string& path) {
        if (archive_write_header(a_, e) != ARCHIVE_OK)
            throw StoreError("cannot write tar entry " + path + ": " + archive_error_text(a_));
    }

    void marker(const std::string& path) {
        EntryPtr e(archive_entry_new());
        archive_entry_set_pathname(e.get(), path.c_str());
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_perm(e.get(), 0644);
        archive_entry_set_size(e.get(), 0);
        archive_entry_set_mtime(e.get(), 0, 0);
        write_header(e.get(), path);
    }

    void add_xattrs(archive_entry* e, int fd) {
        std::string proc = "/proc/self/fd/" + std::to_string(fd);
        char names[65536];
        ssize_t len = ::listxattr(proc.c_str(), names, sizeof names);
        if (len <= 0) return;
        std::vector<std::string> keys;
        for (ssize_t off = 0; off < len; off += static_cast<ssize_t>(strlen(names + off)) + 1)
            keys.emplace_back(names + off);
        std::sort(keys.begin(), keys.end());
        for (const auto& k : keys) {
            if (is_private_xattr(k)) continue;
            char value[65536];
            ssize_t vlen = ::getxattr(proc.c_str(), k.c_str(), value, sizeof value);
            if (vlen < 0) continue;
            archive_entry_xattr_add_entry(e, k.c_str(), value, static_cast<size_t>(vlen));
            // ACLs also in GNU tar's text form, which `tar --acls` reads.
            if (k == kAclAccessXattr || k == kAclDefaultXattr)
                add_acl_to_entry(e, std::string(value, static_cast<size_t>(vlen)),
                                 k == kAclDefaultXattr);
        }
    }

    void entry(int dirfd, const std::string& name, const std::string& path, const struct stat& st,
               int open_dir) {
        EntryPtr e(archive_entry_new());
        archive_entry_set_pathname(e.get(), path.c_str());
        archive_entry_set_uid(e.get(), st.st_uid);
        archive_entry_set_gid(e.get(), st.st_gid);
        archive_entry_set_perm(e.get(), st.st_mode & 07777);
        archive_entry_set_mtime(e.get(), st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
        Fd fd;
        if (S_ISREG(st.st_mode) && st.st_nlink > 1) {
            auto key = std::make_pair(st.st_dev, st.st_ino);
            auto it = links_.find(key);
            if (it != links_.end()) {
                archive_entry_set_filetype(e.get(), AE_IFREG);
                archive_entry_set_hardlink(e.get(), it->second.c_str());
                archive_entry_set_size(e.get(), 0);
                write_header(e.get(), path);
                return;
            }
            links_[key] = path;
        }
        if (S_ISREG(st.st_mode)) {
            fd.reset(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!fd)
                throw StoreError("cannot open " + upper_ + "/" + path + ": " + strerror(errno));
            archive_entry_set_filetype(e.get(), AE_IFREG);
            archive_entry_set_size(e.get(), st.st_size);
            add_xattrs(e.get(), fd.get());
        } else if (S_ISDIR(st.st_mode)) {
            archive_entry_set_filetype(e.get(), AE_IFDIR);
            add_xattrs(e.get(), open_dir);
        } else if (S_ISLNK(st.st_mode)) {
            std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
            ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
            if (n < 0)
                throw StoreError("cannot read link " + upper_ + "/" + path + ": " +
                                 strerror(errno));
            target.resize(static_cast<size_t>(n));
            archive_entry_set_filetype(e.get(), AE_IFLNK);
            archive_entry_set_symlink(e.get(), target.c_str());
        } else {
            archive_entry_set_filetype(e.get(), S_ISCHR(st.st_mode)   ? AE_IFCHR
                                                : S_ISBLK(st.st_mode) ? AE_IFBLK
                                                                      : AE_IFIFO);
            archive_entry_set_rdev(e.get(), st.st_rdev);
        }
        write_header(e.get(), path);
        if (!fd) return;
        char buf[1 << 16];
        int64_t left = st.st_size;
        while (left > 0) {
            ssize_t n =
                ::read(fd.get(), buf, static_cast<size_t>(std::min<int64_t>(left, sizeof buf)));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0)
                throw StoreError("cannot read " + upper_ + "/" + path +
                                 ": changed while committing");
            if (archive_write_data(a_, buf, static_cast<size_t>(n)) != n)
                throw StoreError("cannot write tar data for " + path + ": " +
                                 archive_error_text(a_));
            left -= n;
        }
    }

    archive* a_;
    std::string upper_;
    std::map<std::pair<dev_t, ino_t>, std::string> links_;
};

}  // namespace

std::string write_layer_tar(const std::string& upper_dir, const std::string& out_path) {
    Sink sink;
    sink.path = out_path;
    sink.fd.reset(::open(out_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!sink.fd) throw StoreError("cannot create " + out_path + ": " + strerror(errno));
    WriteArchive a(archive_write_new());
    archive_write_set_format_pax_restricted(a.get());
    archive_write_set_bytes_per_block(a.get(), 10240);
    if (archive_write_open(a.get(), &sink, nullptr, sink_write, nullptr) != ARCHIVE_OK)
        throw StoreError("cannot write " + out_path + ": " + archive_error_text(a.get()));
    Fd root(::open(upper_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw StoreError("cannot open " + upper_dir + ": " + strerror(errno));
    TarWriter(a.get(), upper_dir).walk(root.get(), "");
    if (archive_write_close(a.get()) != ARCHIVE_OK)
        throw StoreError("cannot finish " + out_path + ": " +
                         (sink.error.empty() ? archive_error_text(a.get()) : sink.error));
    if (::fsync(sink.fd.get()) != 0)
        throw StoreError("cannot fsync " + out_path + ": " + strerror(errno));
    return sink.hash.digest();
}

}  // namespace lamina::store
