// Lookup through the layers: upper first, then the lowers through their merged index, with
// whiteouts, opaque directories and redirects applied as the kernel applies them.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <cstring>

#include <cerrno>

#include "dir_index.h"
#include "overlay.h"
#include "path_util.h"

namespace lamina {

Overlay::Overlay(const MountOptions& opts, LayerStack& stack)
    : opts_(opts),
      stack_(stack),
      read_only_(opts.read_only || !stack.has_upper()),
      flavour_(opts.userxattr || !daemon_is_privileged() ? XattrFlavour::User
                                                         : XattrFlavour::Trusted),
      ids_(opts),
      use_override_(!daemon_is_privileged()),
      read_fds_(read_fd_pool_limit()) {
    table_.set_index_entry_limit(opts.dir_cache_entries);
}

std::string Overlay::init() {
    Node* root = table_.root();
    root->in_upper = stack_.has_upper();
    for (LayerNo n = stack_.first_lower(); n < stack_.end(); ++n) root->lowers.push_back(n);
    root->lower_path.clear();
    if (root->in_upper) {
        char opaque = read_opaque(stack_.proc_path(kUpperLayer, ""));
        root->opaque = opaque == 'y';
        root->xwhiteouts = opaque == 'x';
    }
    struct stat st;
    if (fstatat(stack_.fd(root->top_layer()), ".", &st, 0) != 0)
        return "cannot stat the top layer: " + std::string(strerror(errno));
    root->ino = make_ino(root->top_layer(), st.st_ino);
    return "";
}

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

std::string Overlay::child_lower_path(const Node* parent, std::string_view name) const {
    return join_path(parent->lower_path, name);
}

std::shared_ptr<const DirIndex> Overlay::dir_index(Node* dir) {
    if (auto cached = table_.cached_index(dir)) return cached;
    auto built = std::make_shared<DirIndex>();
    if (!dir->opaque && !dir->lowers.empty()) {
        if (build_dir_index(stack_, dir->lowers, dir->lower_path, *built) != 0) {
            // An unreadable lower directory contributes nothing; do not cache the failure.
            return built;
        }
    }
    return table_.install_index(dir, std::move(built));
}

// The lower layers of a redirected directory, found the way a lookup from the root would find
// them: every ancestor's whiteouts and opaque markers apply, not just the last component's.
void Overlay::probe_redirected_lowers(Node* node) {
    node->lowers.clear();
    std::vector<LayerNo> layers;
    for (LayerNo n = stack_.first_lower(); n < stack_.end(); ++n) layers.push_back(n);
    std::string path;
    std::string_view rest = node->lower_path;
    while (!rest.empty()) {
        size_t slash = rest.find('/');
        std::string_view component = rest.substr(0, slash);
        rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
        if (component.empty()) continue;
        DirIndex index;
        if (build_dir_index(stack_, layers, path, index) != 0) return;
        const LowerEntry* e = index.find(component);
        if (!e || e->whiteout || e->dtype != DT_DIR) return;
        layers = e->dir_layers;
        path = join_path(path, component);
    }
    node->lowers = std::move(layers);
}

// A redirect is absolute ("/a/b", from the layer root) or a name in the parent's lower dir. A
// value that would leave the layer ("..") or that the kernel refuses points nowhere.
std::optional<std::string> Overlay::redirect_target(const Node* parent,
                                                    std::string_view redirect) const {
    return redirect_lower_path(parent->lower_path, redirect);
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
    std::string upath;
    if (parent->in_upper) {
        upath = path_of(parent);
        if (!upath.empty()) upath.push_back('/');
        upath.append(name);
        if (fstatat(stack_.fd(kUpperLayer), upath.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (is_chardev_whiteout(st) ||
                (S_ISREG(st.st_mode) && st.st_size == 0 && parent->xwhiteouts &&
                 has_whiteout_xattr(stack_.proc_path(kUpperLayer, upath)))) {
                if (upper_whiteout) *upper_whiteout = true;
                return ENOENT;
            }
            found_upper = true;
        } else if (errno != ENOENT && errno != ENOTDIR) {
            return errno;
        }
    }

    if (found_upper) {
        node->in_upper = true;
        node->type = st.st_mode & S_IFMT;
        if (node->is_dir()) {
            DirMarks marks = read_dir_marks(stack_.proc_path(kUpperLayer, upath),
                                            opts_.redirect_dir != RedirectDir::NoFollow);
            node->opaque = marks.opaque == 'y';
            node->xwhiteouts = marks.opaque == 'x';
            if (!node->opaque) {
                std::optional<std::string>& redirect = marks.redirect;
                if (redirect) {
                    // An invalid redirect hides the lower content rather than guess at it.
                    if (auto target = redirect_target(parent, *redirect)) {
                        node->lower_path = std::move(*target);
                        probe_redirected_lowers(node);
                    }
                } else if (!parent->opaque && !parent->lowers.empty()) {
                    auto index = dir_index(parent);
                    const LowerEntry* e = index->find(name);
                    if (e && !e->whiteout && e->dtype == DT_DIR) {
                        node->lowers = e->dir_layers;
                        node->lower_path = child_lower_path(parent, name);
                    }
                }
            }
        }
    } else {
        if (parent->opaque || parent->lowers.empty()) return ENOENT;
        auto index = dir_index(parent);
        const LowerEntry* e = index->find(name);
        if (!e || e->whiteout) return ENOENT;
        node->lower_path = child_lower_path(parent, name);
        if (e->dtype == DT_DIR)
            node->lowers = e->dir_layers;
        else
            node->lowers.assign(1, e->layer);
        if (fstatat(stack_.fd(e->layer), node->lower_path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
            return errno;
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

void Overlay::insert_looked_up(Node* parent, std::string_view name, std::unique_ptr<Node>& fresh,
                               EntryReply& out) {
    ino_t real_ino = out.st.st_ino;
    out.node = table_.find_or_insert(parent, name, fresh);
    if (out.node->in_upper && !out.node->is_dir()) table_.set_upper_ino(out.node, real_ino);
    fix_stat(out.node, out.st);
    out.node->ino = out.st.st_ino;
}

std::vector<Overlay::Invalidation>& Overlay::pending_invalidations() {
    static thread_local std::vector<Invalidation> pending;
    return pending;
}

void Overlay::invalidate_peers(Node* node) {
    if (!node->has_peers) return;
    auto peers = table_.peers_of(node);
    auto& pending = pending_invalidations();
    for (uint64_t id : peers) pending.push_back(Invalidation{id, true});
}

void Overlay::keep_open_copy_locked(Node* node) {
    // Fifos, sockets and devices are opened by the kernel without asking us: keep those always.
    bool special = !S_ISREG(node->type) && !S_ISDIR(node->type) && !S_ISLNK(node->type);
    if ((node->open_count == 0 && !special) || node->unlinked_fd) return;
    std::string rel = node->in_upper ? path_of(node) : node->lower_path;
    node->unlinked_fd.reset(
        openat(stack_.fd(node->top_layer()), rel_or_dot(rel), O_PATH | O_NOFOLLOW | O_CLOEXEC));
}

int Overlay::stat_node_locked(const Node* node, struct stat& st) {
    if (node->unlinked) {
        if (!node->unlinked_fd || fstat(node->unlinked_fd.get(), &st) != 0) return ENOENT;
        fix_stat(node, st);
        return 0;
    }
    int rc;
    if (node->in_upper) {
        std::string p = path_of(node);
        rc = fstatat(stack_.fd(kUpperLayer), rel_or_dot(p), &st, AT_SYMLINK_NOFOLLOW);
    } else {
        rc = fstatat(stack_.fd(node->top_layer()), rel_or_dot(node->lower_path), &st,
                     AT_SYMLINK_NOFOLLOW);
    }
    if (rc != 0) return errno;
    fix_stat(node, st);
    return 0;
}

// st_ino follows the copy the entry has now: both names of an upper hardlink agree, and readdir
// computes the same number from the layer and d_ino.
void Overlay::fix_stat(const Node* node, struct stat& st) const {
    st.st_ino = make_ino(node->top_layer(), st.st_ino);
    show_ownership(node, st);
}

}  // namespace lamina
