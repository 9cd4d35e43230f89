// File-system helpers: every removal and walk is done with *at() calls and O_NOFOLLOW.
#include "fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <set>
#include <utility>
#include <vector>

#include "dirent_reader.h"
#include "error.h"
#include "fd.h"

namespace lamina::store {

Fd open_in_root_dir(int root, const std::string& rel, uint64_t flags, bool inheritable) {
    struct open_how how {};
    how.flags = flags | (inheritable ? 0 : O_CLOEXEC);
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return Fd(static_cast<int>(::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how)));
}

Fd open_beneath(int root, const std::string& path, int flags) {
    struct open_how how = {};
    how.flags = static_cast<uint64_t>(flags | O_NOFOLLOW | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return Fd(static_cast<int>(::syscall(SYS_openat2, root, path.c_str(), &how, sizeof how)));
}

bool sorted_names_at(int dirfd, const std::string& rel, std::vector<std::string>& names) {
    names.clear();
    Fd dir(::openat(dirfd, rel.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) return false;
    int err = for_each_dirent(
        dir.get(), [&](std::string_view name, ino_t, uint8_t) { names.emplace_back(name); });
    if (err) {
        errno = err;
        return false;
    }
    std::sort(names.begin(), names.end());
    return true;
}

void throw_errno(const std::string& what, const std::string& path, int err) {
    throw StoreError(what + " " + path + ": " + strerror(err));
}

std::string read_file(const std::string& path, size_t max_bytes) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("cannot open", path, errno);
    std::string data;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("cannot read", path, errno);
        if (n == 0) break;
        data.append(buf, static_cast<size_t>(n));
        if (data.size() > max_bytes)
            throw StoreError(path + ": larger than " + std::to_string(max_bytes) + " bytes");
    }
    return data;
}

void write_file_atomic(const std::string& path, const std::string& data) {
    std::string tmp = path + ".tmp-" + random_hex(8);
    {
        Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (!fd) throw_errno("cannot create", tmp, errno);
        size_t off = 0;
        while (off < data.size()) {
            ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("cannot write", tmp, errno);
            off += static_cast<size_t>(n);
        }
        if (::fsync(fd.get()) != 0) throw_errno("cannot fsync", tmp, errno);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        throw_errno("cannot rename into place", path, err);
    }
}

void make_dirs(const std::string& path, mode_t mode) {
    if (path.empty()) return;
    size_t pos = 0;
    while (pos != std::string::npos) {
        pos = path.find('/', pos + 1);
        std::string part = path.substr(0, pos);
        if (part.empty()) continue;
        if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST)
            throw_errno("cannot create directory", part, errno);
    }
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw StoreError("cannot create directory " + path + ": not a directory");
}

static void empty_dir_fd(int fd, const std::string& where) {
    int dup_fd = ::dup(fd);
    if (dup_fd < 0) throw_errno("cannot dup", where, errno);
    DIR* d = ::fdopendir(dup_fd);
    if (!d) {
        ::close(dup_fd);
        throw_errno("cannot list", where, errno);
    }
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(d)) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        names.emplace_back(de->d_name);
    }
    ::closedir(d);
    for (const auto& n : names) remove_tree_at(fd, n);
}

void remove_tree_at(int dirfd, const std::string& name) {
    if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) return;
    if (errno != EISDIR && errno != EPERM) throw_errno("cannot remove", name, errno);
    Fd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) {
        if (errno == ENOENT) return;
        throw_errno("cannot open", name, errno);
    }
    // A directory without write or search permission is emptied only after we grant both.
    ::fchmod(sub.get(), 0700);
    empty_dir_fd(sub.get(), name);
    sub.reset();
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
        throw_errno("cannot remove directory", name, errno);
}

void remove_tree(const std::string& path) {
    auto slash = path.rfind('/');
    std::string parent =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    Fd pfd(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!pfd) {
        if (errno == ENOENT) return;
        throw_errno("cannot open", parent, errno);
    }
    try {
        remove_tree_at(pfd.get(), name);
    } catch (const StoreError& e) {
        throw StoreError("cannot remove " + path + ": " + e.what());
    }
}

static uint64_t tree_size_fd(int fd, std::set<std::pair<dev_t, ino_t>>& seen) {
    int dup_fd = ::dup(fd);
    if (dup_fd < 0) return 0;
    DIR* d = ::fdopendir(dup_fd);
    if (!d) {
        ::close(dup_fd);
        return 0;
    }
    uint64_t total = 0;
    while (struct dirent* de = ::readdir(d)) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        struct stat st;
        if (::fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            Fd sub(::openat(fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (sub) total += tree_size_fd(sub.get(), seen);
        } else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
            if (st.st_nlink > 1 && !seen.insert({st.st_dev, st.st_ino}).second) continue;
            total += static_cast<uint64_t>(st.st_size);
        }
    }
    ::closedir(d);
    return total;
}

uint64_t tree_size(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return 0;
    std::set<std::pair<dev_t, ino_t>> seen;
    return tree_size_fd(fd.get(), seen);
}

std::string random_hex(size_t n) {
    std::string bytes((n + 1) / 2, '\0');
    size_t got = 0;
    while (got < bytes.size()) {
        ssize_t r = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) throw_errno("getrandom failed", "", errno);
        got += static_cast<size_t>(r);
    }
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned char c : bytes) {
        s.push_back(digits[c >> 4]);
        s.push_back(digits[c & 15]);
    }
    s.resize(n);
    return s;
}

int64_t now_seconds() {
    return static_cast<int64_t>(::time(nullptr));
}

bool path_exists(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace lamina::store
