// Hand-built images for the store tests: tars through libarchive, OCI layouts written directly.
#include "store_fixture.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

namespace lamina::test {

using nlohmann::json;

TarEntry file(const std::string& path, const std::string& data, mode_t mode) {
    return {TarEntry::Kind::File, path, data, mode};
}
TarEntry dir(const std::string& path, mode_t mode) {
    return {TarEntry::Kind::Dir, path, "", mode};
}
TarEntry symlink(const std::string& path, const std::string& target) {
    return {TarEntry::Kind::Symlink, path, target, 0777};
}
TarEntry hardlink(const std::string& path, const std::string& target) {
    return {TarEntry::Kind::Hardlink, path, target, 0644};
}
TarEntry whiteout(const std::string& path) {
    auto slash = path.rfind('/');
    std::string p = slash == std::string::npos
                        ? ".wh." + path
                        : path.substr(0, slash + 1) + ".wh." + path.substr(slash + 1);
    return file(p, "");
}
TarEntry opaque(const std::string& dir_path) {
    return file(dir_path + "/.wh..wh..opq", "");
}

static la_ssize_t append(archive*, void* client, const void* buf, size_t len) {
    static_cast<std::string*>(client)->append(static_cast<const char*>(buf), len);
    return static_cast<la_ssize_t>(len);
}

std::vector<Layer> demo_image(const std::string& top_compression) {
    return {
        {make_tar({dir("etc"), file("etc/motd", "hello\n"), dir("data"), file("data/a", "a"),
                   file("data/b", "b"), dir("keep"), file("keep/old", "old")}),
         "gzip"},
        {make_tar({whiteout("data/a"), dir("keep"), opaque("keep"), file("keep/new", "new"),
                   file("etc/two", "2")}),
         top_compression},
    };
}

std::string make_tar(const std::vector<TarEntry>& entries) {
    std::string out;
    archive* a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_open(a, &out, nullptr, append, nullptr);
    for (const auto& t : entries) {
        archive_entry* e = archive_entry_new();
        archive_entry_set_pathname(e, t.path.c_str());
        archive_entry_set_mtime(e, 1700000000, 0);
        archive_entry_set_perm(e, t.mode);
        switch (t.kind) {
            case TarEntry::Kind::File:
                archive_entry_set_filetype(e, AE_IFREG);
                archive_entry_set_size(e, static_cast<la_int64_t>(t.data.size()));
                break;
            case TarEntry::Kind::Dir:
                archive_entry_set_filetype(e, AE_IFDIR);
                break;
            case TarEntry::Kind::Symlink:
                archive_entry_set_filetype(e, AE_IFLNK);
                archive_entry_set_symlink(e, t.data.c_str());
                break;
            case TarEntry::Kind::Hardlink:
                archive_entry_set_filetype(e, AE_IFREG);
                archive_entry_set_hardlink(e, t.data.c_str());
                archive_entry_set_size(e, 0);
                break;
            case TarEntry::Kind::CharDev:
                archive_entry_set_filetype(e, AE_IFCHR);
                archive_entry_set_rdev(e, makedev(t.major, t.minor));
                break;
        }
        EXPECT_EQ(archive_write_header(a, e), ARCHIVE_OK) << archive_error_string(a);
        if (t.kind == TarEntry::Kind::File && !t.data.empty())
            archive_write_data(a, t.data.data(), t.data.size());
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    return out;
}

std::string without_record_padding(const std::string& tar) {
    size_t last = tar.find_last_not_of('\0');
    size_t end = last == std::string::npos ? 0 : (last / 512 + 1) * 512;
    return tar.substr(0, end) + std::string(1024, '\0');
}

std::string make_huge_entry_tar(const std::string& path, unsigned long long size) {
    std::string h(512, '\0');
    memcpy(h.data(), path.data(), std::min<size_t>(path.size(), 99));
    snprintf(h.data() + 100, 8, "%07o", 0644);
    snprintf(h.data() + 108, 8, "%07o", 0);
    snprintf(h.data() + 116, 8, "%07o", 0);
    // GNU base-256 size: the high bit of the first byte, then the value big-endian.
    h[124] = static_cast<char>(0x80);
    for (int i = 0; i < 8; ++i) h[124 + 11 - i] = static_cast<char>((size >> (8 * i)) & 0xff);
    snprintf(h.data() + 136, 12, "%011o", 1700000000);
    h[156] = '0';
    memcpy(h.data() + 257, "ustar  ", 8);
    memset(h.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    snprintf(h.data() + 148, 8, "%06o", sum);
    h[155] = ' ';
    return h + std::string(1024, '\0');
}

std::string compress(const std::string& data, const std::string& how) {
    if (how.empty()) return data;
    if (auto plus = how.find('+'); plus != std::string::npos)
        return compress(compress(data, how.substr(0, plus)), how.substr(plus + 1));
    std::string out;
    archive* a = archive_write_new();
    archive_write_set_format_raw(a);
    archive_write_set_bytes_in_last_block(a, 1);
    if (how == "gzip") archive_write_add_filter_gzip(a);
    if (how == "zstd") archive_write_add_filter_zstd(a);
    if (how == "bzip2") archive_write_add_filter_bzip2(a);
    if (how == "xz") archive_write_add_filter_xz(a);
    archive_write_open(a, &out, nullptr, append, nullptr);
    archive_entry* e = archive_entry_new();
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_pathname(e, "data");
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    archive_write_header(a, e);
    archive_write_data(a, data.data(), data.size());
    archive_entry_free(e);
    archive_write_close(a);
    archive_write_free(a);
    return out;
}

std::string sha256(const std::string& data) {
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
    char hex[65];
    for (int i = 0; i < 32; ++i) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return std::string("sha256:") + hex;
}

static void put_blob(const std::string& dir, const std::string& data, std::string* digest) {
    *digest = sha256(data);
    write_file(dir + "/blobs/sha256/" + digest->substr(7), data);
}

BuiltImage write_oci_layout(const std::string& dir, const std::vector<Layer>& layers,
                            const std::string& name, int bad_diff_id) {
    make_dirs(dir + "/blobs/sha256");
    BuiltImage built;
    json manifest = {{"schemaVersion", 2},
                     {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"layers", json::array()}};
    json config = {{"architecture", "amd64"},
                   {"os", "linux"},
                   {"created", "2024-01-02T03:04:05Z"},
                   {"config", {{"Cmd", {"/bin/sh"}}}},
                   {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}},
                   {"history", json::array()}};
    for (size_t i = 0; i < layers.size(); ++i) {
        std::string blob = compress(layers[i].tar, layers[i].compression);
        std::string digest;
        put_blob(dir, blob, &digest);
        std::string mt = "application/vnd.oci.image.layer.v1.tar";
        const std::string& named =
            layers[i].labelled.empty() ? layers[i].compression : layers[i].labelled;
        if (!named.empty() && named != "none") mt += "+" + named;
        manifest["layers"].push_back(
            {{"mediaType", mt}, {"digest", digest}, {"size", blob.size()}});
        std::string diff = sha256(layers[i].tar);
        built.diff_ids.push_back(diff);
        if (static_cast<int>(i) == bad_diff_id) diff = sha256("not this layer");
        config["rootfs"]["diff_ids"].push_back(diff);
        config["history"].push_back(
            {{"created", "2024-01-02T03:04:05Z"}, {"created_by", "layer " + std::to_string(i)}});
    }
    std::string cfg = config.dump();
    put_blob(dir, cfg, &built.config_digest);
    manifest["config"] = {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                          {"digest", built.config_digest},
                          {"size", cfg.size()}};
    std::string m = manifest.dump();
    std::string mdigest;
    put_blob(dir, m, &mdigest);
    json index = {{"schemaVersion", 2},
                  {"manifests",
                   {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"digest", mdigest},
                     {"size", m.size()},
                     {"annotations", {{"org.opencontainers.image.ref.name", name}}}}}}};
    write_file(dir + "/index.json", index.dump());
    write_file(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
    return built;
}

void tar_dir(const std::string& dir, const std::string& out) {
    auto r = run_command({"tar", "-cf", out, "-C", dir, "."});
    ASSERT_EQ(r.status, 0) << r.err;
}

std::string lamina_binary() {
    if (const char* b = getenv("LAMINA_BIN"); b && *b) return b;
    return "build/tools/lamina";
}

bool have_program(const std::string& name) {
    return run_command({"sh", "-c", "command -v " + name}).status == 0;
}

std::vector<std::string> Lamina::argv(const std::vector<std::string>& args) const {
    std::vector<std::string> v = {lamina_binary(), "--root", root_};
    v.insert(v.end(), args.begin(), args.end());
    return v;
}

CommandResult Lamina::operator()(const std::vector<std::string>& args, int timeout) const {
    return run_command(argv(args), timeout);
}

static void describe(const std::string& root, const std::string& rel,
                     std::vector<std::string>& out) {
    std::string path = rel.empty() ? root : root + "/" + rel;
    DIR* d = opendir(path.c_str());
    if (!d) return;
    std::vector<std::string> names;
    while (auto* de = readdir(d))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) names.push_back(de->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
        std::string r = rel.empty() ? n : rel + "/" + n;
        struct stat st;
        lstat((root + "/" + r).c_str(), &st);
        if (S_ISDIR(st.st_mode)) {
            out.push_back("d " + r);
            describe(root, r, out);
        } else if (S_ISLNK(st.st_mode)) {
            char buf[4096];
            ssize_t k = readlink((root + "/" + r).c_str(), buf, sizeof buf);
            out.push_back("l " + r + " -> " + std::string(buf, k > 0 ? static_cast<size_t>(k) : 0));
        } else if (S_ISREG(st.st_mode)) {
            out.push_back("f " + r + " " + read_file(root + "/" + r));
        } else {
            out.push_back("o " + r);
        }
    }
}

std::string describe_tree(const std::string& root) {
    std::vector<std::string> lines;
    describe(root, "", lines);
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
}

StoreGuard::~StoreGuard() {
    run_command({"sh", "-c",
                 "grep -o ' " + root +
                     "/containers/[^ ]*/merged/[^ ]*' /proc/self/mountinfo | sort -r | "
                     "xargs -r -n1 umount -l 2>/dev/null; for m in '" +
                     root +
                     "'/containers/*/merged; do fusermount3 -u -z \"$m\" 2>/dev/null; done"});
}

std::string out_of(const CommandResult& r) {
    EXPECT_EQ(r.status, 0) << r.err;
    std::string s = r.out;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
}

// The laminafs daemon serving merged, found by its command line (lamina runs it with merged as
// its last argument); -1 when there is none.
pid_t laminafs_serving(const std::string& merged) {
    DIR* proc = opendir("/proc");
    if (!proc) return -1;
    pid_t found = -1;
    while (auto* de = readdir(proc)) {
        if (!isdigit(static_cast<unsigned char>(de->d_name[0]))) continue;
        std::ifstream in(std::string("/proc/") + de->d_name + "/cmdline");
        std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (cmdline.ends_with('\0')) cmdline.pop_back();
        if (cmdline.ends_with(std::string(1, '\0') + merged)) found = atoi(de->d_name);
    }
    closedir(proc);
    return found;
}

}  // namespace lamina::test
