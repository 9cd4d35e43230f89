// A lazy layer's record beside its tree, and the file whose presence makes the layer lazy.
#include "lazy_record.h"

#include <unistd.h>

namespace lamina::lazy_record {

std::string record_dir(const std::string& layer_dir) {
    return layer_dir + "/lazy";
}

bool is_lazy(const std::string& layer_dir) {
    return ::access((record_dir(layer_dir) + "/source.json").c_str(), F_OK) == 0;
}

std::string layer_of_tree(const std::string& tree) {
    constexpr std::string_view kTree = "/diff";
    if (tree.size() <= kTree.size() || !tree.ends_with(kTree)) return "";
    return tree.substr(0, tree.size() - kTree.size());
}

}  // namespace lamina::lazy_record
