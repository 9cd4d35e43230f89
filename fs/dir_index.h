// The merged listing of a directory's lower layers, built once: lookups of absent names and
// readdir then cost no system calls however many layers there are.
#pragma once

#include <sys/types.h>

#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "layers.h"
#include "node.h"

namespace lamina {

// A directory in one lower layer: the layer and the directory's path in it.
struct LowerDir {
    LayerNo layer = 0;
    std::string path;
};
// A merged directory's lower layers, top first. Each has its own path: a redirect in one layer
// sends the layers below it elsewhere.
using LowerStack = std::vector<LowerDir>;

struct LowerEntry {
    std::string name;
    ino_t ino = 0;          // inode number in `layer`
    LayerNo layer = 0;      // topmost lower layer holding the name
    uint8_t dtype = 0;      // DT_* of that copy
    bool whiteout = false;  // the topmost mention is a whiteout: the name is absent
    // For a directory: every lower layer it merges from, top first (stops at a whiteout or a
    // non-directory further down; opaque copies are cut when the child's own index is built).
    std::vector<LayerNo> dir_layers;
    bool merging = false;  // while building: layers further down may still add to dir_layers
};

struct DirIndex {
    // In discovery order, which readdir offsets follow; a deque so by_name's keys stay valid.
    std::deque<LowerEntry> entries;
    std::unordered_map<std::string_view, uint32_t> by_name;
    // The lower layers that really contribute to this directory, with its path in each: cut at
    // the first opaque one, and below a redirect the layers it leads to.
    LowerStack stack;
    // stack's directories, each held open while the index is cached (within the daemon's share
    // of directory descriptors: unset beyond it), so that a lookup in this directory finds a
    // name without resolving the directory's path in its layer again.
    std::deque<OnceFd> held;

    const LowerEntry* find(std::string_view name) const {
        auto it = by_name.find(name);
        return it == by_name.end() ? nullptr : &entries[it->second];
    }
    // The directory's path in `layer` (one of stack's).
    const std::string& path_in(LayerNo layer) const;
    // The held descriptor of the directory in `layer` (at path_in(layer)), or -1.
    int held_fd(LayerNo layer) const;
};

// How the lower layers of a directory are found beyond those its name merges from.
struct RedirectRules {
    bool follow = true;  // redirect_dir=nofollow: redirects are ignored
    // Whether `candidates` were found by name (lookup through the parent) and may still meet a
    // redirect, or were already found by following one (redirect_chase), which went all the way.
    bool by_name = true;
    // The parent's stack: a relative redirect names another entry of the parent. Asked for
    // only when one is met.
    std::function<LowerStack()> parent_stack;
};

// Reads the directory in each of `candidates` (top first) and merges them under the overlay
// rules: whiteouts (char 0/0, xattr whiteouts under an opaque="x" parent, OCI .wh.NAME) hide
// names below their layer; an opaque directory (xattr "y" or .wh..wh..opq) ends the merge; a
// redirect in a layer replaces the candidates below it by where it leads (redirect_chase).
// Every directory is reached with open_beneath. Returns 0 or an errno.
// The directories read are kept in out.held while fewer than hold_limit OnceFds are alive.
int build_dir_index(const LayerStack& stack, const LowerStack& candidates,
                    const RedirectRules& rules, DirIndex& out, long hold_limit = 0);

// The kernel's lookup of `name` (components joined by '/', relative to each entry's path) in
// base[from..], as ovl_lookup walks the lower layers: an absent name goes on to the next layer; a
// whiteout or a non-directory on the way ends the walk, as does an opaque directory once
// reached; a redirect met in a directory on the way (absolute: from the layer root, with the
// root stack; relative: in place of that component) goes on below with the name it gives. The
// directories found are appended to out. `stack` gives the root stack (every lower, path "").
void redirect_chase(const LayerStack& stack, LowerStack base, size_t from, std::string name,
                    bool follow, LowerStack& out);

// Every lower layer with path "": where a lookup from the root, or an absolute redirect, starts.
LowerStack root_lower_stack(const LayerStack& stack);

}  // namespace lamina
