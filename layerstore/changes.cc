// `lamina diff`: the container's changes read from its writable layer, judged against the image.
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include <algorithm>
#include <set>

#include "error.h"
#include "fd.h"
#include "fsutil.h"
#include "internal.h"
#include "overlay_names.h"
#include "store.h"

namespace lamina::store {

namespace {

// An unreadable directory lists as empty: the diff reports what it can see.
std::vector<std::string> sorted_names(int dirfd) {
    std::vector<std::string> names;
    sorted_names_at(dirfd, ".", names);
    return names;
}

std::vector<std::string> split(const std::string& path) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < path.size()) {
        size_t slash = path.find('/', pos);
        if (slash == std::string::npos) slash = path.size();
        if (slash > pos) out.push_back(path.substr(pos, slash - pos));
        pos = slash + 1;
    }
    return out;
}

// The image's read-only view, merged from its layer directories (top first) with their
// whiteouts and opaque directories.
class LowerView {
public:
    explicit LowerView(const std::vector<std::string>& dirs) {
        for (const auto& d : dirs) {
            Fd fd(::open(d.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            if (!fd) throw StoreError("cannot open layer " + d + ": " + strerror(errno));
            layers_.push_back(std::move(fd));
        }
    }

    bool exists(const std::string& path) const {
        auto comps = split(path);
        if (comps.empty()) return true;
        for (const auto& layer : layers_) {
            int r = lookup(layer.get(), comps);
            if (r != 0) return r > 0;
        }
        return false;
    }

    // Names in the merged directory at path.
    std::vector<std::string> children(const std::string& path) const {
        std::set<std::string> seen, hidden;
        auto comps = split(path);
        if (!exists(path)) return {};
        for (const auto& layer : layers_) {
            Fd dir = open_dir(layer.get(), comps);
            if (!dir) {
                if (blocks(layer.get(), comps)) break;
                continue;
            }
            for (const auto& n : sorted_names(dir.get())) {
                struct stat st;
                if (::fstatat(dir.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
                if (n == kOciOpaqueMarker) continue;
                if (auto target = oci_whiteout_target(n)) {
                    hidden.emplace(*target);
                    continue;
                }
                if (is_whiteout_at(dir.get(), n, st)) {
                    hidden.insert(n);
                    continue;
                }
                if (!hidden.count(n)) seen.insert(n);
            }
            if (is_opaque_dir(dir.get()) || blocks(layer.get(), comps)) break;
        }
        return {seen.begin(), seen.end()};
    }

private:
    static Fd open_dir(int root, const std::vector<std::string>& comps) {
        Fd cur(::openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
        for (const auto& c : comps) {
            int fd = ::openat(cur.get(), c.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) return Fd();
            cur.reset(fd);
        }
        return cur;
    }
    static bool is_opaque_dir(int dirfd) {
        return is_opaque_at(dirfd, ".") || has_oci_opaque_marker(dirfd);
    }
    // True when this layer hides everything below it at comps (an opaque ancestor, a whiteout
    // or a non-directory on the way).
    static bool blocks(int root, const std::vector<std::string>& comps) {
        return lookup(root, comps) < 0 || opaque_on_path(root, comps);
    }
    static bool opaque_on_path(int root, const std::vector<std::string>& comps) {
        Fd cur(::openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
        for (const auto& c : comps) {
            int fd = ::openat(cur.get(), c.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) return false;
            cur.reset(fd);
            if (is_opaque_dir(cur.get())) return true;
        }
        return false;
    }
    // 1: present in this layer; -1: hidden from the layers below; 0: undecided here.
    static int lookup(int root, const std::vector<std::string>& comps) {
        Fd cur(::openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
        for (size_t i = 0; i < comps.size(); ++i) {
            const std::string& c = comps[i];
            struct stat st;
            if (::fstatat(cur.get(), oci_whiteout_name(c).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
                return -1;
            if (::fstatat(cur.get(), c.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
            if (is_whiteout_at(cur.get(), c, st)) return -1;
            if (i + 1 == comps.size()) return 1;
            if (!S_ISDIR(st.st_mode)) return -1;
            cur.reset(
                ::openat(cur.get(), c.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!cur) return 0;
            if (is_opaque_dir(cur.get())) {
                // Below an opaque directory only this layer speaks.
                std::vector<std::string> rest(comps.begin() + static_cast<long>(i) + 1,
                                              comps.end());
                return lookup_here_only(cur.get(), rest);
            }
        }
        return 0;
    }
    static int lookup_here_only(int dir, const std::vector<std::string>& rest) {
        int r = lookup(dir, rest);
        return r == 0 ? -1 : r;
    }

    std::vector<Fd> layers_;
};

class ChangeWalker {
public:
    ChangeWalker(const LowerView& lower, std::vector<Change>& out) : lower_(lower), out_(out) {}

    void walk(int dirfd, const std::string& rel) {
        for (const auto& n : sorted_names(dirfd)) {
            std::string path = rel + "/" + n;
            struct stat st;
            if (::fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
            if (n == kOciOpaqueMarker) continue;
            if (auto target = oci_whiteout_target(n)) {
                out_.push_back({'D', rel + "/" + std::string(*target)});
                continue;
            }
            if (is_whiteout_at(dirfd, n, st)) {
                out_.push_back({'D', path});
                continue;
            }
            bool in_lower = lower_.exists(path);
            out_.push_back({in_lower ? 'C' : 'A', path});
            if (!S_ISDIR(st.st_mode)) continue;
            Fd sub(::openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!sub) continue;
            auto upper_names = sorted_names(sub.get());
            std::set<std::string> in_upper(upper_names.begin(), upper_names.end());
            // A renamed directory shows its image content at the new place.
            if (auto redirect = redirect_at(dirfd, n)) {
                std::string origin = redirect->starts_with("/") ? *redirect : rel + "/" + *redirect;
                add_lower_tree(origin, path, in_upper);
            }
            bool opaque = is_opaque_at(dirfd, n) || in_upper.count(std::string(kOciOpaqueMarker));
            if (opaque && in_lower) {
                for (const auto& child : lower_.children(path))
                    if (!in_upper.count(child)) out_.push_back({'D', path + "/" + child});
            }
            walk(sub.get(), path);
        }
    }

private:
    void add_lower_tree(const std::string& origin, const std::string& at,
                        const std::set<std::string>& skip) {
        for (const auto& child : lower_.children(origin)) {
            if (skip.count(child)) continue;
            out_.push_back({'A', at + "/" + child});
            add_lower_tree(origin + "/" + child, at + "/" + child, {});
        }
    }

    const LowerView& lower_;
    std::vector<Change>& out_;
};

}  // namespace

std::vector<Change> Store::diff(const std::string& ref) {
    ContainerRecord c = container(ref);
    ImageRecord img = read_image(c.image_id);
    std::vector<std::string> dirs;
    for (size_t i = img.layers.size(); i-- > 0;) dirs.push_back(layer_dir(img.layers[i].chain_id));
    LowerView lower(dirs);
    std::string upper = container_paths(c.id).upper();
    Fd fd(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw StoreError("cannot open " + upper + ": " + strerror(errno));
    std::vector<Change> out;
    ChangeWalker(lower, out).walk(fd.get(), "");
    std::stable_sort(out.begin(), out.end(),
                     [](const Change& a, const Change& b) { return a.path < b.path; });
    return out;
}

}  // namespace lamina::store
