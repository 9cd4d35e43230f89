// The lazy-layer cache limit (config.json's "lazy-cache-size", docs/lazy.md "Cache limit"): what
// incomplete lazy layers keep stays under it while files are read through mounts, evicted files
// are fetched again and read right, a file open anywhere is never evicted, and completion after
// evictions gives the verified layer.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "needs.h"
#include "registry_fixture.h"

namespace lamina::test {
namespace {

constexpr size_t kFiles = 40;
constexpr int64_t kLimit = 256 << 10;
constexpr size_t kHeld = 7;  // the file test holds open

std::string path_of(size_t i) {
    return "d" + std::to_string(i % 4) + "/f" + std::to_string(i);
}

// Incompressible, so the compressed ranges kept cost as much as the content: 12 to 40 KiB, the
// held file 96 KiB.
std::string content_of(size_t i) {
    size_t size = i == kHeld ? 96 << 10 : (12 << 10) + (i * 7919) % (28 << 10);
    return random_bytes(size, i + 100);
}

struct EvictImage {
    TempDir tmp{"lamina-lazy-evict"};
    RegistryEnv env;
    Registry reg;
    std::string ref;  // in the registry
    EvictImage() {
        std::vector<TarEntry> entries;
        for (size_t d = 0; d < 4; ++d) entries.push_back(dir("d" + std::to_string(d)));
        for (size_t i = 0; i < kFiles; ++i) entries.push_back(file(path_of(i), content_of(i)));
        ref = push_estargz(reg, tmp, {{make_tar(entries), "gzip"}}, "test/evict");
    }
};

// The store's lazy layer directories (layers/<hex>, with lazy/source.json).
std::vector<std::string> lazy_layer_dirs(const std::string& root) {
    std::vector<std::string> out;
    std::string layers = root + "/layers";
    DIR* d = opendir(layers.c_str());
    if (!d) return out;
    while (auto* e = readdir(d)) {
        std::string dir = layers + "/" + e->d_name;
        if (e->d_name[0] != '.' && access((dir + "/lazy/source.json").c_str(), F_OK) == 0)
            out.push_back(dir);
    }
    closedir(d);
    return out;
}

int64_t allocated(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_blocks) * 512 : 0;
}

// What the image's files and the kept blob take on disk, as du counts it.
int64_t du_of_cache(const std::string& layer_dir) {
    int64_t sum = allocated(layer_dir + "/lazy/blob");
    for (size_t i = 0; i < kFiles; ++i) sum += allocated(layer_dir + "/diff/" + path_of(i));
    return sum;
}

// The file's copy in the layer holds no data: evicted (or never fetched).
bool hole_in_layer(const std::string& layer_dir, size_t i) {
    return allocated(layer_dir + "/diff/" + path_of(i)) == 0;
}

int64_t cache_bytes(const Lamina& lz) {
    auto j =
        nlohmann::json::parse(out_of(lz({"system", "df", "--format", "json"})), nullptr, false);
    return j.is_object() ? j["LazyLayers"].value("CacheBytes", int64_t(-1)) : -1;
}

// One file of the largest size plus its compressed range, and a block of rounding per file.
constexpr int64_t kOneFileSlack = (2 * (40 << 10)) + kFiles * 4096;

TEST(LazyEvict, reads_under_a_small_limit_stay_bounded_refetch_and_complete) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    EvictImage img;
    img.env.write_config(R"({"lazy-cache-size": "256K"})");
    ThrottlingProxy proxy(img.reg.port(), 1 << 30);
    std::string via = "127.0.0.1:" + std::to_string(proxy.port()) + "/test/evict:ez";
    Lamina lz(img.tmp / "lz");
    StoreGuard guard{lz.root()};
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", via}).status, 0);
    auto dirs = lazy_layer_dirs(lz.root());
    ASSERT_EQ(dirs.size(), 1u);
    const std::string layer = dirs[0];
    out_of(lz({"create", "--name", "web", via}));
    std::string merged = out_of(lz({"mount", "web"}));

    // The table and json show the limit.
    EXPECT_TRUE(contains(out_of(lz({"system", "df"})), "limit 262kB"))
        << out_of(lz({"system", "df"}));
    auto df = nlohmann::json::parse(out_of(lz({"system", "df", "--format", "json"})));
    EXPECT_EQ(df["LazyLayers"].value("CacheLimit", int64_t(0)), kLimit) << df.dump();

    size_t wrong = 0;
    int64_t worst_df = 0, worst_du = 0;
    int64_t pinned = 0;  // what a file held open keeps beyond the limit
    auto read_and_check = [&](size_t i, const std::string& when) {
        if (read_file(merged + "/" + path_of(i)) != content_of(i) && ++wrong < 5)
            ADD_FAILURE() << path_of(i) << " read wrong " << when;
        worst_df = std::max(worst_df, cache_bytes(lz) - pinned);
        worst_du = std::max(worst_du, du_of_cache(layer) - pinned);
    };

    // File 0 first: it is the least recently fetched once the others come.
    read_and_check(0, "first");
    ASSERT_FALSE(hole_in_layer(layer, 0));
    std::vector<size_t> order;
    for (size_t i = 1; i < kFiles; ++i)
        if (i != kHeld) order.push_back(i);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(20261207));
    for (size_t i : order) read_and_check(i, "first");
    EXPECT_TRUE(hole_in_layer(layer, 0)) << "file 0 was not evicted";

    // Evicted, read again: fetched again through the proxy, right.
    int64_t moved = proxy.bytes_sent();
    read_and_check(0, "after its eviction");
    EXPECT_GT(proxy.bytes_sent() - moved, static_cast<int64_t>(content_of(0).size()))
        << "no refetch of file 0";

    // A file held open while all the others are read (each once more) is never evicted and
    // reads right to its end, 4 KiB between two other files.
    {
        std::string held_path = merged + "/" + path_of(kHeld);
        int fd = ::open(held_path.c_str(), O_RDONLY | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        // It and its compressed range stay beside the limit's worth of others.
        pinned = 2 * static_cast<int64_t>(content_of(kHeld).size()) + 8192;
        std::string got;
        char buf[4096];
        size_t k = 0;
        for (;;) {
            ssize_t n = ::read(fd, buf, sizeof buf);
            ASSERT_GE(n, 0);
            if (n == 0) break;
            got.append(buf, static_cast<size_t>(n));
            for (int two = 0; two < 2; ++two)
                read_and_check(order[k++ % order.size()], "beside the held file");
            EXPECT_FALSE(hole_in_layer(layer, kHeld)) << "the held file was evicted";
        }
        pinned = 0;
        ::close(fd);
        EXPECT_TRUE(got == content_of(kHeld)) << "the held file read wrong";
        EXPECT_GE(k, order.size());
    }
    // Closed, it can go.
    for (size_t i : order) read_and_check(i, "after the held file closed");
    EXPECT_TRUE(hole_in_layer(layer, kHeld)) << "the closed file was never evicted";
    read_and_check(kHeld, "after its eviction");

    EXPECT_EQ(wrong, 0u);
    RecordProperty("worst_cache_bytes", std::to_string(worst_df));
    RecordProperty("worst_du", std::to_string(worst_du));
    std::printf("limit %lld: at most %lld bytes cached (system df), %lld on disk (du)\n",
                static_cast<long long>(kLimit), static_cast<long long>(worst_df),
                static_cast<long long>(worst_du));
    EXPECT_GT(worst_df, 0);
    EXPECT_LE(worst_df, kLimit + kOneFileSlack);
    EXPECT_LE(worst_du, kLimit + kOneFileSlack);

    // Completion after evictions: the evicted files and ranges are fetched again, and the
    // checks (blob digest, TOC, diff ID) pass; the layer is ordinary and reads right, mounted.
    auto pull = lz({"pull", "--tls-verify=false", via});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(lazy_layer_dirs(lz.root()).empty());
    for (size_t i = 0; i < kFiles; ++i) {
        EXPECT_FALSE(hole_in_layer(layer, i)) << path_of(i);
        if (read_file(merged + "/" + path_of(i)) != content_of(i))
            ADD_FAILURE() << path_of(i) << " read wrong after completion";
    }
    out_of(lz({"umount", "web"}));
}

TEST(LazyEvict, two_mounts_of_one_lazy_image_never_read_what_the_other_evicts) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    EvictImage img;
    Lamina lz(img.tmp / "lz");
    StoreGuard guard{lz.root()};
    ASSERT_EQ(lz({"pull", "--tls-verify=false", "--lazy", img.ref}).status, 0);
    out_of(lz({"create", "--name", "a", img.ref}));
    out_of(lz({"create", "--name", "b", img.ref}));

    // A bad limit: one line, nothing mounted.
    img.env.write_config(R"({"lazy-cache-size": "lots"})");
    expect_one_line_failure(lz({"mount", "a"}), "lazy-cache-size");
    expect_one_line_failure(lz({"system", "df"}), "lazy-cache-size");
    img.env.write_config(R"({"lazy-cache-size": 262144})");
    expect_one_line_failure(lz({"mount", "a"}), "lazy-cache-size");
    EXPECT_TRUE(contains(out_of(lz({"ps", "-a"})), "Created"));
    EXPECT_FALSE(contains(out_of(lz({"ps", "-a"})), "Mounted"));

    img.env.write_config(R"({"lazy-cache-size": "256K"})");
    std::string ma = out_of(lz({"mount", "a"}));
    std::string mb = out_of(lz({"mount", "b"}));
    auto dirs = lazy_layer_dirs(lz.root());
    ASSERT_EQ(dirs.size(), 1u);

    // b holds the big file open and reads it slowly while both mounts read everything else in
    // random order: a's fetcher evicts what b read and the other way round.
    int held = ::open((mb + "/" + path_of(kHeld)).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(held, 0);
    std::string held_got;
    std::vector<size_t> order;
    for (size_t i = 0; i < kFiles; ++i)
        if (i != kHeld) order.push_back(i);
    std::mt19937_64 rng(7);
    size_t wrong = 0, reads = 0;
    for (int round = 0; round < 3; ++round) {
        std::shuffle(order.begin(), order.end(), rng);
        for (size_t k = 0; k < order.size(); ++k) {
            const std::string& m = (k + round) % 2 ? ma : mb;
            size_t i = order[k];
            ++reads;
            if (read_file(m + "/" + path_of(i)) != content_of(i) && ++wrong < 5)
                ADD_FAILURE() << path_of(i) << " read wrong through " << m;
            char buf[2048];
            ssize_t n = ::read(held, buf, sizeof buf);
            if (n > 0) held_got.append(buf, static_cast<size_t>(n));
        }
    }
    for (char buf[4096];;) {
        ssize_t n = ::read(held, buf, sizeof buf);
        if (n <= 0) break;
        held_got.append(buf, static_cast<size_t>(n));
    }
    ::close(held);
    EXPECT_EQ(wrong, 0u) << "of " << reads;
    EXPECT_TRUE(held_got == content_of(kHeld)) << "the held file read wrong";
    // Evictions did happen: the two mounts read far more than the limit.
    EXPECT_LE(cache_bytes(lz), kLimit + kOneFileSlack);
    size_t holes = 0;
    for (size_t i = 0; i < kFiles; ++i) holes += hole_in_layer(dirs[0], i);
    EXPECT_GT(holes, kFiles / 2);
    // And each mount reads every file right after all that.
    for (size_t i = 0; i < kFiles; ++i)
        for (const auto& m : {ma, mb})
            if (read_file(m + "/" + path_of(i)) != content_of(i))
                ADD_FAILURE() << path_of(i) << " read wrong at the end through " << m;
    out_of(lz({"umount", "a"}));
    out_of(lz({"umount", "b"}));
}

}  // namespace
}  // namespace lamina::test
