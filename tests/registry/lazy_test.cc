// eStargz against a real docker-registry: `lamina push --compression-format estargz` makes an
// image skopeo and lamina pull as ordinary gzip with its diff IDs, and the same layers read by
// byte ranges (footer, TOC, one file) give the tree a full pull gives, chunk digests checked.
// zstd:chunked layers skopeo writes are read lazily the same way.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "error.h"
#include "estargz.h"
#include "fd.h"
#include "needs.h"
#include "registry/client.h"
#include "registry_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;
namespace ez = store::estargz;

std::string fidelity_script() {
    const char* src = std::getenv("LAMINA_SOURCE_ROOT");
    return std::string(src ? src : ".") + "/tests/store/layer_fidelity.py";
}

// Every entry below root with mode, owner, mtime, content digest, link target, xattrs, hard
// links; the two files eStargz adds to each layer are left out when asked.
std::string describe(const std::string& root, bool without_estargz_files = false) {
    auto r = run_command({"python3", fidelity_script(), "describe-layer", root});
    EXPECT_EQ(r.status, 0) << r.err;
    if (!without_estargz_files) return r.out;
    std::string out, line;
    std::istringstream in(r.out);
    while (std::getline(in, line))
        if (!line.starts_with("stargz.index.json ") &&
            !line.starts_with(".no.prefetch.landmark ") && !line.starts_with(".prefetch.landmark "))
            out += line + "\n";
    return out;
}

std::string read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

// A two-layer image with a 1 MiB file that does not compress, so what a TOC costs is small
// beside the blob: the bottom layer gzip, the top zstd with a whiteout and an opaque dir.
// go_tars: the tars end at their end-of-archive blocks, as Go writes them (skopeo 1.9.3's
// zstd:chunked keeps a diff ID only for such a tar: docs/lazy.md).
void push_lazy_demo(Registry& reg, const TempDir& tmp, const std::string& repo_tag,
                    bool go_tars = false) {
    std::vector<Layer> layers = {
        {make_tar({dir("etc"), file("etc/os-release", "ID=lamina\n"), dir("data"),
                   file("data/big", random_bytes(1 << 20, 7)), file("data/gone", "old\n"),
                   hardlink("data/big-link", "data/big"), symlink("os", "etc/os-release"),
                   dir("keep"), file("keep/old", "old\n"), file("bin-su", "su\n", 04755)}),
         "gzip"},
        {make_tar({dir("data"), whiteout("data/gone"), dir("keep"), opaque("keep"),
                   file("keep/new", "new\n"), dir("etc"), file("etc/two", "two\n", 0600)}),
         "zstd"}};
    if (go_tars)
        for (auto& l : layers) l.tar = without_record_padding(l.tar);
    write_oci_layout(tmp / "lazy-layout", layers, "lazy");
    reg.push_layout(tmp / "lazy-layout", "lazy", repo_tag);
}

// An image's registry reached through a counting proxy (via: the image's reference there), and
// a store to pull it into whose mounts go when the test ends, whatever happens.
template <typename Image>
struct ThroughProxy {
    Image img;
    ThrottlingProxy proxy{img.reg.port(), 1 << 30};
    std::string via =
        "127.0.0.1:" + std::to_string(proxy.port()) + img.lazy.substr(img.lazy.find('/'));
    Lamina lz{img.tmp / "lz"};
    StoreGuard guard{lz.root()};
};

// The layer directories of a stored image, bottom first.
std::vector<std::string> layer_dirs(const Lamina& lamina, const std::string& image) {
    auto r = lamina({"inspect", image});
    EXPECT_EQ(r.status, 0) << r.err;
    std::vector<std::string> out;
    json j = json::parse(r.out, nullptr, false);
    if (j.is_array() && !j.empty())
        for (const auto& l : j[0]["Layers"]) out.push_back(l["Path"]);
    EXPECT_FALSE(out.empty()) << r.out;
    return out;
}

// The image's manifest, config and blobs from an OCI layout skopeo wrote.
struct LayoutImage {
    json manifest, config;
    std::string blobs;
};
LayoutImage read_layout(const std::string& dir) {
    LayoutImage img;
    img.blobs = dir + "/blobs/sha256/";
    json index = json::parse(read_all(dir + "/index.json"));
    std::string m = index["manifests"][0]["digest"];
    img.manifest = json::parse(read_all(img.blobs + m.substr(7)));
    std::string c = img.manifest["config"]["digest"];
    img.config = json::parse(read_all(img.blobs + c.substr(7)));
    return img;
}

// The registry with the demo image, pulled whole into one store.
struct SourceImage {
    TempDir tmp{"lamina-lazy"};
    RegistryEnv env;
    Registry reg;
    Lamina src{tmp / "src"};
    std::string plain;
    SourceImage() {
        push_lazy_demo(reg, tmp, "test/app:v1");
        plain = reg.host() + "/test/app:v1";
        auto pull = src({"pull", "--tls-verify=false", plain});
        EXPECT_EQ(pull.status, 0) << pull.err;
    }
};

// ... and pushed back as eStargz.
struct EstargzImage : SourceImage {
    std::string lazy;
    EstargzImage() {
        lazy = reg.host() + "/test/app:ez";
        auto push =
            src({"push", "--tls-verify=false", "--compression-format", "estargz", plain, lazy});
        EXPECT_EQ(push.status, 0) << push.err;
        EXPECT_TRUE(contains(push.out, "Converting 2 layers to eStargz")) << push.out;
    }
};

// skopeo copies image to an OCI layout; each layer has media_type and annotation, and
// `decompress` (a shell command reading the blob's path) turns it into the tar whose digest the
// config names as its diff ID.
void expect_layers_decompress_to_diff_ids(const SourceImage& img, const std::string& image,
                                          const std::string& media_type,
                                          const std::string& annotation,
                                          const std::string& decompress) {
    std::string layout = img.tmp / "copied-layout";
    auto cp = run_command({"skopeo", "copy", "--src-tls-verify=false", "docker://" + image,
                           "oci:" + layout + ":copied"});
    ASSERT_EQ(cp.status, 0) << cp.err;
    LayoutImage li = read_layout(layout);
    ASSERT_EQ(li.manifest["layers"].size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
        const json& l = li.manifest["layers"][i];
        EXPECT_EQ(l["mediaType"], media_type);
        EXPECT_TRUE(l["annotations"].contains(annotation)) << l.dump();
        std::string blob = li.blobs + l["digest"].get<std::string>().substr(7);
        auto sum = run_shell(decompress + " '" + blob + "' | sha256sum");
        ASSERT_EQ(sum.status, 0) << sum.err;
        EXPECT_EQ("sha256:" + sum.out.substr(0, 64), li.config["rootfs"]["diff_ids"][i]);
    }
}

// lamina pulls image whole into a fresh store (checking every diff ID); each layer holds what
// the source's does (and, with_estargz_files, what eStargz adds). Its layer directories.
std::vector<std::string> expect_full_pull_gives_the_sources_layers(const SourceImage& img,
                                                                   const std::string& image,
                                                                   bool with_estargz_files) {
    Lamina dst(img.tmp / "dst");
    auto pull = dst({"pull", "--tls-verify=false", image});
    EXPECT_EQ(pull.status, 0) << pull.err;
    auto a = layer_dirs(img.src, img.plain), b = layer_dirs(dst, image);
    EXPECT_EQ(a.size(), 2u);
    EXPECT_EQ(b.size(), 2u);
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
        EXPECT_EQ(describe(b[i], with_estargz_files), describe(a[i])) << "layer " << i;
    return b;
}

TEST(LazyPush, estargz_image_pulls_as_ordinary_gzip_with_skopeo_and_lamina) {
    REQUIRE_REGISTRY();
    if (!have_program("gzip")) SKIP_NEEDING("program:gzip") << "decompresses the layers";
    EstargzImage img;
    // skopeo copies it like any image; each layer is gzip whose content is its diff ID.
    expect_layers_decompress_to_diff_ids(img, img.lazy,
                                         "application/vnd.oci.image.layer.v1.tar+gzip",
                                         std::string(ez::kTocDigestAnnotation), "gzip -dc");
    // lamina pulls it fully into a fresh store (verifying every diff ID); each layer holds what
    // the source's does, plus the TOC and the landmark eStargz adds.
    auto dirs = expect_full_pull_gives_the_sources_layers(img, img.lazy, true);
    for (size_t i = 0; i < dirs.size(); ++i)
        EXPECT_TRUE(contains(describe(dirs[i]), "stargz.index.json ")) << "layer " << i;

    // Only estargz and zstd:chunked are formats; anything else is a usage error.
    auto bad = img.src({"push", "--tls-verify=false", "--compression-format", "zip", img.plain,
                        img.reg.host() + "/test/app:zip"});
    expect_one_line_failure(bad, "--compression-format");
}

// Reads a registry blob by ranges, counting the bytes asked for (the client refuses a reply
// longer than the range).
struct RangeCounter {
    registry::Client& client;
    store::Descriptor desc;
    uint64_t bytes = 0;
    ez::RangeReader reader() {
        return [this](uint64_t off, uint64_t len) {
            bytes += len;
            return client.get_blob_range(desc, static_cast<int64_t>(off),
                                         static_cast<int64_t>(len));
        };
    }
};

TEST(LazyFetch, layers_read_by_ranges_equal_a_full_pull_and_bad_chunks_give_no_bytes) {
    REQUIRE_REGISTRY();
    EstargzImage img;
    Lamina full(img.tmp / "full");
    auto pull = full({"pull", "--tls-verify=false", img.lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    auto full_dirs = layer_dirs(full, img.lazy);

    registry::Settings settings = registry::Settings::load();
    registry::Reference ref = registry::parse_reference(img.lazy);
    registry::ClientOptions copts;
    copts.tls_verify = false;
    registry::Client client(settings, settings.pull_endpoints(ref).back(), copts);
    client.ping();
    auto fetched = client.get_manifest("ez");
    store::Manifest m = store::parse_manifest(fetched.body, fetched.media_type);
    ASSERT_EQ(m.layers.size(), 2u);

    for (size_t i = 0; i < 2; ++i) {
        const store::Descriptor& d = m.layers[i];
        ASSERT_FALSE(d.estargz_toc_digest.empty());
        RangeCounter ranges{client, d};
        ez::Toc toc =
            ez::read_toc(ranges.reader(), static_cast<uint64_t>(d.size), d.estargz_toc_digest);
        // The tree costs the footer and the TOC: a small part of the 1 MiB layer.
        if (i == 0) {
            EXPECT_LT(ranges.bytes, static_cast<uint64_t>(d.size) / 20);
        }
        std::string dir = img.tmp / ("lazy-" + std::to_string(i));
        make_dirs(dir);
        store::UnpackOptions uo;
        uo.privileged = geteuid() == 0;
        store::UnpackResult ur;
        auto pending = ez::unpack_toc(toc, dir, uo, ur);
        store::Fd root(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        uint64_t before = ranges.bytes;
        for (const auto& p : pending) {
            if (toc.entries[p.entry].name != "etc/os-release") continue;
            ez::fill_placeholder(root.get(), toc, p, ranges.reader());
            EXPECT_EQ(read_file(dir + "/etc/os-release"), "ID=lamina\n");
            EXPECT_LT(ranges.bytes - before, 1024u);  // one small member, not the layer
        }
        for (const auto& p : pending) {
            if (toc.entries[p.entry].name != "etc/os-release")
                ez::fill_placeholder(root.get(), toc, p, ranges.reader());
        }
        EXPECT_EQ(describe(dir), describe(full_dirs[i])) << "layer " << i;
    }

    // A corrupted chunk in the registry's copy of the bottom layer: refused, nothing written.
    const store::Descriptor& d = m.layers[0];
    RangeCounter ranges{client, d};
    ez::Toc toc =
        ez::read_toc(ranges.reader(), static_cast<uint64_t>(d.size), d.estargz_toc_digest);
    const ez::TocEntry* big = nullptr;
    for (const auto& e : toc.entries)
        if (e.name == "data/big") big = &e;
    ASSERT_NE(big, nullptr);
    std::string stored = img.reg.blob_data(d.digest);
    {
        std::fstream f(stored, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(big->chunks[0].offset + 5000));
        char c = 0;
        f.seekg(static_cast<std::streamoff>(big->chunks[0].offset + 5000));
        f.get(c);
        f.seekp(static_cast<std::streamoff>(big->chunks[0].offset + 5000));
        f.put(static_cast<char>(c ^ 0x5a));
    }
    uint64_t written = 0;
    EXPECT_THROW(ez::fetch_file(*big, ranges.reader(),
                                [&](uint64_t, std::string_view b) { written += b.size(); }),
                 store::StoreError);
    EXPECT_EQ(written, 0u);

    // The registry gone: a range read fails at once; back again, it works.
    img.reg.kill();
    EXPECT_ANY_THROW(ranges.reader()(toc.toc_offset, 16));
    img.reg.restart();
    EXPECT_EQ(ranges.reader()(toc.toc_offset, 2), std::string("\x1f\x8b", 2));
}

// The digest of the bottom layer of a stored image (the one holding the 1 MiB file).
std::string bottom_blob(const Lamina& lamina, const std::string& image) {
    auto r = lamina({"inspect", image});
    EXPECT_EQ(r.status, 0) << r.err;
    return json::parse(r.out)[0]["Layers"][0]["Blob"];
}

void flip_byte(const std::string& path, std::streamoff at) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(at);
    char c = 0;
    f.get(c);
    f.seekp(at);
    f.put(static_cast<char>(c ^ 0x5a));
}

off_t file_size(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

// open + read of a whole file through the mount: its bytes, or the errno of the failing call.
std::pair<std::string, int> read_through(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {"", errno};
    std::string out;
    char buf[65536];
    int err = 0;
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) err = errno;
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return {out, err};
}

// `pull --lazy` of the demo image through the proxy: every layer read by its TOC (manifest,
// config and the TOCs: a small part of the 1 MiB layer), the big file a hole, the record beside
// the tree. The layer directories, bottom first.
std::vector<std::string> pull_lazily(const Lamina& lz, const std::string& via,
                                     const ThrottlingProxy& proxy) {
    auto pull = lz({"pull", "--tls-verify=false", "--lazy", via});
    EXPECT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(contains(pull.out, "Table of contents read (lazy)")) << pull.out;
    EXPECT_FALSE(contains(pull.out, "Pull complete")) << pull.out;
    EXPECT_FALSE(contains(pull.out, "pulled whole")) << pull.out;
    EXPECT_LT(proxy.bytes_sent(), 128 << 10);
    auto dirs = layer_dirs(lz, via);
    if (dirs.empty()) return dirs;
    struct stat st;
    EXPECT_EQ(::stat((dirs[0] + "/data/big").c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 1 << 20);
    EXPECT_EQ(st.st_blocks, 0);  // a placeholder: a hole of its size
    // The record of what is missing lies beside the tree, not in it.
    EXPECT_FALSE(contains(describe(dirs[0]), "lazy")) << describe(dirs[0]);
    EXPECT_EQ(access((dirs[0] + "/../lazy/source.json").c_str(), F_OK), 0);
    return dirs;
}

TEST(LazyPull, lazy_pull_mounts_at_once_and_fetches_each_file_on_first_open) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    ThroughProxy<EstargzImage> lazy_store;
    auto& [img, proxy, via, lz, guard] = lazy_store;

    auto dirs = pull_lazily(lz, via, proxy);
    ASSERT_EQ(dirs.size(), 2u);
    int64_t moved = proxy.bytes_sent();
    struct stat st;

    // The mount is up at once; stat and listings come from the tree and fetch nothing.
    last_line_of(lz({"create", "--name", "web", via}));
    std::string merged = last_line_of(lz({"mount", "web"}));
    ASSERT_EQ(::stat((merged + "/data/big").c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 1 << 20);
    EXPECT_EQ(proxy.bytes_sent(), moved);
    // A copy-up (chmod) of a file not yet fetched fetches it first.
    ASSERT_EQ(::chmod((merged + "/keep/new").c_str(), 0600), 0) << strerror(errno);
    EXPECT_EQ(read_file(merged + "/keep/new"), "new\n");
    auto upper = run_shell("cat " + lz.root() + "/containers/*/upper/keep/new");
    EXPECT_EQ(upper.out, "new\n") << upper.err;  // the upper copy holds the fetched bytes
    moved = proxy.bytes_sent();
    // The first open of a small file fetches that file, not the layer.
    EXPECT_EQ(read_file(merged + "/os"), "ID=lamina\n");
    EXPECT_LT(proxy.bytes_sent() - moved, 16 << 10);
    moved = proxy.bytes_sent();
    // A hard link to a placeholder is the placeholder: its content comes too.
    EXPECT_EQ(read_file(merged + "/data/big-link"), random_bytes(1 << 20, 7));
    EXPECT_GT(proxy.bytes_sent() - moved, 1 << 20);

    // Every file read through the mount equals a fully pulled container's.
    Lamina full(img.tmp / "full");
    StoreGuard full_guard{full.root()};
    ASSERT_EQ(full({"pull", "--tls-verify=false", img.lazy}).status, 0);
    last_line_of(full({"create", "--name", "web", img.lazy}));
    std::string full_merged = last_line_of(full({"mount", "web"}));
    ASSERT_EQ(::chmod((full_merged + "/keep/new").c_str(), 0600), 0);  // as above
    EXPECT_EQ(describe(merged), describe(full_merged));

    // Fetched files stay fetched: mounted again, reading them moves nothing.
    last_line_of(lz({"umount", "web"}));
    moved = proxy.bytes_sent();
    merged = last_line_of(lz({"mount", "web"}));
    EXPECT_EQ(read_file(merged + "/data/big"), random_bytes(1 << 20, 7));
    EXPECT_EQ(proxy.bytes_sent(), moved);
    last_line_of(lz({"umount", "web"}));
    last_line_of(full({"umount", "web"}));
}

// The pids of the lazy fetchers (lamina-lazy-fetch --serve) serving layers of the store at root,
// from /proc.
std::vector<pid_t> fetchers_of(const std::string& root) {
    std::vector<pid_t> pids;
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
        std::string name = e.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::string cmdline = read_all(e.path() / "cmdline");
        if (cmdline.find(std::string("lamina-lazy-fetch\0--serve\0", 26)) == std::string::npos ||
            cmdline.find(std::string("\0", 1) + root + "/") == std::string::npos)
            continue;
        std::ifstream status(e.path() / "status");
        std::string line;
        while (std::getline(status, line))
            if (line.starts_with("State:") && line.find('Z') == std::string::npos)
                pids.push_back(static_cast<pid_t>(std::stol(name)));
    }
    return pids;
}

TEST(LazyPull, one_fetcher_per_mount_shares_a_fetch_and_is_replaced_after_it_dies) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    ThroughProxy<EstargzImage> lazy_store;
    auto& [img, proxy, via, lz, guard] = lazy_store;
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", via}).status, 0);
    last_line_of(lz({"create", "--name", "web", via}));
    std::string merged = last_line_of(lz({"mount", "web"}));
    // Nothing opened yet: no fetcher.
    EXPECT_TRUE(fetchers_of(lz.root()).empty());

    // Two names of one placeholder opened at once: two requests, one fetch of the 1 MiB.
    int64_t moved = proxy.bytes_sent();
    std::string big, link;
    std::thread other([&] { big = read_all(merged + "/data/big"); });
    link = read_all(merged + "/data/big-link");
    other.join();
    EXPECT_EQ(big, random_bytes(1 << 20, 7));
    EXPECT_EQ(link, big);
    EXPECT_GT(proxy.bytes_sent() - moved, 1 << 20);
    EXPECT_LT(proxy.bytes_sent() - moved, (1 << 20) + (256 << 10));
    auto pids = fetchers_of(lz.root());
    ASSERT_EQ(pids.size(), 1u);
    // Started with no signal blocked, though FUSE's worker threads block them all.
    std::string status = read_all("/proc/" + std::to_string(pids[0]) + "/status");
    EXPECT_TRUE(contains(status, "SigBlk:\t0000000000000000\n")) << status;

    // Killed: the next open starts another, which fetches.
    ASSERT_EQ(::kill(pids[0], SIGKILL), 0);
    // Reaped by laminafs, which has then seen its end. (A zombie is not enough: the threads of a
    // killed process may still hold its socket open after its first one exited.)
    std::string proc_entry = "/proc/" + std::to_string(pids[0]);
    EXPECT_TRUE(poll_until([&] { return ::access(proc_entry.c_str(), F_OK) != 0; },
                           std::chrono::seconds(5)));
    EXPECT_EQ(read_through(merged + "/os"), std::make_pair(std::string("ID=lamina\n"), 0));
    auto again = fetchers_of(lz.root());
    ASSERT_EQ(again.size(), 1u);
    EXPECT_NE(again[0], pids[0]);

    // Unmounted: it goes with laminafs.
    last_line_of(lz({"umount", "web"}));
    EXPECT_TRUE(
        poll_until([&] { return fetchers_of(lz.root()).empty(); }, std::chrono::seconds(5)));
}

TEST(LazyPull, a_corrupt_chunk_or_a_dead_registry_gives_eio_and_reads_recover) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    EstargzImage img;
    Lamina lz(img.tmp / "lz");
    StoreGuard guard{lz.root()};
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", img.lazy}).status, 0);
    last_line_of(lz({"create", "--name", "web", img.lazy}));
    std::string blob = img.reg.blob_data(bottom_blob(lz, img.lazy));
    off_t middle = file_size(blob) / 2;  // inside data/big's member
    setenv("LAMINA_LAZY_TIMEOUT", "2", 1);
    std::string merged = last_line_of(lz({"mount", "web"}));
    unsetenv("LAMINA_LAZY_TIMEOUT");

    // A chunk that does not match its digest: EIO, never the wrong bytes.
    flip_byte(blob, middle);
    auto bad = read_through(merged + "/data/big");
    EXPECT_EQ(bad.second, EIO);
    EXPECT_TRUE(bad.first.empty());
    flip_byte(blob, middle);

    // The registry gone: EIO after the bound (2 s here), not a hang.
    img.reg.kill();
    auto t0 = std::chrono::steady_clock::now();
    auto dead = read_through(merged + "/keep/new");
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(dead.second, EIO);
    EXPECT_LT(took, std::chrono::seconds(10));

    // Back again: both read right.
    img.reg.restart();
    EXPECT_EQ(read_through(merged + "/keep/new"), std::make_pair(std::string("new\n"), 0));
    EXPECT_EQ(read_through(merged + "/data/big").first, random_bytes(1 << 20, 7));
    last_line_of(lz({"umount", "web"}));
}

TEST(LazyPull, a_full_pull_replaces_the_lazy_layers_with_verified_ones) {
    REQUIRE_REGISTRY();
    EstargzImage img;
    // Layers without a TOC (the plain image's gzip and zstd ones) are pulled whole, said once each.
    Lamina plain(img.tmp / "plain");
    auto whole = plain({"pull", "--tls-verify=false", "--lazy", img.plain});
    ASSERT_EQ(whole.status, 0) << whole.err;
    size_t said = 0;
    for (size_t at = 0;
         (at = whole.out.find("no eStargz or zstd:chunked table of contents: pulled whole", at)) !=
         std::string::npos;
         ++at)
        ++said;
    EXPECT_EQ(said, 2u) << whole.out;
    for (const auto& d : layer_dirs(plain, img.plain))
        EXPECT_NE(access((d + "/../lazy").c_str(), F_OK), 0) << d;

    Lamina lz(img.tmp / "lz");
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", img.lazy}).status, 0);
    auto dirs = layer_dirs(lz, img.lazy);
    ASSERT_EQ(access((dirs[0] + "/../lazy/source.json").c_str(), F_OK), 0);

    auto pull = lz({"pull", "--tls-verify=false", img.lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(contains(pull.out, "Pull complete")) << pull.out;
    EXPECT_EQ(layer_dirs(lz, img.lazy), dirs);  // the same layers (chain IDs), now whole
    for (const auto& d : dirs) EXPECT_NE(access((d + "/../lazy").c_str(), F_OK), 0) << d;
    EXPECT_EQ(read_file(dirs[0] + "/data/big"), random_bytes(1 << 20, 7));
    // Whole layers are ordinary: pushing the image back needs their blobs, and has them.
    auto push = lz({"push", "--tls-verify=false", img.lazy, img.reg.host() + "/test/app:again"});
    EXPECT_EQ(push.status, 0) << push.err;
}

TEST(LazyPull, a_lazy_layer_whose_record_does_not_parse_is_replaced_whole_by_a_pull) {
    REQUIRE_REGISTRY();
    EstargzImage img;
    Lamina lz(img.tmp / "lz");
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", img.lazy}).status, 0);
    auto dirs = layer_dirs(lz, img.lazy);
    // Not completed in place (nothing in it can be trusted): downloaded, verified and swapped.
    for (const auto& d : dirs) std::ofstream(d + "/../lazy/pending.json") << "not json";
    auto pull = lz({"pull", "--tls-verify=false", img.lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_FALSE(contains(pull.out, "completed in place")) << pull.out;
    EXPECT_EQ(layer_dirs(lz, img.lazy), dirs);
    for (const auto& d : dirs) EXPECT_NE(access((d + "/../lazy").c_str(), F_OK), 0) << d;
    EXPECT_EQ(read_file(dirs[0] + "/data/big"), random_bytes(1 << 20, 7));
}

// lamina-lazy-fetch, beside the lamina the tests run: fills one file as laminafs would on open.
CommandResult fetch_one(const std::string& layer_diff, const std::string& path) {
    std::string bin = lamina_binary();
    return run_command({bin.substr(0, bin.rfind('/') + 1) + "lamina-lazy-fetch", layer_diff, path});
}

// inspect's word on each layer: its Lazy object, or null once the layer is ordinary.
std::vector<json> lazy_of_layers(const Lamina& lamina, const std::string& image) {
    auto r = lamina({"inspect", image});
    EXPECT_EQ(r.status, 0) << r.err;
    std::vector<json> out;
    json j = json::parse(r.out);
    for (const auto& l : j[0]["Layers"]) out.push_back(l.contains("Lazy") ? l["Lazy"] : json());
    return out;
}

TEST(LazyProgress, inspect_ps_size_and_system_df_show_how_much_of_each_lazy_layer_is_local) {
    REQUIRE_REGISTRY();
    EstargzImage img;
    Lamina lz(img.tmp / "lz");
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", img.lazy}).status, 0);
    auto lazy = lazy_of_layers(lz, img.lazy);
    ASSERT_EQ(lazy.size(), 2u);
    // Bottom: os-release, big (big-link is the same file), gone, keep/old, bin-su, the landmark.
    EXPECT_EQ(lazy[0]["Files"], 6) << lazy[0].dump();
    EXPECT_EQ(lazy[0]["Bytes"], (1 << 20) + 10 + 4 + 4 + 3 + 1) << lazy[0].dump();
    EXPECT_EQ(lazy[0]["FilesLocal"], 0);
    EXPECT_EQ(lazy[0]["BytesLocal"], 0);
    EXPECT_EQ(lazy[1]["Files"], 3) << lazy[1].dump();  // keep/new, etc/two, the landmark

    // One file fetched (as laminafs's first open does): the count moves by it alone.
    auto dirs = layer_dirs(lz, img.lazy);
    auto f = fetch_one(dirs[0], "etc/os-release");
    ASSERT_EQ(f.status, 0) << f.err;
    lazy = lazy_of_layers(lz, img.lazy);
    EXPECT_EQ(lazy[0]["FilesLocal"], 1);
    EXPECT_EQ(lazy[0]["BytesLocal"], 10);
    EXPECT_EQ(lazy[1]["FilesLocal"], 0);

    last_line_of(lz({"create", "--name", "web", img.lazy}));
    auto ps = lz({"ps", "-a", "-s", "--format", "json"});
    ASSERT_EQ(ps.status, 0) << ps.err;
    json c = json::parse(ps.out)[0];
    ASSERT_EQ(c["LazyLayers"].size(), 2u) << ps.out;
    EXPECT_EQ(c["LazyLayers"][0]["BytesLocal"], 10);
    auto table = lz({"ps", "-a", "-s"});
    EXPECT_TRUE(contains(table.out, "lazy 2 layers: 10B of 1.05MB local (1 of 9 files)"))
        << table.out;
    // Without -s nothing of it is asked for or shown.
    EXPECT_FALSE(contains(lz({"ps", "-a", "--format", "json"}).out, "LazyLayers"));

    auto df = lz({"system", "df", "--format", "json"});
    ASSERT_EQ(df.status, 0) << df.err;
    json d = json::parse(df.out)["LazyLayers"];
    EXPECT_EQ(d["Total"], 2);
    EXPECT_EQ(d["BytesLocal"], 10);
    EXPECT_EQ(d["Details"].size(), 2u);
    auto dft = lz({"system", "df", "-v"});
    EXPECT_TRUE(contains(dft.out, "Lazy layers")) << dft.out;
    EXPECT_TRUE(contains(dft.out, "1 of 6")) << dft.out;
}

TEST(LazyComplete, a_pull_completes_lazy_layers_in_place_and_then_needs_no_registry) {
    REQUIRE_REGISTRY();
    ThroughProxy<EstargzImage> lazy_store;
    auto& [img, proxy, via, lz, guard] = lazy_store;
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", via}).status, 0);
    auto dirs = layer_dirs(lz, via);
    auto f = fetch_one(dirs[0], "data/big");
    ASSERT_EQ(f.status, 0) << f.err;
    bool fuse = can_mount_fuse();
    std::string merged;
    if (fuse) {
        last_line_of(lz({"create", "--name", "web", via}));
        merged = last_line_of(lz({"mount", "web"}));  // completion happens under a live mount
    }

    // The pull fetches what is missing (not the 1 MiB file, fetched before) and checks it all.
    int64_t before = proxy.bytes_sent();
    auto pull = lz({"pull", "--tls-verify=false", via});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(contains(pull.out, "completed in place")) << pull.out;
    EXPECT_LT(proxy.bytes_sent() - before, 256 << 10);
    for (const auto& l : lazy_of_layers(lz, via)) EXPECT_TRUE(l.is_null()) << l.dump();
    EXPECT_EQ(layer_dirs(lz, via), dirs);
    for (const auto& d : dirs) EXPECT_NE(access((d + "/../lazy").c_str(), F_OK), 0) << d;

    Lamina full(img.tmp / "full");  // to compare with
    ASSERT_EQ(full({"pull", "--tls-verify=false", img.lazy}).status, 0);
    // Ordinary now: with no registry at all, every file reads and the image saves whole.
    img.reg.kill();
    auto full_dirs = layer_dirs(full, img.lazy);
    for (size_t i = 0; i < 2; ++i) EXPECT_EQ(describe(dirs[i]), describe(full_dirs[i])) << i;
    if (fuse) {
        EXPECT_EQ(read_through(merged + "/data/gone").second, ENOENT);
        EXPECT_EQ(read_through(merged + "/keep/new"), std::make_pair(std::string("new\n"), 0));
        EXPECT_EQ(read_through(merged + "/bin-su"), std::make_pair(std::string("su\n"), 0));
        last_line_of(lz({"umount", "web"}));
    }
    auto save = lz({"save", "-o", img.tmp / "saved.tar", via});
    EXPECT_EQ(save.status, 0) << save.err;
}

// Waits (at most 20 s) until no layer of the image is lazy: a background completer's work.
bool turns_ordinary(const Lamina& lamina, const std::string& image) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
        bool all = true;
        for (const auto& l : lazy_of_layers(lamina, image)) all = all && l.is_null();
        if (all) return true;
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

// The chain IDs of a stored image's layers, bottom first.
std::vector<std::string> chain_ids(const Lamina& lamina, const std::string& image) {
    auto r = lamina({"inspect", image});
    EXPECT_EQ(r.status, 0) << r.err;
    std::vector<std::string> out;
    json j = json::parse(r.out);
    for (const auto& l : j[0]["Layers"]) out.push_back(l["ChainID"]);
    return out;
}

TEST(LazyComplete, a_completer_killed_midway_leaves_a_layer_the_next_pull_completes) {
    REQUIRE_REGISTRY();
    EstargzImage img;
    // The 1 MiB file takes two seconds through it.
    auto proxy = std::make_unique<ThrottlingProxy>(img.reg.port(), 512 << 10);
    std::string via = "127.0.0.1:" + std::to_string(proxy->port()) + "/test/app:ez";
    Lamina lz(img.tmp / "lz");
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", via}).status, 0);
    std::string bin = lamina_binary();
    std::vector<std::string> argv = {bin.substr(0, bin.rfind('/') + 1) + "lamina-lazy-fetch",
                                     "--complete", "--tls-verify=false", lz.root()};
    for (const auto& c : chain_ids(lz, via)) argv.push_back(c);
    // The completer takes the layer's lock first, then fetches the blob (over a MiB: more than
    // two seconds through the proxy) before it fills any file.
    std::string lock = layer_dirs(lz, via)[0] + "/../lazy/complete.lock";
    {
        Child completer(argv, img.tmp / "completer.log");
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (access(lock.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        std::this_thread::sleep_for(std::chrono::milliseconds(700));
    }  // SIGKILL in the middle of the blob
    auto lazy = lazy_of_layers(lz, via);
    ASSERT_FALSE(lazy[0].is_null()) << "the completer was not stopped midway";
    EXPECT_LT(lazy[0]["FilesLocal"].get<int>(), 6);

    // The proxy the lazy pull used is gone: a pull from the registry itself completes the same
    // blobs from there.
    proxy.reset();
    auto pull = lz({"pull", "--tls-verify=false", img.lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(contains(pull.out, "completed in place")) << pull.out;
    for (const auto& l : lazy_of_layers(lz, via)) EXPECT_TRUE(l.is_null()) << l.dump();
    auto dirs = layer_dirs(lz, via);
    EXPECT_EQ(read_file(dirs[0] + "/data/big"), random_bytes(1 << 20, 7));
    EXPECT_EQ(read_file(dirs[0] + "/etc/os-release"), "ID=lamina\n");
}

TEST(LazyComplete, pull_lazy_background_completes_the_layers_in_a_detached_process) {
    REQUIRE_REGISTRY();
    EstargzImage img;
    Lamina lz(img.tmp / "lz");
    auto pull = lz({"pull", "--tls-verify=false", "--lazy", "--background", img.lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(contains(pull.err, "Completing 2 lazy layers in the background")) << pull.err;
    auto dirs = layer_dirs(lz, img.lazy);
    ASSERT_TRUE(turns_ordinary(lz, img.lazy));
    img.reg.kill();
    EXPECT_EQ(read_file(dirs[0] + "/data/big"), random_bytes(1 << 20, 7));
    EXPECT_EQ(read_file(dirs[1] + "/keep/new"), "new\n");
    EXPECT_EQ(lz({"save", "-o", img.tmp / "saved.tar", img.lazy}).status, 0);
    // --background is for a lazy pull only.
    expect_one_line_failure(lz({"pull", "--background", img.lazy}), "--background");
}

TEST(LazyComplete, with_lazy_background_in_the_config_mount_starts_the_completer) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    EstargzImage img;
    Lamina lz(img.tmp / "lz");
    StoreGuard guard{lz.root()};
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", img.lazy}).status, 0);
    last_line_of(lz({"create", "--name", "web", img.lazy}));
    // "lazy-background" must be a boolean: one line, nothing mounted.
    img.env.write_config(R"({"lazy-background": "yes"})");
    expect_one_line_failure(lz({"mount", "web"}), "lazy-background");
    EXPECT_EQ(json::parse(lz({"ps", "-a", "--format", "json"}).out)[0]["Mounted"], false);
    img.env.write_config(R"({"lazy-background": true})");
    auto mount = lz({"mount", "web"});
    ASSERT_EQ(mount.status, 0) << mount.err;
    EXPECT_TRUE(contains(mount.err, "Completing 2 lazy layers in the background")) << mount.err;
    std::string merged = last_line_of(mount);
    ASSERT_TRUE(turns_ordinary(lz, img.lazy));
    img.reg.kill();
    EXPECT_EQ(read_through(merged + "/data/big").first, random_bytes(1 << 20, 7));
    EXPECT_EQ(read_through(merged + "/keep/new"), std::make_pair(std::string("new\n"), 0));
    last_line_of(lz({"umount", "web"}));
}

TEST(LazySave, save_and_push_complete_a_lazy_image_first_or_fail_in_one_line) {
    REQUIRE_REGISTRY();
    EstargzImage img;
    Lamina lz(img.tmp / "lz");
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", img.lazy}).status, 0);
    last_line_of(lz({"create", "--name", "web", img.lazy}));
    // diff and commit of a container over lazy layers need none of their content.
    EXPECT_EQ(lz({"diff", "web"}).status, 0);
    std::string committed = last_line_of(lz({"commit", "web", "snap:1"}));

    // No registry: one line, no archive, the layers still lazy.
    img.reg.kill();
    setenv("LAMINA_LAZY_TIMEOUT", "1", 1);
    auto save = lz({"save", "-o", img.tmp / "x.tar", "snap:1"});
    auto push = lz({"push", "--tls-verify=false", "snap:1", img.reg.host() + "/test/snap:1"});
    unsetenv("LAMINA_LAZY_TIMEOUT");
    expect_one_line_failure(save, "cannot complete lazy layer");
    EXPECT_NE(access((img.tmp / "x.tar").c_str(), F_OK), 0);
    expect_one_line_failure(push, "cannot complete lazy layer");
    EXPECT_FALSE(lazy_of_layers(lz, img.lazy)[0].is_null());
    // A background completer that fails leaves why, which inspect shows.
    std::string bin = lamina_binary();
    setenv("LAMINA_LAZY_TIMEOUT", "1", 1);
    auto bg = run_command({bin.substr(0, bin.rfind('/') + 1) + "lamina-lazy-fetch", "--complete",
                           lz.root(), chain_ids(lz, img.lazy)[0]});
    unsetenv("LAMINA_LAZY_TIMEOUT");
    EXPECT_EQ(bg.status, 1);
    json why = lazy_of_layers(lz, img.lazy)[0];
    EXPECT_TRUE(contains(why.value("LastError", ""), "no reply within 1 s")) << why.dump();

    // Back: save completes the layers, then writes their verified blobs.
    img.reg.restart();
    save = lz({"save", "-o", img.tmp / "x.tar", "snap:1"});
    ASSERT_EQ(save.status, 0) << save.err;
    EXPECT_TRUE(contains(save.err, "Completed lazy layer")) << save.err;
    Lamina other(img.tmp / "other");
    ASSERT_EQ(other({"load", "-i", img.tmp / "x.tar"}).status, 0);
    EXPECT_EQ(read_file(layer_dirs(other, "snap:1")[0] + "/data/big"), random_bytes(1 << 20, 7));
    push = lz({"push", "--tls-verify=false", "snap:1", img.reg.host() + "/test/snap:1"});
    EXPECT_EQ(push.status, 0) << push.err;
}

// The entry names of a lazy layer's TOC (the record beside its tree), in order, without a
// directory's trailing slash.
std::vector<std::string> lazy_toc_names(const std::string& layer_dir) {
    std::vector<std::string> out;
    json toc = json::parse(read_all(layer_dir + "/../lazy/toc.json"), nullptr, false);
    if (!toc.is_object()) return out;
    for (const auto& e : toc["entries"]) {
        if (e["type"] == "chunk") continue;
        std::string name = e["name"];
        while (name.size() > 1 && name.ends_with('/')) name.pop_back();
        out.push_back(name);
    }
    return out;
}

TEST(LazyConvert, a_converted_image_pushes_as_it_is_and_pulls_lazily_prioritised_files_first) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    SourceImage img;
    const TempDir& tmp = img.tmp;
    Registry& reg = img.reg;
    Lamina& src = img.src;
    const std::string& plain = img.plain;
    StoreGuard src_guard{src.root()};
    std::ofstream(tmp / "prefetch") << "data/big-link\netc/os-release\nnot/here\n";

    // Bad input: one line each, nothing stored.
    expect_one_line_failure(src({"convert", "--format", "zstd", plain, "app:ez"}), "--format");
    expect_one_line_failure(src({"convert", plain, "app:ez"}), "--format estargz");
    expect_one_line_failure(src({"convert", "--format", "estargz", "no-such:image", "app:ez"}),
                            "no-such");
    expect_one_line_failure(src({"convert", "--format", "estargz", plain, plain}), "taken");
    EXPECT_EQ(src({"images", "-q"}).out.size(), 13u) << src({"images"}).out;

    auto conv = src(
        {"convert", "--format", "estargz", "--prefetch-list", tmp / "prefetch", plain, "app:ez"});
    ASSERT_EQ(conv.status, 0) << conv.err;
    EXPECT_EQ(conv.err, "lamina: warning: prefetch list: \"not/here\" is in no layer\n");
    std::string ez_id = last_line_of(conv);
    EXPECT_NE(ez_id, json::parse(src({"inspect", plain}).out)[0]["Id"].get<std::string>());
    // The store holds it whole: its layers unpacked, each with the eStargz files.
    auto src_dirs = layer_dirs(src, "app:ez");
    ASSERT_EQ(src_dirs.size(), 2u);
    EXPECT_EQ(read_file(src_dirs[0] + "/data/big"), random_bytes(1 << 20, 7));
    EXPECT_EQ(access((src_dirs[0] + "/.prefetch.landmark").c_str(), F_OK), 0);
    EXPECT_EQ(access((src_dirs[1] + "/.no.prefetch.landmark").c_str(), F_OK), 0);

    // A plain push sends it as it is: nothing converted again, the TOC annotations in the
    // manifest the registry serves, whose layers are the stored ones.
    std::string pushed = reg.host() + "/test/app:ez";
    auto push = src({"push", "--tls-verify=false", "app:ez", pushed});
    ASSERT_EQ(push.status, 0) << push.err;
    EXPECT_FALSE(contains(push.out, "Converting")) << push.out;
    auto raw =
        run_command({"skopeo", "inspect", "--raw", "--tls-verify=false", "docker://" + pushed});
    ASSERT_EQ(raw.status, 0) << raw.err;
    json manifest = json::parse(raw.out);
    ASSERT_EQ(manifest["layers"].size(), 2u);
    std::vector<std::string> stored_blobs;
    json stored = json::parse(src({"inspect", "app:ez"}).out);
    for (const auto& l : stored[0]["Layers"]) stored_blobs.push_back(l["Blob"]);
    ASSERT_EQ(stored_blobs.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
        const json& l = manifest["layers"][i];
        EXPECT_EQ(l["digest"], stored_blobs[i]);
        EXPECT_TRUE(l["annotations"].contains(std::string(ez::kTocDigestAnnotation))) << l.dump();
        EXPECT_EQ(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    }
    // push --compression-format estargz of the converted image keeps its layers as they are.
    auto again = src({"push", "--tls-verify=false", "--compression-format", "estargz", "app:ez",
                      reg.host() + "/test/app:ez2"});
    ASSERT_EQ(again.status, 0) << again.err;
    EXPECT_TRUE(contains(again.out,
                         "Converting 0 layers to eStargz (2 are eStargz already: kept "
                         "as they are)"))
        << again.out;
    auto raw2 = run_command({"skopeo", "inspect", "--raw", "--tls-verify=false",
                             "docker://" + reg.host() + "/test/app:ez2"});
    ASSERT_EQ(raw2.status, 0) << raw2.err;
    EXPECT_EQ(json::parse(raw2.out)["layers"], manifest["layers"]);

    // A lazy pull of it into a fresh store: the prioritised files lead the bottom layer's TOC,
    // after their parents (and the hard link after its target), then the landmark.
    Lamina lz(tmp / "lz");
    StoreGuard lz_guard{lz.root()};
    auto pull = lz({"pull", "--tls-verify=false", "--lazy", pushed});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(contains(pull.out, "Table of contents read (lazy)")) << pull.out;
    auto dirs = layer_dirs(lz, pushed);
    ASSERT_EQ(dirs.size(), 2u);
    std::vector<std::string> names = lazy_toc_names(dirs[0]);
    ASSERT_GE(names.size(), 6u);
    EXPECT_EQ(std::vector<std::string>(names.begin(), names.begin() + 6),
              (std::vector<std::string>{"data", "data/big", "data/big-link", "etc",
                                        "etc/os-release", ".prefetch.landmark"}));
    names = lazy_toc_names(dirs[1]);
    ASSERT_FALSE(names.empty());
    EXPECT_EQ(names[0], ".no.prefetch.landmark");  // none of the list's files is in it

    // Mounted, it reads as the source image does.
    last_line_of(lz({"create", "--name", "web", pushed}));
    std::string merged = last_line_of(lz({"mount", "web"}));
    EXPECT_EQ(read_file(merged + "/etc/os-release"), "ID=lamina\n");
    EXPECT_EQ(read_file(merged + "/data/big"), random_bytes(1 << 20, 7));
    last_line_of(src({"create", "--name", "plain", plain}));
    std::string plain_merged = last_line_of(src({"mount", "plain"}));
    EXPECT_EQ(describe(merged, true), describe(plain_merged, true));
    last_line_of(lz({"umount", "web"}));
    last_line_of(src({"umount", "plain"}));
}

TEST(LazyConvert, push_with_a_prefetch_list_writes_the_listed_files_first) {
    REQUIRE_REGISTRY();
    SourceImage img;
    const TempDir& tmp = img.tmp;
    Lamina& src = img.src;
    const std::string& plain = img.plain;
    const std::string pf = img.reg.host() + "/test/app:pf";
    std::ofstream(tmp / "prefetch") << "keep/new\n";
    // --prefetch-list goes with --compression-format.
    expect_one_line_failure(
        src({"push", "--tls-verify=false", "--prefetch-list", tmp / "prefetch", plain, pf}),
        "--prefetch-list");
    auto push = src({"push", "--tls-verify=false", "--compression-format", "estargz",
                     "--prefetch-list", tmp / "prefetch", plain, pf});
    ASSERT_EQ(push.status, 0) << push.err;
    EXPECT_EQ(push.err, "");  // keep/new is in a layer: no warning
    Lamina lz(tmp / "lz");
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", pf}).status, 0);
    auto dirs = layer_dirs(lz, pf);
    ASSERT_EQ(dirs.size(), 2u);
    EXPECT_EQ(lazy_toc_names(dirs[0])[0], ".no.prefetch.landmark");
    std::vector<std::string> top = lazy_toc_names(dirs[1]);
    ASSERT_GE(top.size(), 3u);
    EXPECT_EQ(std::vector<std::string>(top.begin(), top.begin() + 3),
              (std::vector<std::string>{"keep", "keep/new", ".prefetch.landmark"}));
}

TEST(LazyConfig, lazy_true_in_the_config_makes_pull_lazy_and_no_lazy_pulls_whole) {
    REQUIRE_REGISTRY();
    EstargzImage img;
    Lamina lz(img.tmp / "lz");
    // "lazy" must be a boolean: one line before anything is fetched.
    img.env.write_config(R"({"lazy": "yes"})");
    expect_one_line_failure(lz({"pull", "--tls-verify=false", img.lazy}), "\"lazy\"");
    EXPECT_EQ(lz({"images", "-q"}).out, "");
    img.env.write_config(R"({"lazy": true})");
    auto pull = lz({"pull", "--tls-verify=false", img.lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(contains(pull.out, "Table of contents read (lazy)")) << pull.out;
    for (const auto& l : lazy_of_layers(lz, img.lazy)) EXPECT_FALSE(l.is_null());
    // Layers without a TOC are pulled whole, as with --lazy.
    auto plain = lz({"pull", "--tls-verify=false", img.plain});
    ASSERT_EQ(plain.status, 0) << plain.err;
    EXPECT_TRUE(contains(plain.out, "pulled whole")) << plain.out;
    for (const auto& l : lazy_of_layers(lz, img.plain)) EXPECT_TRUE(l.is_null());
    // --no-lazy pulls whole: into a fresh store, and over the lazy layers, completing them.
    Lamina whole(img.tmp / "whole");
    auto w = whole({"pull", "--tls-verify=false", "--no-lazy", img.lazy});
    ASSERT_EQ(w.status, 0) << w.err;
    EXPECT_FALSE(contains(w.out, "(lazy)")) << w.out;
    for (const auto& l : lazy_of_layers(whole, img.lazy)) EXPECT_TRUE(l.is_null());
    auto complete = lz({"pull", "--tls-verify=false", "--no-lazy", img.lazy});
    ASSERT_EQ(complete.status, 0) << complete.err;
    EXPECT_TRUE(contains(complete.out, "completed in place")) << complete.out;
    for (const auto& l : lazy_of_layers(lz, img.lazy)) EXPECT_TRUE(l.is_null());
    expect_one_line_failure(lz({"pull", "--lazy", "--no-lazy", img.lazy}), "--no-lazy");
}

// The demo image, rewritten by skopeo as zstd:chunked and pushed to another repository. skopeo
// 1.9.3 recompresses between layouts, but from registry to registry it mounts the blobs it finds
// there as they are, so the copy goes through an OCI layout.
struct ZstdChunkedImage {
    TempDir tmp{"lamina-lazy-zc"};
    RegistryEnv env;
    Registry reg;
    std::string plain, lazy;
    ZstdChunkedImage() {
        push_lazy_demo(reg, tmp, "test/app:v1", true);
        plain = reg.host() + "/test/app:v1";
        lazy = reg.host() + "/test/zc:v1";
        auto cp = run_command({"skopeo", "copy", "--dest-compress-format", "zstd:chunked",
                               "oci:" + tmp / "lazy-layout" + ":lazy",
                               "oci:" + tmp / "zc-layout" + ":zc"});
        EXPECT_EQ(cp.status, 0) << cp.err;
        reg.push_layout(tmp / "zc-layout", "zc", "test/zc:v1");
        auto raw =
            run_command({"skopeo", "inspect", "--raw", "--tls-verify=false", "docker://" + lazy});
        EXPECT_EQ(json::parse(raw.out, nullptr, false)["layers"][0]["mediaType"],
                  "application/vnd.oci.image.layer.v1.tar+zstd")
            << raw.out;
        EXPECT_TRUE(contains(raw.out, "io.containers.zstd-chunked.manifest-checksum")) << raw.out;
    }
};

// pull --lazy of via through the proxy, a container "web" of it mounted: the mount moves
// nothing, a first open of a small file moves that file's frame, not the layer. The mount point,
// or "" when the pull did not give two lazy layers.
std::string mount_lazily(const Lamina& lz, const std::string& via, const ThrottlingProxy& proxy) {
    if (pull_lazily(lz, via, proxy).size() != 2u) return "";
    int64_t moved = proxy.bytes_sent();
    last_line_of(lz({"create", "--name", "web", via}));
    setenv("LAMINA_LAZY_TIMEOUT", "5", 1);
    std::string merged = last_line_of(lz({"mount", "web"}));
    unsetenv("LAMINA_LAZY_TIMEOUT");
    EXPECT_EQ(proxy.bytes_sent(), moved);
    EXPECT_EQ(read_file(merged + "/os"), "ID=lamina\n");
    EXPECT_LT(proxy.bytes_sent() - moved, 16 << 10);
    return merged;
}

// describe's lines without their mtimes.
std::string without_mtimes(const std::string& description) {
    return std::regex_replace(description, std::regex(" mtime=[0-9]+"), "");
}

// Every file read through merged equals a fully pulled container's of image (mtimes aside when
// not compare_mtimes).
void expect_mount_equals_a_full_pulls(const TempDir& tmp, const std::string& image,
                                      const std::string& merged, bool compare_mtimes = true) {
    Lamina full(tmp / "full");
    StoreGuard full_guard{full.root()};
    auto whole = full({"pull", "--tls-verify=false", image});
    ASSERT_EQ(whole.status, 0) << whole.err;
    last_line_of(full({"create", "--name", "web", image}));
    std::string full_merged = last_line_of(full({"mount", "web"}));
    if (compare_mtimes)
        EXPECT_EQ(describe(merged), describe(full_merged));
    else
        EXPECT_EQ(without_mtimes(describe(merged)), without_mtimes(describe(full_merged)));
    last_line_of(full({"umount", "web"}));
}

TEST(LazyPullZstdChunked, skopeos_layers_mount_at_once_and_each_file_is_checked_on_first_open) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    ThroughProxy<ZstdChunkedImage> lazy_store;
    auto& [img, proxy, via, lz, guard] = lazy_store;

    std::string merged = mount_lazily(lz, via, proxy);
    ASSERT_FALSE(merged.empty());

    // A flipped byte in the stored blob, inside data/big's frames: EIO and no bytes.
    std::string blob = img.reg.blob_data(bottom_blob(lz, via));
    off_t middle = file_size(blob) / 2;
    flip_byte(blob, middle);
    auto bad = read_through(merged + "/data/big");
    EXPECT_EQ(bad.second, EIO);
    EXPECT_TRUE(bad.first.empty());
    flip_byte(blob, middle);
    int64_t moved = proxy.bytes_sent();
    EXPECT_EQ(read_file(merged + "/data/big-link"), random_bytes(1 << 20, 7));
    EXPECT_GT(proxy.bytes_sent() - moved, 1 << 20);

    expect_mount_equals_a_full_pulls(img.tmp, img.lazy, merged);
    last_line_of(lz({"umount", "web"}));
}

TEST(LazyPullZstdChunked, a_full_pull_completes_the_lazy_layers_in_place) {
    REQUIRE_REGISTRY();
    ZstdChunkedImage img;
    Lamina lz(img.tmp / "lz");
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", img.lazy}).status, 0);
    auto dirs = layer_dirs(lz, img.lazy);
    for (const auto& l : lazy_of_layers(lz, img.lazy)) EXPECT_FALSE(l.is_null());
    auto f = fetch_one(dirs[0], "etc/os-release");
    ASSERT_EQ(f.status, 0) << f.err;

    // The blob decompresses as one zstd stream to the tar of the config's diff ID: completion
    // checks it, and the TOC, and makes the layers ordinary.
    auto pull = lz({"pull", "--tls-verify=false", img.lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(contains(pull.out, "completed in place")) << pull.out;
    for (const auto& l : lazy_of_layers(lz, img.lazy)) EXPECT_TRUE(l.is_null()) << l.dump();
    EXPECT_EQ(layer_dirs(lz, img.lazy), dirs);
    for (const auto& d : dirs) EXPECT_NE(access((d + "/../lazy").c_str(), F_OK), 0) << d;
    EXPECT_EQ(read_file(dirs[0] + "/data/big"), random_bytes(1 << 20, 7));
    Lamina full(img.tmp / "full");
    ASSERT_EQ(full({"pull", "--tls-verify=false", img.lazy}).status, 0);
    auto full_dirs = layer_dirs(full, img.lazy);
    ASSERT_EQ(full_dirs.size(), dirs.size());
    for (size_t i = 0; i < dirs.size(); ++i) EXPECT_EQ(describe(dirs[i]), describe(full_dirs[i]));
    // Whole layers are ordinary: the image pushes.
    auto push = lz({"push", "--tls-verify=false", img.lazy, img.reg.host() + "/test/zc:again"});
    EXPECT_EQ(push.status, 0) << push.err;
}

// The directory of the lamina the tests run, which holds lamina-lazy-fetch.
std::string tools_dir() {
    std::string bin = lamina_binary();
    return bin.substr(0, bin.rfind('/'));
}

// laminafs run by hand over the lazy layers of a store, as `-o lowerdir=` of their trees (top
// first): it finds them lazy by the record beside each tree and fetches on first open with
// lamina-lazy-fetch from PATH or beside itself, fails the open with EIO when its lazy_fetch=
// cannot run, reads the raw placeholders with lazy_layers=none, and refuses to mount when no
// fetcher is to be found.
TEST(LazyDirect, laminafs_by_hand_finds_lazy_store_layers_and_fetches_or_refuses) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    ThroughProxy<EstargzImage> lazy_store;
    auto& [img, proxy, via, lz, guard] = lazy_store;
    auto dirs = pull_lazily(lz, via, proxy);
    ASSERT_EQ(dirs.size(), 2u);
    const std::string top = std::filesystem::canonical(dirs[1]);
    const std::string lowers = "lowerdir=" + top + ":" + dirs[0];
    const std::string mnt = img.tmp / "mnt";
    make_dirs(mnt);
    auto by_hand = [&](const std::string& laminafs, const std::string& path,
                       const std::string& more) {
        return run_command({"env", "PATH=" + path, laminafs, "-o", lowers + more, mnt});
    };

    {  // The fetcher on PATH: the right bytes, fetched through the proxy.
        MountGuard unmount_after(mnt);
        auto r = by_hand(laminafs_binary(), tools_dir() + ":/usr/bin:/bin", "");
        ASSERT_EQ(r.status, 0) << r.err;
        int64_t moved = proxy.bytes_sent();
        EXPECT_EQ(read_through(mnt + "/etc/os-release"),
                  std::make_pair(std::string("ID=lamina\n"), 0));
        EXPECT_GT(proxy.bytes_sent(), moved);
        EXPECT_EQ(read_through(mnt + "/data/big").first, random_bytes(1 << 20, 7));
        EXPECT_EQ(lazy_of_layers(lz, via)[0]["FilesLocal"], 2);
    }
    {  // A lazy_fetch= that cannot run: EIO, not the placeholder's zeros.
        MountGuard unmount_after(mnt);
        auto r = by_hand(laminafs_binary(), "/usr/bin:/bin", ",lazy_fetch=/nonexistent/fetch");
        ASSERT_EQ(r.status, 0) << r.err;
        EXPECT_EQ(read_through(mnt + "/keep/new"), std::make_pair(std::string(), EIO));
    }
    {  // lazy_layers=none: the placeholders as they are, asked for.
        MountGuard unmount_after(mnt);
        auto r = by_hand(laminafs_binary(), "/usr/bin:/bin", ",lazy_layers=none");
        ASSERT_EQ(r.status, 0) << r.err;
        EXPECT_EQ(read_through(mnt + "/etc/two"), std::make_pair(std::string(4, '\0'), 0));
    }
    TempDir alone("lamina-fs-alone"), beside("lamina-fs-beside");
    for (const auto& [bin, dir] : {std::pair{laminafs_binary(), alone.path()},
                                   {laminafs_binary(), beside.path()},
                                   {tools_dir() + "/lamina-lazy-fetch", beside.path()}})
        ASSERT_EQ(run_command({"install", "-m", "0755", bin, dir}).status, 0) << bin;
    {  // No fetcher beside laminafs nor on PATH: one line naming the layer, nothing mounted.
        auto r = by_hand(alone / "laminafs", alone.path(), "");
        expect_one_line_failure(r, "lowerdir '" + top + "' is a lazy layer and no fetcher");
        EXPECT_FALSE(is_mountpoint(mnt));
        EXPECT_EQ(laminafs_serving(mnt), -1);
    }
    {  // The fetcher beside laminafs, none on PATH: it is the one that runs.
        MountGuard unmount_after(mnt);
        auto r = by_hand(beside / "laminafs", "/usr/bin:/bin", "");
        ASSERT_EQ(r.status, 0) << r.err;
        EXPECT_EQ(read_through(mnt + "/keep/new"), std::make_pair(std::string("new\n"), 0));
        auto pids = fetchers_of(lz.root());
        ASSERT_EQ(pids.size(), 1u);
        EXPECT_EQ(std::filesystem::read_symlink("/proc/" + std::to_string(pids[0]) + "/exe"),
                  beside / "lamina-lazy-fetch");
    }
}

// A remount (what `mount -o remount,ro` hands the helper) changes the running mount's flags:
// its daemon, with its lazy layers and fetcher, goes on, and first opens still fetch.
TEST(LazyDirect, a_remount_keeps_the_lazy_layers) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    ThroughProxy<EstargzImage> lazy_store;
    auto& [img, proxy, via, lz, guard] = lazy_store;
    ASSERT_EQ(pull_lazily(lz, via, proxy).size(), 2u);
    last_line_of(lz({"create", "--name", "web", via}));
    std::string merged = last_line_of(lz({"mount", "web"}));
    pid_t daemon = laminafs_serving(merged);
    auto remount = [&](const std::string& how) {
        return run_command({laminafs_binary(), "laminafs", merged, "-o", "remount," + how});
    };
    auto r = remount("ro");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(::access(merged.c_str(), W_OK), -1);
    EXPECT_EQ(errno, EROFS);
    EXPECT_EQ(read_through(merged + "/etc/os-release"),
              std::make_pair(std::string("ID=lamina\n"), 0));
    r = remount("rw");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_through(merged + "/keep/new"), std::make_pair(std::string("new\n"), 0));
    EXPECT_EQ(lazy_of_layers(lz, via)[1]["FilesLocal"], 1);
    EXPECT_EQ(laminafs_serving(merged), daemon);
    last_line_of(lz({"umount", "web"}));
}

// ---- zstd:chunked, as lamina writes it ---------------------------------------------------------

// The demo image pushed back by lamina as zstd:chunked.
struct LaminaZstdChunkedImage : SourceImage {
    std::string lazy;
    LaminaZstdChunkedImage() {
        lazy = reg.host() + "/test/app:zc";
        auto push = src(
            {"push", "--tls-verify=false", "--compression-format", "zstd:chunked", plain, lazy});
        EXPECT_EQ(push.status, 0) << push.err;
        EXPECT_TRUE(contains(push.out, "Converting 2 layers to zstd:chunked\n")) << push.out;
    }
};

TEST(LazyPushZstdChunked, each_layer_decompresses_with_plain_zstd_to_the_configs_diff_id) {
    REQUIRE_REGISTRY();
    if (!have_program("zstd")) SKIP_NEEDING("program:zstd") << "decompresses the layers";
    LaminaZstdChunkedImage img;
    // skopeo copies it like any image; each layer is zstd with skopeo 1.9.3's annotations, and
    // `zstd -d` gives the tar whose digest the config names.
    expect_layers_decompress_to_diff_ids(
        img, img.lazy, "application/vnd.oci.image.layer.v1.tar+zstd",
        "io.containers.zstd-chunked.manifest-position", "zstd -dc");
    // lamina pulls it whole: each layer holds exactly what the source's does, zstd:chunked
    // adding no file.
    expect_full_pull_gives_the_sources_layers(img, img.lazy, false);

    // convert stores the same kind of image; pushing it with the format again keeps its layers
    // as they are, and says so.
    auto conv = img.src({"convert", "--format", "zstd:chunked", img.plain, "app:zc"});
    ASSERT_EQ(conv.status, 0) << conv.err;
    auto again = img.src({"push", "--tls-verify=false", "--compression-format", "zstd:chunked",
                          "app:zc", img.reg.host() + "/test/app:zc2"});
    ASSERT_EQ(again.status, 0) << again.err;
    EXPECT_TRUE(contains(again.out,
                         "Converting 0 layers to zstd:chunked (2 are zstd:chunked "
                         "already: kept as they are)"))
        << again.out;
    auto raw = run_command({"skopeo", "inspect", "--raw", "--tls-verify=false",
                            "docker://" + img.reg.host() + "/test/app:zc2"});
    ASSERT_EQ(raw.status, 0) << raw.err;
    json stored = json::parse(img.src({"inspect", "app:zc"}).out);
    ASSERT_EQ(stored[0]["Layers"].size(), 2u);
    for (size_t i = 0; i < 2; ++i)
        EXPECT_EQ(json::parse(raw.out)["layers"][i]["digest"], stored[0]["Layers"][i]["Blob"]);
}

// podman on a private store under dir, configured by storage_conf (the driver, its options).
// podman 4.3 fails a pull when $DOCKER_CONFIG (the fixture's) holds no config.json, or
// $CONTAINERS_REGISTRIES_CONF names no file: the one unset, the other an empty file.
CommandResult podman_in(const std::string& dir, const std::string& storage_conf,
                        const std::vector<std::string>& args) {
    make_dirs(dir);
    std::ofstream(dir + "/registries.conf") << "";
    std::ofstream(dir + "/storage.conf")
        << "[storage]\nrunroot = \"" << dir << "/run\"\ngraphroot = \"" << dir << "/root\"\n"
        << storage_conf;
    std::vector<std::string> cmd = {"env",
                                    "-u",
                                    "DOCKER_CONFIG",
                                    "CONTAINERS_REGISTRIES_CONF=" + dir + "/registries.conf",
                                    "CONTAINERS_STORAGE_CONF=" + dir + "/storage.conf",
                                    "podman",
                                    "--events-backend",
                                    "none"};
    cmd.insert(cmd.end(), args.begin(), args.end());
    return run_command(cmd);
}

// podman (vfs driver: no partial pull) pulls the image lamina pushed, img.lazy, as an
// ordinary one, and the diff IDs it computed while unpacking are the config's.
template <typename Image>
void expect_podman_pulls_with_the_same_diff_ids() {
    Image img;
    std::string dir = img.tmp / "podman";
    const std::string conf = "driver = \"vfs\"\n";
    auto pull = podman_in(dir, conf, {"pull", "--quiet", "--tls-verify=false", img.lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    auto inspect = podman_in(dir, conf, {"image", "inspect", img.lazy});
    ASSERT_EQ(inspect.status, 0) << inspect.err;
    json config = json::parse(
        run_command({"skopeo", "inspect", "--config", "--tls-verify=false", "docker://" + img.lazy})
            .out);
    EXPECT_EQ(json::parse(inspect.out)[0]["RootFS"]["Layers"], config["rootfs"]["diff_ids"])
        << inspect.out;
    podman_in(dir, conf, {"rmi", "-af"});
}

TEST(LazyPushZstdChunked, podman_pulls_it_with_the_same_diff_ids) {
    REQUIRE_REGISTRY();
    if (geteuid() != 0) SKIP_NEEDING("root") << "podman on a private store";
    if (!have_program("podman")) SKIP_NEEDING("program:podman") << "pulls the image";
    expect_podman_pulls_with_the_same_diff_ids<LaminaZstdChunkedImage>();
}

// Issue 19's other direction: lamina's eStargz is a gzip image to every other client.
TEST(LazyPushEstargz, podman_pulls_it_as_gzip_with_the_same_diff_ids) {
    REQUIRE_REGISTRY();
    if (geteuid() != 0) SKIP_NEEDING("root") << "podman on a private store";
    if (!have_program("podman")) SKIP_NEEDING("program:podman") << "pulls the image";
    expect_podman_pulls_with_the_same_diff_ids<EstargzImage>();
}

// podman with partial pulls on (containers/storage's own zstd:chunked reader, overlay driver)
// takes lamina's layers by their TOCs and builds the tree a full lamina pull mounts.
TEST(LazyPushZstdChunked, podmans_partial_pull_reads_laminas_tocs_and_builds_the_same_tree) {
    REQUIRE_REGISTRY();
    if (geteuid() != 0) SKIP_NEEDING("root") << "podman on a private store";
    if (!have_program("podman")) SKIP_NEEDING("program:podman") << "pulls the image";
    if (!contains(read_file("/proc/filesystems"), "\toverlay\n"))
        SKIP_NEEDING("overlay") << "podman's overlay driver does partial pulls";
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    LaminaZstdChunkedImage img;
    std::string dir = img.tmp / "podman-partial";
    const std::string conf =
        "driver = \"overlay\"\n[storage.options]\npull_options = {enable_partial_images = "
        "\"true\", use_hard_links = \"false\", ostree_repos = \"\"}\n";
    auto pull =
        podman_in(dir, conf, {"--log-level", "debug", "pull", "--tls-verify=false", img.lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    // podman's words when the layer went through containers/storage's chunked differ.
    EXPECT_TRUE(contains(pull.err, "Retrieved partial blob")) << pull.err;
    auto mounted = podman_in(dir, conf, {"image", "mount", img.lazy});
    ASSERT_EQ(mounted.status, 0) << mounted.err;
    std::string merged = mounted.out.substr(0, mounted.out.find('\n'));
    // podman 4.3's differ gives every file the time of the pull, for skopeo 1.9.3's own
    // zstd:chunked layers too: the mtimes are not compared.
    expect_mount_equals_a_full_pulls(img.tmp, img.lazy, merged, false);
    podman_in(dir, conf, {"image", "unmount", "-a"});
    podman_in(dir, conf, {"rmi", "-af"});
}

TEST(LazyPullZstdChunked, laminas_layers_mount_at_once_and_equal_a_full_pull) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    ThroughProxy<LaminaZstdChunkedImage> lazy_store;
    auto& [img, proxy, via, lz, guard] = lazy_store;

    std::string merged = mount_lazily(lz, via, proxy);
    ASSERT_FALSE(merged.empty());
    expect_mount_equals_a_full_pulls(img.tmp, img.lazy, merged);
    last_line_of(lz({"umount", "web"}));
}

}  // namespace
}  // namespace lamina::test
