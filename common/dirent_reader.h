// Reading a directory with getdents64 into a callback, without a DIR* per directory. Shared by laminafs and the layer store.
#pragma once

#include <dirent.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

namespace lamina {

// Calls fn(name, d_ino, d_type) for every entry but "." and "..". Returns 0 or an errno.
template <class Fn>
int for_each_dirent(int dirfd, Fn&& fn) {
    alignas(struct dirent64) char buf[32768];
    for (;;) {
        long n = syscall(SYS_getdents64, dirfd, buf, sizeof buf);
        if (n < 0) return errno;
        if (n == 0) return 0;
        for (long pos = 0; pos < n;) {
            auto* d = reinterpret_cast<struct dirent64*>(buf + pos);
            pos += d->d_reclen;
            std::string_view name(d->d_name);
            if (name == "." || name == "..") continue;
            fn(name, d->d_ino, d->d_type);
        }
    }
}

}  // namespace lamina
