// The store lock: flock(2) on <root>/storage.lock, shared for readers and exclusive for writers.
#pragma once

#include <string>

#include "fd.h"

namespace lamina::store {

class StoreLock {
public:
    enum class Mode { Shared, Exclusive };
    // Blocks until the lock is held.
    StoreLock(const std::string& lock_path, Mode mode);
    // Returns an unlocked (false) object instead of blocking when try_only is set and the lock is busy.
    StoreLock(const std::string& lock_path, Mode mode, bool try_only);
    StoreLock(StoreLock&&) = default;
    StoreLock& operator=(StoreLock&&) = default;
    explicit operator bool() const { return static_cast<bool>(fd_); }

private:
    Fd fd_;
};

}  // namespace lamina::store
