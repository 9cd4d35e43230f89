// Registry references: the store's reference grammar, with the image locations skopeo writes.
#include "reference.h"

#include <stdexcept>

#include "error.h"
#include "reference_grammar.h"

namespace lamina::registry {

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
    return first == std::string::npos || !store::names_a_host(text.substr(0, first));
}

Reference parse_reference(const std::string& text) {
    // The distribution grammar and Docker's defaults are the store's too (reference_grammar.h).
    store::ReferenceParts parts;
    try {
        parts = store::parse_normalized_reference(text);
    } catch (const store::StoreError& e) {
        throw std::invalid_argument(e.what());
    }
    Reference r{parts.domain, parts.path, parts.tag, parts.digest};
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
    return store::familiar_name(registry, repository) + ":" + tag;
}

}  // namespace lamina::registry
