// The bounded pool of descriptors behind read-only file handles.
//
// Every file the kernel holds open is a handle in the daemon, and a process that maps thousands
// of files holds thousands of handles long after it closed its own descriptors. Write handles
// keep a descriptor each; read-only handles keep none and borrow one from this pool, keyed by
// node, for the length of one request. The pool holds at most `limit` idle descriptors and closes
// the least recently used ones beyond that; a borrowed descriptor stays open until it is given
// back, even when evicted meanwhile. A node's entry also remembers which copy it opened (lower
// or upper), so a handle follows a copy-up on its next read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "unique_fd.h"

namespace lamina {

struct Node;

class ReadFdPool {
public:
    using Fd = std::shared_ptr<const UniqueFd>;

    explicit ReadFdPool(size_t limit) : limit_(limit < 1 ? 1 : limit) {}

    // The pooled descriptor of node's copy in the upper layer (upper) or a lower one, or null.
    // An entry for the other copy is stale (a copy-up happened) and goes.
    Fd find(const Node* node, bool upper);
    // Pools fd as node's descriptor and returns the one to use: an entry another thread added
    // for the same copy meanwhile wins, and fd is closed.
    Fd insert(const Node* node, bool upper, UniqueFd fd);
    // Forgets node's descriptor: its last handle is gone.
    void drop(const Node* node);

    struct Stats {
        size_t entries = 0;
        size_t limit = 0;
        uint64_t opens = 0;      // descriptors opened for the pool
        uint64_t evictions = 0;  // closed early because the pool was full
    };
    Stats stats() const;

private:
    struct Entry {
        Fd fd;
        bool upper = false;
        std::list<const Node*>::iterator lru;
    };
    mutable std::mutex mu_;
    std::unordered_map<const Node*, Entry> entries_;
    std::list<const Node*> lru_;  // most recently used first
    size_t limit_;
    uint64_t opens_ = 0;
    uint64_t evictions_ = 0;
};

}  // namespace lamina
