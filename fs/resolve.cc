// openat2-based resolution beneath a layer root, in pieces for paths longer than PATH_MAX.
#include "resolve.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace lamina {

namespace {

constexpr uint64_t kResolveFlags = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

int openat2_beneath(int dirfd, const std::string& path, int flags) {
    struct open_how how {};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.resolve = kResolveFlags;
    for (;;) {
        long fd = syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how);
        // EAGAIN: a rename raced with the walk somewhere on the system; the walk is retried.
        if (fd < 0 && errno == EAGAIN) continue;
        return static_cast<int>(fd);
    }
}

}  // namespace

int open_beneath(int dirfd, std::string_view rel, int flags) {
    // Room for the NUL; pieces end at a '/' so no name is split.
    constexpr size_t kPiece = PATH_MAX - 1;
    if (rel.size() <= kPiece)
        return openat2_beneath(dirfd, rel.empty() ? "." : std::string(rel), flags);
    UniqueFd at;
    int from = dirfd;
    while (rel.size() > kPiece) {
        size_t cut = rel.rfind('/', kPiece);
        if (cut == std::string_view::npos || cut == 0) {
            errno = ENAMETOOLONG;
            return -1;
        }
        UniqueFd next(openat2_beneath(from, std::string(rel.substr(0, cut)), O_PATH | O_DIRECTORY));
        if (!next) return -1;
        at = std::move(next);
        from = at.get();
        rel.remove_prefix(cut + 1);
    }
    return openat2_beneath(from, std::string(rel), flags);
}

int locate_beneath(int dirfd, std::string_view rel, Place& out) {
    if (rel.empty()) {
        out.owned.reset();
        out.dirfd = dirfd;
        out.name = ".";
        return 0;
    }
    size_t slash = rel.rfind('/');
    if (slash == std::string_view::npos) {
        out.owned.reset();
        out.dirfd = dirfd;
        out.name.assign(rel);
        return 0;
    }
    out.owned.reset(open_beneath(dirfd, rel.substr(0, slash), O_PATH | O_DIRECTORY));
    if (!out.owned) return errno;
    out.dirfd = out.owned.get();
    out.name.assign(rel.substr(slash + 1));
    return 0;
}

}  // namespace lamina
