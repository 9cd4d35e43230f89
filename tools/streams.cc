// Spooling stdin, copying to stdout and writing a tree as tar for load, import, save and export.
#include "streams.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <vector>

#include "archive_error.h"
#include "error.h"
#include "fsutil.h"

namespace lamina::cli {

using store::archive_error_text;
using store::StoreError;
using store::throw_errno;

namespace {

void write_all(int fd, const char* data, size_t n, const std::string& what) {
    while (n > 0) {
        ssize_t w = ::write(fd, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) throw_errno("cannot write", what, errno);
        data += w;
        n -= static_cast<size_t>(w);
    }
}

void copy_fd(int from, int to, const std::string& from_name, const std::string& to_name) {
    std::vector<char> buf(1 << 17);
    while (true) {
        ssize_t r = ::read(from, buf.data(), buf.size());
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) throw_errno("cannot read", from_name, errno);
        if (r == 0) return;
        write_all(to, buf.data(), static_cast<size_t>(r), to_name);
    }
}

struct ArchiveCloser {
    void operator()(struct archive* a) const { archive_free(a); }
};
using ArchivePtr = std::unique_ptr<struct archive, ArchiveCloser>;

}  // namespace

SpooledStdin::SpooledStdin(const std::string& dir) {
    fd_.reset(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!fd_) {
        std::string tmpl = dir + "/.stdin-XXXXXX";
        fd_.reset(::mkostemp(tmpl.data(), O_CLOEXEC));
        if (!fd_) throw_errno("cannot make a file for stdin in", dir, errno);
        ::unlink(tmpl.c_str());
    }
    copy_fd(STDIN_FILENO, fd_.get(), "stdin", dir);
    if (::lseek(fd_.get(), 0, SEEK_END) == 0)
        throw StoreError("stdin is empty: there is no archive to read");
    path_ = "/proc/self/fd/" + std::to_string(fd_.get());
}

std::string SpooledStdin::as_given(std::string message) const {
    for (size_t pos; (pos = message.find(path_)) != std::string::npos;)
        message.replace(pos, path_.size(), "stdin");
    return message;
}

ScratchDir::ScratchDir(const std::string& dir) {
    std::string tmpl = dir + "/.scratch-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw_errno("cannot make a scratch directory in", dir, errno);
    path_ = tmpl;
}

ScratchDir::~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

void copy_file_to_stdout(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("cannot open", path, errno);
    copy_fd(fd.get(), STDOUT_FILENO, path, "stdout");
}

namespace {

void write_tree_tar_to(const std::string& root, const std::string& top, const std::string& file,
                       const std::string& shown) {
    ArchivePtr w(archive_write_new());
    archive_write_set_format_pax_restricted(w.get());
    int rc = file.empty() ? archive_write_open_fd(w.get(), STDOUT_FILENO)
                          : archive_write_open_filename(w.get(), file.c_str());
    if (rc != ARCHIVE_OK)
        throw StoreError("cannot write " + shown + ": " + archive_error_text(w.get()));
    ArchivePtr disk(archive_read_disk_new());
    archive_read_disk_set_standard_lookup(disk.get());
    archive_read_disk_set_behavior(disk.get(), ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
    if (archive_read_disk_open(disk.get(), root.c_str()) != ARCHIVE_OK)
        throw StoreError("cannot read " + root + ": " + archive_error_text(disk.get()));
    std::vector<char> buf(1 << 17);
    while (true) {
        struct archive_entry* e = archive_entry_new();
        std::unique_ptr<struct archive_entry, void (*)(struct archive_entry*)> owner(
            e, archive_entry_free);
        rc = archive_read_next_header2(disk.get(), e);
        if (rc == ARCHIVE_EOF) break;
        if (rc < ARCHIVE_WARN)
            throw StoreError("cannot read " + root + ": " + archive_error_text(disk.get()));
        std::string path = archive_entry_pathname(e);
        archive_read_disk_descend(disk.get());
        std::string rel;
        if (path == root) {
            if (top.empty()) continue;
            rel = top;
        } else {
            rel = path.substr(root.size() + 1);
            if (!top.empty()) rel = top + "/" + rel;
        }
        archive_entry_set_pathname(e, rel.c_str());
        archive_entry_unset_atime(e);
        archive_entry_unset_ctime(e);
        if (archive_write_header(w.get(), e) < ARCHIVE_WARN)
            throw StoreError("cannot write " + shown + ": " + archive_error_text(w.get()));
        if (archive_entry_filetype(e) != AE_IFREG || archive_entry_size(e) == 0) continue;
        UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd) throw_errno("cannot open", path, errno);
        while (true) {
            ssize_t r = ::read(fd.get(), buf.data(), buf.size());
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) throw_errno("cannot read", path, errno);
            if (r == 0) break;
            if (archive_write_data(w.get(), buf.data(), static_cast<size_t>(r)) < 0)
                throw StoreError("cannot write " + shown + ": " + archive_error_text(w.get()));
        }
    }
    if (archive_write_close(w.get()) != ARCHIVE_OK)
        throw StoreError("cannot write " + shown + ": " + archive_error_text(w.get()));
}

}  // namespace

void unpack_stdin_beneath(const std::string& dir, bool keep_owners, const std::string& what) {
    UniqueFd target(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    UniqueFd back(::open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!target || !back) throw_errno("cannot open", target ? "." : dir, errno);
    ArchivePtr in(archive_read_new());
    archive_read_support_format_tar(in.get());
    archive_read_support_filter_all(in.get());
    if (archive_read_open_fd(in.get(), STDIN_FILENO, 1 << 17) != ARCHIVE_OK)
        throw StoreError(what + ": " + archive_error_text(in.get()));
    struct WriterCloser {
        void operator()(struct archive* a) const { archive_write_free(a); }
    };
    std::unique_ptr<struct archive, WriterCloser> out(archive_write_disk_new());
    int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_ACL |
                ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
    if (keep_owners) flags |= ARCHIVE_EXTRACT_OWNER;
    archive_write_disk_set_options(out.get(), flags);
    // The names are relative to dir; lamina is one thread, so the working directory is its own.
    if (::fchdir(target.get()) != 0) throw_errno("cannot enter", dir, errno);
    std::string error;
    while (error.empty()) {
        struct archive_entry* e = nullptr;
        int rc = archive_read_next_header(in.get(), &e);
        if (rc == ARCHIVE_EOF) break;
        if (rc < ARCHIVE_WARN) {
            error = archive_error_text(in.get());
            break;
        }
        if (archive_write_header(out.get(), e) < ARCHIVE_WARN) {
            error = std::string(archive_entry_pathname(e)) + ": " + archive_error_text(out.get());
            break;
        }
        const void* buf;
        size_t size;
        la_int64_t offset;
        while ((rc = archive_read_data_block(in.get(), &buf, &size, &offset)) == ARCHIVE_OK) {
            if (archive_write_data_block(out.get(), buf, size, offset) < ARCHIVE_WARN) {
                error =
                    std::string(archive_entry_pathname(e)) + ": " + archive_error_text(out.get());
                break;
            }
        }
        if (error.empty() && rc < ARCHIVE_WARN) error = archive_error_text(in.get());
    }
    if (error.empty() && archive_write_close(out.get()) < ARCHIVE_WARN)
        error = archive_error_text(out.get());
    if (::fchdir(back.get()) != 0 && error.empty()) error = strerror(errno);
    if (!error.empty()) throw StoreError(what + ": " + error);
}

void write_tree_tar(const std::string& root, const std::string& out, const std::string& top) {
    if (out.empty()) return write_tree_tar_to(root, top, "", "stdout");
    // Beside out and renamed over it when whole: a failed export leaves no partial tar.
    std::string partial = out + ".partial-" + store::random_hex(8);
    try {
        write_tree_tar_to(root, top, partial, out);
    } catch (...) {
        ::unlink(partial.c_str());
        throw;
    }
    if (::rename(partial.c_str(), out.c_str()) != 0) {
        int e = errno;
        ::unlink(partial.c_str());
        throw_errno("cannot rename into place", out, e);
    }
}

}  // namespace lamina::cli
