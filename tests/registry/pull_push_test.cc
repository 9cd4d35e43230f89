// lamina pull, push, login and logout against a real docker-registry: auth, TLS, mirrors,
// indexes, verification, resumption and concurrency.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "registry_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

size_t entries(const std::string& dir) {
    size_t n = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(dir, ec);
         !ec && it != std::filesystem::directory_iterator(); ++it)
        ++n;
    return n;
}

// An image of one layer, `bytes` random bytes that do not compress, in reg as test/big:v1;
// its layout is tmp/big-layout.
BuiltImage push_big(Registry& reg, const TempDir& tmp, size_t bytes, uint64_t seed) {
    std::vector<Layer> layers = {{make_tar({file("big", random_bytes(bytes, seed))}), "gzip"}};
    auto built = write_oci_layout(tmp / "big-layout", layers, "big");
    reg.push_layout(tmp / "big-layout", "big", "test/big:v1");
    return built;
}

TEST(RegistryPull, anonymous_pull_then_mount_shows_the_tree) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-pull");
    RegistryEnv env;
    Registry reg;
    auto built = push_demo(reg, tmp, "test/app:v1");
    Lamina lamina(tmp / "store");
    std::string ref = reg.host() + "/test/app:v1";

    // Plain HTTP only when asked for. 127.0.0.0/8 is insecure by default, as in docker, so a
    // registries.conf entry says this registry is not; the error names insecure-registries.
    env.secure(reg.host());
    auto refused = lamina({"pull", ref});
    expect_one_line_failure(refused, "--tls-verify=false");
    EXPECT_TRUE(contains(refused.err, "plain HTTP")) << refused.err;
    EXPECT_FALSE(contains(refused.err, "ca.crt")) << refused.err;

    auto r = lamina({"pull", "--tls-verify=false", ref});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "v1: Pulling from test/app")) << r.out;
    EXPECT_TRUE(contains(r.out, "Pull complete")) << r.out;
    EXPECT_TRUE(contains(r.out, "Status: Downloaded newer image for " + ref)) << r.out;
    auto images = images_json(lamina);
    ASSERT_EQ(images.size(), 1u);
    EXPECT_EQ(images[0]["Id"], built.config_digest);
    EXPECT_EQ(images[0]["RepoTags"][0], ref);
    EXPECT_EQ(entries(tmp / "store/downloads"), 0u);

    // Again: nothing is fetched.
    auto again = lamina({"pull", "--tls-verify=false", ref});
    ASSERT_EQ(again.status, 0) << again.err;
    EXPECT_FALSE(contains(again.out, "Pull complete")) << again.out;
    EXPECT_TRUE(contains(again.out, "Already exists")) << again.out;
    EXPECT_TRUE(contains(again.out, "Image is up to date")) << again.out;
    // By digest: the same image, already there.
    std::string digest = again.out.substr(again.out.find("Digest: ") + 8, 71);
    auto by_digest = lamina({"pull", "--tls-verify=false", reg.host() + "/test/app@" + digest});
    ASSERT_EQ(by_digest.status, 0) << by_digest.err;
    EXPECT_TRUE(contains(by_digest.out, "Already exists")) << by_digest.out;
    EXPECT_EQ(images_json(lamina).size(), 1u);

    // The same store layout `load` gives: whiteouts and opaque dirs in place.
    if (!can_mount_fuse()) GTEST_SKIP() << skip_reason();
    last_line_of(lamina({"create", "--name", "c", ref}));
    std::string merged = last_line_of(lamina({"mount", "c"}));
    EXPECT_EQ(read_file(merged + "/etc/motd"), "hello\n");
    EXPECT_EQ(read_file(merged + "/etc/two"), "2");
    EXPECT_EQ(read_file(merged + "/keep/new"), "new");
    EXPECT_NE(access((merged + "/data/a").c_str(), F_OK), 0);
    EXPECT_NE(access((merged + "/keep/old").c_str(), F_OK), 0);
    EXPECT_EQ(read_file(merged + "/data/b"), "b");
    last_line_of(lamina({"umount", "c"}));
}

TEST(RegistryPull, unknown_tag_and_bad_references_fail_with_one_line) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-pull");
    RegistryEnv env;
    Registry reg;
    Lamina lamina(tmp / "store");
    expect_one_line_failure(lamina({"pull", "--tls-verify=false", reg.host() + "/no/such:tag"}),
                            "not found");
    expect_one_line_failure(lamina({"pull", "Bad/Upper"}), "invalid reference");
    expect_one_line_failure(lamina({"pull", "--platform", "linux", "x"}), "invalid platform");
    expect_one_line_failure(lamina({"pull", "--max-concurrent-downloads", "0", "x"}),
                            "--max-concurrent-downloads");
    EXPECT_EQ(images_json(lamina).size(), 0u);
}

// The layers' declared sizes are checked against the free space less the reserve before any
// download starts, so a registry declaring a huge layer cannot fill the store's disk.
TEST(RegistryPull, layers_that_do_not_fit_beside_the_reserve_are_not_downloaded) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-pull");
    RegistryEnv env;
    Registry reg;
    push_big(reg, tmp, 1 << 20, 7);
    Lamina lamina(tmp / "store");
    std::string ref = reg.host() + "/test/big:v1";
    auto r = lamina({"--reserve", "100000G", "pull", "--tls-verify=false", ref});
    expect_one_line_failure(
        r, "not enough free space in " + (tmp / "store") + " for the layers of " + ref);
    EXPECT_TRUE(contains(r.err, "(see --reserve)")) << r.err;
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(entries(tmp / "store/downloads"), 0u);
    EXPECT_EQ(entries(tmp / "store/tmp"), 0u);
    EXPECT_EQ(images_json(lamina).size(), 0u);
    auto ok = lamina({"--reserve", "0", "pull", "--tls-verify=false", ref});
    EXPECT_EQ(ok.status, 0) << ok.err;
}

TEST(RegistryAuth, htpasswd_basic_auth_with_right_and_wrong_passwords) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-auth");
    RegistryEnv env;
    RegistryOptions o;
    o.htpasswd_user = "alice";
    o.htpasswd_password = "s3cret";
    Registry reg(o);
    push_demo(reg, tmp, "test/app:v1");
    Lamina lamina(tmp / "store");
    std::string ref = reg.host() + "/test/app:v1";

    expect_one_line_failure(lamina({"pull", "--tls-verify=false", ref}), "authentication required");
    auto wrong = lamina({"login", "--tls-verify=false", "-u", "alice", "-p", "wrong", reg.host()});
    EXPECT_NE(wrong.status, 0);
    EXPECT_TRUE(contains(wrong.err, "WARNING! Using --password via the CLI is insecure"))
        << wrong.err;
    EXPECT_TRUE(contains(wrong.err, "refused the credentials")) << wrong.err;
    EXPECT_NE(access((env.config_dir() + "/auth.json").c_str(), F_OK), 0);

    auto login = lamina({"login", "--tls-verify=false", "-u", "alice", "-p", "s3cret", reg.host()});
    ASSERT_EQ(login.status, 0) << login.err;
    EXPECT_TRUE(contains(login.out, "Login Succeeded"));
    struct stat st;
    ASSERT_EQ(stat((env.config_dir() + "/auth.json").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_FALSE(contains(read_file(env.config_dir() + "/auth.json"), "s3cret"));

    auto r = lamina({"pull", "--tls-verify=false", ref});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(images_json(lamina).size(), 1u);

    auto out = lamina({"logout", reg.host()});
    ASSERT_EQ(out.status, 0) << out.err;
    // As docker: not logged in is said, and is no failure.
    auto again = lamina({"logout", reg.host()});
    EXPECT_EQ(again.status, 0) << again.err;
    EXPECT_EQ(again.out, "Not logged in to " + reg.host() + "\n");

    // Docker's config.json serves too, and a wrong password there is named.
    env.docker_auth(reg.host(), "alice", "nope");
    expect_one_line_failure(lamina({"pull", "--tls-verify=false", ref}), "refused the credentials");
    env.docker_auth(reg.host(), "alice", "s3cret");
    Lamina fresh(tmp / "store2");
    auto r2 = fresh({"pull", "--tls-verify=false", ref});
    EXPECT_EQ(r2.status, 0) << r2.err;
}

TEST(RegistryAuth, bearer_tokens_from_a_token_server) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-token");
    RegistryEnv env;
    TokenServer tokens("bob", "hunter2");
    RegistryOptions o;
    o.token_realm = tokens.realm();
    o.token_cert = tokens.cert();
    Registry reg(o);
    Lamina lamina(tmp / "store");
    // An image goes up through lamina push (skopeo would need the credentials too).
    Lamina src(tmp / "src");
    // The third layer is over 16 MiB, so it goes up in PATCH chunks.
    auto layers = demo_image("gzip");
    layers.push_back({make_tar({file("big", random_bytes(17 << 20, 17))}), ""});
    write_oci_layout(tmp / "layout", layers, "demo:1");
    ASSERT_EQ(src({"load", "-i", tmp / "layout"}).status, 0);
    std::string ref = reg.host() + "/team/app:v1";

    expect_one_line_failure(src({"push", "--tls-verify=false", "demo:1", ref}),
                            "authentication required");
    auto bad = src({"login", "--tls-verify=false", "-u", "bob", "-p", "wrong", reg.host()});
    EXPECT_NE(bad.status, 0);
    EXPECT_TRUE(contains(bad.err, "refused the credentials")) << bad.err;
    ASSERT_EQ(src({"login", "--tls-verify=false", "-u", "bob", "-p", "hunter2", reg.host()}).status,
              0);
    auto push = src({"push", "--tls-verify=false", "demo:1", ref});
    ASSERT_EQ(push.status, 0) << push.err;
    EXPECT_TRUE(contains(push.out, "Pushed")) << push.out;

    auto r = lamina({"pull", "--tls-verify=false", ref});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(images_json(lamina)[0]["Id"], images_json(src)[0]["Id"]);
    // A second push finds every blob there.
    auto again = src({"push", "--tls-verify=false", "demo:1", ref});
    ASSERT_EQ(again.status, 0) << again.err;
    EXPECT_TRUE(contains(again.out, "Layer already exists")) << again.out;
    // Into another repository: the blobs are mounted from the one the image came from.
    std::string other = reg.host() + "/team/copy:v1";
    ASSERT_EQ(lamina({"tag", ref, other}).status, 0);
    ASSERT_EQ(
        lamina({"login", "--tls-verify=false", "-u", "bob", "-p", "hunter2", reg.host()}).status,
        0);
    auto mount = lamina({"push", "--tls-verify=false", other});
    ASSERT_EQ(mount.status, 0) << mount.err;
    EXPECT_TRUE(contains(mount.out, "Mounted from team/app")) << mount.out;
    EXPECT_FALSE(contains(mount.out, "Pushed")) << mount.out;
}

TEST(RegistryTls, self_signed_certificate_trusted_through_certs_d_and_refused_without) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-tls");
    RegistryEnv env;
    RegistryOptions o;
    o.tls = true;
    Registry reg(o);
    push_demo(reg, tmp, "test/app:v1");
    Lamina lamina(tmp / "store");
    std::string ref = reg.host() + "/test/app:v1";
    env.secure(reg.host());  // else 127.0.0.0/8 is insecure by default

    expect_one_line_failure(lamina({"pull", ref}), "certs.d/" + reg.host() + "/ca.crt");
    EXPECT_EQ(images_json(lamina).size(), 0u);
    env.trust(reg.host(), reg.cert().cert);
    auto r = lamina({"pull", ref});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(images_json(lamina).size(), 1u);

    // A registry that wants a client certificate gets certs.d's client.cert/client.key.
    TempDir keys("lamina-client");
    Cert client = make_cert(keys.path(), "client");
    RegistryOptions mo;
    mo.tls = true;
    mo.client_ca = client.cert;
    Registry mtls(mo);
    env.trust(mtls.host(), mtls.cert().cert);
    Lamina other(tmp / "other");
    std::string mref = mtls.host() + "/test/app:v1";
    auto no_cert = other({"pull", mref});
    EXPECT_NE(no_cert.status, 0);
    EXPECT_EQ(std::count(no_cert.err.begin(), no_cert.err.end(), '\n'), 1) << no_cert.err;
    write_file(env.config_dir() + "/certs.d/" + mtls.host() + "/client.cert",
               read_file(client.cert));
    write_file(env.config_dir() + "/certs.d/" + mtls.host() + "/client.key", read_file(client.key),
               0600);
    auto with_cert = other({"pull", mref});
    EXPECT_NE(with_cert.status, 0);  // reachable now, but the registry is empty
    EXPECT_TRUE(contains(with_cert.err, "not found")) << with_cert.err;
}

TEST(RegistryMirror, docker_io_pull_tries_a_mirror_lacking_the_image_then_the_next) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-mirror");
    RegistryEnv env;
    Registry empty_mirror;
    Registry full_mirror;
    auto built = push_demo(full_mirror, tmp, "library/busybox:latest");
    env.write_config(json({{"registry-mirrors",
                            {"http://" + empty_mirror.host(), "http://" + full_mirror.host()}},
                           {"insecure-registries", {empty_mirror.host(), full_mirror.host()}}})
                         .dump());
    Lamina lamina(tmp / "store");
    auto r = lamina({"pull", "busybox"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "mirror http://" + empty_mirror.host())) << r.out;
    EXPECT_TRUE(contains(r.out, "not found")) << r.out;
    auto images = images_json(lamina);
    ASSERT_EQ(images.size(), 1u);
    EXPECT_EQ(images[0]["Id"], built.config_digest);
    EXPECT_EQ(images[0]["RepoTags"][0], "busybox:latest");
}

TEST(RegistryMirror, dead_mirrors_are_skipped_within_seconds) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-deadmirror");
    RegistryEnv env;
    Registry reg;
    auto built = push_demo(reg, tmp, "library/busybox:latest");
    // One mirror refuses connections, one never completes them, one answers 503; the last
    // stands in for Docker Hub, which the tests cannot reach.
    std::string closed = "127.0.0.1:" + std::to_string(free_port());
    HangingPort hanging;
    std::string hung = "127.0.0.1:" + std::to_string(hanging.port());
    ThrottlingProxy failing(reg.port(), 50 << 20,
                            ProxyFaults{"GET /v2/", std::vector<std::string>(20, "503")});
    std::string broken = "127.0.0.1:" + std::to_string(failing.port());
    env.write_config(
        json({{"registry-mirrors",
               {"http://" + closed, "http://" + hung, "http://" + broken, "http://" + reg.host()}},
              {"insecure-registries", {closed, hung, broken, reg.host()}}})
            .dump());
    Lamina lamina(tmp / "store");
    auto start = std::chrono::steady_clock::now();
    auto r = lamina({"pull", "busybox"});
    auto took = std::chrono::steady_clock::now() - start;
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_LT(took, std::chrono::seconds(10)) << r.out;
    for (const auto& m : {closed, hung, broken}) {
        size_t at = r.out.find("mirror http://" + m + " skipped: ");
        ASSERT_NE(at, std::string::npos) << r.out;
        EXPECT_EQ(r.out.find("mirror http://" + m + " skipped", at + 1), std::string::npos)
            << r.out;
    }
    EXPECT_TRUE(contains(r.out, "HTTP 503")) << r.out;
    EXPECT_EQ(images_json(lamina)[0]["Id"], built.config_digest);
}

TEST(RegistryIndex, multi_platform_index_gives_the_requested_platform) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-index");
    RegistryEnv env;
    Registry reg;
    write_multiplatform_layout(tmp / "layout", "multi",
                               {{"amd64", {make_tar({file("arch", "amd64")}), "gzip"}},
                                {"arm64", {make_tar({file("arch", "arm64")}), "zstd"}}});
    reg.push_layout(tmp / "layout", "multi", "test/multi:v1", true);
    std::string ref = reg.host() + "/test/multi:v1";

    Lamina arm(tmp / "arm");
    auto r = arm({"pull", "--tls-verify=false", "--platform", "linux/arm64", ref});
    ASSERT_EQ(r.status, 0) << r.err;
    auto img = images_json(arm)[0];
    std::string layer = img["Layers"][0].get<std::string>().substr(7);
    EXPECT_EQ(read_file(tmp / ("arm/layers/" + layer + "/diff/arch")), "arm64");

    Lamina host(tmp / "host");
    auto h = host({"pull", "--tls-verify=false", ref});
#if defined(__x86_64__)
    ASSERT_EQ(h.status, 0) << h.err;
    std::string hl = images_json(host)[0]["Layers"][0].get<std::string>().substr(7);
    EXPECT_EQ(read_file(tmp / ("host/layers/" + hl + "/diff/arch")), "amd64");
#endif
    Lamina none(tmp / "none");
    expect_one_line_failure(none({"pull", "--tls-verify=false", "--platform", "linux/s390x", ref}),
                            "offers linux/amd64, linux/arm64");
}

TEST(RegistryVerify, corrupted_blob_is_refused_and_nothing_is_stored) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-corrupt");
    RegistryEnv env;
    Registry reg;
    std::vector<Layer> layers = {{make_tar({file("payload", random_bytes(200000, 7))}), "gzip"}};
    write_oci_layout(tmp / "layout", layers, "bad");
    reg.push_layout(tmp / "layout", "bad", "test/bad:v1");
    std::string blob = reg.blob_data(first_layer_digest(tmp / "layout"));
    std::string data = read_file(blob);
    data[data.size() / 2] ^= 0x5a;  // same size, other bytes
    write_file(blob, data);

    Lamina lamina(tmp / "store");
    auto r = lamina({"pull", "--tls-verify=false", reg.host() + "/test/bad:v1"});
    expect_one_line_failure(r, "digest mismatch");
    EXPECT_EQ(images_json(lamina).size(), 0u);
    EXPECT_EQ(entries(tmp / "store/layers"), 0u);
    EXPECT_EQ(entries(tmp / "store/blobs/sha256"), 0u);
    EXPECT_EQ(entries(tmp / "store/downloads"), 0u);
}

// Waits until some file under dir holds at least bytes; returns the largest size seen.
uintmax_t wait_for_download(const std::string& dir, uintmax_t bytes) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    uintmax_t got = 0;
    while (got < bytes && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        std::error_code ec;
        for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
             !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
            if (it->is_regular_file(ec)) got = std::max(got, it->file_size(ec));
    }
    return got;
}

TEST(RegistryResume, registry_killed_mid_download_and_restarted_resumes_with_range) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-resume");
    RegistryEnv env;
    Registry reg;
    // 8 MB sent at 2 MB/s through the proxy.
    auto built = push_big(reg, tmp, 8 << 20, 11);
    ThrottlingProxy proxy(reg.port(), 2 << 20);
    std::string ref = "127.0.0.1:" + std::to_string(proxy.port()) + "/test/big:v1";
    Lamina lamina(tmp / "store");

    std::string out = tmp / "pull.out";
    std::string cmd;
    for (const auto& a : lamina.argv({"pull", "--tls-verify=false", ref})) cmd += "'" + a + "' ";
    Child pull({"/bin/sh", "-c", cmd + "; echo \"exit $?\""}, out);

    // Kill the registry once a megabyte has arrived.
    uintmax_t got = wait_for_download(tmp / "store/downloads", 1 << 20);
    ASSERT_GE(got, 1u << 20) << "the download never got going";
    reg.kill();
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    reg.restart();

    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!contains(read_file(out), "exit ") && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::string text = read_file(out);
    EXPECT_TRUE(contains(text, "exit 0")) << text;
    EXPECT_TRUE(contains(text, "resuming at byte")) << text;
    EXPECT_TRUE(contains(proxy.ranges_seen(), "bytes=")) << proxy.ranges_seen();
    auto images = images_json(lamina);
    ASSERT_EQ(images.size(), 1u);
    EXPECT_EQ(images[0]["Id"], built.config_digest);
}

TEST(RegistryResume, pull_killed_mid_download_is_resumed_by_the_next_pull) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-resume2");
    RegistryEnv env;
    Registry reg;
    auto built = push_big(reg, tmp, 6 << 20, 13);
    ThrottlingProxy slow(reg.port(), 2 << 20);
    Lamina lamina(tmp / "store");
    {
        Child first(lamina.argv({"pull", "--tls-verify=false",
                                 "127.0.0.1:" + std::to_string(slow.port()) + "/test/big:v1"}),
                    tmp / "first.out");
        ASSERT_GE(wait_for_download(tmp / "store/downloads", 1 << 20), 1u << 20);
    }  // SIGKILL
    auto r = lamina({"pull", "--tls-verify=false", reg.host() + "/test/big:v1"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "where an interrupted pull stopped")) << r.out;
    auto images = images_json(lamina);
    ASSERT_EQ(images.size(), 1u);
    EXPECT_EQ(images[0]["Id"], built.config_digest);
    EXPECT_EQ(entries(tmp / "store/downloads"), 0u);
}

// The files under dir (recursively) and their sizes, by name.
std::map<std::string, uintmax_t> files_under(const std::string& dir) {
    std::map<std::string, uintmax_t> out;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
        if (it->is_regular_file(ec)) out[it->path().filename()] = it->file_size(ec);
    return out;
}

TEST(RegistryResume, pull_refused_mid_blob_keeps_the_partial_file_for_the_next_pull) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-keep");
    RegistryEnv env;
    Registry reg;
    auto built = push_big(reg, tmp, 1 << 20, 19);
    std::string layer = first_layer_digest(tmp / "big-layout");

    // The layer's connection breaks after 300000 bytes, and the resumed request is refused.
    ThrottlingProxy refusing(reg.port(), 50 << 20, ProxyFaults{layer, {"cut300000", "403"}});
    Lamina lamina(tmp / "store");
    auto first = lamina({"pull", "--tls-verify=false",
                         "127.0.0.1:" + std::to_string(refusing.port()) + "/test/big:v1"});
    expect_one_line_failure(first, "access denied");
    auto kept = files_under(tmp / "store/downloads");
    ASSERT_EQ(kept.size(), 1u);
    EXPECT_EQ(kept.begin()->first, layer.substr(7) + ".partial");
    EXPECT_GT(kept.begin()->second, 100000u);
    EXPECT_EQ(images_json(lamina).size(), 0u);

    // The next pull asks for the rest only.
    ThrottlingProxy healthy(reg.port(), 50 << 20);
    auto second = lamina({"pull", "--tls-verify=false",
                          "127.0.0.1:" + std::to_string(healthy.port()) + "/test/big:v1"});
    ASSERT_EQ(second.status, 0) << second.err;
    EXPECT_TRUE(contains(second.out, "resuming at byte " + std::to_string(kept.begin()->second) +
                                         ", where an interrupted pull stopped"))
        << second.out;
    EXPECT_TRUE(
        contains(healthy.ranges_seen(), "bytes=" + std::to_string(kept.begin()->second) + "-"))
        << healthy.ranges_seen();
    auto images = images_json(lamina);
    ASSERT_EQ(images.size(), 1u);
    EXPECT_EQ(images[0]["Id"], built.config_digest);
    EXPECT_EQ(entries(tmp / "store/downloads"), 0u);
}

// What a failed pull keeps is counted by system df and removed by system prune.
TEST(RegistryResume, kept_partial_downloads_show_in_system_df_and_go_with_system_prune) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-keep");
    RegistryEnv env;
    Registry reg;
    push_big(reg, tmp, 1 << 20, 23);
    std::string layer = first_layer_digest(tmp / "big-layout");
    ThrottlingProxy refusing(reg.port(), 50 << 20, ProxyFaults{layer, {"cut300000", "403"}});
    Lamina lamina(tmp / "store");
    expect_one_line_failure(
        lamina({"pull", "--tls-verify=false",
                "127.0.0.1:" + std::to_string(refusing.port()) + "/test/big:v1"}),
        "access denied");
    auto kept = files_under(tmp / "store/downloads");
    ASSERT_EQ(kept.size(), 1u);
    auto df = json::parse(lamina({"system", "df", "--format", "json"}).out);
    EXPECT_GE(df["PartialDownloadsSize"].get<int64_t>(), int64_t(kept.begin()->second));
    auto pruned = lamina({"system", "prune", "-f"});
    ASSERT_EQ(pruned.status, 0) << pruned.err;
    EXPECT_TRUE(contains(pruned.out, "Deleted partial downloads: ")) << pruned.out;
    EXPECT_EQ(entries(tmp / "store/downloads"), 0u);
    df = json::parse(lamina({"system", "df", "--format", "json"}).out);
    EXPECT_EQ(df["PartialDownloadsSize"], 0);
}

TEST(RegistryRetry, a_blob_that_progresses_between_drops_is_not_given_up) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-drops");
    RegistryEnv env;
    Registry reg;
    auto built = push_big(reg, tmp, 2 << 20, 23);
    std::string layer = first_layer_digest(tmp / "big-layout");

    // Eight drops, more than the six attempts a blob gets without progress, each after
    // 250000 bytes.
    ThrottlingProxy dropping(reg.port(), 50 << 20,
                             ProxyFaults{layer, std::vector<std::string>(8, "cut250000")});
    Lamina lamina(tmp / "store");
    auto r = lamina({"pull", "--tls-verify=false",
                     "127.0.0.1:" + std::to_string(dropping.port()) + "/test/big:v1"});
    ASSERT_EQ(r.status, 0) << r.err << r.out;
    size_t resumes = 0;
    for (size_t p = r.out.find("; resuming at byte"); p != std::string::npos;
         p = r.out.find("; resuming at byte", p + 1))
        ++resumes;
    EXPECT_EQ(resumes, 8u) << r.out;
    auto images = images_json(lamina);
    ASSERT_EQ(images.size(), 1u);
    EXPECT_EQ(images[0]["Id"], built.config_digest);
}

TEST(RegistryRetry, server_errors_are_retried_and_429_ends_with_one_line) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-retry");
    RegistryEnv env;
    Registry reg;
    std::vector<Layer> layers = {{make_tar({file("f", random_bytes(100000, 3))}), "gzip"}};
    write_oci_layout(tmp / "layout", layers, "img");
    reg.push_layout(tmp / "layout", "img", "test/img:v1");
    std::string layer = first_layer_digest(tmp / "layout");

    // The layer blob fails twice with 503, then comes through.
    ThrottlingProxy flaky(reg.port(), 50 << 20, 503, "/blobs/" + layer, 2);
    Lamina lamina(tmp / "store");
    std::string via_flaky = "127.0.0.1:" + std::to_string(flaky.port()) + "/test/img:v1";
    auto r = lamina({"pull", "--tls-verify=false", via_flaky});
    ASSERT_EQ(r.status, 0) << r.err;
    size_t retries = 0;
    for (size_t p = r.out.find("HTTP 503; retrying"); p != std::string::npos;
         p = r.out.find("HTTP 503; retrying", p + 1))
        ++retries;
    EXPECT_EQ(retries, 2u) << r.out;
    EXPECT_EQ(images_json(lamina).size(), 1u);

    // Rate limiting is not retried (the proxy can only answer a connection's first request,
    // which is the /v2/ ping).
    ThrottlingProxy limited(reg.port(), 50 << 20, 429, "GET /v2/ ", 1);
    Lamina other(tmp / "other");
    std::string via_limited = "127.0.0.1:" + std::to_string(limited.port()) + "/test/img:v1";
    expect_one_line_failure(other({"pull", "--tls-verify=false", via_limited}),
                            "too many requests");
    EXPECT_EQ(images_json(other).size(), 0u);
}

TEST(RegistryConcurrency, two_pulls_of_images_sharing_layers_at_once) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-concurrent");
    RegistryEnv env;
    Registry reg;
    Layer base{make_tar({file("base", random_bytes(3 << 20, 5))}), "gzip"};
    write_oci_layout(tmp / "one", {base, {make_tar({file("one", "1")}), "gzip"}}, "one");
    write_oci_layout(tmp / "two", {base, {make_tar({file("two", "2")}), "zstd"}}, "two");
    // One as a Docker schema 2 manifest, one as OCI.
    reg.push_layout(tmp / "one", "one", "test/one:v1", false, "v2s2");
    reg.push_layout(tmp / "two", "two", "test/two:v1");
    Lamina lamina(tmp / "store");
    std::string cmd;
    for (const char* name : {"one", "two"}) {
        std::string c;
        for (const auto& a :
             lamina.argv({"pull", "--tls-verify=false", reg.host() + "/test/" + name + ":v1"}))
            c += "'" + a + "' ";
        cmd +=
            "( " + c + " > " + (tmp / name) + ".out 2>&1; echo $? > " + (tmp / name) + ".rc ) & ";
    }
    auto r = run_shell(cmd + "wait");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_file(tmp / "one.rc"), "0\n") << read_file(tmp / "one.out");
    EXPECT_EQ(read_file(tmp / "two.rc"), "0\n") << read_file(tmp / "two.out");
    auto images = images_json(lamina);
    EXPECT_EQ(images.size(), 2u);
    auto inspect = lamina({"inspect", reg.host() + "/test/one:v1"});
    EXPECT_TRUE(contains(inspect.out, "application/vnd.docker.distribution.manifest.v2+json"));
    EXPECT_EQ(entries(tmp / "store/layers"), 3u);  // the shared base once
    EXPECT_EQ(entries(tmp / "store/downloads"), 0u);
}

// The issue's "done when": TLS and auth, progress per layer, the image mounts, and a commit
// pushed back is pulled by skopeo.
TEST(RegistryPush, tls_auth_pull_mount_commit_push_and_skopeo_pulls_it) {
    REQUIRE_REGISTRY();
    REQUIRE_FUSE();
    TempDir tmp("lamina-push");
    RegistryEnv env;
    RegistryOptions o;
    o.tls = true;
    o.htpasswd_user = "carol";
    o.htpasswd_password = "pw-carol";
    Registry reg(o);
    push_demo(reg, tmp, "test/app:v1");
    env.trust(reg.host(), reg.cert().cert);
    Lamina lamina(tmp / "store");
    ASSERT_EQ(lamina({"login", "-u", "carol", "-p", "pw-carol", reg.host()}).status, 0);
    std::string ref = reg.host() + "/test/app:v1";
    auto r = lamina({"pull", "--max-concurrent-downloads", "2", ref});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 12) << r.out;  // 4 lines per layer

    last_line_of(lamina({"create", "--name", "c", ref}));
    std::string merged = last_line_of(lamina({"mount", "c"}));
    EXPECT_EQ(read_file(merged + "/etc/motd"), "hello\n");
    write_file(merged + "/etc/added", "from lamina\n");
    last_line_of(lamina({"umount", "c"}));
    last_line_of(lamina({"commit", "c", reg.host() + "/test/app:v2"}));
    auto push = lamina({"push", reg.host() + "/test/app:v2"});
    ASSERT_EQ(push.status, 0) << push.err;
    EXPECT_TRUE(contains(push.out, "Layer already exists")) << push.out;
    EXPECT_TRUE(contains(push.out, "Pushed")) << push.out;

    auto s = run_command(
        {"skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds=carol:pw-carol",
         "docker://" + reg.host() + "/test/app:v2", "oci:" + (tmp / "pulled") + ":v2"},
        60);
    ASSERT_EQ(s.status, 0) << s.err;
    Lamina check(tmp / "check");
    ASSERT_EQ(check({"load", "-i", tmp / "pulled"}).status, 0);
    last_line_of(check({"create", "--name", "x", images_json(check)[0]["Id"].get<std::string>()}));
    std::string m2 = last_line_of(check({"mount", "x"}));
    EXPECT_EQ(read_file(m2 + "/etc/added"), "from lamina\n");
    EXPECT_EQ(read_file(m2 + "/keep/new"), "new");
    last_line_of(check({"umount", "x"}));
}

}  // namespace
}  // namespace lamina::test
