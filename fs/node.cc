// The node table: lookup references, FORGET, renames and the xxHash-keyed name index.
#include "node.h"

#include <sys/random.h>
#include <xxhash.h>

#include <ctime>

#include "dir_index.h"

namespace lamina {

OnceFd::~OnceFd() {
    reset();
}

void OnceFd::reset() {
    int fd = fd_.exchange(-1, std::memory_order_acq_rel);
    if (fd >= 0) {
        ::close(fd);
        live_.fetch_sub(1, std::memory_order_relaxed);
    }
}

bool OnceFd::set(UniqueFd& fd) {
    int expected = -1;
    if (!fd || !fd_.compare_exchange_strong(expected, fd.get(), std::memory_order_acq_rel))
        return false;
    fd.release();
    live_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

uint64_t make_ino(LayerNo layer, ino_t real_ino) {
    constexpr int kShift = 56;
    constexpr uint64_t kLowMask = (uint64_t{1} << kShift) - 1;
    uint64_t real = static_cast<uint64_t>(real_ino);
    if (real > kLowMask) real = XXH3_64bits(&real, sizeof real) & kLowMask;
    return (static_cast<uint64_t>(layer) << kShift) | real;
}

size_t NodeTable::Hash::hash(const Node* parent, std::string_view name) {
    return XXH3_64bits_withSeed(name.data(), name.size(), reinterpret_cast<uintptr_t>(parent));
}

NodeTable::NodeTable() : root_(std::make_unique<Node>()) {
    root_->type = S_IFDIR;
    root_->nlookup = 1;
    if (getrandom(&generation_key_, sizeof generation_key_, GRND_NONBLOCK) !=
        static_cast<ssize_t>(sizeof generation_key_)) {
        timespec now{};
        clock_gettime(CLOCK_REALTIME, &now);
        generation_key_ = static_cast<uint64_t>(now.tv_nsec) ^
                          (static_cast<uint64_t>(now.tv_sec) << 20) ^
                          static_cast<uint64_t>(getpid());
    }
}

uint32_t NodeTable::next_generation_locked() {
    uint64_t n = ++generation_counter_;
    auto g = static_cast<uint32_t>(XXH3_64bits_withSeed(&n, sizeof n, generation_key_));
    return g ? g : 1;  // 0 is the root's
}

NodeTable::~NodeTable() = default;

Node* NodeTable::find_or_insert(Node* parent, std::string_view name, std::unique_ptr<Node>& fresh) {
    std::lock_guard lock(mu_);
    if (auto it = by_name_.find(KeyView{parent, name}); it != by_name_.end()) {
        it->second->nlookup++;
        unretire_chain_locked(it->second);
        return it->second;
    }
    Node* node = fresh.get();
    node->parent = parent;
    node->name.assign(name);
    node->nlookup = 1;
    node->generation = next_generation_locked();
    parent->children++;
    parent->active_children++;
    by_name_.emplace(Key{parent, std::string(name)}, node);
    owned_.emplace(node, std::move(fresh));
    return node;
}

Node* NodeTable::insert_unnamed(Node* parent, std::unique_ptr<Node>& fresh) {
    std::lock_guard lock(mu_);
    Node* node = fresh.get();
    node->parent = parent;
    node->name.clear();
    node->nlookup = 1;
    node->generation = next_generation_locked();
    node->unlinked = true;
    parent->children++;
    parent->active_children++;
    owned_.emplace(node, std::move(fresh));
    return node;
}

Node* NodeTable::find(Node* parent, std::string_view name) {
    std::lock_guard lock(mu_);
    auto it = by_name_.find(KeyView{parent, name});
    return it == by_name_.end() ? nullptr : it->second;
}

bool NodeTable::find_ino(Node* parent, std::string_view name, uint64_t& ino) {
    std::lock_guard lock(mu_);
    auto it = by_name_.find(KeyView{parent, name});
    if (it == by_name_.end()) return false;
    ino = it->second->ino;
    return true;
}

bool NodeTable::hashed_locked(Node* node) {
    if (!node->parent) return false;
    auto it = by_name_.find(KeyView{node->parent, node->name});
    return it != by_name_.end() && it->second == node;
}

void NodeTable::release_locked(Node* node) {
    while (node && node != root_.get() && node->nlookup == 0 && node->children == 0 &&
           !node->retired) {
        if (hashed_locked(node)) by_name_.erase(by_name_.find(KeyView{node->parent, node->name}));
        Node* parent = node->parent;
        parent->children--;
        parent->active_children--;  // freed nodes are never retired ones (evicted first)
        drop_upper_ino_locked(node);
        drop_index_locked(node);
        owned_.erase(node);
        released_.fetch_add(1, std::memory_order_relaxed);
        node = parent;
    }
}

// A node the kernel no longer holds may be retired: named, not unlinked, and nothing active
// beneath it. Retiring one can make its parent retirable too (the kernel forgets children first).
static bool retirable(const Node* node, size_t limit) {
    return limit > 0 && node->parent && node->nlookup == 0 && node->active_children == 0 &&
           !node->retired && !node->unlinked;
}

void NodeTable::forget(Node* node, uint64_t n) {
    std::lock_guard lock(mu_);
    node->nlookup = n >= node->nlookup ? 0 : node->nlookup - n;
    if (retirable(node, retired_limit_) && hashed_locked(node))
        retire_locked(node);
    else
        release_locked(node);
}

// A retired node keeps its name and what it is, not what serves requests: its lower listing
// (built again if the node comes back) and the descriptor of its upper copy (found again by path
// and inode). No request can be using them: the kernel sends none for a node it forgot, and
// none can come through a child, as none is active.
void NodeTable::retire_locked(Node* node) {
    for (Node* n = node; n && n != root_.get() && retirable(n, retired_limit_) && hashed_locked(n);
         n = n->parent) {
        drop_index_locked(n);
        n->upper_dir.reset();
        retired_.push_front(n);
        n->retired_it = retired_.begin();
        n->retired = true;
        n->parent->active_children--;
    }
    evict_retired_locked();
}

void NodeTable::unretire_locked(Node* node) {
    if (!node->retired) return;
    retired_.erase(node->retired_it);
    node->retired = false;
    node->parent->active_children++;
}

void NodeTable::unretire_chain_locked(Node* node) {
    // An active node has no retired ancestor: the walk stops at the first active one.
    for (Node* n = node; n && n->retired; n = n->parent) unretire_locked(n);
}

// Frees the oldest retired nodes past the limit. One with children (all retired) waits until
// they go: the oldest without any goes instead.
void NodeTable::evict_retired_locked() {
    while (retired_.size() > retired_limit_) {
        auto it = std::prev(retired_.end());
        while ((*it)->children > 0 && it != retired_.begin()) --it;
        Node* oldest = *it;
        if (oldest->children > 0) break;  // cannot happen: a retired leaf always exists
        unretire_locked(oldest);
        release_locked(oldest);
    }
}

void NodeTable::set_retired_limit(size_t nodes) {
    std::lock_guard lock(mu_);
    retired_limit_ = nodes;
    evict_retired_locked();
}

Node* NodeTable::revive(uint64_t id) {
    std::lock_guard lock(mu_);
    Node* node = root_.get();
    if (id != kRootId) {
        // Never dereferenced before the table vouches for it.
        auto it = owned_.find(reinterpret_cast<Node*>(static_cast<uintptr_t>(id)));
        if (it == owned_.end()) return nullptr;
        node = it->first;
        if (node->unlinked || node->superseded || !hashed_locked(node)) return nullptr;
    }
    node->nlookup++;
    unretire_chain_locked(node);
    return node;
}

Node* NodeTable::revive_parent(Node* dir) {
    std::lock_guard lock(mu_);
    Node* parent = dir->parent ? dir->parent : root_.get();
    if (dir->unlinked) return nullptr;
    parent->nlookup++;
    unretire_chain_locked(parent);
    return parent;
}

void NodeTable::unhash(Node* node) {
    std::lock_guard lock(mu_);
    node->unlinked = true;
    if (hashed_locked(node)) by_name_.erase(by_name_.find(KeyView{node->parent, node->name}));
}

void NodeTable::rename(Node* node, Node* new_parent, std::string_view new_name) {
    std::lock_guard lock(mu_);
    if (hashed_locked(node)) by_name_.erase(by_name_.find(KeyView{node->parent, node->name}));
    if (auto it = by_name_.find(KeyView{new_parent, new_name}); it != by_name_.end()) {
        it->second->unlinked = true;
        by_name_.erase(it);
    }
    Node* old_parent = node->parent;
    new_parent->children++;
    if (!node->retired) {
        new_parent->active_children++;
        old_parent->active_children--;
    }
    node->parent = new_parent;
    node->name.assign(new_name);
    node->unlinked = false;
    node->superseded = false;
    by_name_.emplace(Key{new_parent, node->name}, node);
    old_parent->children--;
    release_locked(old_parent);
}

void NodeTable::update_peers_locked(ino_t upper_ino) {
    auto [first, last] = by_upper_ino_.equal_range(upper_ino);
    bool several = first != last && std::next(first) != last;
    for (auto it = first; it != last; ++it) it->second->has_peers = several;
}

void NodeTable::drop_upper_ino_locked(Node* node) {
    if (!node->upper_ino) return;
    auto [first, last] = by_upper_ino_.equal_range(node->upper_ino);
    for (auto it = first; it != last; ++it) {
        if (it->second == node) {
            by_upper_ino_.erase(it);
            break;
        }
    }
    update_peers_locked(node->upper_ino);
    node->upper_ino = 0;
    node->has_peers = false;
}

void NodeTable::set_upper_ino(Node* node, ino_t upper_ino) {
    std::lock_guard lock(mu_);
    if (node->upper_ino == upper_ino) return;
    drop_upper_ino_locked(node);
    node->upper_ino = upper_ino;
    by_upper_ino_.emplace(upper_ino, node);
    update_peers_locked(upper_ino);
}

std::vector<uint64_t> NodeTable::peers_of(Node* node) {
    std::vector<uint64_t> out;
    std::lock_guard lock(mu_);
    if (!node->upper_ino) return out;
    auto [first, last] = by_upper_ino_.equal_range(node->upper_ino);
    for (auto it = first; it != last; ++it) {
        if (it->second != node) out.push_back(id_of(it->second));
    }
    return out;
}

size_t NodeTable::size() {
    std::lock_guard lock(mu_);
    return owned_.size() + 1;
}

// An index counts its entries plus one, so empty listings are bounded too.
static size_t index_cost(const DirIndex& index) {
    return index.entries.size() + 1;
}

void NodeTable::drop_index_locked(Node* node) {
    if (!node->index) return;
    index_entries_ -= index_cost(*node->index);
    released_.fetch_add(node->index->entries.size(), std::memory_order_relaxed);
    index_lru_.erase(node->index_lru);
    node->index.reset();
}

std::shared_ptr<const DirIndex> NodeTable::cached_index(Node* dir) {
    std::lock_guard lock(mu_);
    if (!dir->index) return nullptr;
    index_lru_.splice(index_lru_.begin(), index_lru_, dir->index_lru);
    return dir->index;
}

std::shared_ptr<const DirIndex> NodeTable::peek_index(const Node* dir) const {
    std::lock_guard lock(mu_);
    return dir->index;
}

std::shared_ptr<const DirIndex> NodeTable::install_index(Node* dir,
                                                         std::shared_ptr<const DirIndex> built) {
    std::lock_guard lock(mu_);
    if (dir->index) {
        index_lru_.splice(index_lru_.begin(), index_lru_, dir->index_lru);
        return dir->index;
    }
    ++index_builds_;
    dir->index = built;
    index_lru_.push_front(dir);
    dir->index_lru = index_lru_.begin();
    index_entries_ += index_cost(*built);
    // Evicting only drops the cache's reference: a lookup or listing using an index keeps it.
    while (index_entries_ > index_entry_limit_ && !index_lru_.empty()) {
        drop_index_locked(index_lru_.back());
        ++index_evictions_;
    }
    return built;
}

void NodeTable::set_index_entry_limit(size_t entries) {
    std::lock_guard lock(mu_);
    index_entry_limit_ = entries;
}

NodeTable::Stats NodeTable::stats() {
    std::lock_guard lock(mu_);
    Stats s;
    auto count = [&](const Node* node) {
        ++s.nodes;
        s.kernel_refs += node->nlookup;
        if (node->open_count > 0) ++s.open_file_nodes;
        if (node->unlinked_fd) ++s.kept_fds;
    };
    count(root_.get());
    for (const auto& [node, owner] : owned_) {
        count(node);
        if (!hashed_locked(node)) ++s.unhashed_nodes;
    }
    s.retired_nodes = retired_.size();
    s.retired_limit = retired_limit_;
    s.dir_indexes = index_lru_.size();
    s.dir_index_entries = index_entries_;
    s.dir_index_entry_limit = index_entry_limit_;
    s.dir_index_builds = index_builds_;
    s.dir_index_evictions = index_evictions_;
    return s;
}

}  // namespace lamina
