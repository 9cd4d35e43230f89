// Lookup through the layers: upper first, then the lowers through their merged index, with
// whiteouts, opaque directories and redirects applied as the kernel applies them.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <cstring>

#include <sys/resource.h>
#include <cerrno>

#include <algorithm>

#include "dir_index.h"
#include "overlay.h"
#include "path_util.h"

namespace lamina {

std::string Overlay::path_of(const Node* node) const {
    if (!node->parent) return "";
    size_t len = 0;
    for (const Node* n = node; n->parent; n = n->parent) len += n->name.size() + 1;
    std::string out(len - 1, '/');
    size_t end = len - 1;
    for (const Node* n = node; n->parent; n = n->parent) {
        end -= n->name.size();
        out.replace(end, n->name.size(), n->name);
        if (end > 0) --end;
    }
    return out;
}

RedirectRules Overlay::redirect_rules(Node* dir) {
    RedirectRules rules;
    rules.follow = opts_.redirect_dir != RedirectDir::NoFollow;
    rules.by_name = !dir->lowers_chased;
    if (Node* parent = dir->parent)
        rules.parent_stack = [this, parent] { return dir_index(parent)->stack; };
    return rules;
}

std::shared_ptr<const DirIndex> Overlay::dir_index(Node* dir) {
    if (auto cached = table_.cached_index(dir)) return cached;
    auto built = std::make_shared<DirIndex>();
    if (!dir->opaque && !dir->lowers.empty()) {
        LowerStack candidates;
        for (size_t i = 0; i < dir->lowers.size(); ++i)
            candidates.push_back(LowerDir{dir->lowers[i], dir->lower_path_in(i)});
        if (build_dir_index(stack_, candidates, redirect_rules(dir), *built, dir_fd_limit_) != 0) {
            // An unreadable lower directory contributes nothing; do not cache the failure.
            return built;
        }
    }
    return table_.install_index(dir, std::move(built));
}

// A redirect is absolute ("/a/b", from the layer root) or a name in the parent's lower dir. A
// value that would leave the layer ("..") or that the kernel refuses points nowhere: the lower
// content is hidden rather than guessed at. The walk through the lower layers follows further
// redirects found there (redirect_chase), as the kernel's lookup does.
void Overlay::follow_upper_redirect(Node* parent, Node* node, std::string_view redirect) {
    auto target = redirect_lower_path(parent->lower_path, redirect);
    if (!target) return;
    node->lower_path = *target;
    node->lowers_chased = true;
    node->upper_redirect = true;
    node->redirect_absolute = redirect.starts_with('/');
    LowerStack found;
    if (redirect.starts_with('/')) {
        redirect_chase(stack_, root_lower_stack(stack_), 0, *target, true, found);
    } else if (!parent->opaque && !parent->lowers.empty()) {
        redirect_chase(stack_, dir_index(parent)->stack, 0, std::string(redirect), true, found);
    }
    for (LowerDir& d : found) {
        node->lowers.push_back(d.layer);
        node->lower_paths.push_back(std::move(d.path));
    }
    // Every layer is where the redirect said: nothing differs, so lower_path serves them all.
    bool same = true;
    for (const std::string& p : node->lower_paths) same = same && p == node->lower_path;
    if (same) node->lower_paths.clear();
}

// Each lower copy of a node found by name in its parent's index lies at the parent's path in that
// layer; lower_paths is kept only where one differs from lower_path.
static void set_lower_paths(const DirIndex& parent_index, Node* node) {
    node->lower_paths.clear();
    bool same = true;
    std::vector<std::string> paths;
    for (LayerNo layer : node->lowers) {
        paths.push_back(join_path(parent_index.path_in(layer), node->name));
        same = same && paths.back() == node->lower_path;
    }
    if (!same) node->lower_paths = std::move(paths);
}

int Overlay::lookup_locked(Node* parent, std::string_view name, std::unique_ptr<Node>& fresh,
                           struct stat& st, bool* upper_whiteout) {
    if (upper_whiteout) *upper_whiteout = false;
    if (!parent->is_dir()) return ENOTDIR;
    if (parent->unlinked) return ENOENT;
    if (name.size() > NAME_MAX) return ENAMETOOLONG;
    if (name == "." || name == "..") return EINVAL;  // the kernel resolves these itself
    fresh = std::make_unique<Node>();
    Node* node = fresh.get();
    // Placed for path_of() even while outside the table (the table sets these again on insert).
    node->parent = parent;
    node->name.assign(name);

    bool found_upper = false;
    UniqueFd upper_dir;
    if (parent->in_upper) {
        Place at;
        if (int err = upper_child_place(parent, name, at)) return err;
        if (fstatat(at.dirfd, at.c_name(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
            // The kernel's lookup honours an xattr whiteout in any directory, marked 'x' or not.
            if (is_whiteout(st, at.xattr_path())) {
                if (upper_whiteout) *upper_whiteout = true;
                return ENOENT;
            }
            found_upper = true;
            if (S_ISDIR(st.st_mode)) {
                // Held from here on: every later request reaches this very directory.
                upper_dir.reset(
                    openat(at.dirfd, at.c_name(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
                if (!upper_dir || fstat(upper_dir.get(), &st) != 0) return errno;
            }
        } else if (errno != ENOENT && errno != ENOTDIR) {
            return errno;
        }
    }

    if (found_upper) {
        node->in_upper = true;
        node->type = st.st_mode & S_IFMT;
        if (node->is_dir()) {
            node->upper_dir_ino = st.st_ino;
            DirMarks marks = read_dir_marks(proc_fd_path(upper_dir.get(), ""),
                                            opts_.redirect_dir != RedirectDir::NoFollow);
            hold_upper_dir(node, upper_dir);
            node->opaque = marks.opaque == 'y';
            node->xwhiteouts = marks.opaque == 'x';
            if (!node->opaque) {
                if (marks.redirect) {
                    follow_upper_redirect(parent, node, *marks.redirect);
                } else if (!parent->opaque && !parent->lowers.empty()) {
                    auto index = dir_index(parent);
                    const LowerEntry* e = index->find(name);
                    node->lower_path = join_path(parent->lower_path, name);
                    if (e && !e->whiteout && e->dtype == DT_DIR) {
                        node->lowers = e->dir_layers;
                        set_lower_paths(*index, node);
                    }
                }
            }
        }
    } else {
        if (parent->opaque || parent->lowers.empty()) return ENOENT;
        auto index = dir_index(parent);
        const LowerEntry* e = index->find(name);
        if (!e || e->whiteout) return ENOENT;
        node->lower_path = join_path(parent->lower_path, name);
        if (e->dtype == DT_DIR)
            node->lowers = e->dir_layers;
        else
            node->lowers.assign(1, e->layer);
        set_lower_paths(*index, node);
        // The parent's index holds its directory in that layer, while the descriptor budget
        // lasts: then the name is found without resolving the parent's path again.
        Place at;
        if (!held_place(index, node->lowers[0], node, at)) {
            if (int err = lower_place(node, at)) return err;
        }
        if (fstatat(at.dirfd, at.c_name(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
        // The index lists xattr whiteouts of directories not marked 'x', as the kernel's readdir
        // does; its lookup refuses them all the same.
        if (is_whiteout(st, at.xattr_path())) return ENOENT;
        node->type = st.st_mode & S_IFMT;
    }
    node->ino = make_ino(node->top_layer(), st.st_ino);
    return 0;
}

int Overlay::existing_node_locked(Node* parent, std::string_view name,
                                  std::unique_ptr<Node>& scratch, Node*& out) {
    struct stat st;
    if (int err = lookup_locked(parent, name, scratch, st)) return err;
    out = table_.find(parent, name);
    if (!out) out = scratch.get();
    return 0;
}

int Overlay::lookup(Node* parent, std::string_view name, EntryReply& out) {
    std::shared_lock lock(tree_);
    std::unique_ptr<Node> fresh;
    int err = lookup_locked(parent, name, fresh, out.st);
    if (err) return err;
    insert_looked_up(parent, name, fresh, out);
    return 0;
}

// A node revived for a file handle, answered as a lookup would answer it.
static int entry_of_revived(Overlay& ov, Node* node, EntryReply& out) {
    if (!node) return ESTALE;
    if (int err = ov.getattr(node, out.st)) {
        ov.forget(node, 1);
        return err == ENOENT ? ESTALE : err;
    }
    out.node = node;
    return 0;
}

int Overlay::lookup_handle(uint64_t id, EntryReply& out) {
    return entry_of_revived(*this, table_.revive(id), out);
}

int Overlay::lookup_parent(Node* dir, EntryReply& out) {
    if (!dir->is_dir()) return ENOTDIR;
    return entry_of_revived(*this, table_.revive_parent(dir), out);
}

void Overlay::insert_looked_up(Node* parent, std::string_view name, std::unique_ptr<Node>& fresh,
                               EntryReply& out) {
    ino_t real_ino = out.st.st_ino;
    out.node = table_.find_or_insert(parent, name, fresh);
    if (out.node->in_upper && !out.node->is_dir()) table_.set_upper_ino(out.node, real_ino);
    fix_stat(out.node, out.st);
    out.node->ino = out.st.st_ino;
}

namespace {
// The Changes of the request this thread serves, if any.
thread_local Overlay::Changes* current_changes = nullptr;
}  // namespace

Overlay::Changes::Changes() {
    current_changes = this;
}

Overlay::Changes::~Changes() {
    current_changes = nullptr;
}

Overlay::Changes* Overlay::Changes::current() {
    return current_changes;
}

void Overlay::invalidate(Invalidation inv) {
    if (current_changes) current_changes->pending_.push_back(inv);
}

void Overlay::invalidate_peers(Node* node) {
    if (!node->has_peers) return;
    for (uint64_t id : table_.peers_of(node)) invalidate(Invalidation{id, true});
}

void Overlay::keep_open_copy_locked(Node* node) {
    // Fifos, sockets and devices are opened by the kernel without asking us: keep those always.
    bool special = !S_ISREG(node->type) && !S_ISDIR(node->type) && !S_ISLNK(node->type);
    if ((node->open_count == 0 && !special) || node->unlinked_fd) return;
    Place at;
    if (top_place(node, at) != 0) return;
    node->unlinked_fd.reset(openat(at.dirfd, at.c_name(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
}

int Overlay::gone_copy_fd(const Node* node) const {
    if (node->unlinked_fd) return node->unlinked_fd.get();
    if (node->is_dir() && node->in_upper) return node->upper_dir.get();
    return -1;
}

int Overlay::open_gone_copy(const Node* node, UniqueFd& out) const {
    // Lower copies are not changed in place, and other kinds could block or act when opened.
    if (!node->in_upper || !(S_ISREG(node->type) || S_ISDIR(node->type))) return ENOENT;
    int fd = gone_copy_fd(node);
    if (fd < 0) return ENOENT;
    std::string proc = proc_fd_link(fd);
    int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (node->is_dir() ? O_DIRECTORY : 0);
    out.reset(::open(proc.c_str(), flags));
    return out ? 0 : errno;
}

void Overlay::hold_upper_dir(const Node* node, UniqueFd& fd) const {
    if (OnceFd::live() < dir_fd_limit_) node->upper_dir.set(fd);
}

int Overlay::upper_dir_fd(const Node* dir, UniqueFd& scratch, int& fd) const {
    if (!dir->parent) {
        fd = stack_.fd(kUpperLayer);
        return 0;
    }
    if ((fd = dir->upper_dir.get()) >= 0) return 0;
    if (!dir->in_upper || !dir->is_dir()) return EIO;  // no upper directory to reach
    UniqueFd found(open_beneath(stack_.fd(kUpperLayer), path_of(dir), O_PATH | O_DIRECTORY));
    if (!found) return errno;
    struct stat st;
    if (fstat(found.get(), &st) != 0) return errno;
    // Something else now stands where the directory was: not the one this node is.
    if (st.st_ino != dir->upper_dir_ino) return ESTALE;
    hold_upper_dir(dir, found);
    if ((fd = dir->upper_dir.get()) >= 0) return 0;
    scratch = std::move(found);
    fd = scratch.get();
    return 0;
}

int Overlay::upper_child_place(const Node* parent, std::string_view name, Place& out) const {
    if (int err = upper_dir_fd(parent, out.owned, out.dirfd)) return err;
    out.name.assign(name);
    return 0;
}

int Overlay::upper_place(const Node* node, Place& out) const {
    if (node->is_dir()) {
        // The directory itself, as it was looked up: never whatever took its name since.
        out.name = ".";
        return upper_dir_fd(node, out.owned, out.dirfd);
    }
    return upper_child_place(node->parent, node->name, out);
}

int Overlay::lower_place(const Node* node, Place& out) const {
    if (node->lowers.empty()) return ENOENT;
    LayerNo layer = node->lowers[0];
    // The parent's cached index may hold the directory the name lies in (held_place).
    if (node->parent) {
        if (auto index = table_.peek_index(node->parent);
            index && held_place(index, layer, node, out))
            return 0;
    }
    return locate_beneath(stack_.fd(layer), node->lower_path_in(0), out);
}

bool Overlay::held_place(const std::shared_ptr<const DirIndex>& parent_index, LayerNo layer,
                         const Node* node, Place& out) const {
    int held = parent_index->held_fd(layer);
    // Per lookup and per request on a lower entry: compared, not built.
    if (held < 0 ||
        !is_joined_path(node->lower_path_in(0), parent_index->path_in(layer), node->name))
        return false;
    out.owned.reset();
    out.keep = parent_index;
    out.dirfd = held;
    out.name = node->name;
    return true;
}

}  // namespace lamina
