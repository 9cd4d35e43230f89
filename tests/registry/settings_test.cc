// Registry settings as docker and podman keep them, against real registries: a pull-through
// cache as a mirror with a certs.d CA and auth-file credentials, credential helpers, --creds,
// registries.conf (blocked, search registries, aliases), loopback insecure by default, and
// the messages a pull prints when it resumes or skips a mirror.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "registry_fixture.h"
#include "scoped_env.h"

namespace lamina::test {
namespace {

using nlohmann::json;

TEST(RegistryMirror, pull_through_cache_with_a_certs_d_ca_named_myca_and_auth_file_credentials) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-cache");
    RegistryEnv env;
    Registry upstream;
    auto built = push_demo(upstream, tmp, "test/app:v1");
    // The cache is TLS-verified (not left to the loopback default), trusted through a CA file
    // that is not called ca.crt, and its password comes from $REGISTRY_AUTH_FILE.
    CacheMirror mirror(env, upstream, tmp / "auth.json");
    const Registry& cache = mirror.cache;
    const std::string& myca = mirror.ca_file;
    ScopedEnv auth_file("REGISTRY_AUTH_FILE", tmp / "auth.json");

    Lamina lamina(tmp / "store");
    std::string ref = upstream.host() + "/test/app:v1";
    auto r = lamina({"pull", ref});
    ASSERT_EQ(r.status, 0) << r.err << r.out;
    EXPECT_FALSE(contains(r.out, "skipped")) << r.out;
    EXPECT_EQ(images_json(lamina)[0]["Id"], built.config_digest);
    EXPECT_EQ(images_json(lamina)[0]["RepoTags"][0], ref);
    // The cache fetched the layer from upstream and keeps it.
    EXPECT_EQ(access(cache.blob_data(first_layer_digest(tmp / "demo-layout")).c_str(), F_OK), 0);

    // Without the CA the mirror is skipped (certificate refused) and upstream serves the pull.
    ASSERT_EQ(rename(myca.c_str(), (myca + ".off").c_str()), 0);
    Lamina other(tmp / "other");
    auto fallback = other({"pull", ref});
    ASSERT_EQ(fallback.status, 0) << fallback.err;
    EXPECT_TRUE(contains(fallback.out, "mirror " + cache.host() + " skipped")) << fallback.out;
    EXPECT_EQ(images_json(other)[0]["Id"], built.config_digest);
}

TEST(RegistryMirror, a_skipped_mirror_names_the_reference_whole) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-mirrorname");
    RegistryEnv env;
    Registry reg;
    Registry empty;
    push_demo(reg, tmp, "library/busybox:latest");
    push_demo(reg, tmp, "test/app:v1");
    env.write_config(json({{"registry-mirrors", {"http://" + empty.host()}}}).dump());
    env.registries_conf(
        "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"" + reg.host() +
        "\"\n[[registry]]\nlocation = \"" + reg.host() + "\"\n[[registry.mirror]]\nlocation = \"" +
        empty.host() + "\"\n");
    Lamina lamina(tmp / "store");
    // docker.io: registries.conf's mirror first, which has it.
    auto hub = lamina({"pull", "busybox"});
    ASSERT_EQ(hub.status, 0) << hub.err;
    EXPECT_FALSE(contains(hub.out, "skipped")) << hub.out;

    auto r = lamina({"pull", reg.host() + "/test/app:v1"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "mirror " + empty.host() + " skipped: manifest " + reg.host() +
                                    "/test/app:v1 at mirror " + empty.host() + ": not found"))
        << r.out;
}

TEST(RegistryMirror, a_registrys_credentials_are_not_sent_to_its_mirror) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-mirrorcreds");
    RegistryEnv env;
    Registry upstream(basic_auth("erin", "pw-erin"));
    Registry mirror(
        basic_auth("erin", "pw-erin"));  // would take erin's password, were it sent there
    push_demo(upstream, tmp, "test/app:v1");
    push_demo(mirror, tmp, "test/app:v1");
    env.registries_conf("[[registry]]\nlocation = \"" + upstream.host() +
                        "\"\n[[registry.mirror]]\nlocation = \"" + mirror.host() + "\"\n");
    env.docker_auth(upstream.host(), "erin", "pw-erin");
    Lamina lamina(tmp / "store");
    auto r = lamina({"pull", upstream.host() + "/test/app:v1"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "mirror " + mirror.host() + " skipped")) << r.out;
    EXPECT_TRUE(contains(r.out, "authentication required")) << r.out;
}

TEST(RegistryResume, a_blob_a_failed_pull_completed_is_verified_not_resumed) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-complete");
    RegistryEnv env;
    Registry reg;
    std::vector<Layer> layers = {{make_tar({file("a", random_bytes(20000, 41))}), "gzip"},
                                 {make_tar({file("b", random_bytes(2 << 20, 43))}), "gzip"}};
    write_oci_layout(tmp / "layout", layers, "two");
    reg.push_layout(tmp / "layout", "two", "test/two:v1");
    json index = json::parse(read_file(tmp / "layout/index.json"));
    std::string mdigest = index["manifests"][0]["digest"];
    json manifest = json::parse(read_file(tmp / ("layout/blobs/sha256/" + mdigest.substr(7))));
    std::string first = manifest["layers"][0]["digest"];
    std::string second = manifest["layers"][1]["digest"];
    int64_t first_size = manifest["layers"][0]["size"];

    // The small first layer completes while the second is cut after a megabyte, and its
    // resumption is refused (each on a connection of its own: the proxy sees first requests).
    ThrottlingProxy refusing(reg.port(), 2 << 20, ProxyFaults{second, {"cut1000000", "403"}});
    Lamina lamina(tmp / "store");
    expect_one_line_failure(
        lamina({"pull", "127.0.0.1:" + std::to_string(refusing.port()) + "/test/two:v1"}),
        "access denied");

    auto r = lamina({"pull", reg.host() + "/test/two:v1"});
    ASSERT_EQ(r.status, 0) << r.err;
    std::string n = std::to_string(first_size);
    EXPECT_TRUE(contains(r.out, first.substr(7, 12) + ": an interrupted pull left all " + n +
                                    " bytes; verifying them"))
        << r.out;
    EXPECT_FALSE(contains(r.out, "resuming at byte " + n)) << r.out;
}

// A docker-credential-lamtest on PATH that knows alice's password for host.
void install_helper(const TempDir& tmp, const std::string& host) {
    make_dirs(tmp / "bin");
    write_file(tmp / "bin/docker-credential-lamtest",
               "#!/bin/sh\nread url\nif [ \"$url\" = \"" + host +
                   "\" ]; then\n  printf '{\"ServerURL\":\"%s\",\"Username\":\"alice\","
                   "\"Secret\":\"s3cret\"}' \"$url\"\nelse\n  echo 'credentials not found in "
                   "native keychain'\n  exit 1\nfi\n",
               0755);
}

TEST(RegistryAuth, credential_helpers_creds_and_the_registry_auth_file) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-helpers");
    RegistryEnv env;
    Registry reg(basic_auth("alice", "s3cret"));
    push_demo(reg, tmp, "test/app:v1");
    std::string ref = reg.host() + "/test/app:v1";
    install_helper(tmp, reg.host());
    ScopedEnv path("PATH", (tmp / "bin") + ":" + getenv("PATH"));
    std::string docker_config = std::string(getenv("DOCKER_CONFIG")) + "/config.json";

    // credHelpers for this host.
    write_file(docker_config, json({{"credHelpers", {{reg.host(), "lamtest"}}}}).dump());
    Lamina one(tmp / "one");
    auto r1 = one({"pull", ref});
    EXPECT_EQ(r1.status, 0) << r1.err;
    // credsStore for every host; a helper that has nothing means no credentials.
    write_file(docker_config, json({{"credsStore", "lamtest"}}).dump());
    Lamina two(tmp / "two");
    auto r2 = two({"pull", ref});
    EXPECT_EQ(r2.status, 0) << r2.err;
    write_file(docker_config, json({{"credHelpers", {{reg.host(), "nosuch"}}}}).dump());
    expect_one_line_failure(two({"pull", ref}), "docker-credential-nosuch");
    // A helper that fails without reading its stdin is named, and lamina is not killed.
    write_file(tmp / "bin/docker-credential-broken", "#!/bin/sh\nexit 3\n", 0755);
    write_file(docker_config, json({{"credHelpers", {{reg.host(), "broken"}}}}).dump());
    expect_one_line_failure(
        two({"pull", ref}),
        "credential helper docker-credential-broken failed for " + reg.host() + ": exit status 3");
    write_file(docker_config, "{}");
    expect_one_line_failure(two({"pull", ref}), "authentication required");

    // --creds, as skopeo and podman spell it.
    Lamina three(tmp / "three");
    EXPECT_EQ(three({"pull", "--creds", "alice:s3cret", ref}).status, 0);
    expect_one_line_failure(three({"pull", "--creds", "alice:wrong", ref}),
                            "refused the credentials for alice");

    // login and logout use $REGISTRY_AUTH_FILE when it is set, as podman does.
    ScopedEnv auth_file("REGISTRY_AUTH_FILE", tmp / "podman-auth.json");
    std::string login;
    for (const auto& a : three.argv({"login", "--password-stdin", "-u", "alice", reg.host()}))
        login += "'" + a + "' ";
    auto in = run_shell("printf s3cret | " + login);
    ASSERT_EQ(in.status, 0) << in.err;
    EXPECT_TRUE(contains(read_file(tmp / "podman-auth.json"), reg.host()));
    EXPECT_NE(access((env.config_dir() + "/auth.json").c_str(), F_OK), 0);
    Lamina four(tmp / "four");
    EXPECT_EQ(four({"pull", ref}).status, 0);
    auto out = four({"logout", reg.host()});
    EXPECT_EQ(out.status, 0) << out.err;
    EXPECT_FALSE(contains(read_file(tmp / "podman-auth.json"), reg.host()));
}

TEST(RegistryConf, blocked_registries_search_registries_and_aliases) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-regconf");
    RegistryEnv env;
    Registry empty;
    Registry full;
    auto built = push_demo(full, tmp, "test/app:v1");
    Registry blocked;
    env.system_registries_conf("unqualified-search-registries = [\"" + empty.host() + "\", \"" +
                               full.host() + "\"]\n[aliases]\n\"aliased\" = \"" + full.host() +
                               "/test/app\"\n");
    env.registries_conf("[[registry]]\nlocation = \"" + blocked.host() + "\"\nblocked = true\n");
    Lamina lamina(tmp / "store");

    expect_one_line_failure(lamina({"pull", blocked.host() + "/test/app:v1"}), "is blocked by");

    // A short name tries each search registry in turn.
    auto r = lamina({"pull", "test/app:v1"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.out, empty.host() + "/test/app:v1: manifest")) << r.out;
    EXPECT_EQ(images_json(lamina)[0]["RepoTags"][0], full.host() + "/test/app:v1");

    // An alias names the image outright.
    Lamina other(tmp / "other");
    auto a = other({"pull", "aliased:v1"});
    ASSERT_EQ(a.status, 0) << a.err;
    EXPECT_FALSE(contains(a.out, empty.host())) << a.out;
    EXPECT_EQ(images_json(other)[0]["Id"], built.config_digest);
}

TEST(RegistryTls, loopback_is_insecure_by_default_as_in_docker) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-loopback");
    RegistryEnv env;
    Registry reg;
    push_demo(reg, tmp, "test/app:v1");
    Lamina lamina(tmp / "store");
    auto r = lamina({"pull", reg.host() + "/test/app:v1"});
    EXPECT_EQ(r.status, 0) << r.err;
    // A plain-HTTP registry that is not insecure is told to go in insecure-registries.
    env.secure(reg.host());
    Lamina other(tmp / "other");
    auto refused = other({"pull", reg.host() + "/test/app:v1"});
    expect_one_line_failure(refused,
                            "it speaks plain HTTP: list " + reg.host() + " in insecure-registries");
}

TEST(RegistryTransports, skopeo_names_for_registries_archives_and_layouts) {
    REQUIRE_REGISTRY();
    TempDir tmp("lamina-transports");
    RegistryEnv env;
    Registry reg;
    auto built = push_demo(reg, tmp, "test/app:v1");
    std::string ref = reg.host() + "/test/app:v1";
    Lamina lamina(tmp / "store");
    ASSERT_EQ(lamina({"pull", "docker://" + ref}).status, 0);
    auto push = lamina({"push", ref, "docker://" + reg.host() + "/test/copy:v1"});
    ASSERT_EQ(push.status, 0) << push.err;
    ASSERT_EQ(lamina({"save", "-o", "docker-archive:" + (tmp / "d.tar"), ref}).status, 0);
    ASSERT_EQ(lamina({"save", "-o", "oci-archive:" + (tmp / "o.tar"), ref}).status, 0);
    ASSERT_EQ(lamina({"push", ref, "oci-archive:" + (tmp / "p.tar")}).status, 0);
    EXPECT_EQ(lamina({"save", "--format", "oci-archive", "-o", "docker-archive:x.tar", ref}).status,
              2);
    EXPECT_EQ(lamina({"save", "-o", "oci:" + (tmp / "dir"), ref}).status, 2);

    // skopeo reads what lamina wrote.
    auto s = run_command({"skopeo", "inspect", "--raw", "oci-archive:" + (tmp / "p.tar")}, 60);
    EXPECT_EQ(s.status, 0) << s.err;

    Lamina back(tmp / "back");
    auto l = back({"load", "-i", "docker-archive:" + (tmp / "d.tar")});
    ASSERT_EQ(l.status, 0) << l.err;
    EXPECT_TRUE(contains(l.out, "Loaded image")) << l.out;
    for (const std::string& from :
         {"oci-archive:" + (tmp / "o.tar"), "oci:" + (tmp / "demo-layout")}) {
        Lamina fresh(tmp / ("fresh-" + std::to_string(from.size())));
        auto r = fresh({"pull", from});
        ASSERT_EQ(r.status, 0) << from << ": " << r.err;
        EXPECT_EQ(images_json(fresh)[0]["Id"], built.config_digest) << from;
    }
    auto tagged = back({"pull", "oci:" + (tmp / "demo-layout") + ":demo"});
    EXPECT_EQ(tagged.status, 2) << tagged.err;
    EXPECT_TRUE(contains(tagged.err, "drop :demo")) << tagged.err;
    EXPECT_EQ(back({"load", "-i", "docker://" + ref}).status, 2);
}

}  // namespace
}  // namespace lamina::test
