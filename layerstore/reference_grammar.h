// The distribution reference grammar, in one place for the store's names and the registry client.
#pragma once

#include <string>
#include <string_view>

namespace lamina::store {

// A reference split as the distribution grammar reads it: [domain/]path[:tag][@digest].
struct ReferenceParts {
    std::string domain;  // "" when the first component is no host (no ".", ":" or "localhost")
    std::string path;    // "library/busybox", "test/app"
    std::string tag;     // "" when not given
    std::string digest;  // "" when not given
};

// Splits text and checks every part: path components of lowercase letters and digits joined by
// ".", "_", "__" or runs of "-"; tags [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; sha256 digests; a name
// (domain and path) of at most 255 characters. Throws StoreError("invalid reference \"TEXT\":
// why") with TEXT made printable.
ReferenceParts parse_reference_parts(const std::string& text);

// text with control characters and DEL shown as \xNN, and cut to max characters, so a hostile
// name never writes raw escape sequences to a terminal.
std::string printable(std::string_view text, size_t max = 256);

}  // namespace lamina::store
