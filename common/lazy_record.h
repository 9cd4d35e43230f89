// Where a lazy layer's record lies and what makes a store layer lazy (docs/lazy.md, "The store's
// side"): the one rule the store, the fetcher and laminafs share. The record is beside the
// layer's tree, never in it: LAYER/diff is the tree, LAYER/lazy the record, and the layer is lazy
// exactly while LAYER/lazy/source.json is there.
#pragma once

#include <string>

namespace lamina::lazy_record {

// LAYER/lazy.
std::string record_dir(const std::string& layer_dir);

// Whether the layer at layer_dir (LAYER, the parent of diff/) is lazy.
bool is_lazy(const std::string& layer_dir);

// The layer a lower directory is the tree of: LAYER for "LAYER/diff", "" for any other path.
std::string layer_of_tree(const std::string& tree);

}  // namespace lamina::lazy_record
