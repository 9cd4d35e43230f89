// Reading image sources: docker-archive's manifest.json and the OCI layout's index.json.
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "digest.h"
#include "error.h"
#include "fsutil.h"
#include "image_format.h"
#include "internal.h"
#include "json_input.h"
#include "unpack.h"

namespace lamina::store {

using nlohmann::json;

std::shared_ptr<Fd> open_in_root(const std::string& dir, const std::string& rel) {
    Fd root(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("cannot open", dir, errno);
    // O_NONBLOCK: a FIFO in a layout is refused below instead of waited on.
    auto out = std::make_shared<Fd>(open_in_root_dir(root.get(), rel, O_RDONLY | O_NONBLOCK));
    if (!*out) throw_errno("cannot open", dir + "/" + rel, errno);
    int fd = out->get();
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        throw StoreError("cannot read " + dir + "/" + rel + ": not a regular file");
    return out;
}

static std::string fd_path(const Fd& fd) {
    return "/proc/self/fd/" + std::to_string(fd.get());
}

// A metadata file (never a layer) of the source: its size is checked before it is read.
static std::string read_in_root(const std::string& dir, const std::string& rel, size_t max_bytes) {
    auto fd = open_in_root(dir, rel);
    struct stat st;
    if (::fstat(fd->get(), &st) == 0 && static_cast<uint64_t>(st.st_size) > max_bytes)
        throw StoreError(rel + ": " + std::to_string(st.st_size) +
                         " bytes is more than the limit of " + std::to_string(max_bytes));
    return read_file(fd_path(*fd));
}

static std::pair<std::string, int64_t> stream_hash(const std::string& src, const std::string* dst) {
    Fd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw_errno("cannot open", src, errno);
    Fd out;
    if (dst) {
        out.reset(::open(dst->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (!out) throw_errno("cannot create", *dst, errno);
    }
    Sha256 h;
    int64_t total = 0;
    std::string buf(1 << 17, '\0');
    for (;;) {
        ssize_t n = ::read(in.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("cannot read", src, errno);
        if (n == 0) break;
        h.update(buf.data(), static_cast<size_t>(n));
        total += n;
        for (ssize_t done = 0; out && done < n;) {
            ssize_t w = ::write(out.get(), buf.data() + done, static_cast<size_t>(n - done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) throw_errno("cannot write", *dst, errno);
            done += w;
        }
    }
    return {h.digest(), total};
}

std::pair<std::string, int64_t> copy_and_hash(const std::string& src, const std::string& dst) {
    return stream_hash(src, &dst);
}

std::pair<std::string, int64_t> hash_file(const std::string& path) {
    return stream_hash(path, nullptr);
}

static std::string blob_path(const std::string& digest) {
    if (!is_sha256_digest(digest))
        throw StoreError("unsupported or invalid digest \"" + digest + "\"");
    return "blobs/sha256/" + digest.substr(7);
}

// Reads the metadata blob a descriptor names and checks its digest and size.
static std::string read_verified_blob(const std::string& dir, const Descriptor& d,
                                      const std::string& what, size_t max_bytes) {
    std::string data = read_in_root(dir, blob_path(d.digest), max_bytes);
    if (sha256_digest(data) != d.digest)
        throw StoreError(what + " " + d.digest + ": digest mismatch");
    if (d.size >= 0 && d.size != int64_t(data.size()))
        throw StoreError(what + " " + d.digest + ": size mismatch");
    return data;
}

// From an index, the manifest for this host (host_platform), else the first one.
static const Descriptor& pick_manifest(const Manifest& index, const std::string& what) {
    if (index.manifests.empty()) throw StoreError(what + " lists no manifests");
    for (const auto& d : index.manifests)
        if (platform_matches(d.platform, host_platform())) return d;
    return index.manifests[0];
}

// The image an entry of index.json names: its manifests and indexes are read by the rules a
// registry's are (parse_manifest), an index giving the entry for this host.
static SourceImage oci_image(const std::string& dir, const json& entry,
                             std::vector<std::string> names) {
    Descriptor desc;
    desc.digest = string_member(entry, "digest", "index.json");
    desc.media_type = string_member(entry, "mediaType", "index.json");
    desc.size = int_member(entry, "size", "index.json", -1);
    SourceImage img;
    img.names = std::move(names);
    Manifest m;
    for (int depth = 0;; ++depth) {
        img.manifest = read_verified_blob(dir, desc, "manifest", kMaxManifestBytes);
        try {
            m = parse_manifest(img.manifest, desc.media_type);
        } catch (const StoreError& e) {
            throw StoreError("manifest " + desc.digest + ": " + e.what());
        }
        if (!m.is_index) break;
        if (depth == 4) throw StoreError("image index nested too deeply");
        desc = pick_manifest(m, "index " + desc.digest);
    }
    img.config = read_verified_blob(dir, m.config, "config", kMaxConfigBytes);
    for (const auto& l : m.layers) {
        if (!layer_media_type_compression(l.media_type))
            throw StoreError("layer " + l.digest + ": unsupported media type \"" + l.media_type +
                             "\"");
        SourceLayer sl;
        sl.digest = l.digest;
        sl.media_type = l.media_type;
        sl.size = l.size;
        sl.fd = open_in_root(dir, blob_path(sl.digest));
        sl.path = fd_path(*sl.fd);
        img.layers.push_back(std::move(sl));
    }
    return img;
}

static std::vector<std::string> names_from_annotations(const json& desc, const std::string& what) {
    if (!desc.contains("annotations")) return {};
    const json& a = require_object(desc["annotations"], what + " annotations");
    for (const char* key : {"io.containerd.image.name", "org.opencontainers.image.ref.name"}) {
        std::string v = string_member(a, key, what + " annotations");
        // A bare tag ("latest") names no repository, so it cannot become a name on its own.
        if (!v.empty() && (v.find(':') != std::string::npos || v.find('/') != std::string::npos))
            return {v};
    }
    return {};
}

std::vector<SourceImage> read_image_source(const std::string& dir) {
    std::vector<SourceImage> out;
    if (path_exists(dir + "/manifest.json")) {
        const std::string what = "docker-archive manifest.json";
        json manifest = parse_json_limited(read_in_root(dir, "manifest.json", kMaxManifestBytes),
                                           what, kMaxManifestBytes);
        if (!manifest.is_array() || manifest.empty())
            throw StoreError("docker-archive manifest.json lists no images");
        for (const auto& entry : manifest) {
            SourceImage img;
            std::string config_path = string_member(entry, "Config", what);
            img.config = read_in_root(dir, config_path, kMaxConfigBytes);
            // The config's file name is its digest in every docker save format.
            std::string base = config_path.substr(config_path.rfind('/') + 1);
            if (base.ends_with(".json")) base.resize(base.size() - 5);
            if (base.size() == 64 && sha256_digest(img.config) != "sha256:" + base)
                throw StoreError("config " + config_path + ": digest mismatch");
            if (entry.contains("RepoTags") && !entry["RepoTags"].is_null())
                for (const auto& t : array_member(entry, "RepoTags", what)) {
                    if (!t.is_string()) throw StoreError(what + ": \"RepoTags\" must hold strings");
                    img.names.push_back(t.get<std::string>());
                }
            for (const auto& l : array_member(entry, "Layers", what)) {
                if (!l.is_string()) throw StoreError(what + ": \"Layers\" must hold strings");
                SourceLayer sl;
                sl.fd = open_in_root(dir, l.get<std::string>());
                sl.path = fd_path(*sl.fd);
                img.layers.push_back(std::move(sl));
            }
            out.push_back(std::move(img));
        }
        return out;
    }
    if (!path_exists(dir + "/index.json"))
        throw StoreError("cannot read image from " + dir +
                         ": neither manifest.json (docker-archive) nor index.json (OCI layout)");
    json layout = parse_json_limited(read_in_root(dir, "oci-layout", kMaxManifestBytes),
                                     "oci-layout", kMaxManifestBytes);
    if (string_member(layout, "imageLayoutVersion", "oci-layout") != "1.0.0")
        throw StoreError("oci-layout: unsupported imageLayoutVersion");
    json index = parse_json_limited(read_in_root(dir, "index.json", kMaxManifestBytes),
                                    "index.json", kMaxManifestBytes);
    const json& manifests = array_member(index, "manifests", "index.json");
    if (manifests.empty()) throw StoreError("index.json lists no manifests");
    for (const auto& desc : manifests)
        out.push_back(oci_image(dir, desc, names_from_annotations(desc, "index.json")));
    return out;
}

std::string make_manifest(const std::string& config, const std::vector<LayerRef>& layers) {
    json descriptors = json::array();
    for (const auto& l : layers)
        descriptors.push_back(
            {{"mediaType", l.blob_media_type}, {"digest", l.blob}, {"size", l.blob_size}});
    return oci_manifest(config, std::move(descriptors));
}

}  // namespace lamina::store
