// Lazy layers stay bounded: random first reads of thousands of files through a lazy mount leave
// the daemon's descriptors flat, its memory nearly so, and no fetch helper behind, and every byte
// read is the image's. $LAMINA_LAZY_SOAK_FILES sets the count (1,000 here by default; the issue's
// soak is 10,000: `LAMINA_LAZY_SOAK_FILES=10000 meson test -C build registry_lazy_soak_test`).
// $LAMINA_LAZY_SOAK_CACHE (a size, "1M") runs it under that cache limit (docs/lazy.md "Cache
// limit"): the fetcher evicts as it goes, and what the layer keeps stays under the limit.
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "needs.h"
#include "registry_fixture.h"

namespace lamina::test {
namespace {

size_t soak_files() {
    const char* n = std::getenv("LAMINA_LAZY_SOAK_FILES");
    long v = n ? std::atol(n) : 0;
    return v > 0 ? static_cast<size_t>(v) : 1000;
}

std::string path_of(size_t i) {
    return "d" + std::to_string(i % 64) + "/f" + std::to_string(i);
}

// Content that differs per file, of sizes from a few bytes to 9 KiB.
std::string content_of(size_t i) {
    return random_bytes(16 + (i * 7919) % 9200, i + 1);
}

// $LAMINA_LAZY_SOAK_CACHE in bytes ("1M", "512K", "300000"); 0 when unset.
int64_t soak_cache_limit() {
    const char* v = std::getenv("LAMINA_LAZY_SOAK_CACHE");
    if (!v || !*v) return 0;
    std::string s = v;
    int shift = s.back() == 'K' ? 10 : s.back() == 'M' ? 20 : s.back() == 'G' ? 30 : 0;
    return std::atoll(s.c_str()) << shift;
}

size_t count_entries(const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (!d) return 0;
    size_t n = 0;
    while (auto* e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n;
}

// VmRSS in KiB.
long rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.starts_with("VmRSS:")) return std::atol(line.c_str() + 6);
    return -1;
}

// Processes whose parent is pid (fetch helpers left running or unreaped).
size_t children_of(pid_t pid) {
    auto r = run_command({"pgrep", "-c", "-P", std::to_string(pid)});
    return static_cast<size_t>(std::atol(r.out.c_str()));
}

TEST(LazySoak, random_first_reads_of_many_files_keep_the_daemon_flat) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    const size_t n = soak_files();
    const int64_t limit = soak_cache_limit();
    TempDir tmp{"lamina-lazy-soak"};
    RegistryEnv env;
    if (limit) env.write_config(R"({"lazy-cache-size": ")" + std::to_string(limit) + "\"}");
    Registry reg;
    std::vector<TarEntry> entries;
    for (size_t d = 0; d < 64; ++d) entries.push_back(dir("d" + std::to_string(d)));
    for (size_t i = 0; i < n; ++i) entries.push_back(file(path_of(i), content_of(i)));
    std::string lazy = push_estargz(reg, tmp, {{make_tar(entries), "gzip"}}, "test/soak");

    Lamina lz(tmp / "lz");
    StoreGuard guard{lz.root()};
    auto pull = lz({"pull", "--tls-verify=false", "--lazy", lazy});
    ASSERT_EQ(pull.status, 0) << pull.err;
    out_of(lz({"create", "--name", "soak", lazy}));
    std::string merged = out_of(lz({"mount", "soak"}));
    pid_t daemon = laminafs_serving(merged);
    ASSERT_GT(daemon, 0);
    std::string fds = "/proc/" + std::to_string(daemon) + "/fd";

    // First one file of each directory: what the daemon keeps per directory (its listing, a
    // descriptor up to its limit) is there before the count starts; then every file in random
    // order, one in seven read again (fetched once, served from the layer after).
    size_t wrong = 0;
    auto check = [&](size_t i, const char* when) {
        if (read_file(merged + "/" + path_of(i)) != content_of(i) && ++wrong < 5)
            ADD_FAILURE() << path_of(i) << " read wrong " << when;
    };
    for (size_t i = 0; i < std::min<size_t>(n, 64); ++i) check(i, "first");
    size_t fds_warm = count_entries(fds);
    long rss_warm = rss_kib(daemon);
    std::vector<size_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937_64(20261207));
    for (size_t k = 0; k < n; ++k) {
        check(order[k], "");
        if (k % 7 == 0) check(order[k / 2], "the second time");
    }
    EXPECT_EQ(wrong, 0u);
    size_t fds_end = count_entries(fds);
    long rss_end = rss_kib(daemon);
    RecordProperty("files", static_cast<int>(n));
    RecordProperty("daemon_fds", std::to_string(fds_warm) + " -> " + std::to_string(fds_end));
    RecordProperty("daemon_rss_kib", std::to_string(rss_warm) + " -> " + std::to_string(rss_end));
    std::printf(
        "%zu files: daemon descriptors %zu after a file of each directory, %zu at the end; "
        "RSS %ld KiB, then %ld KiB\n",
        n, fds_warm, fds_end, rss_warm, rss_end);
    // Flat: a few descriptors of slack for a fetcher restarted or a pool that rounds up.
    EXPECT_LE(fds_end, fds_warm + 8);
    // Nearly flat: what the daemon keeps per file it knows (a node while the kernel holds the
    // inode, a name among those known complete) is a few hundred bytes; 4 KiB a file is the bound.
    EXPECT_LT(rss_end - rss_warm, static_cast<long>(4 * n));
    EXPECT_LE(children_of(daemon), 1u) << "more than the mount's one fetcher";

    auto inspect = nlohmann::json::parse(out_of(lz({"inspect", lazy})), nullptr, false);
    ASSERT_TRUE(inspect.is_array() && !inspect.empty()) << inspect.dump();
    const auto& progress = inspect[0]["Layers"][0]["Lazy"];
    EXPECT_EQ(progress.value("Files", 0), n + 1) << progress.dump();
    if (limit) {
        // Under the limit (plus the last file and its compressed range, at most 2 x 9 KiB and
        // blocks), with most files evicted.
        auto df = nlohmann::json::parse(out_of(lz({"system", "df", "--format", "json"})));
        int64_t kept = df["LazyLayers"].value("CacheBytes", int64_t(-1));
        std::printf("cache limit %lld: %lld bytes kept, %d of %zu files local\n",
                    static_cast<long long>(limit), static_cast<long long>(kept),
                    progress.value("FilesLocal", 0), n);
        EXPECT_GE(kept, 0);
        EXPECT_LE(kept, limit + (32 << 10));
        EXPECT_LT(progress.value("FilesLocal", size_t(0)), n);
    } else {
        // Every file read is local now (the layer's landmark, never read, is all that is left).
        EXPECT_EQ(progress.value("FilesLocal", 0), n) << progress.dump();
    }
    out_of(lz({"umount", "soak"}));
}

}  // namespace
}  // namespace lamina::test
