// Reference parsing with Docker's short-name rules (docker.io and library/ filled in).
#include "reference.h"

#include <stdexcept>

#include "error.h"
#include "reference_grammar.h"

namespace lamina::registry {

namespace {

// The first path component of a reference is a registry when it looks like a host.
bool names_a_host(const std::string& head) {
    return !head.empty() && (head.find('.') != std::string::npos ||
                             head.find(':') != std::string::npos || head == "localhost");
}

}  // namespace

ImageLocation parse_image_location(const std::string& text) {
    using Kind = ImageLocation::Kind;
    static const std::pair<const char*, Kind> kTransports[] = {
        {"docker://", Kind::kRegistry},
        {"docker-archive:", Kind::kDockerArchive},
        {"oci-archive:", Kind::kOciArchive},
        {"oci:", Kind::kOciLayout},
    };
    for (const auto& [prefix, kind] : kTransports) {
        if (!text.starts_with(prefix)) continue;
        ImageLocation l{kind, text.substr(std::string(prefix).size()), ""};
        // As skopeo: PATH[:REF], the first colon ending the path.
        if (kind != Kind::kRegistry) {
            if (auto colon = l.text.find(':'); colon != std::string::npos) {
                l.ref = l.text.substr(colon + 1);
                l.text.resize(colon);
            }
        }
        if (l.text.empty()) throw std::invalid_argument("\"" + text + "\" names no image");
        return l;
    }
    return {Kind::kRegistry, text, ""};
}

std::string canonical_registry(const std::string& host) {
    if (host == "index.docker.io" || host == "registry-1.docker.io") return kDockerHub;
    return host;
}

bool is_short_name(const std::string& text) {
    size_t first = text.find('/');
    return first == std::string::npos || !names_a_host(text.substr(0, first));
}

Reference parse_reference(const std::string& text) {
    // The distribution grammar is the store's too: one parser for both (reference_grammar.h).
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
