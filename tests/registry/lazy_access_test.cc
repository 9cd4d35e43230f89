// How lazy layers reach a registry: first opens fetch with the login the pull used (a registry
// with basic auth), and a pull-through cache (docker-registry in proxy mode) in front of the
// registry serves the lazy pulls of many machines, the cold cache's whole-blob answer to a range
// taken as the first machine's download (which then asks for the blob once).
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "needs.h"
#include "registry_fixture.h"

namespace lamina::test {
namespace {

std::vector<Layer> small_image() {
    return {
        {make_tar({dir("etc"), file("etc/os-release", "ID=lamina\n"), dir("data"),
                   file("data/big", random_bytes(512 << 10, 11)), file("data/small", "small\n")}),
         "gzip"}};
}

TEST(LazyAccess, first_opens_fetch_with_the_login_of_a_registry_with_basic_auth) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    TempDir tmp{"lamina-lazy-auth"};
    RegistryEnv env;
    Registry open_reg;
    std::string lazy = push_estargz(open_reg, tmp, small_image(), "test/auth");
    // skopeo copies it into the registry with auth as it is (same manifest, same blobs).
    Registry reg(basic_auth("erin", "pw-erin"));
    std::string ref = reg.host() + lazy.substr(lazy.find('/'));
    auto copy = run_command(
        {"skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
         "--dest-creds=erin:pw-erin", "docker://" + lazy, "docker://" + ref},
        60);
    ASSERT_EQ(copy.status, 0) << copy.err;

    Lamina lz(tmp / "lz");
    StoreGuard guard{lz.root()};
    auto anonymous = lz({"pull", "--tls-verify=false", "--lazy", ref});
    EXPECT_NE(anonymous.status, 0) << anonymous.out;
    auto login = lz({"login", "--tls-verify=false", "-u", "erin", "-p", "pw-erin", reg.host()});
    ASSERT_EQ(login.status, 0) << login.err;
    auto pull = lz({"pull", "--tls-verify=false", "--lazy", ref});
    ASSERT_EQ(pull.status, 0) << pull.err;
    EXPECT_TRUE(contains(pull.out, "Table of contents read (lazy)")) << pull.out;
    out_of(lz({"create", "--name", "c", ref}));
    std::string merged = out_of(lz({"mount", "c"}));
    EXPECT_EQ(read_file(merged + "/etc/os-release"), "ID=lamina\n");
    EXPECT_EQ(read_file(merged + "/data/big"), random_bytes(512 << 10, 11));
    out_of(lz({"umount", "c"}));
}

TEST(LazyAccess, a_pull_through_cache_serves_the_lazy_pulls_of_many_machines) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    TempDir tmp{"lamina-lazy-mirror"};
    RegistryEnv env;
    Registry reg;
    std::string lazy = push_estargz(reg, tmp, small_image(), "test/mirror");
    // What the registry itself sends, counted on its way to the cache.
    ThrottlingProxy upstream(reg.port(), 1 << 30);
    RegistryOptions co;
    co.proxy_remote = "http://127.0.0.1:" + std::to_string(upstream.port());
    Registry cache(co);
    // What the cache sends the machines, counted too.
    ThrottlingProxy to_machines(cache.port(), 1 << 30);
    std::string mirror = "127.0.0.1:" + std::to_string(to_machines.port());
    env.registries_conf("[[registry]]\nlocation = \"" + reg.host() +
                        "\"\n[[registry.mirror]]\nlocation = \"" + mirror + "\"\n");

    // Each machine: a store of its own, a lazy pull, a mount, two files read.
    auto machine = [&](const std::string& name) {
        Lamina lz(tmp / name);
        StoreGuard guard{lz.root()};
        auto pull = lz({"pull", "--tls-verify=false", "--lazy", lazy});
        EXPECT_EQ(pull.status, 0) << pull.err;
        out_of(lz({"create", "--name", "c", lazy}));
        std::string merged = out_of(lz({"mount", "c"}));
        EXPECT_EQ(read_file(merged + "/etc/os-release"), "ID=lamina\n");
        EXPECT_EQ(read_file(merged + "/data/big"), random_bytes(512 << 10, 11));
        out_of(lz({"umount", "c"}));
        return pull.out;
    };
    std::string first = machine("a");
    int64_t after_first = upstream.bytes_sent();
    int64_t to_first = to_machines.bytes_sent();
    // The cold cache answers the first range with the whole blob (HTTP 200), which the first
    // machine takes as its download: it asks the cache for the blob once, and the 512 KiB move
    // to it once.
    EXPECT_TRUE(contains(first, "the registry sent the whole blob for a range")) << first;
    EXPECT_FALSE(contains(first, "pulled whole")) << first;
    auto inspect = Lamina(tmp / "a")({"inspect", lazy});
    std::string blob = nlohmann::json::parse(inspect.out, nullptr, false)[0]["Layers"][0]["Blob"];
    std::string get_blob = "GET /v2/test/mirror/blobs/" + blob + " ";
    std::string requests = to_machines.requests_seen();
    size_t gets = 0;
    for (size_t at = requests.find(get_blob); at != std::string::npos;
         at = requests.find(get_blob, at + 1))
        ++gets;
    EXPECT_EQ(gets, 1u) << requests;
    EXPECT_GT(to_first, 512 << 10);
    EXPECT_LT(to_first, (512 + 32) << 10);
    std::string second = machine("b");
    std::string third = machine("c");
    std::printf(
        "first pull:\n%sregistry sent %lld bytes, the cache %lld; second pull:\n%sthen %lld "
        "bytes\n",
        first.c_str(), static_cast<long long>(after_first), static_cast<long long>(to_first),
        second.c_str(), static_cast<long long>(upstream.bytes_sent()));
    // The cache answers ranges once it holds the blob: the later machines pull lazily, and the
    // registry sends them no blob again (manifests are checked with it, a few KiB).
    EXPECT_TRUE(contains(second, "Table of contents read (lazy)")) << second;
    EXPECT_TRUE(contains(third, "Table of contents read (lazy)")) << third;
    EXPECT_LT(upstream.bytes_sent() - after_first, 32 << 10);
}

}  // namespace
}  // namespace lamina::test
