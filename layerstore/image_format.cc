// Media types, platforms, manifests and image configs as the OCI image spec and Docker write them.
#include "image_format.h"
#include "printable.h"

#include <stdexcept>
#include <utility>

#include "digest.h"
#include "error.h"
#include "estargz.h"
#include "json_input.h"
#include "zstd_chunked.h"

namespace lamina::store {

using nlohmann::json;

namespace {

// A value from a manifest (or the command line) as error text: printable ASCII only, others as
// \xNN, at most 120 characters, so an error stays one readable line whatever the input holds.

}  // namespace

// ---- Media types ------------------------------------------------------------------------------

bool is_index_media_type(const std::string& media_type) {
    return media_type == kOciIndex || media_type == kDockerManifestList;
}

std::optional<Compression> layer_media_type_compression(const std::string& media_type) {
    static const std::pair<const char*, Compression> kTypes[] = {
        {"application/vnd.oci.image.layer.v1.tar", kUncompressed},
        {"application/vnd.oci.image.layer.v1.tar+gzip", kGzip},
        {"application/vnd.oci.image.layer.v1.tar+zstd", kZstd},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar", kUncompressed},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", kGzip},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", kZstd},
        {"application/vnd.docker.image.rootfs.diff.tar", kUncompressed},
        {"application/vnd.docker.image.rootfs.diff.tar.gzip", kGzip},
        {"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", kGzip},
    };
    for (const auto& [type, compression] : kTypes)
        if (media_type == type) return compression;
    return std::nullopt;
}

std::string layer_media_type(Compression c) {
    return std::string(kOciLayerTar) + (c == kGzip ? "+gzip" : c == kZstd ? "+zstd" : "");
}

// ---- Platforms --------------------------------------------------------------------------------

std::string Platform::str() const {
    return os + "/" + architecture + (variant.empty() ? "" : "/" + variant);
}

Platform parse_platform(const std::string& text) {
    Platform p;
    size_t a = text.find('/');
    if (a == std::string::npos || a == 0)
        throw std::invalid_argument("invalid platform \"" + printable(text) +
                                    "\": expected os/arch[/variant]");
    p.os = text.substr(0, a);
    size_t b = text.find('/', a + 1);
    p.architecture = text.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    if (b != std::string::npos) p.variant = text.substr(b + 1);
    if (p.architecture.empty() || (b != std::string::npos && p.variant.empty()) ||
        p.variant.find('/') != std::string::npos)
        throw std::invalid_argument("invalid platform \"" + printable(text) +
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

bool platform_matches(const Platform& offered, const Platform& want) {
    if (offered.os != want.os || offered.architecture != want.architecture) return false;
    if (want.variant.empty()) return true;
    // containerd's normalisation: an arm64 image names no variant for v8, an arm one none for v7.
    std::string variant = offered.variant;
    if (variant.empty() && offered.architecture == "arm64") variant = "v8";
    if (variant.empty() && offered.architecture == "arm") variant = "v7";
    return variant == want.variant;
}

// ---- Manifests and indexes --------------------------------------------------------------------

namespace {

[[noreturn]] void malformed(const std::string& why) {
    throw StoreError("malformed manifest: " + why);
}

Descriptor descriptor(const json& j, const char* what) {
    if (!j.is_object()) malformed(std::string(what) + " is not an object");
    Descriptor d;
    d.media_type = j.value("mediaType", "");
    d.digest = j.value("digest", "");
    if (!j.contains("size") || !j["size"].is_number_integer() || j["size"].get<int64_t>() < 0)
        malformed(std::string(what) + " " + printable(d.digest) + " has no valid size");
    d.size = j["size"].get<int64_t>();
    // The digest names files and URLs later, so nothing but sha256:<64 lowercase hex> passes.
    if (!is_sha256_digest(d.digest))
        malformed(std::string(what) + " digest \"" + printable(d.digest) +
                  "\" is not sha256:<64 hex>");
    d.has_urls = j.contains("urls");
    // Only the TOC annotations of eStargz and zstd:chunked layers are read (docs/lazy.md); a
    // wrong type is malformed.
    if (j.contains("annotations") && j["annotations"].is_object()) {
        const json& a = j["annotations"];
        auto toc = a.find(std::string(estargz::kTocDigestAnnotation));
        if (toc != a.end()) {
            if (!toc->is_string() || !is_sha256_digest(toc->get<std::string>()))
                malformed(std::string(what) + " " + printable(d.digest) +
                          " has a TOC digest annotation that is not sha256:<64 hex>");
            d.estargz_toc_digest = toc->get<std::string>();
        }
        // zstd:chunked's keys, as skopeo 1.9.3 writes them or as later writers do.
        auto either = [&](std::string_view key) {
            auto it = a.find(std::string(key));
            return it != a.end() ? it : a.find(zstd_chunked::later_key(key));
        };
        auto sum = either(zstd_chunked::kChecksumAnnotation);
        if (sum != a.end()) {
            if (!sum->is_string() || !is_sha256_digest(sum->get<std::string>()))
                malformed(std::string(what) + " " + printable(d.digest) +
                          " has a zstd:chunked checksum annotation that is not sha256:<64 hex>");
            d.zstd_chunked_checksum = sum->get<std::string>();
        }
        auto pos = either(zstd_chunked::kPositionAnnotation);
        if (pos != a.end()) {
            if (!pos->is_string() || pos->get<std::string>().size() > 100)
                malformed(std::string(what) + " " + printable(d.digest) +
                          " has a zstd:chunked position annotation that is no short string");
            d.zstd_chunked_position = pos->get<std::string>();
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

Manifest interpret(const json& j, const std::string& content_type) {
    std::string ct = content_type.substr(0, content_type.find(';'));
    Manifest m;
    m.media_type = j.value("mediaType", "");
    if (m.media_type.empty()) m.media_type = ct;
    int schema = j.value("schemaVersion", 0);
    if (schema == 1 || m.media_type == kDockerSchema1 || m.media_type == kDockerSchema1Signed)
        throw StoreError(
            "the image uses a Docker schema 1 manifest, which lamina does not support (it is "
            "deprecated; push the image again with a current client to get schema 2)");
    if (schema != 2) malformed("schemaVersion is not 2");
    if (m.media_type.empty()) {
        // OCI lets mediaType be absent: an index has "manifests", an image "config".
        m.media_type = j.contains("manifests") ? kOciIndex : kOciManifest;
    }
    if (is_index_media_type(m.media_type)) {
        m.is_index = true;
        if (!j.contains("manifests") || !j["manifests"].is_array())
            malformed("index has no manifests list");
        for (const auto& d : j["manifests"]) m.manifests.push_back(descriptor(d, "index entry"));
        return m;
    }
    if (m.media_type != kOciManifest && m.media_type != kDockerManifest)
        throw StoreError("unsupported manifest media type \"" + printable(m.media_type) + "\"");
    if (!j.contains("config")) malformed("no config");
    m.config = descriptor(j["config"], "config");
    if (!j.contains("layers") || !j["layers"].is_array()) malformed("no layers list");
    for (const auto& l : j["layers"]) m.layers.push_back(descriptor(l, "layer"));
    return m;
}

}  // namespace

Manifest parse_manifest(const std::string& body, const std::string& content_type) {
    json j;
    try {
        j = parse_json_limited(body, "manifest", kMaxManifestBytes);
    } catch (const StoreError& e) {
        throw StoreError(printable(e.what()));
    }
    if (!j.is_object()) malformed("not a JSON object");
    try {
        return interpret(j, content_type);
    } catch (const json::exception& e) {
        // A field of the wrong type ("mediaType": [...]); found by tests/fuzz/manifest_fuzzer.
        malformed("a field has the wrong type (" + printable(e.what()) + ")");
    }
}

std::string oci_manifest(const std::string& config, json layers) {
    json m = {
        {"schemaVersion", 2},
        {"mediaType", kOciManifest},
        {"config",
         {{"mediaType", kOciConfig}, {"digest", sha256_digest(config)}, {"size", config.size()}}},
        {"layers", std::move(layers)}};
    return m.dump();
}

const Descriptor& select_platform(const Manifest& index, const Platform& want) {
    for (const auto& d : index.manifests)
        if (platform_matches(d.platform, want)) return d;
    std::string offered;
    for (const auto& d : index.manifests) {
        if (d.platform.os.empty()) continue;  // attestations and other non-images
        offered += (offered.empty() ? "" : ", ") + printable(d.platform.str());
    }
    throw StoreError("no image for platform " + printable(want.str()) +
                     " in the index (it offers " + (offered.empty() ? "none" : offered) + ")");
}

// ---- Image configs ----------------------------------------------------------------------------

std::vector<std::string> image_config_diff_ids(const json& config, size_t layers,
                                               const std::string& what) {
    if (!require_object(config, what).contains("rootfs"))
        throw StoreError(what + " has no rootfs.diff_ids");
    const json& rootfs = require_object(config["rootfs"], what + " rootfs");
    std::vector<std::string> out;
    for (const auto& d : array_member(rootfs, "diff_ids", what + " rootfs")) {
        if (!d.is_string() || !is_sha256_digest(d.get<std::string>()))
            throw StoreError(what + ": diff_id " + std::to_string(out.size() + 1) +
                             " is not a sha256 digest");
        out.push_back(d.get<std::string>());
    }
    if (out.size() != layers)
        throw StoreError(what + " lists " + std::to_string(out.size()) +
                         " diff_ids but the image has " + std::to_string(layers) + " layers");
    return out;
}

Platform platform_member(const json& obj, const std::string& what) {
    return {string_member(obj, "os", what), string_member(obj, "architecture", what),
            string_member(obj, "variant", what)};
}

}  // namespace lamina::store
