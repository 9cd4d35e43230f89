// Reference parsing with Docker's short-name rules (docker.io and library/ filled in).
#include "reference.h"

#include <stdexcept>

#include "error.h"
#include "reference_grammar.h"

namespace lamina::registry {

std::string canonical_registry(const std::string& host) {
    if (host == "index.docker.io" || host == "registry-1.docker.io") return kDockerHub;
    return host;
}

Reference parse_reference(const std::string& text) {
    store::ReferenceParts parts;
    try {
        parts = store::parse_reference_parts(text);
    } catch (const store::StoreError& e) {
        throw std::invalid_argument(e.what());
    }
    Reference r;
    r.registry = parts.domain.empty() ? kDockerHub : canonical_registry(parts.domain);
    r.repository = parts.path;
    r.tag = parts.tag;
    r.digest = parts.digest;
    if (r.registry == kDockerHub && r.repository.find('/') == std::string::npos)
        r.repository = "library/" + r.repository;
    if (r.tag.empty() && r.digest.empty()) r.tag = "latest";
    return r;
}

std::string Reference::str() const {
    std::string s = registry + "/" + repository;
    if (!tag.empty()) s += ":" + tag;
    if (!digest.empty()) s += "@" + digest;
    return s;
}

std::string Reference::store_name() const {
    if (tag.empty()) return "";
    std::string repo = repository;
    if (registry == kDockerHub) {
        if (repo.starts_with("library/") && repo.find('/', 8) == std::string::npos)
            repo = repo.substr(8);
    } else {
        repo = registry + "/" + repo;
    }
    return repo + ":" + tag;
}

}  // namespace lamina::registry
