// The node table: one Node per merged name the kernel knows, keyed by (parent, name) with xxHash.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "layers.h"
#include "unique_fd.h"

namespace lamina {

struct DirIndex;

// A descriptor set at most once, by whichever thread gets there first, and closed with its owner.
// Every one alive is counted, so the daemon can bound how many it holds.
class OnceFd {
public:
    OnceFd() = default;
    OnceFd(const OnceFd&) = delete;
    OnceFd& operator=(const OnceFd&) = delete;
    ~OnceFd();

    int get() const { return fd_.load(std::memory_order_acquire); }
    // Takes fd when none is set yet; otherwise fd stays with the caller. True when taken.
    bool set(UniqueFd& fd);
    // Closes the descriptor, so that it may be set again. Only when no request can be using it
    // (NodeTable::retire_locked).
    void reset();
    static long live() { return live_.load(std::memory_order_relaxed); }

private:
    std::atomic<int> fd_{-1};
    static inline std::atomic<long> live_{0};
};

struct DirListing;

// A merged file or directory. Fields other than the lookup count are guarded by the overlay's
// tree lock: read under the shared lock, changed under the exclusive one.
struct Node {
    Node* parent = nullptr;  // holds a child reference on the parent; null for the root
    std::string name;        // name in the merged parent
    // The merged listing being read, if any (readdir.cc; guarded by the overlay's listing lock),
    // and how many times the directory's names changed: a listing of an older count is stale.
    std::shared_ptr<const DirListing> listing;
    std::atomic<uint32_t> name_changes{0};

    uint64_t nlookup = 0;   // kernel references (LOOKUP/FORGET), guarded by the table mutex
    uint32_t children = 0;  // nodes in the table whose parent this is, guarded by the table mutex
    // FUSE generation: with the node id, what a file handle names (NodeTable::revive). Set once
    // when the node enters the table; 0 only for the root, as the kernel wants.
    uint32_t generation = 0;
    // Forgotten by the kernel but kept, so that a file handle of it still opens (NodeTable's
    // retired list, guarded by the table mutex). A retired node has no active children (in the
    // table and not retired): nothing can reach it but a handle, so it holds no descriptor.
    bool retired = false;
    std::list<Node*>::iterator retired_it;
    uint32_t active_children = 0;  // children not retired, guarded by the table mutex

    std::atomic<uint64_t> ino{0};  // st_ino shown through the mount (follows the top copy)
    mode_t type = 0;               // S_IFMT bits

    // The upper layer holds this entry (at the merged path). Only ever set, under the exclusive
    // lock; atomic so a read can pick its pooled descriptor without the tree lock.
    std::atomic<bool> in_upper{false};
    // Directory in the upper layer: a descriptor of its upper copy, so that requests reach the
    // directory this node was looked up as, wherever it moves, and never through a symlink
    // planted in its place. Unset once the daemon holds its share of such descriptors; then the
    // copy is found again beneath the upper root and must have inode upper_dir_ino.
    mutable OnceFd upper_dir;
    ino_t upper_dir_ino = 0;
    bool opaque = false;  // directory: upper copy is opaque, no lower content below it
    // Directory: upper copy is marked opaque="x", so an empty file with overlay.whiteout in it
    // is a whiteout (the kernel looks for xattr whiteouts only in such directories).
    bool xwhiteouts = false;
    // Unlinked, removed or renamed over: the kernel may still hold it (an open file, a lookup
    // racing with unlink), but its merged path names something else now. Atomic: open() checks
    // it before taking the tree lock (ThreadSanitizer found that race).
    std::atomic<bool> unlinked{false};
    // Unhashed with its name still there: the name has a new node (Overlay::supersede), which a
    // request by path reaches after the kernel looks the name up again, as ESTALE makes it do.
    std::atomic<bool> superseded{false};
    // Open file handles on this node, and, once it is unlinked while open, a descriptor of the
    // removed copy, so fstat() still answers and a read handle can still follow a copy-up.
    std::atomic<int> open_count{0};
    UniqueFd unlinked_fd;

    // Upper copy of a non-directory: its inode number there. Every name of an upper hardlink is
    // a node of its own; peers share this number and are told apart from the rest by it.
    ino_t upper_ino = 0;
    std::atomic<bool> has_peers{false};

    // lowers: the lower layers holding this entry, top first: for a non-directory at most one,
    // for a directory every layer that merges into it. All at lower_path.
    // lower_path is the entry's path as a lookup from the top lower layer starts it ("" for the
    // root): what a redirect to it says. A redirect inside a lower layer sends the layers below it
    // to another path; then lower_paths holds each layer's own path (empty: lower_path in all).
    // For a directory these are the layers its name merges from; the ones that really contribute
    // (opaque ones cut the rest, redirects in them lead elsewhere) are in its DirIndex.
    std::vector<LayerNo> lowers;
    std::string lower_path;
    std::vector<std::string> lower_paths;
    // The lowers are where a redirect in the upper copy led, found all the way down already.
    bool lowers_chased = false;
    // The upper copy carries a redirect, and whether it is absolute ("/a/b").
    bool upper_redirect = false;
    bool redirect_absolute = false;
    const std::string& lower_path_in(size_t i) const {
        return lower_paths.empty() ? lower_path : lower_paths[i];
    }

    // Directory: merged listing of the lower layers, built on first use. Lower layers never
    // change under a mount, so it stays valid until the node's lowers change. Guarded by the
    // table mutex; the table's LRU may drop it at any time (readers hold their own reference).
    std::shared_ptr<const DirIndex> index;
    std::list<Node*>::iterator index_lru;  // valid while `index` is set

    bool is_dir() const { return S_ISDIR(type); }
    LayerNo top_layer() const { return in_upper ? kUpperLayer : (lowers.empty() ? 0 : lowers[0]); }
};

// What a request for a node that lost its name fails with: ESTALE, so that the kernel looks the
// name up again, if the name lives on in another node; else ENOENT.
inline int gone_error(const Node* node) {
    return node->superseded ? ESTALE : ENOENT;
}

// Folds the layer number into the high bits of the real inode number, as the kernel's xino does,
// so st_ino is unique within the mount and stable across remounts of the same layers.
uint64_t make_ino(LayerNo layer, ino_t real_ino);

class NodeTable {
public:
    NodeTable();
    ~NodeTable();
    NodeTable(const NodeTable&) = delete;
    NodeTable& operator=(const NodeTable&) = delete;

    Node* root() { return root_.get(); }

    // The one mapping between nodes and FUSE node ids: the root is 1 (FUSE_ROOT_ID), every
    // other node its address. The kernel hands back only ids it holds, and a node lives until
    // the kernel forgets it, so node_of needs no check. The one exception is a file handle's id,
    // which may name a node long gone: revive() checks those.
    static constexpr uint64_t kRootId = 1;
    uint64_t id_of(const Node* node) const {
        return node == root_.get() ? kRootId : reinterpret_cast<uintptr_t>(node);
    }
    Node* node_of(uint64_t id) {
        return id == kRootId ? root_.get() : reinterpret_cast<Node*>(static_cast<uintptr_t>(id));
    }

    // Finds (parent, name) or inserts `fresh` there. Either way one lookup reference is taken.
    // Returns the node in the table; `fresh` is consumed only when inserted.
    Node* find_or_insert(Node* parent, std::string_view name, std::unique_ptr<Node>& fresh);
    // Takes `fresh` into the table with one lookup reference but under no name: an O_TMPFILE,
    // which gets one only if linked (it is unlinked until then).
    Node* insert_unnamed(Node* parent, std::unique_ptr<Node>& fresh);
    // The node at (parent, name) without taking a reference, or null. Only for callers that
    // hold the tree lock exclusively (FORGET, which frees nodes, holds it shared).
    Node* find(Node* parent, std::string_view name);
    // The st_ino of the node at (parent, name), if the table has one; safe under a shared lock.
    bool find_ino(Node* parent, std::string_view name, uint64_t& ino);
    // Drops kernel references. A node none remain on is retired (kept for file handles) while
    // the retired list has room, else freed (with parents left unused).
    void forget(Node* node, uint64_t n);

    // File handles (the kernel's export support). How many forgotten nodes are kept so that
    // their handles still open: the oldest go first (0: none, a handle lasts as long as the
    // kernel keeps the inode).
    void set_retired_limit(size_t nodes);
    // The node a file handle's id names, with one lookup reference taken, if the table still
    // has it under a name; null otherwise (freed, unlinked or superseded). The id is checked
    // against the table before it is used: it comes from a handle, which may be old or forged.
    // The kernel compares the generation itself.
    Node* revive(uint64_t id);
    // The parent of a directory the kernel holds, with one lookup reference taken (its "..").
    Node* revive_parent(Node* dir);
    // Moves a node to a new (parent, name); a node already there is unhashed (it stays alive for
    // the kernel's references but is no longer found by name).
    void rename(Node* node, Node* new_parent, std::string_view new_name);
    // Takes a node out of the name hash (after unlink/rmdir); it lives until forgotten.
    void unhash(Node* node);

    // Records the upper inode of a non-directory node, so names of one hardlinked file can
    // find each other (their kernel caches must be dropped when one of them changes).
    void set_upper_ino(Node* node, ino_t upper_ino);
    // The other nodes naming the same upper file, as FUSE node ids (they may be stale by the time
    // they are used: only for cache invalidation).
    std::vector<uint64_t> peers_of(Node* node);

    size_t size();

    // The cached lower index of a directory node (marked recently used), or null.
    std::shared_ptr<const DirIndex> cached_index(Node* dir);
    // The same without marking it used: for a peek that must not keep it cached.
    std::shared_ptr<const DirIndex> peek_index(const Node* dir) const;
    // Caches a freshly built index unless another thread got there first; returns the one cached
    // (or `built` itself when the limit evicts it at once). Least recently used indexes are
    // dropped while the cached entries exceed the limit.
    std::shared_ptr<const DirIndex> install_index(Node* dir, std::shared_ptr<const DirIndex> built);
    // The most lower-index entries kept cached over all directories (0: cache none).
    void set_index_entry_limit(size_t entries);

    // Nodes freed and cached indexes dropped so far: how much memory went back to the allocator
    // (the daemon returns it to the system after many). Cheap: no lock.
    uint64_t released_count() const { return released_.load(std::memory_order_relaxed); }

    // What the table holds, for the statistics a user can ask for (SIGUSR1).
    struct Stats {
        size_t nodes = 0;
        size_t unhashed_nodes = 0;  // unlinked or renamed over, kept for the kernel's references
        size_t retired_nodes = 0;   // forgotten by the kernel, kept for file handles
        size_t retired_limit = 0;
        size_t kernel_refs = 0;  // sum of lookup counts
        size_t open_file_nodes = 0;
        size_t kept_fds = 0;  // descriptors kept for unlinked open or special nodes
        size_t dir_indexes = 0;
        size_t dir_index_entries = 0;
        size_t dir_index_entry_limit = 0;
        uint64_t dir_index_builds = 0;
        uint64_t dir_index_evictions = 0;
    };
    // Walks every node: for diagnostics only. The caller holds the tree lock (shared at least).
    Stats stats();

    std::mutex& mutex() { return mu_; }

private:
    struct Key {
        const Node* parent;
        std::string name;
    };
    struct KeyView {
        const Node* parent;
        std::string_view name;
    };
    struct Hash {
        using is_transparent = void;
        size_t operator()(const Key& k) const { return hash(k.parent, k.name); }
        size_t operator()(const KeyView& k) const { return hash(k.parent, k.name); }
        static size_t hash(const Node* parent, std::string_view name);
    };
    struct Eq {
        using is_transparent = void;
        template <class A, class B>
        bool operator()(const A& a, const B& b) const {
            return a.parent == b.parent && a.name == b.name;
        }
    };

    void release_locked(Node* node);
    bool hashed_locked(Node* node);
    void retire_locked(Node* node);
    void unretire_locked(Node* node);
    // Brings node and every retired ancestor back into use (a lookup or a handle reached it).
    void unretire_chain_locked(Node* node);
    void evict_retired_locked();
    uint32_t next_generation_locked();

    mutable std::mutex mu_;
    std::unique_ptr<Node> root_;
    std::unordered_map<Key, Node*, Hash, Eq> by_name_;
    std::unordered_map<Node*, std::unique_ptr<Node>> owned_;
    std::unordered_multimap<ino_t, Node*> by_upper_ino_;

    // Retired nodes, most recently forgotten first.
    std::list<Node*> retired_;
    size_t retired_limit_ = 0;
    // Generations are a keyed hash of a counter: a handle from another mount (or of a node whose
    // address was reused) names a generation the kernel will not find again.
    uint64_t generation_key_ = 0;
    uint64_t generation_counter_ = 0;

    void drop_upper_ino_locked(Node* node);
    void update_peers_locked(ino_t upper_ino);
    void drop_index_locked(Node* node);

    // Directory nodes with a cached index, most recently used first.
    std::list<Node*> index_lru_;
    size_t index_entries_ = 0;
    size_t index_entry_limit_ = 1'000'000;
    uint64_t index_builds_ = 0;
    uint64_t index_evictions_ = 0;
    std::atomic<uint64_t> released_{0};
};

}  // namespace lamina
