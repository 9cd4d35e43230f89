// Relative paths inside a layer: "" is the layer root.
#pragma once

#include <string>
#include <string_view>

namespace lamina {

inline std::string join_path(std::string_view dir, std::string_view name) {
    std::string out;
    out.reserve(dir.size() + 1 + name.size());
    out.append(dir);
    if (!dir.empty()) out.push_back('/');
    out.append(name);
    return out;
}

// The name *at() calls take for a relative path: "." for the layer root.
inline const char* rel_or_dot(const std::string& rel) {
    return rel.empty() ? "." : rel.c_str();
}

}  // namespace lamina
