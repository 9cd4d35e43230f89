// The bounded pool of read descriptors (see read_fds.h).
#include "read_fds.h"

namespace lamina {

ReadFdPool::Fd ReadFdPool::find(const Node* node, bool upper) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(node);
    if (it == entries_.end()) return nullptr;
    if (it->second.upper != upper) {
        lru_.erase(it->second.lru);
        entries_.erase(it);
        return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.fd;
}

ReadFdPool::Fd ReadFdPool::insert(const Node* node, bool upper, UniqueFd fd) {
    std::lock_guard lock(mu_);
    ++opens_;
    auto [it, fresh] = entries_.try_emplace(node);
    Entry& e = it->second;
    if (!fresh) {
        if (e.upper == upper) {
            lru_.splice(lru_.begin(), lru_, e.lru);
            return e.fd;  // fd closes here: the pooled one serves
        }
        lru_.erase(e.lru);
    }
    e.fd = std::make_shared<const UniqueFd>(std::move(fd));
    e.upper = upper;
    lru_.push_front(node);
    e.lru = lru_.begin();
    Fd result = e.fd;
    while (entries_.size() > limit_) {
        entries_.erase(lru_.back());
        lru_.pop_back();
        ++evictions_;
    }
    return result;
}

void ReadFdPool::drop(const Node* node) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(node);
    if (it == entries_.end()) return;
    lru_.erase(it->second.lru);
    entries_.erase(it);
}

ReadFdPool::Stats ReadFdPool::stats() const {
    std::lock_guard lock(mu_);
    return Stats{entries_.size(), limit_, opens_, evictions_};
}

}  // namespace lamina
