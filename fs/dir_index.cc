// Building a directory's merged lower listing with one getdents pass per layer.
#include "dir_index.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "dirent_reader.h"
#include "path_util.h"
#include "resolve.h"
#include "unique_fd.h"
#include "whiteout.h"

namespace lamina {

namespace {

struct RawEntry {
    std::string name;
    ino_t ino;
    uint8_t dtype;
    bool whiteout;
    bool xattr_whiteout;
};

// Reads every entry of an open directory.
int read_entries(int dirfd, std::vector<RawEntry>& out) {
    return for_each_dirent(dirfd, [&](std::string_view name, ino_t ino, uint8_t dtype) {
        out.push_back(RawEntry{std::string(name), ino, dtype, false, false});
    });
}

uint8_t dtype_of(mode_t mode) {
    return static_cast<uint8_t>(IFTODT(mode));
}

// Marks raw entries that are markers, not names (OCI whiteout files, vanished entries).
constexpr uint8_t kSkip = 0xff;

// The index is still being built here, so its entries may change.
LowerEntry* find_mut(DirIndex& index, std::string_view name) {
    return const_cast<LowerEntry*>(std::as_const(index).find(name));
}

}  // namespace

const std::string& DirIndex::path_in(LayerNo layer) const {
    for (const LowerDir& d : stack)
        if (d.layer == layer) return d.path;
    static const std::string none;
    return none;
}

int DirIndex::held_fd(LayerNo layer) const {
    for (size_t i = 0; i < stack.size() && i < held.size(); ++i)
        if (stack[i].layer == layer) return held[i].get();
    return -1;
}

LowerStack root_lower_stack(const LayerStack& stack) {
    LowerStack root;
    for (LayerNo n = stack.first_lower(); n < stack.end(); ++n) root.push_back(LowerDir{n, ""});
    return root;
}

namespace {

// Splits "a/b/c" into its names (empty ones dropped).
std::vector<std::string> split_path(std::string_view path) {
    std::vector<std::string> names;
    while (!path.empty()) {
        size_t slash = path.find('/');
        std::string_view name = path.substr(0, slash);
        if (!name.empty()) names.emplace_back(name);
        path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    }
    return names;
}

// Where a redirect met at `layer` leads the layers below it: the stack to go on in, the position
// to go on from and the name to look up there. False for a value the kernel refuses too, which
// then hides what is below. `prefix` and `rest` are the names before and after the component
// that carried it; `base` is the stack the walk was in.
bool follow_redirect(const LayerStack& stack, std::string_view redirect, LayerNo layer,
                     const std::string& prefix, const std::string& rest, LowerStack& base,
                     size_t& from, std::string& name) {
    if (redirect.starts_with('/')) {
        auto target = redirect_lower_path("", redirect);
        if (!target) return false;
        base = root_lower_stack(stack);
        from = static_cast<size_t>(layer - stack.first_lower()) + 1;
        name = join_path(*target, rest);
        return true;
    }
    auto target = redirect_lower_path(prefix, redirect);
    if (!target) return false;
    from = base.size();
    for (size_t i = 0; i < base.size(); ++i)
        if (base[i].layer == layer) from = i + 1;
    name = rest.empty() ? *target : join_path(*target, rest);
    return true;
}

}  // namespace

void redirect_chase(const LayerStack& stack, LowerStack base, size_t from, std::string name,
                    bool follow, LowerStack& out) {
    LayerNo bottom = static_cast<LayerNo>(stack.end() - 1);
    bool rooted =
        !name.empty() && base.size() == static_cast<size_t>(stack.end() - stack.first_lower());
    for (const LowerDir& d : base) rooted = rooted && d.path.empty();
    std::vector<std::string> names = split_path(name);
    size_t i = from;
    while (i < base.size() && !names.empty()) {
        const LowerDir at = base[i];
        // The walk in this layer goes on through the directories it finds; a redirect met on
        // the way changes the name only for the layers below (the kernel rewrites the prefix
        // of its name in place, counting the rest from the end).
        std::vector<std::string> below = names;
        bool absolute = false, stop = false, found = true;
        UniqueFd dir(open_beneath(stack.fd(at.layer), at.path, O_PATH | O_DIRECTORY));
        std::string path = at.path;
        found = static_cast<bool>(dir);
        for (size_t k = 0; found && k < names.size(); ++k) {
            const std::string& c = names[k];
            struct stat st;
            // An OCI whiteout (.wh.NAME) hides the name in the layers below its own, as the
            // index reads them: absent here, the walk ends; present, this layer is the last.
            struct stat wst;
            bool oci_whiteout =
                fstatat(dir.get(), oci_whiteout_name(c).c_str(), &wst, AT_SYMLINK_NOFOLLOW) == 0;
            if (fstatat(dir.get(), c.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
                if (oci_whiteout) return;
                found = false;  // absent here: the next layer is asked
                break;
            }
            // A whiteout, or anything that is not a directory, ends the whole walk.
            if (!S_ISDIR(st.st_mode)) return;
            if (oci_whiteout) stop = true;
            UniqueFd child(
                openat(dir.get(), c.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!child) return;
            if (fstatat(child.get(), std::string(kOciOpaqueMarker).c_str(), &wst,
                        AT_SYMLINK_NOFOLLOW) == 0)
                stop = true;  // .wh..wh..opq: opaque, as opaque="y"
            path = join_path(path, c);
            // The bottom layer hides nothing and leads nowhere: its marks are not read.
            if (at.layer != bottom) {
                DirMarks marks = read_dir_marks(proc_fd_path(child.get(), ""), follow);
                if (marks.opaque == 'y') {
                    stop = true;
                } else if (marks.redirect) {
                    const std::string& r = *marks.redirect;
                    std::vector<std::string> rest(names.begin() + static_cast<long>(k) + 1,
                                                  names.end());
                    std::vector<std::string> next;
                    if (r.starts_with('/')) {
                        auto target = redirect_lower_path("", r);
                        if (!target) return;  // refused: hides what is below
                        next = split_path(*target);
                        absolute = true;
                    } else {
                        if (!redirect_lower_path("", r)) return;
                        next.assign(below.begin(),
                                    below.end() - static_cast<long>(names.size() - k));
                        next.push_back(r);
                    }
                    next.insert(next.end(), rest.begin(), rest.end());
                    below = std::move(next);
                }
            }
            dir = std::move(child);
        }
        if (found) out.push_back(LowerDir{at.layer, path});
        if (stop) return;
        names = std::move(below);
        if (absolute && !rooted) {
            // From here on the name is looked up from every layer's root.
            base = root_lower_stack(stack);
            rooted = true;
            i = static_cast<size_t>(at.layer - stack.first_lower()) + 1;
            continue;
        }
        ++i;
    }
}

int build_dir_index(const LayerStack& stack, const LowerStack& candidates,
                    const RedirectRules& rules, DirIndex& out, long hold_limit) {
    LayerNo bottom = static_cast<LayerNo>(stack.end() - 1);
    LowerStack todo = candidates;
    bool by_name = rules.by_name;
    std::vector<RawEntry> raw;
    std::vector<std::string_view> oci_whiteouts;
    for (size_t i = 0; i < todo.size(); ++i) {
        LayerNo layer = todo[i].layer;
        // Listing a lower directory leaves its atime, as on kernel overlayfs (layers.h).
        UniqueFd dir(open_maybe_noatime(
            O_RDONLY | O_DIRECTORY | stack.noatime_flag(layer, true),
            [&](int f) { return open_beneath(stack.fd(layer), todo[i].path, f); }));
        if (!dir) {
            if (errno == ENOENT || errno == ENOTDIR) continue;
            return errno;
        }
        out.stack.push_back(todo[i]);
        OnceFd& held = out.held.emplace_back();
        struct Keep {  // the descriptor is held once the directory has been read
            UniqueFd& dir;
            OnceFd& held;
            long limit;
            ~Keep() {
                if (dir && OnceFd::live() < limit) held.set(dir);
            }
        } keep{dir, held, hold_limit};
        DirMarks marks = read_dir_marks_fd(dir.get(), by_name && rules.follow && layer != bottom);
        char opaque = marks.opaque;
        raw.clear();
        if (int err = read_entries(dir.get(), raw)) return err;
        bool marker_opaque = false;
        oci_whiteouts.clear();
        for (RawEntry& e : raw) {
            if (e.name == kOciOpaqueMarker) {
                marker_opaque = true;
                e.dtype = kSkip;
                continue;
            }
            if (auto target = oci_whiteout_target(e.name)) {
                oci_whiteouts.push_back(*target);
                e.dtype = kSkip;  // the marker file itself is never listed
                continue;
            }
            // The bottom layer's opaque="x" is never read: its xattr whiteouts stay listed.
            bool xattr_whiteouts = layer != bottom && readdir_hides_xattr_whiteouts(opaque);
            if (e.dtype == DT_UNKNOWN || e.dtype == DT_CHR ||
                (xattr_whiteouts && e.dtype == DT_REG)) {
                struct stat st;
                if (fstatat(dir.get(), e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
                    e.dtype = kSkip;
                    continue;
                }
                e.dtype = dtype_of(st.st_mode);
                e.xattr_whiteout = !is_chardev_whiteout(st) && xattr_whiteouts &&
                                   is_whiteout(st, proc_fd_path(dir.get(), e.name));
                e.whiteout = is_chardev_whiteout(st) || e.xattr_whiteout;
            }
        }
        // Entries of this layer first: a whiteout in the same layer does not hide them.
        for (RawEntry& e : raw) {
            if (e.dtype == kSkip) continue;
            bool is_dir = !e.whiteout && e.dtype == DT_DIR;
            if (LowerEntry* above = find_mut(out, e.name)) {
                if (above->merging) {
                    if (is_dir)
                        above->dir_layers.push_back(layer);
                    else
                        above->merging = false;
                }
                continue;
            }
            LowerEntry& le = out.entries.emplace_back();
            le.name = std::move(e.name);
            le.ino = e.ino;
            le.layer = layer;
            le.dtype = e.dtype;
            le.whiteout = e.whiteout;
            le.xattr_whiteout = e.xattr_whiteout;
            le.merging = is_dir;
            if (is_dir) le.dir_layers.push_back(layer);
            out.by_name.emplace(le.name, static_cast<uint32_t>(out.entries.size() - 1));
        }
        // OCI whiteouts hide the name in the layers below this one.
        for (std::string_view target : oci_whiteouts) {
            if (LowerEntry* above = find_mut(out, target)) {
                above->merging = false;
                continue;
            }
            LowerEntry& le = out.entries.emplace_back();
            le.name.assign(target);
            le.layer = layer;
            le.whiteout = true;
            out.by_name.emplace(le.name, static_cast<uint32_t>(out.entries.size() - 1));
        }
        if (opaque == 'y' || marker_opaque) break;
        if (marks.redirect) {
            // The layers below are where the redirect leads, not where the name merges from.
            by_name = false;
            LowerStack base = marks.redirect->starts_with('/') || !rules.parent_stack
                                  ? LowerStack()
                                  : rules.parent_stack();
            size_t from = 0;
            std::string name;
            LowerStack below;
            if (follow_redirect(stack, *marks.redirect, layer, "", "", base, from, name))
                redirect_chase(stack, std::move(base), from, std::move(name), rules.follow, below);
            todo.resize(i + 1);
            for (LowerDir& d : below) todo.push_back(std::move(d));
        }
    }
    for (LowerEntry& le : out.entries) le.merging = false;
    return 0;
}

}  // namespace lamina
