// Parsing manifests and picking a platform from an index.
#include "manifest.h"

#include <stdexcept>

#include <nlohmann/json.hpp>

#include "error.h"
#include "estargz.h"
#include "json_input.h"
#include "layer_media_type.h"

namespace lamina::registry {

using nlohmann::json;

namespace {

// A value from a manifest (or the command line) as error text: printable ASCII only, others as
// \xNN, at most 120 characters, so an error stays one readable line whatever the input holds.
std::string shown(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (out.size() >= 120) return out + "...";
        if (c >= 0x20 && c < 0x7f) {
            out.push_back(static_cast<char>(c));
        } else {
            static const char kHex[] = "0123456789abcdef";
            out += "\\x";
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    return out;
}

}  // namespace

std::string manifest_accept_header() {
    return std::string("Accept: ") + kMediaOciManifest + ", " + kMediaOciIndex + ", " +
           kMediaDockerManifest + ", " + kMediaDockerList + ", " + kMediaDockerSchema1Signed +
           ", " + kMediaDockerSchema1;
}

std::string Platform::str() const {
    return os + "/" + architecture + (variant.empty() ? "" : "/" + variant);
}

Platform parse_platform(const std::string& text) {
    Platform p;
    size_t a = text.find('/');
    if (a == std::string::npos || a == 0)
        throw std::invalid_argument("invalid platform \"" + shown(text) +
                                    "\": expected os/arch[/variant]");
    p.os = text.substr(0, a);
    size_t b = text.find('/', a + 1);
    p.architecture = text.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    if (b != std::string::npos) p.variant = text.substr(b + 1);
    if (p.architecture.empty() || (b != std::string::npos && p.variant.empty()) ||
        p.variant.find('/') != std::string::npos)
        throw std::invalid_argument("invalid platform \"" + shown(text) +
                                    "\": expected os/arch[/variant]");
    return p;
}

Platform host_platform() {
#if defined(__x86_64__)
    return {"linux", "amd64", ""};
#elif defined(__aarch64__)
    return {"linux", "arm64", ""};
#elif defined(__arm__)
    return {"linux", "arm", "v7"};
#elif defined(__i386__)
    return {"linux", "386", ""};
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return {"linux", "ppc64le", ""};
#elif defined(__s390x__)
    return {"linux", "s390x", ""};
#elif defined(__riscv) && __riscv_xlen == 64
    return {"linux", "riscv64", ""};
#else
    return {"linux", "unknown", ""};
#endif
}

namespace {

bool is_sha256(const std::string& digest) {
    if (digest.size() != 71 || !digest.starts_with("sha256:")) return false;
    for (size_t i = 7; i < digest.size(); ++i) {
        char c = digest[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

[[noreturn]] void malformed(const std::string& why) {
    throw std::runtime_error("malformed manifest: " + why);
}

Descriptor descriptor(const json& j, const char* what) {
    if (!j.is_object()) malformed(std::string(what) + " is not an object");
    Descriptor d;
    d.media_type = j.value("mediaType", "");
    d.digest = j.value("digest", "");
    if (!j.contains("size") || !j["size"].is_number_integer() || j["size"].get<int64_t>() < 0)
        malformed(std::string(what) + " " + shown(d.digest) + " has no valid size");
    d.size = j["size"].get<int64_t>();
    // The digest names files and URLs later, so nothing but sha256:<64 lowercase hex> passes.
    if (!is_sha256(d.digest))
        malformed(std::string(what) + " digest \"" + shown(d.digest) + "\" is not sha256:<64 hex>");
    d.has_urls = j.contains("urls");
    // Only the TOC digest of an eStargz layer is read (docs/lazy.md); a wrong type is malformed.
    if (j.contains("annotations") && j["annotations"].is_object()) {
        const json& a = j["annotations"];
        auto toc = a.find(std::string(store::estargz::kTocDigestAnnotation));
        if (toc != a.end()) {
            if (!toc->is_string() || !is_sha256(toc->get<std::string>()))
                malformed(std::string(what) + " " + shown(d.digest) +
                          " has a TOC digest annotation that is not sha256:<64 hex>");
            d.estargz_toc_digest = toc->get<std::string>();
        }
    }
    if (j.contains("platform") && j["platform"].is_object()) {
        const json& p = j["platform"];
        d.platform.os = p.value("os", "");
        d.platform.architecture = p.value("architecture", "");
        d.platform.variant = p.value("variant", "");
    }
    return d;
}

std::string default_variant(const std::string& arch) {
    return arch == "arm64" ? "v8" : "";
}

Manifest interpret(const json& j, const std::string& content_type);

}  // namespace

Manifest parse_manifest(const std::string& body, const std::string& content_type) {
    json j;
    try {
        j = store::parse_json_limited(body, "manifest", store::kMaxManifestBytes);
    } catch (const store::StoreError& e) {
        throw std::runtime_error(shown(e.what()));
    }
    if (!j.is_object()) malformed("not a JSON object");
    try {
        return interpret(j, content_type);
    } catch (const json::exception& e) {
        // A field of the wrong type ("mediaType": [...]); found by tests/fuzz/manifest_fuzzer.
        malformed("a field has the wrong type (" + shown(e.what()) + ")");
    }
}

namespace {

Manifest interpret(const json& j, const std::string& content_type) {
    std::string ct = content_type.substr(0, content_type.find(';'));
    Manifest m;
    m.media_type = j.value("mediaType", "");
    if (m.media_type.empty()) m.media_type = ct;
    int schema = j.value("schemaVersion", 0);
    if (schema == 1 || m.media_type == kMediaDockerSchema1 ||
        m.media_type == kMediaDockerSchema1Signed)
        throw std::runtime_error(
            "the image uses a Docker schema 1 manifest, which lamina does not support (it is "
            "deprecated; push the image again with a current client to get schema 2)");
    if (schema != 2) malformed("schemaVersion is not 2");
    if (m.media_type.empty()) {
        // OCI lets mediaType be absent: an index has "manifests", an image "config".
        m.media_type = j.contains("manifests") ? kMediaOciIndex : kMediaOciManifest;
    }
    if (m.media_type == kMediaOciIndex || m.media_type == kMediaDockerList) {
        m.is_index = true;
        if (!j.contains("manifests") || !j["manifests"].is_array())
            malformed("index has no manifests list");
        for (const auto& d : j["manifests"]) m.manifests.push_back(descriptor(d, "index entry"));
        return m;
    }
    if (m.media_type != kMediaOciManifest && m.media_type != kMediaDockerManifest)
        throw std::runtime_error("unsupported manifest media type \"" + shown(m.media_type) + "\"");
    if (!j.contains("config")) malformed("no config");
    m.config = descriptor(j["config"], "config");
    if (!j.contains("layers") || !j["layers"].is_array()) malformed("no layers list");
    for (const auto& l : j["layers"]) m.layers.push_back(descriptor(l, "layer"));
    return m;
}

}  // namespace

const Descriptor& select_platform(const Manifest& index, const Platform& want) {
    std::string want_variant = want.variant;
    for (const auto& d : index.manifests) {
        if (d.platform.os != want.os || d.platform.architecture != want.architecture) continue;
        if (want_variant.empty()) return d;
        std::string v = d.platform.variant.empty() ? default_variant(d.platform.architecture)
                                                   : d.platform.variant;
        if (v == want_variant) return d;
    }
    std::string offered;
    for (const auto& d : index.manifests) {
        if (d.platform.os.empty()) continue;  // attestations and other non-images
        offered += (offered.empty() ? "" : ", ") + shown(d.platform.str());
    }
    throw std::runtime_error("no image for platform " + shown(want.str()) +
                             " in the index (it offers " + (offered.empty() ? "none" : offered) +
                             ")");
}

bool is_supported_layer(const std::string& mt) {
    return store::layer_media_type_compression(mt).has_value();
}

}  // namespace lamina::registry
