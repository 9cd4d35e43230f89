// The merged listing of a directory's lower layers, built once: lookups of absent names and
// readdir then cost no system calls however many layers there are.
#pragma once

#include <sys/types.h>

#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "layers.h"

namespace lamina {

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
    // The lower layers that really contribute to this directory (cut at the first opaque one).
    std::vector<LayerNo> layers;

    const LowerEntry* find(std::string_view name) const {
        auto it = by_name.find(name);
        return it == by_name.end() ? nullptr : &entries[it->second];
    }
};

// Reads `rel` in each of `layers` (top first) and merges them under the overlay rules:
// whiteouts (char 0/0, xattr whiteouts under an opaque="x" parent, OCI .wh.NAME) hide names
// below their layer; an opaque directory (xattr "y" or .wh..wh..opq) ends the merge.
// Returns 0 or an errno.
int build_dir_index(const LayerStack& stack, const std::vector<LayerNo>& layers,
                    const std::string& rel, DirIndex& out);

}  // namespace lamina
