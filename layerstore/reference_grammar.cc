// Reference parsing against the distribution grammar (github.com/distribution/reference).
#include "reference_grammar.h"

#include <cstdio>

#include "digest.h"
#include "error.h"

namespace lamina::store {

namespace {

inline constexpr size_t kMaxNameLength = 255;

bool is_lower_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// A path component: lowercase letters and digits, separated by ".", "_", "__" or runs of "-".
bool valid_component(std::string_view c) {
    if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) return false;
    for (size_t i = 0; i < c.size(); ++i) {
        char ch = c[i];
        if (is_lower_alnum(ch) || ch == '-') continue;
        if (ch == '.' || ch == '_') {
            bool double_underscore = ch == '_' && i + 1 < c.size() && c[i + 1] == '_';
            size_t next = i + (double_underscore ? 2 : 1);
            if (next >= c.size() || !is_lower_alnum(c[next])) return false;
            i = next - 1;
            continue;
        }
        return false;
    }
    return true;
}

bool valid_tag(std::string_view t) {
    if (t.empty() || t.size() > 128) return false;
    for (size_t i = 0; i < t.size(); ++i) {
        char c = t[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || (i > 0 && (c == '.' || c == '-'));
        if (!ok) return false;
    }
    return true;
}

bool is_alnum(char c) {
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

// host[:port], the host being dot-separated labels of letters, digits and inner "-", or an
// IPv6 address in brackets.
bool valid_domain(std::string_view d) {
    size_t colon = d.rfind(':');
    size_t bracket = d.rfind(']');
    if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
        std::string_view port = d.substr(colon + 1);
        if (port.empty() || port.size() > 5) return false;
        for (char c : port)
            if (c < '0' || c > '9') return false;
        d = d.substr(0, colon);
    }
    if (d.starts_with('[')) {
        if (!d.ends_with(']') || d.size() < 4) return false;
        for (char c : d.substr(1, d.size() - 2))
            if (!(c == ':' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                  (c >= 'A' && c <= 'F')))
                return false;
        return true;
    }
    size_t start = 0;
    for (;;) {
        size_t dot = d.find('.', start);
        std::string_view label = d.substr(start, dot == std::string_view::npos ? dot : dot - start);
        if (label.empty() || !is_alnum(label.front()) || !is_alnum(label.back())) return false;
        for (char c : label)
            if (!is_alnum(c) && c != '-') return false;
        if (dot == std::string_view::npos) return true;
        start = dot + 1;
    }
}

}  // namespace

bool names_a_host(std::string_view first_component) {
    return first_component.find('.') != std::string_view::npos ||
           first_component.find(':') != std::string_view::npos || first_component == "localhost";
}

ReferenceParts parse_reference_parts(const std::string& text) {
    auto bad = [&](const std::string& why) -> StoreError {
        return StoreError("invalid reference \"" + printable(text) + "\": " + why);
    };
    if (text.empty()) throw bad("empty");
    ReferenceParts r;
    std::string_view rest = text;
    if (size_t at = rest.find('@'); at != std::string_view::npos) {
        r.digest = rest.substr(at + 1);
        rest = rest.substr(0, at);
        if (!is_sha256_digest(r.digest))
            throw bad("the digest must be sha256: and 64 lowercase hex digits");
    }
    // A colon after the last slash starts the tag; one before it belongs to a host:port.
    size_t slash = rest.rfind('/');
    size_t colon = rest.rfind(':');
    if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
        r.tag = rest.substr(colon + 1);
        rest = rest.substr(0, colon);
        if (!valid_tag(r.tag))
            throw bad(
                "a tag is up to 128 letters, digits, \"_\", \".\" and \"-\", not starting "
                "with \".\" or \"-\"");
    }
    if (rest.size() > kMaxNameLength)
        throw bad("the name is longer than " + std::to_string(kMaxNameLength) + " characters");
    size_t first = rest.find('/');
    std::string_view head = rest.substr(0, first == std::string_view::npos ? 0 : first);
    if (!head.empty() && names_a_host(head)) {
        if (!valid_domain(head)) throw bad("invalid registry host");
        r.domain = head;
        rest = rest.substr(first + 1);
    }
    r.path = rest;
    size_t start = 0;
    for (;;) {
        size_t end = r.path.find('/', start);
        if (!valid_component(std::string_view(r.path).substr(start, end - start)))
            throw bad("repository names are lowercase letters, digits and separators (. _ -)");
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return r;
}

ReferenceParts parse_normalized_reference(const std::string& text) {
    ReferenceParts r = parse_reference_parts(text);
    if (r.domain.empty() || r.domain == "index.docker.io") r.domain = kDockerHub;
    if (r.domain == kDockerHub && r.path.find('/') == std::string::npos)
        r.path = "library/" + r.path;
    return r;
}

std::string familiar_name(const std::string& domain, const std::string& path) {
    if (domain != kDockerHub) return domain + "/" + path;
    if (path.starts_with("library/") && path.find('/', 8) == std::string::npos)
        return path.substr(8);
    return path;
}

}  // namespace lamina::store
