// The distribution reference grammar, in one place for the store's names and the registry client.
#pragma once

#include <string>
#include <string_view>

#include "printable.h"

namespace lamina::store {

// A reference split as the distribution grammar reads it: [domain/]path[:tag][@digest].
struct ReferenceParts {
    std::string domain;  // "" when the first component is no host (no ".", ":" or "localhost")
    std::string path;    // "library/busybox", "test/app"
    std::string tag;     // "" when not given
    std::string digest;  // "" when not given
};

// Docker Hub's name in references; "index.docker.io" is an old spelling of it.
inline constexpr const char* kDockerHub = "docker.io";

// Whether a reference's first path component names a registry: it holds a "." or ":" or is
// "localhost". Otherwise the reference is a short name, a Docker Hub one by default.
bool names_a_host(std::string_view first_component);

// Splits text and checks every part: path components of lowercase letters and digits joined by
// ".", "_", "__" or runs of "-"; tags [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; sha256 digests; a name
// (domain and path) of at most 255 characters. Throws StoreError("invalid reference \"TEXT\":
// why") with TEXT made printable.
ReferenceParts parse_reference_parts(const std::string& text);

// parse_reference_parts with Docker's defaults filled in, as distribution/reference's
// ParseNormalizedNamed does: the domain docker.io when none is named or it is index.docker.io,
// and "library/" before a one-component Docker Hub path. The tag stays "" when not given.
ReferenceParts parse_normalized_reference(const std::string& text);

// The familiar name of a normalized domain and path, as the docker CLI shows and the store keeps
// it: "busybox" (docker.io/library/busybox), "user/app" (docker.io/user/app),
// "127.0.0.1:5000/test/app".
std::string familiar_name(const std::string& domain, const std::string& path);

// Names in errors are shown with lamina::printable (common/printable.h): a hostile name never
// writes raw escape sequences to a terminal.

}  // namespace lamina::store
