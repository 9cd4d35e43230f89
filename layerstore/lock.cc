// flock(2) on a file that is never removed, so every process locks the same inode.
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>

#include "error.h"

namespace lamina::store {

StoreLock::StoreLock(const std::string& lock_path, Mode mode) : StoreLock(lock_path, mode, false) {}

StoreLock::StoreLock(const std::string& lock_path, Mode mode, bool try_only) {
    Fd fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) throw_errno("cannot open store lock", lock_path, errno);
    int op = (mode == Mode::Exclusive ? LOCK_EX : LOCK_SH) | (try_only ? LOCK_NB : 0);
    while (::flock(fd.get(), op) != 0) {
        if (errno == EINTR) continue;
        if (errno == EWOULDBLOCK && try_only) return;
        throw_errno("cannot lock", lock_path, errno);
    }
    fd_ = std::move(fd);
}

}  // namespace lamina::store
