// The overlay: kernel-overlayfs semantics over a LayerStack. Every operation returns 0 or an
// errno; nothing here knows about fuse_req_t (fuse_ops.cc translates).
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "acl.h"
#include "dir_index.h"
#include "layers.h"
#include "lazy.h"
#include "node.h"
#include "options.h"
#include "ownership.h"
#include "passthrough.h"
#include "read_fds.h"
#include "resolve.h"
#include "unique_fd.h"
#include "whiteout.h"

namespace lamina {

struct EntryReply {
    Node* node = nullptr;  // one lookup reference taken for the kernel
    struct stat st {};
};

// Counts the live objects of one kind, for the statistics (one overlay per process).
template <class Tag>
struct LiveCounter {
    static inline std::atomic<long> count{0};
    LiveCounter() { ++count; }
    LiveCounter(const LiveCounter&) { ++count; }
    LiveCounter& operator=(const LiveCounter&) = default;
    ~LiveCounter() { --count; }
};

// One merged directory entry, as readdir returns it.
struct MergedEntry {
    std::string name;
    uint64_t ino;
    uint8_t dtype;
    uint64_t key = 0;  // its READDIR offset (readdir.cc): a hash of the name
};

// A merged directory listing, in the order of its keys. There are no directory handles (the
// kernel is told opendir is not needed, and keeps each listing it has read in full), so READDIR
// offsets must mean the same in any listing of the directory: an entry's offset is a hash of its
// name, as ext4's are, and a reader goes on after the offset it was given in whatever listing is
// current. Names that come or go meanwhile do not shift the others: none is listed twice or
// skipped. The node keeps the listing while readers go through it, until the directory changes.
struct DirListing {
    uint32_t name_changes = 0;         // the directory's count when it was listed
    std::vector<MergedEntry> entries;  // by key; "." and ".." first (keys 1 and 2)
    LiveCounter<DirListing> live;

    // Where a reader at offset `off` goes on: after the entry whose key off is, whether or not
    // that entry is still there (readdir.cc).
    std::vector<MergedEntry>::const_iterator resume_after(uint64_t off) const;
};

// How the kernel is to serve an open file (Overlay::open_mode).
struct OpenMode {
    enum Kind {
        Cached,       // through the page cache, the daemon reading and writing
        Direct,       // O_DIRECT: no page cache, every read and write a request
        Passthrough,  // straight to the layer file: backing_id
        Superseded,   // the name has a new node: answer ESTALE, the kernel looks it up again
    } kind = Cached;
    int backing_id = 0;
};

// An open file. A handle opened for writing (or made by create) owns a descriptor of the upper
// copy. A read-only handle owns none: it borrows the node's descriptor from the ReadFdPool per
// request, which also makes it follow a copy-up (see read_fds.h).
struct FileHandle {
    Node* node = nullptr;
    UniqueFd fd;  // unset for a read-only handle
    // A read-only handle of a lower copy in a lazy layer: its descriptor, held while the handle
    // lives (the pool may close its own), so that no fetcher can evict the file under it.
    ReadFdPool::Fd lazy_lower;
    int flags = 0;
    passthrough::Grant grant;  // how the kernel serves this open (see passthrough.h)
    LiveCounter<FileHandle> live;
};

// A descriptor for I/O on an open file: the handle's own, or one borrowed from the pool and held
// open while this lives.
struct FileFd {
    int fd = -1;
    bool upper = false;  // the upper copy: changes through it are allowed
    ReadFdPool::Fd borrowed;
};

// Which attributes setattr changes; the values are libfuse's FUSE_SET_ATTR_* bits.
enum SetAttr : int {
    kSetMode = 1 << 0,
    kSetUid = 1 << 1,
    kSetGid = 1 << 2,
    kSetSize = 1 << 3,
    kSetAtime = 1 << 4,
    kSetMtime = 1 << 5,
    kSetAtimeNow = 1 << 7,
    kSetMtimeNow = 1 << 8,
    kSetCtime = 1 << 10,
};

struct Credentials {
    uid_t uid = 0;
    gid_t gid = 0;
    // The kernel left it to laminafs to clear set-id bits for this request (request_flags.h): a write,
    // truncation or O_TRUNC open by a caller without CAP_FSETID, or a chown.
    bool kill_setid = false;
    // Whether the caller is in a group, asked only when a set-group-ID bit depends on it.
    std::function<bool(gid_t)> in_group;
    // The kernel left the umask to laminafs (FUSE_DONT_MASK, taken with POSIX ACLs): a new
    // entry gets it unless its directory's default ACL says otherwise (acl.h).
    bool apply_umask = false;
    mode_t umask = 0;
};

// --- statistics: what the daemon holds, printed on SIGUSR1 (stats.cc).
struct CacheStats {
    NodeTable::Stats table;
    long open_files = 0;    // file handles the kernel holds
    long dir_listings = 0;  // merged listings kept for readers part way through them
    ReadFdPool::Stats read_fds;
    long dir_fds = 0;  // directories held open: upper ones by their nodes, lower ones by indexes
    long dir_fd_limit = 0;
    long process_fds = -1;  // from /proc/self: every descriptor and the resident set
    long rss_kib = -1;
    uint64_t uring_requests = 0;  // served through io_uring (the device's count)
};
// One line: "nodes=... dir_indexes=... fds=... rss_kib=...".
std::string format_cache_stats(const CacheStats& stats);

// How many idle read descriptors the pool keeps: a share of RLIMIT_NOFILE (file.cc).
size_t read_fd_pool_limit();
// How many upper directory descriptors the nodes may hold (lookup.cc).
size_t upper_dir_fd_limit();

class Overlay {
public:
    Overlay(const MountOptions& opts, LayerStack& stack);
    ~Overlay();
    Overlay(const Overlay&) = delete;
    Overlay& operator=(const Overlay&) = delete;

    // Fills in the root node from the layers. Returns "" or an error line.
    std::string init();

    Node* root() { return table_.root(); }
    // FUSE node ids (NodeTable::id_of).
    uint64_t node_id(const Node* node) const { return table_.id_of(node); }
    Node* node_of(uint64_t id) { return table_.node_of(id); }
    NodeTable& table() { return table_; }
    bool read_only() const { return read_only_; }
    const LayerStack& stack() const { return stack_; }

    // --- namei / attributes (lookup.cc, attr.cc)
    int lookup(Node* parent, std::string_view name, EntryReply& out);
    // File handles: the entry of the node a handle's id names (its "."), or of a directory's
    // parent (its ".."), with one lookup reference. ESTALE once the node is gone or unlinked.
    int lookup_handle(uint64_t id, EntryReply& out);
    int lookup_parent(Node* dir, EntryReply& out);
    // Frees nodes, so it must not run while an exclusive operation holds node pointers.
    void forget(Node* node, uint64_t n) {
        std::shared_lock lock(tree_);
        table_.forget(node, n);
    }
    int getattr(Node* node, struct stat& st);
    int readlink(Node* node, std::string& target);
    int statfs(struct statvfs& st);

    // --- readdir.cc
    // A listing of dir to read on from: the node's, unless the directory changed since or off
    // is 0 (a reader starting over), then a new one, which the node keeps until drop_listing.
    int listing_for(Node* dir, uint64_t off, std::shared_ptr<const DirListing>& out);
    // A reader reached the end of listing: the kernel has it all, the node need not keep it.
    void drop_listing(Node* dir, const DirListing* listing);
    int fsyncdir(Node* dir, bool datasync);
    // for_caller: a caller's listing, which moves the upper copy's atime as the mount's rule
    // says; the daemon's own reads (the emptiness check) leave it, as the kernel's O_NOATIME
    // reads of its real directories do.
    int list_merged_locked(Node* node, std::vector<MergedEntry>& entries, bool for_caller = true);

    // --- file.cc
    int open(Node* node, int flags, const Credentials& cred, std::unique_ptr<FileHandle>& out);
    void release(std::unique_ptr<FileHandle> fh);
    // Gives the name of an open file a new node, leaving node to the handles already open on it.
    // For an open the kernel cannot pass through beside them (they pass through to the lower
    // copy, this one needs the upper): the open is answered ESTALE, the kernel looks the name up
    // again, meets the new node and opens that. node answers as the upper copy from then on,
    // except that its passthrough handles read on from the lower copy.
    void supersede(Node* node);
    // The descriptor to do I/O on an open file with; for a read-only handle, of the copy the
    // node has now. _locked: the caller holds the tree lock.
    int file_fd(FileHandle& fh, FileFd& out);
    int file_fd_locked(FileHandle& fh, FileFd& out);
    // Attributes of an open file from its descriptor, shown as getattr shows them: for a file
    // that is unlinked but still open.
    int fstat_open(FileHandle& fh, struct stat& st);
    // How the kernel is to serve the open fh (flags: the open's): passthrough where it may
    // (passthrough.h), unless the daemon must see the writes (set-id bits to clear, other names
    // to refresh), the page cache otherwise.
    int open_mode(FileHandle& fh, int flags, OpenMode& out);
    // The connection's backing files, once the device exists (null: every open is cached).
    void use_passthrough(Passthrough* passthrough) { passthrough_ = passthrough; }
    // The calls on an open file that change it as a write does, or ask it. Each refreshes the
    // kernel's view of the file's other names, as a write does (the caller sends them).
    int before_write(FileHandle& fh, const Credentials& cred);  // set-id bits, when flagged
    void after_write(FileHandle& fh);
    int fsync(FileHandle& fh, bool datasync);
    int fallocate(FileHandle& fh, int mode, off_t offset, off_t length, const Credentials& cred);
    int lseek(FileHandle& fh, off_t off, int whence, off_t& out);
    int copy_file_range(FileHandle& in, off_t off_in, FileHandle& out, off_t off_out, size_t len,
                        int flags, const Credentials& cred, size_t& copied);

    // --- set-id bits (setid.cc): with FUSE_HANDLE_KILLPRIV_V2 the daemon clears them, as the
    // kernel would, on writes and truncation by callers without CAP_FSETID and on chown.
    // Before a write through fh.
    int clear_setid_for_write(FileHandle& fh, const Credentials& cred);
    // The open file has set-id bits that a write may clear, so the daemon must see its writes.
    bool has_setid(FileHandle& fh);

    // --- fileattr.cc: FS_IOC_GETFLAGS/SETFLAGS and FS_IOC_FSGETXATTR/FSSETXATTR (chattr,
    // lsattr). `arg` is the ioctl's argument (an int or a struct fsxattr); `set` for the setters,
    // which copy up first.
    int fileattr(Node* node, unsigned long cmd, void* arg, bool set);

    // --- xattr.cc
    int getxattr(Node* node, const char* name, std::string& value, size_t size);
    // list_trusted: the caller may see trusted.* names (the kernel lists them only to
    // CAP_SYS_ADMIN).
    int listxattr(Node* node, std::string& names, size_t size, bool list_trusted);
    int setxattr(Node* node, const char* name, const char* value, size_t size, int flags);
    int removexattr(Node* node, const char* name);

    // --- write side (dir.cc, copy_up.cc, attr.cc)
    int setattr(Node* node, FileHandle* fh, const struct stat& attr, int to_set,
                const Credentials& cred, struct stat& out);
    int create(Node* parent, std::string_view name, mode_t mode, int flags, const Credentials& cred,
               EntryReply& out, std::unique_ptr<FileHandle>& fh);
    // The kernel holds an open file's handle from the open reply until its RELEASE: hand_over
    // after the reply went out, take_back at RELEASE. Handles never taken back (the connection
    // ended first, as at an unmount with RELEASEs still queued) go with the overlay.
    void hand_over(std::unique_ptr<FileHandle> fh);
    std::unique_ptr<FileHandle> take_back(FileHandle* fh);
    // A handle of a file just made, open on fd.
    std::unique_ptr<FileHandle> open_handle(Node* node, int flags, UniqueFd fd);
    // open(dir, O_TMPFILE): an unnamed file in the upper copy of parent, open as fh; linkat()
    // gives it a name later (link() of an unlinked node that has its kept copy).
    int create_tmpfile(Node* parent, mode_t mode, int flags, const Credentials& cred,
                       EntryReply& out, std::unique_ptr<FileHandle>& fh);
    int mknod(Node* parent, std::string_view name, mode_t mode, dev_t rdev, const Credentials& cred,
              EntryReply& out);
    int mkdir(Node* parent, std::string_view name, mode_t mode, const Credentials& cred,
              EntryReply& out);
    int symlink(const char* target, Node* parent, std::string_view name, const Credentials& cred,
                EntryReply& out);
    int link(Node* node, Node* new_parent, std::string_view new_name, EntryReply& out);
    int unlink(Node* parent, std::string_view name);
    int rmdir(Node* parent, std::string_view name);
    int rename(Node* parent, std::string_view name, Node* new_parent, std::string_view new_name,
               unsigned flags);

    // --- statistics (stats.cc)
    CacheStats cache_stats();

    // The merged path of a node relative to the mount root ("" for the root). Needs the tree lock.
    std::string path_of(const Node* node) const;

    // Kernel caches a request made stale beyond its own reply: the attributes a copy-up or a
    // set-id clearing changed, the other names of a hardlinked upper file.
    struct Invalidation {
        uint64_t node_id;
        bool pages;  // drop cached data too, not just attributes
    };
    // What one request changed, collected while it is served: the FUSE glue makes one per
    // request (on its stack, around the handler) and sends its invalidations with the reply, so
    // they travel with that request's result and never with another's. Nesting is not allowed.
    class Changes {
    public:
        Changes();
        ~Changes();
        Changes(const Changes&) = delete;
        Changes& operator=(const Changes&) = delete;
        // Takes what was collected so far (the glue sends it just before the reply).
        std::vector<Invalidation> take() { return std::exchange(pending_, {}); }
        // The Changes of the request this thread serves, or null.
        static Changes* current();
        bool empty() const { return pending_.empty(); }

    private:
        friend class Overlay;
        std::vector<Invalidation> pending_;
    };
    // Records an invalidation with the request being served (none outside a request: the
    // housekeeping thread changes nothing the kernel caches).
    static void invalidate(Invalidation inv);
    // Queues the node's hardlink peers for invalidation if it has any.
    void invalidate_peers(Node* node);

private:
    std::mutex handed_mu_;
    std::unordered_set<FileHandle*> handed_;  // held by the kernel (hand_over)
    friend class CopyUp;

    // namei helpers (lookup.cc)
    // upper_whiteout, when given, tells whether an ENOENT came from a whiteout in the upper
    // layer (which a new entry then replaces).
    int lookup_locked(Node* parent, std::string_view name, std::unique_ptr<Node>& fresh,
                      struct stat& st, bool* upper_whiteout = nullptr);
    // The node the kernel knows at (parent, name), or a looked-up one kept in `scratch` when
    // the kernel has none; what namespace operations act on. Needs the exclusive lock.
    int existing_node_locked(Node* parent, std::string_view name, std::unique_ptr<Node>& scratch,
                             Node*& out);
    std::shared_ptr<const DirIndex> dir_index(Node* dir);
    // How dir's lower layers are found (the candidates its node holds, and redirects).
    RedirectRules redirect_rules(Node* dir);

    // Where entries are reached (resolve.h): never through a symlink, never out of their layer.
    // Need the tree lock. `dir`'s upper copy (it has one): the descriptor its node holds, or one
    // found again beneath the upper root and checked to be that same directory, which `scratch`
    // then owns.
    int upper_dir_fd(const Node* dir, UniqueFd& scratch, int& fd) const;
    // The name `name` in parent's upper copy.
    int upper_child_place(const Node* parent, std::string_view name, Place& out) const;
    // The node's upper copy, for what acts on the entry itself (attributes, xattrs, opening):
    // a directory is reached through its own descriptor (".").  What changes names acts on
    // upper_child_place of the parent instead.
    int upper_place(const Node* node, Place& out) const;
    // The node's top lower copy.
    int lower_place(const Node* node, Place& out) const;
    // 0 once a node's lower copy may be read (file.cc; lazy.h).
    int complete_lazy_lower(FileHandle& fh, const FileFd& fd);
    // node's name in the directory parent_index holds open in layer, when it lies there (not
    // elsewhere by a redirect); false when the index holds no such directory.
    bool held_place(const std::shared_ptr<const DirIndex>& parent_index, LayerNo layer,
                    const Node* node, Place& out) const;
    // The copy the node shows: its upper copy if it has one, else its top lower one.
    int top_place(const Node* node, Place& out) const {
        return node->in_upper ? upper_place(node, out) : lower_place(node, out);
    }
    // Keeps fd (an upper directory's) on the node while the daemon's share of such descriptors
    // allows; else it stays with the caller.
    void hold_upper_dir(const Node* node, UniqueFd& fd) const;
    int stat_node_locked(const Node* node, struct stat& st);
    void fix_stat(const Node* node, struct stat& st) const;
    // Sets node's lowers to where the redirect in its upper copy leads.
    void follow_upper_redirect(Node* parent, Node* node, std::string_view redirect);

    // write helpers (copy_up.cc, dir.cc)
    int copy_up_locked(Node* node);
    // Copies up one node whose parent is in the upper layer already.
    int copy_up_one_locked(Node* node);
    // The one whiteout maker, for unlink, rmdir and rename: leaves a whiteout at `at`, the place
    // of a name in parent's upper dir. An upper entry there first moves to `move_to` (the work dir,
    // or rename's new name), in one step with RENAME_WHITEOUT where allowed, otherwise by a plain
    // rename and a fresh whiteout, the move undone when none can be made. With move_to null the
    // place is empty.
    int leave_whiteout_locked(Node* parent, const Place& at, const Place* move_to);
    // A whiteout at the empty place `at`: a 0/0 character device or, where device nodes are
    // refused, an empty file with overlay.whiteout in a parent marked 'x'.
    int make_whiteout_at_locked(Node* parent, const Place& at);
    int check_writable() const { return read_only_ ? EROFS : 0; }
    bool lower_has_name(Node* parent, std::string_view name);
    int finish_entry_locked(Node* parent, std::string_view name, EntryReply& out);
    // An unlinked or renamed-over node's copy, which open descriptors still reach: the one
    // kept for an open file, or an upper directory's own (-1: none). open_gone_copy gives a
    // descriptor of it that the f* calls take (fchmod, fsetxattr...), for an upper regular file
    // or directory.
    int gone_copy_fd(const Node* node) const;
    // A descriptor of node's copy to ask for its attribute flags (the upper one for `upper`).
    int open_for_fileattr_locked(Node* node, bool upper, UniqueFd& out);
    // Where the xattr calls on node go (xattr.cc): a path, and whether the calls must follow it
    // (the /proc link of a removed node's copy) rather than act on it. `change`: the upper copy,
    // copied up first.
    // `at` keeps the directory the path goes through open while the path is used.
    int xattr_target_locked(Node* node, bool change, Place& at, std::string& path, bool& via_link);
    int open_gone_copy(const Node* node, UniqueFd& out) const;
    // Before a name goes away: keeps a descriptor of the copy if the node is open.
    void keep_open_copy_locked(Node* node);
    // Puts a freshly looked-up node in the table (or takes the one there) and fills `out`.
    void insert_looked_up(Node* parent, std::string_view name, std::unique_ptr<Node>& fresh,
                          EntryReply& out);
    // A name about to be made in parent (the caller holds the tree lock alone): parent's
    // listings go stale, and the name must not exist in the merged view (EEXIST).
    // over_whiteout: an upper whiteout stands there now, to be replaced.
    int claim_new_name_locked(Node* parent, std::string_view name, bool& over_whiteout);
    int create_entry(Node* parent, std::string_view name,
                     const std::function<int(int, const char*)>& make, mode_t mode,
                     const Credentials& cred, EntryReply& out, dev_t rdev = 0,
                     const bool* device_as_file = nullptr);

    // Ownership (attr.cc): the override xattr, the id mappings and squash options applied to a
    // stat of the node's copy; and the owner a new or copied-up entry gets on disk.
    void show_ownership(const Node* node, struct stat& st) const;
    // Gives the entry at `rel` in dirfd (`xattr_path`, a proc_fd_path, for the xattr calls) the
    // disk owner uid:gid. Where the host refuses and the daemon has no privilege, or for a device
    // kept as a regular file (force_override), the owner and `mode` go into the override xattr
    // instead (overridden).
    int chown_or_override(int dirfd, const char* rel, const std::string& xattr_path, uid_t uid,
                          gid_t gid, mode_t mode, dev_t rdev, bool force_override,
                          bool& overridden);
    int change_owner_and_mode(Node* node, int fd, const Place& at, const struct stat& attr,
                              int to_set);
    // Set-id bits (setid.cc). What a write or truncation by `cred` clears from the node as the
    // mount shows it (fd: an open descriptor of its upper copy, or -1); `chown` for a change
    // of owner, which clears set-user-ID whoever asks.
    int setid_to_clear_locked(Node* node, int fd, const Credentials& cred, bool chown,
                              mode_t& clear, struct stat& st);
    // Root as the layers see it, which keeps set-id bits on a write (CAP_FSETID).
    bool is_root_caller(const Credentials& cred) const;
    // Clears the bits, after setid_to_clear_locked said which.
    int clear_setid_locked(Node* node, int fd, mode_t clear, const struct stat& st);

    XattrFlavour flavour() const { return flavour_; }
    std::string work_temp_name();
    int merged_is_empty_locked(Node* dir, bool& empty);
    int remove_upper_dir_locked(Node* parent, const Place& at, bool leave_whiteout);
    // Sets overlay.SUFFIX (in the mount's flavour) on the entry at xattr_path, a proc_fd_path.
    int set_upper_xattr(const std::string& xattr_path, std::string_view suffix,
                        std::string_view value);
    int install_from_work_locked(const std::string& tmp, const Place& dst, bool replace_whiteout);
    // Copies up the parent and gives the place of the new entry `name` in its upper copy.
    int prepare_new_name_locked(Node* parent, std::string_view name, Place& dst);
    // The mode and ACLs a new entry (mode with its type) gets from the default ACL of the
    // directory held at parent_fd, or nullopt when it has none (acl.h).
    std::optional<InheritedAcl> inherited_acl_locked(int parent_fd, mode_t mode);
    // The owner a new entry of `mode` (with its type) in parent gets on disk: the caller's ids
    // through the mapping, the group of a set-group-ID parent, which a subdirectory's mode
    // takes too.
    struct NewOwner {
        uid_t uid;
        gid_t gid;
        mode_t perm;
    };
    NewOwner new_owner_locked(Node* parent, const Credentials& cred, mode_t mode);
    int set_inherited_acl(const std::string& xattr_path, const InheritedAcl& acl);
    // Gives an entry the daemon made the caller's owner (the group of a setgid parent) and mode.
    int set_new_owner(int dirfd, const char* name, const Credentials& cred, Node* parent,
                      mode_t mode, dev_t rdev = 0, bool device_as_file = false);

    const MountOptions& opts_;
    LayerStack& stack_;
    NodeTable table_;
    bool read_only_;
    XattrFlavour flavour_;
    IdShift ids_;
    // Without privilege, owners and modes the host refuses live in user.containers.override_stat.
    bool use_override_;
    ReadFdPool read_fds_;
    Passthrough* passthrough_ = nullptr;
    // How many upper directory descriptors the nodes may hold (Node::upper_dir).
    long dir_fd_limit_;

    // Namespace lock: lookups, reads and attribute reads share it; operations that change names
    // or copy up hold it alone, so a merged path computed under it stays valid while in use.
    mutable std::shared_mutex tree_;
    // Guards Node::listing of every node; taken alone, never while waiting for tree_.
    std::mutex listings_mu_;
    // Lower layers with placeholders (lazy.h); nullptr for a mount without them.
    std::unique_ptr<LazyLayers> lazy_ = make_lazy_layers(opts_);
};

}  // namespace lamina
