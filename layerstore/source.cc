// Reading image sources: docker-archive's manifest.json and the OCI layout's index.json.
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "digest.h"
#include "error.h"
#include "fsutil.h"
#include "internal.h"
#include "unpack.h"

namespace lamina::store {

using nlohmann::json;

std::shared_ptr<Fd> open_in_root(const std::string& dir, const std::string& rel) {
    Fd root(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("cannot open", dir, errno);
    struct open_how how {};
    // O_NONBLOCK: a FIFO in a layout is refused below instead of waited on.
    how.flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    int fd = static_cast<int>(::syscall(SYS_openat2, root.get(), rel.c_str(), &how, sizeof how));
    if (fd < 0) throw_errno("cannot open", dir + "/" + rel, errno);
    auto out = std::make_shared<Fd>(fd);
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        throw StoreError("cannot read " + dir + "/" + rel + ": not a regular file");
    return out;
}

static std::string fd_path(const Fd& fd) {
    return "/proc/self/fd/" + std::to_string(fd.get());
}

static std::string read_in_root(const std::string& dir, const std::string& rel) {
    auto fd = open_in_root(dir, rel);
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

static json parse_json(const std::string& text, const std::string& what) {
    try {
        return json::parse(text);
    } catch (const json::exception& e) {
        throw StoreError(what + " is not valid JSON: " + e.what());
    }
}

static std::string blob_path(const std::string& digest) {
    if (!is_sha256_digest(digest))
        throw StoreError("unsupported or invalid digest \"" + digest + "\"");
    return "blobs/sha256/" + digest.substr(7);
}

// Reads a blob named by a descriptor and checks its digest and size.
static std::string read_verified_blob(const std::string& dir, const json& desc,
                                      const std::string& what) {
    std::string digest = desc.value("digest", "");
    std::string data = read_in_root(dir, blob_path(digest));
    if (sha256_digest(data) != digest) throw StoreError(what + " " + digest + ": digest mismatch");
    if (desc.contains("size") && desc["size"].is_number_integer() &&
        desc["size"].get<int64_t>() != int64_t(data.size()))
        throw StoreError(what + " " + digest + ": size mismatch");
    return data;
}

static bool is_index(const std::string& mt) {
    return mt == kOciIndex || mt == kDockerManifestList;
}

static std::string host_architecture() {
#if defined(__x86_64__)
    return "amd64";
#elif defined(__aarch64__)
    return "arm64";
#else
    return "";
#endif
}

// From an index, the manifest for this host (linux/ARCH), else the first one.
static json pick_manifest(const json& index, int depth) {
    if (depth > 4) throw StoreError("image index nested too deeply");
    if (!index.contains("manifests") || !index["manifests"].is_array() ||
        index["manifests"].empty())
        throw StoreError("image index lists no manifests");
    const json* chosen = &index["manifests"][0];
    for (const auto& m : index["manifests"]) {
        if (m.contains("platform") && m["platform"].value("os", "") == "linux" &&
            m["platform"].value("architecture", "") == host_architecture()) {
            chosen = &m;
            break;
        }
    }
    return *chosen;
}

static SourceImage oci_image(const std::string& dir, json desc, std::vector<std::string> names) {
    for (int depth = 0; is_index(desc.value("mediaType", "")); ++depth) {
        json nested =
            parse_json(read_verified_blob(dir, desc, "index"), "index " + desc.value("digest", ""));
        desc = pick_manifest(nested, depth);
    }
    SourceImage img;
    img.names = std::move(names);
    img.manifest = read_verified_blob(dir, desc, "manifest");
    json m = parse_json(img.manifest, "manifest " + desc.value("digest", ""));
    if (!m.contains("config") || !m.contains("layers") || !m["layers"].is_array())
        throw StoreError("manifest " + desc.value("digest", "") + " has no config or layers");
    img.config = read_verified_blob(dir, m["config"], "config");
    for (const auto& l : m["layers"]) {
        SourceLayer sl;
        sl.digest = l.value("digest", "");
        sl.media_type = l.value("mediaType", "");
        sl.size = l.value("size", int64_t(-1));
        if (!layer_media_type_compression(sl.media_type))
            throw StoreError("layer " + sl.digest + ": unsupported media type \"" + sl.media_type +
                             "\"");
        sl.fd = open_in_root(dir, blob_path(sl.digest));
        sl.path = fd_path(*sl.fd);
        img.layers.push_back(std::move(sl));
    }
    return img;
}

static std::vector<std::string> names_from_annotations(const json& desc) {
    if (!desc.contains("annotations")) return {};
    const json& a = desc["annotations"];
    for (const char* key : {"io.containerd.image.name", "org.opencontainers.image.ref.name"}) {
        std::string v = a.value(key, "");
        // A bare tag ("latest") names no repository, so it cannot become a name on its own.
        if (!v.empty() && (v.find(':') != std::string::npos || v.find('/') != std::string::npos))
            return {v};
    }
    return {};
}

std::vector<SourceImage> read_image_source(const std::string& dir) {
    std::vector<SourceImage> out;
    if (path_exists(dir + "/manifest.json")) {
        json manifest =
            parse_json(read_in_root(dir, "manifest.json"), "docker-archive manifest.json");
        if (!manifest.is_array() || manifest.empty())
            throw StoreError("docker-archive manifest.json lists no images");
        for (const auto& entry : manifest) {
            SourceImage img;
            std::string config_path = entry.value("Config", "");
            img.config = read_in_root(dir, config_path);
            // The config's file name is its digest in every docker save format.
            std::string base = config_path.substr(config_path.rfind('/') + 1);
            if (base.ends_with(".json")) base.resize(base.size() - 5);
            if (base.size() == 64 && sha256_digest(img.config) != "sha256:" + base)
                throw StoreError("config " + config_path + ": digest mismatch");
            if (entry.contains("RepoTags") && entry["RepoTags"].is_array())
                for (const auto& t : entry["RepoTags"]) img.names.push_back(t.get<std::string>());
            if (!entry.contains("Layers") || !entry["Layers"].is_array())
                throw StoreError("docker-archive manifest.json: image without Layers");
            for (const auto& l : entry["Layers"]) {
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
    json layout = parse_json(read_in_root(dir, "oci-layout"), "oci-layout");
    if (layout.value("imageLayoutVersion", "") != "1.0.0")
        throw StoreError("oci-layout: unsupported imageLayoutVersion");
    json index = parse_json(read_in_root(dir, "index.json"), "index.json");
    if (!index.contains("manifests") || !index["manifests"].is_array() ||
        index["manifests"].empty())
        throw StoreError("index.json lists no manifests");
    for (const auto& desc : index["manifests"])
        out.push_back(oci_image(dir, desc, names_from_annotations(desc)));
    return out;
}

std::string make_manifest(const std::string& config, const std::vector<LayerRef>& layers) {
    json m;
    m["schemaVersion"] = 2;
    m["mediaType"] = kOciManifest;
    m["config"] = {
        {"mediaType", kOciConfig}, {"digest", sha256_digest(config)}, {"size", config.size()}};
    m["layers"] = json::array();
    for (const auto& l : layers)
        m["layers"].push_back(
            {{"mediaType", l.blob_media_type}, {"digest", l.blob}, {"size", l.blob_size}});
    return m.dump();
}

}  // namespace lamina::store
