// Reference parsing with Docker's short-name rules (docker.io and library/ filled in).
#include "reference.h"

#include <stdexcept>

namespace lamina::registry {

namespace {

bool is_lower_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// A path component: lowercase letters and digits, separated by ".", "_", "__" or runs of "-".
bool valid_component(const std::string& c) {
    if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) return false;
    for (size_t i = 0; i < c.size(); ++i) {
        char ch = c[i];
        if (is_lower_alnum(ch) || ch == '-') continue;
        if (ch == '.' || ch == '_') {
            if (i + 1 < c.size() && !is_lower_alnum(c[i + 1]) &&
                !(ch == '_' && c[i + 1] == '_' && i + 2 < c.size() && is_lower_alnum(c[i + 2])))
                return false;
            if (ch == '_' && i + 1 < c.size() && c[i + 1] == '_') ++i;
            continue;
        }
        return false;
    }
    return true;
}

bool valid_tag(const std::string& t) {
    if (t.empty() || t.size() > 128) return false;
    for (size_t i = 0; i < t.size(); ++i) {
        char c = t[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || (i > 0 && (c == '.' || c == '-'));
        if (!ok) return false;
    }
    return true;
}

bool valid_host(const std::string& h) {
    if (h.empty()) return false;
    for (char c : h)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '[' || c == ']'))
            return false;
    return true;
}

// The first path component of a reference is a registry when it looks like a host.
bool names_a_host(const std::string& head) {
    return !head.empty() && (head.find('.') != std::string::npos ||
                             head.find(':') != std::string::npos || head == "localhost");
}

[[noreturn]] void bad(const std::string& text, const std::string& why) {
    throw std::invalid_argument("invalid reference \"" + text + "\": " + why);
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
    if (text.empty()) bad(text, "empty");
    Reference r;
    std::string rest = text;
    if (auto at = rest.find('@'); at != std::string::npos) {
        r.digest = rest.substr(at + 1);
        rest.resize(at);
        bool hex_ok = r.digest.size() == 71 && r.digest.starts_with("sha256:");
        for (size_t i = 7; hex_ok && i < r.digest.size(); ++i)
            hex_ok = (r.digest[i] >= '0' && r.digest[i] <= '9') ||
                     (r.digest[i] >= 'a' && r.digest[i] <= 'f');
        if (!hex_ok) bad(text, "the digest must be sha256: and 64 lowercase hex digits");
    }
    // A colon after the last slash starts the tag; one before it belongs to a host:port.
    size_t slash = rest.rfind('/');
    size_t colon = rest.rfind(':');
    if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
        r.tag = rest.substr(colon + 1);
        rest.resize(colon);
        if (!valid_tag(r.tag)) bad(text, "invalid tag \"" + r.tag + "\"");
    }
    size_t first = rest.find('/');
    std::string head = first == std::string::npos ? "" : rest.substr(0, first);
    if (names_a_host(head)) {
        if (!valid_host(head)) bad(text, "invalid registry host \"" + head + "\"");
        r.registry = canonical_registry(head);
        r.repository = rest.substr(first + 1);
    } else {
        r.registry = kDockerHub;
        r.repository = rest;
    }
    if (r.registry == kDockerHub && r.repository.find('/') == std::string::npos)
        r.repository = "library/" + r.repository;
    size_t start = 0;
    for (;;) {
        size_t end = r.repository.find('/', start);
        std::string comp = r.repository.substr(start, end - start);
        if (!valid_component(comp))
            bad(text, "repository names are lowercase letters, digits and separators (. _ -)");
        if (end == std::string::npos) break;
        start = end + 1;
    }
    if (r.repository.size() > 255) bad(text, "repository name longer than 255 characters");
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
