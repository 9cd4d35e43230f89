// The libfuse low-level glue: translates requests into Overlay calls and replies exactly once.
#include "fuse_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "device.h"
#include "overlay.h"
#include "request_flags.h"

#if defined(__SANITIZE_THREAD__)
#define LAMINA_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LAMINA_TSAN 1
#endif
#endif
#ifndef LAMINA_TSAN
#define LAMINA_TSAN 0
#endif

namespace lamina {

static_assert(kSetMode == FUSE_SET_ATTR_MODE && kSetUid == FUSE_SET_ATTR_UID &&
              kSetGid == FUSE_SET_ATTR_GID && kSetSize == FUSE_SET_ATTR_SIZE &&
              kSetAtime == FUSE_SET_ATTR_ATIME && kSetMtime == FUSE_SET_ATTR_MTIME &&
              kSetAtimeNow == FUSE_SET_ATTR_ATIME_NOW && kSetMtimeNow == FUSE_SET_ATTR_MTIME_NOW &&
              kSetCtime == FUSE_SET_ATTR_CTIME);

namespace {

FuseContext& ctx(fuse_req_t req) {
    return *static_cast<FuseContext*>(fuse_req_userdata(req));
}
Overlay& ov(fuse_req_t req) {
    return *ctx(req).overlay;
}

static_assert(NodeTable::kRootId == FUSE_ROOT_ID);

Node* node_of(fuse_req_t req, fuse_ino_t ino) {
    return ov(req).node_of(ino);
}

fuse_ino_t ino_of(Overlay& o, Node* node) {
    return o.node_id(node);
}

FileHandle* file_of(fuse_file_info* fi) {
    return reinterpret_cast<FileHandle*>(fi->fh);
}

bool caller_in_group(fuse_req_t req, gid_t gid) {
    std::vector<gid_t> groups(32);
    int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
    if (n > static_cast<int>(groups.size())) {
        groups.resize(static_cast<size_t>(n));
        n = fuse_req_getgroups(req, n, groups.data());
    }
    for (int i = 0; i < n && i < static_cast<int>(groups.size()); ++i)
        if (groups[static_cast<size_t>(i)] == gid) return true;
    return false;
}

// The caller, and whether the request is to clear set-id bits (kill_setid).
Credentials creds(fuse_req_t req, bool kill_setid) {
    const fuse_ctx* c = fuse_req_ctx(req);
    Credentials cred{c->uid, c->gid};
    cred.kill_setid = kill_setid;
    cred.apply_umask = ctx(req).config.dont_mask;
    cred.umask = c->umask;
    // Asked only when set-id bits may have to go, which a request without kill_setid can still
    // mean (a ctime-only SETATTR: attr.cc): reading the caller's groups costs a /proc read.
    cred.in_group = [req](gid_t gid) { return caller_in_group(req, gid); };
    return cred;
}

Credentials creds(fuse_req_t req) {
    return creds(req, request::kills_setid());
}

// Drops the kernel's caches of what this request changed elsewhere (other names of a hardlinked
// file, attributes a copy-up made stale). Runs before the reply, so the caller never sees a stale
// peer, and with no overlay lock held, so waiting on a page another request holds is safe.
void send(fuse_session* se, const std::vector<Overlay::Invalidation>& todo) {
    if (!se) return;
    for (const auto& inv : todo)
        fuse_lowlevel_notify_inval_inode(se, inv.node_id, inv.pages ? 0 : -1, 0);
}

void send_invalidations(fuse_req_t req) {
    Overlay::Changes* changes = Overlay::Changes::current();
    if (!changes || changes->empty()) return;
    send(ctx(req).se, changes->take());
}

// Every request is served inside its own Overlay::Changes: what it changes beyond its reply goes
// out with that reply (send_invalidations), and anything a handler left unsent goes out when it
// returns, never with another request.
template <auto Op>
struct Served;
template <class... Args, void (*Op)(fuse_req_t, Args...)>
struct Served<Op> {
    static void call(fuse_req_t req, Args... args) {
        fuse_session* se = ctx(req).se;  // the request is freed by its reply
        Overlay::Changes changes;
        Op(req, args...);
        if (!changes.empty()) {
            spdlog::debug("invalidations sent after the reply");
            send(se, changes.take());
        }
    }
};

void log_op(const char* op, fuse_ino_t ino, const char* name = nullptr) {
    if (spdlog::should_log(spdlog::level::debug))
        spdlog::debug("{} ino={:#x}{}{}", op, ino, name ? " name=" : "", name ? name : "");
}

void reply_status(fuse_req_t req, int err) {
    send_invalidations(req);
    fuse_reply_err(req, err);
}

fuse_entry_param entry_param(fuse_req_t req, const EntryReply& e) {
    fuse_entry_param p{};
    p.ino = ino_of(ov(req), e.node);
    p.generation = e.node->generation;
    p.attr = e.st;
    p.attr_timeout = ctx(req).config.timeout;
    p.entry_timeout = ctx(req).config.timeout;
    return p;
}

void reply_entry(fuse_req_t req, const EntryReply& e) {
    fuse_entry_param p = entry_param(req, e);
    Overlay& o = ov(req);  // the request is freed by the reply, even a failed one
    send_invalidations(req);
    if (fuse_reply_entry(req, &p) != 0) o.forget(e.node, 1);
}

// For the operations that make a name: the new entry, or the error.
void reply_new_entry(fuse_req_t req, int err, const EntryReply& e) {
    if (err)
        reply_status(req, err);
    else
        reply_entry(req, e);
}

// Sets the open reply's flags by how the kernel is to serve the file (Overlay::open_mode).
// Returns ESTALE for an open that the name's new node must serve.
int set_open_mode(fuse_req_t req, fuse_file_info* fi, FileHandle& fh) {
    // close(2) need not wait for a FLUSH: laminafs keeps no locks or buffered data to settle, and
    // the layer file is closed at RELEASE. Saves one round trip per close.
    fi->noflush = 1;
    OpenMode mode;
    if (int err = ov(req).open_mode(fh, fi->flags, mode)) return err;
    switch (mode.kind) {
        case OpenMode::Passthrough:
            request::attach_backing_id(mode.backing_id);
            break;
        case OpenMode::Superseded:
            return ESTALE;
        case OpenMode::Direct:
            fi->direct_io = 1;
            break;
        case OpenMode::Cached:
            fi->keep_cache = 1;
            break;
    }
    return 0;
}

void op_init(void* userdata, fuse_conn_info* conn) {
    GlueConfig& config = static_cast<FuseContext*>(userdata)->config;
    // With ACLs handled by the kernel it caches them per inode: `ls -l` stops asking for
    // system.posix_acl_access on every file.
    if (config.posix_acl && (conn->capable & FUSE_CAP_POSIX_ACL)) conn->want |= FUSE_CAP_POSIX_ACL;
    // With ACLs, the umask is the daemon's to apply, so that a default ACL can replace it as
    // POSIX says (the kernel would mask first, whatever the directory's default ACL).
    config.dont_mask = (conn->want & FUSE_CAP_POSIX_ACL) && (conn->capable & FUSE_CAP_DONT_MASK);
    if (config.dont_mask) conn->want |= FUSE_CAP_DONT_MASK;
#if LAMINA_TSAN
    // ThreadSanitizer learns that the kernel orders requests (a RELEASE only after the READ
    // replies) from read/write on /dev/fuse; it cannot see through splice, so none here.
    conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
#else
    if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
#endif
    // A reply spliced to /dev/fuse cannot go into an io_uring entry: libfuse then copies.
    if (static_cast<FuseContext*>(userdata)->device->uring_offered())
        conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
    // File handles of inodes the kernel forgot reach us as lookups of "." (op_lookup).
    if (config.export_support && (conn->capable & FUSE_CAP_EXPORT_SUPPORT))
        conn->want |= FUSE_CAP_EXPORT_SUPPORT;
    // The daemon writes with CAP_FSETID, so the backing filesystem would keep setuid bits a
    // plain user's write must clear. Not v1, then, which would leave that to the daemon with no
    // word of who writes; the device layer asks for v2 instead, whose requests carry a flag when
    // the bits must go (setid.cc), and without it the kernel clears them itself.
    conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
    // Requests are read with read(2), never spliced, so the device layer sees each one.
    conn->want &= ~FUSE_CAP_SPLICE_READ;
    // Locks are kept by the kernel for this mount: no lock requests reach us.
    conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
    conn->max_write = 1 << 20;
    conn->max_readahead = config.max_readahead;
    // Whether OPENDIR may be answered ENOSYS (op_opendir).
    config.no_opendir = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    log_op("lookup", parent, name);
    EntryReply e;
    int err;
    // A path walk never asks for "." or "..": these are the kernel decoding a file handle. The
    // id of "." comes from the handle, not from an inode the kernel holds: the table checks it.
    if (strcmp(name, ".") == 0) {
        err = ov(req).lookup_handle(parent, e);
    } else if (strcmp(name, "..") == 0) {
        err = ov(req).lookup_parent(node_of(req, parent), e);
    } else {
        err = ov(req).lookup(node_of(req, parent), name, e);
    }
    if (err == ENOENT) {
        // A negative entry the kernel may cache.
        fuse_entry_param p{};
        p.entry_timeout = ctx(req).config.timeout;
        fuse_reply_entry(req, &p);
        return;
    }
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    reply_entry(req, e);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    if (ino != FUSE_ROOT_ID) ov(req).forget(node_of(req, ino), nlookup);
    fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    for (size_t i = 0; i < count; ++i) {
        if (forgets[i].ino != FUSE_ROOT_ID)
            ov(req).forget(node_of(req, forgets[i].ino), forgets[i].nlookup);
    }
    fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    log_op("getattr", ino);
    struct stat st;
    Node* node = node_of(req, ino);
    int err = ov(req).getattr(node, st);
    if (err == ENOENT && fi) {
        // Unlinked but still open: the handle's descriptor knows the file.
        if (ov(req).fstat_open(*file_of(fi), st) == 0) {
            st.st_ino = node->ino;
            err = 0;
        }
    }
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    fuse_reply_attr(req, &st, ctx(req).config.timeout);
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
    if (spdlog::should_log(spdlog::level::debug))
        spdlog::debug("setattr ino={:#x} to_set={:#x}", ino, to_set);
    struct stat out;
    int err = ov(req).setattr(node_of(req, ino), fi ? file_of(fi) : nullptr, *attr, to_set,
                              creds(req), out);
    if (err) {
        reply_status(req, err);
        return;
    }
    send_invalidations(req);
    fuse_reply_attr(req, &out, ctx(req).config.timeout);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
    log_op("readlink", ino);
    std::string target;
    if (int err = ov(req).readlink(node_of(req, ino), target)) {
        fuse_reply_err(req, err);
        return;
    }
    fuse_reply_readlink(req, target.c_str());
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
    log_op("mknod", parent, name);
    EntryReply e;
    reply_new_entry(req, ov(req).mknod(node_of(req, parent), name, mode, rdev, creds(req), e), e);
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    log_op("mkdir", parent, name);
    EntryReply e;
    reply_new_entry(req, ov(req).mkdir(node_of(req, parent), name, mode, creds(req), e), e);
}

void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
    log_op("symlink", parent, name);
    EntryReply e;
    reply_new_entry(req, ov(req).symlink(target, node_of(req, parent), name, creds(req), e), e);
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
    log_op("link", newparent, newname);
    EntryReply e;
    reply_new_entry(req, ov(req).link(node_of(req, ino), node_of(req, newparent), newname, e), e);
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
    log_op("unlink", parent, name);
    int result = ov(req).unlink(node_of(req, parent), name);
    reply_status(req, result);
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
    log_op("rmdir", parent, name);
    int result = ov(req).rmdir(node_of(req, parent), name);
    reply_status(req, result);
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
    log_op("rename", parent, name);
    int result =
        ov(req).rename(node_of(req, parent), name, node_of(req, newparent), newname, flags);
    reply_status(req, result);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
    log_op("create", parent, name);
    EntryReply e;
    std::unique_ptr<FileHandle> fh;
    // "/" is no name a create can carry: the TMPFILE request_flags.h turns into a CREATE, O_TMPFILE.
    int err = std::string_view(name) == "/"
                  ? ov(req).create_tmpfile(node_of(req, parent), mode, fi->flags, creds(req), e, fh)
                  : ov(req).create(node_of(req, parent), name, mode, fi->flags, creds(req), e, fh);
    if (err) {
        reply_status(req, err);
        return;
    }
    fi->fh = reinterpret_cast<uint64_t>(fh.get());
    fuse_entry_param p = entry_param(req, e);
    Overlay& o = ov(req);  // the request is freed by the reply, even a failed one
    send_invalidations(req);
    if ((err = set_open_mode(req, fi, *fh))) {
        ov(req).release(std::move(fh));
        o.forget(e.node, 1);
        fuse_reply_err(req, err);
        return;
    }
    // Handed over before the reply: the kernel may send its RELEASE before we return.
    FileHandle* raw = fh.get();
    o.hand_over(std::move(fh));
    int sent = fuse_reply_create(req, &p, fi);
    request::attach_backing_id(0);
    if (sent != 0) {
        fh = o.take_back(raw);
        o.release(std::move(fh));  // the grant, the open count and the node's pooled descriptor
        o.forget(e.node, 1);
    }
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    log_op("open", ino);
    std::unique_ptr<FileHandle> fh;
    if (int err = ov(req).open(node_of(req, ino), fi->flags, creds(req), fh)) {
        reply_status(req, err);
        return;
    }
    fi->fh = reinterpret_cast<uint64_t>(fh.get());
    send_invalidations(req);
    if (int err = set_open_mode(req, fi, *fh)) {
        ov(req).release(std::move(fh));
        fuse_reply_err(req, err);
        return;
    }
    Overlay& o = ov(req);  // the request is freed by the reply, even a failed one
    // Handed over before the reply: the kernel may send its RELEASE before we return.
    FileHandle* raw = fh.get();
    o.hand_over(std::move(fh));
    int sent = fuse_reply_open(req, fi);
    request::attach_backing_id(0);
    if (sent != 0) {
        // The kernel never got the handle: no RELEASE will come for it.
        fh = o.take_back(raw);
        o.release(std::move(fh));
    }
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    (void)ino;
    FileFd fd;  // held until the reply has spliced from it
    if (int err = ov(req).file_fd(*file_of(fi), fd)) {
        fuse_reply_err(req, err);
        return;
    }
    fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd.fd;
    buf.buf[0].pos = off;
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void op_write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
    (void)ino;
    FileHandle* fh = file_of(fi);
    if (int err = ov(req).before_write(*fh, creds(req))) {
        reply_status(req, err);
        return;
    }
    fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
    out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    out.buf[0].fd = fh->fd.get();
    out.buf[0].pos = off;
    ssize_t n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
    if (n < 0) {
        reply_status(req, static_cast<int>(-n));
        return;
    }
    // Before the reply: afterwards the handle and node may be gone.
    ov(req).after_write(*fh);
    send_invalidations(req);
    fuse_reply_write(req, static_cast<size_t>(n));
}

void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    (void)ino;
    // Closing a duplicate lets filesystems that act on close (NFS) see it.
    FileFd handle_fd;
    int err = ov(req).file_fd(*file_of(fi), handle_fd);
    int fd = err ? -1 : dup(handle_fd.fd);
    if (!err) err = fd >= 0 && close(fd) == 0 ? 0 : errno;
    fuse_reply_err(req, err);
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    (void)ino;
    ov(req).release(ov(req).take_back(file_of(fi)));
    fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
    (void)ino;
    fuse_reply_err(req, ov(req).fsync(*file_of(fi), datasync != 0));
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    log_op("opendir", ino);
    // Readers share the directory node's listing, so there is no handle to make. A kernel that
    // can do without OPENDIR (Linux 5.1+) takes ENOSYS as "never ask again": no OPENDIR and no
    // RELEASEDIR round trip for each directory opened after this one, and it keeps listings it
    // has read in full (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE) as it would have on our word.
    if (ctx(req).config.no_opendir) {
        fuse_reply_err(req, ENOSYS);
        return;
    }
    if (!node_of(req, ino)->is_dir()) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    fi->fh = 0;
    // The kernel may keep the listing: every change to a directory goes through this mount,
    // and the kernel drops its copy on each one.
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
    log_op(plus ? "readdirplus" : "readdir", ino);
    Node* dir = node_of(req, ino);
    std::shared_ptr<const DirListing> listing;
    if (int err = ov(req).listing_for(dir, static_cast<uint64_t>(off), listing)) {
        fuse_reply_err(req, err);
        return;
    }
    std::string buf(size, '\0');
    size_t used = 0;
    const auto& entries = listing->entries;
    auto from = listing->resume_after(static_cast<uint64_t>(off));
    for (auto it = from; it != entries.end(); ++it) {
        const MergedEntry& e = *it;
        size_t room = size - used;
        auto next = static_cast<off_t>(e.key);
        size_t n;
        if (plus) {
            fuse_entry_param p{};
            EntryReply er;
            bool dot = e.name == "." || e.name == "..";
            if (!dot) {
                if (ov(req).lookup(dir, e.name, er) != 0) continue;  // gone meanwhile
                p = entry_param(req, er);
            } else {
                p.attr.st_ino = e.ino;
                p.attr.st_mode = DTTOIF(e.dtype);
            }
            n = fuse_add_direntry_plus(req, buf.data() + used, room, e.name.c_str(), &p, next);
            if (n > room) {
                if (!dot) ov(req).forget(er.node, 1);
                break;
            }
        } else {
            struct stat st {};
            st.st_ino = e.ino;
            st.st_mode = DTTOIF(e.dtype);
            n = fuse_add_direntry(req, buf.data() + used, room, e.name.c_str(), &st, next);
            if (n > room) break;
        }
        used += n;
    }
    // An empty reply is the end: the kernel has the whole listing now.
    if (used == 0) ov(req).drop_listing(dir, listing.get());
    fuse_reply_buf(req, buf.data(), used);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    do_readdir(req, ino, size, off, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    do_readdir(req, ino, size, off, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
    fuse_reply_err(req, ov(req).fsyncdir(node_of(req, ino), datasync != 0));
}

void op_statfs(fuse_req_t req, fuse_ino_t ino) {
    (void)ino;
    struct statvfs st;
    if (int err = ov(req).statfs(st)) {
        fuse_reply_err(req, err);
        return;
    }
    fuse_reply_statfs(req, &st);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags) {
    log_op("setxattr", ino, name);
    int result = ov(req).setxattr(node_of(req, ino), name, value, size, flags);
    reply_status(req, result);
}

// An xattr value or name list: its size when the caller asked for that (size 0), else the bytes.
void reply_xattr_data(fuse_req_t req, size_t size, const std::string& data) {
    if (size == 0)
        fuse_reply_xattr(req, data.size());
    else
        fuse_reply_buf(req, data.data(), data.size());
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    log_op("getxattr", ino, name);
    std::string value;
    if (int err = ov(req).getxattr(node_of(req, ino), name, value, size)) {
        fuse_reply_err(req, err);
        return;
    }
    reply_xattr_data(req, size, value);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
    log_op("listxattr", ino);
    std::string names;
    // trusted.* names are listed only to the privileged, as the kernel lists them (root here, as
    // laminafs counts root privileged elsewhere: setid.cc).
    bool trusted = fuse_req_ctx(req)->uid == 0;
    if (int err = ov(req).listxattr(node_of(req, ino), names, size, trusted)) {
        fuse_reply_err(req, err);
        return;
    }
    reply_xattr_data(req, size, names);
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
    log_op("removexattr", ino, name);
    int result = ov(req).removexattr(node_of(req, ino), name);
    reply_status(req, result);
}

// FALLOCATE and COPY_FILE_RANGE change a file as a write does, but carry no flag to clear set-id
// bits: under killpriv v2 the daemon decides by the caller alone.
Credentials unflagged_write_creds(fuse_req_t req) {
    return creds(req, ctx(req).device->killpriv_active());
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  fuse_file_info* fi) {
    (void)ino;
    int err = ov(req).fallocate(*file_of(fi), mode, offset, length, unflagged_write_creds(req));
    reply_status(req, err);  // with the invalidations set-id clearing and other names need
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
    (void)ino;
    off_t res;
    if (int err = ov(req).lseek(*file_of(fi), off, whence, res))
        fuse_reply_err(req, err);
    else
        fuse_reply_lseek(req, res);
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                        fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                        int flags) {
    (void)ino_in;
    (void)ino_out;
    size_t copied = 0;
    if (int err = ov(req).copy_file_range(*file_of(fi_in), off_in, *file_of(fi_out), off_out, len,
                                          flags, unflagged_write_creds(req), copied)) {
        reply_status(req, err);
        return;
    }
    send_invalidations(req);
    fuse_reply_write(req, copied);
}

// chattr and lsattr. The kernel asks with an open file (a stub one for a directory, whose
// OPENDIR laminafs declines), so the node comes from the inode number.
void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void* arg, fuse_file_info* fi,
              unsigned flags, const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
    (void)arg;
    (void)fi;
    if (flags & FUSE_IOCTL_COMPAT) {
        fuse_reply_err(req, ENOSYS);
        return;
    }
    Node* node = node_of(req, ino);
    auto call = [&](auto value, bool set) {
        using T = decltype(value);
        if (set) {
            if (in_bufsz < sizeof(T)) return reply_status(req, EINVAL);
            memcpy(&value, in_buf, sizeof value);
        } else if (out_bufsz < sizeof(T)) {
            return reply_status(req, EINVAL);
        }
        if (int err = ov(req).fileattr(node, cmd, &value, set)) return reply_status(req, err);
        send_invalidations(req);
        fuse_reply_ioctl(req, 0, set ? nullptr : &value, set ? 0 : sizeof value);
    };
    switch (cmd) {
        case FS_IOC_GETFLAGS:
            return call(0, false);
        case FS_IOC_SETFLAGS:
            return call(0, true);
        case FS_IOC_FSGETXATTR:
            return call(fsxattr{}, false);
        case FS_IOC_FSSETXATTR:
            return call(fsxattr{}, true);
        default:
            fuse_reply_err(req, ENOTTY);
    }
}

}  // namespace

fuse_lowlevel_ops make_fuse_ops() {
    fuse_lowlevel_ops ops{};
    ops.init = op_init;
    ops.lookup = Served<op_lookup>::call;
    ops.forget = Served<op_forget>::call;
    ops.forget_multi = Served<op_forget_multi>::call;
    ops.getattr = Served<op_getattr>::call;
    ops.setattr = Served<op_setattr>::call;
    ops.readlink = Served<op_readlink>::call;
    ops.mknod = Served<op_mknod>::call;
    ops.mkdir = Served<op_mkdir>::call;
    ops.symlink = Served<op_symlink>::call;
    ops.link = Served<op_link>::call;
    ops.unlink = Served<op_unlink>::call;
    ops.rmdir = Served<op_rmdir>::call;
    ops.rename = Served<op_rename>::call;
    ops.create = Served<op_create>::call;
    ops.open = Served<op_open>::call;
    ops.read = Served<op_read>::call;
    ops.write_buf = Served<op_write_buf>::call;
    ops.flush = Served<op_flush>::call;
    ops.release = Served<op_release>::call;
    ops.fsync = Served<op_fsync>::call;
    ops.opendir = Served<op_opendir>::call;
    ops.readdir = Served<op_readdir>::call;
    ops.readdirplus = Served<op_readdirplus>::call;
    ops.releasedir = Served<op_releasedir>::call;
    ops.fsyncdir = Served<op_fsyncdir>::call;
    ops.statfs = Served<op_statfs>::call;
    ops.setxattr = Served<op_setxattr>::call;
    ops.getxattr = Served<op_getxattr>::call;
    ops.listxattr = Served<op_listxattr>::call;
    ops.removexattr = Served<op_removexattr>::call;
    ops.fallocate = Served<op_fallocate>::call;
    ops.lseek = Served<op_lseek>::call;
    ops.copy_file_range = Served<op_copy_file_range>::call;
    ops.ioctl = Served<op_ioctl>::call;
    return ops;
}

}  // namespace lamina
