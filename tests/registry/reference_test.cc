// Reference parsing (Docker's short names) and the registry client's
// pure parts: settings files, certs.d, challenges, the retry policy.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "registry/auth.h"
#include "registry/credentials.h"
#include "registry/reference.h"
#include "registry/retry.h"
#include "registry/settings.h"
#include "store.h"

namespace lamina::registry {
namespace {

TEST(Reference, short_names_expand_as_docker_does) {
    auto r = parse_reference("busybox");
    EXPECT_EQ(r.registry, "docker.io");
    EXPECT_EQ(r.repository, "library/busybox");
    EXPECT_EQ(r.tag, "latest");
    EXPECT_EQ(r.str(), "docker.io/library/busybox:latest");
    EXPECT_EQ(r.store_name(), "busybox:latest");
    auto u = parse_reference("user/app:1.0");
    EXPECT_EQ(u.repository, "user/app");
    EXPECT_EQ(u.store_name(), "user/app:1.0");
    EXPECT_EQ(parse_reference("index.docker.io/library/alpine").str(),
              "docker.io/library/alpine:latest");
}

// The store (lamina tag, load) and the registry client (pull) keep one name for one reference.
// As in Docker, only index.docker.io is an old name of docker.io: registry-1.docker.io, where
// docker.io's requests go, names that host (the client once took it for docker.io).
TEST(Reference, the_store_and_the_registry_client_name_an_image_alike) {
    for (const char* text : {"busybox", "docker.io/busybox", "index.docker.io/library/busybox:1",
                             "docker.io/library/a/b", "registry-1.docker.io/library/alpine:3",
                             "localhost/app", "127.0.0.1:5000/test/app:v1", "quay.io/org/app"})
        EXPECT_EQ(parse_reference(text).store_name(), store::normalize_reference(text)) << text;
    auto r = parse_reference("registry-1.docker.io/library/alpine");
    EXPECT_EQ(r.registry, "registry-1.docker.io");
    EXPECT_EQ(r.store_name(), "registry-1.docker.io/library/alpine:latest");
}

TEST(Reference, host_port_tag_and_digest) {
    std::string d = "sha256:" + std::string(64, 'a');
    auto r = parse_reference("127.0.0.1:5000/test/app:v1");
    EXPECT_EQ(r.registry, "127.0.0.1:5000");
    EXPECT_EQ(r.repository, "test/app");
    EXPECT_EQ(r.tag, "v1");
    EXPECT_EQ(r.store_name(), "127.0.0.1:5000/test/app:v1");
    auto p = parse_reference("localhost:5000/app@" + d);
    EXPECT_EQ(p.registry, "localhost:5000");
    EXPECT_EQ(p.tag, "");
    EXPECT_EQ(p.digest, d);
    EXPECT_EQ(p.manifest_ref(), d);
    EXPECT_EQ(p.store_name(), "");
    auto both = parse_reference("quay.io/a/b:t@" + d);
    EXPECT_EQ(both.tag, "t");
    EXPECT_EQ(both.manifest_ref(), d);
    // A colon before the last slash is a port, not a tag.
    EXPECT_EQ(parse_reference("host:5000/app").tag, "latest");
}

TEST(Reference, malformed_references_are_refused) {
    for (const char* bad :
         {"", "Upper/case", "app:", "app@sha256:abc", "a//b", "-app", "app:-tag", "bad host/app"})
        EXPECT_THROW(parse_reference(bad), std::invalid_argument) << bad;
}

TEST(Settings, base64_round_trip) {
    for (std::string s : {"", "a", "ab", "abc", "user:pässword"})
        EXPECT_EQ(base64_decode(base64_encode(s)), s);
}

TEST(Settings, cidr_ranges_and_loopback_insecure_by_default) {
    EXPECT_TRUE(host_in_cidr("127.0.0.1:5000", "127.0.0.0/8"));
    EXPECT_TRUE(host_in_cidr("127.255.1.2", "127.0.0.0/8"));
    EXPECT_TRUE(host_in_cidr("localhost:5000", "127.0.0.0/8"));
    EXPECT_FALSE(host_in_cidr("128.0.0.1", "127.0.0.0/8"));
    EXPECT_TRUE(host_in_cidr("10.1.2.3:443", "10.0.0.0/12"));
    EXPECT_FALSE(host_in_cidr("10.16.0.1", "10.0.0.0/12"));
    EXPECT_TRUE(host_in_cidr("[fd00::1]:5000", "fd00::/8"));
    EXPECT_FALSE(host_in_cidr("registry.example.com", "10.0.0.0/8"));
    EXPECT_FALSE(host_in_cidr("10.0.0.1", "10.0.0.0/33"));

    Settings s;
    s.insecure_registries = {"127.0.0.0/8", "reg.local", "10.0.0.0/8"};
    EXPECT_TRUE(s.is_insecure("127.0.0.1:5000"));
    EXPECT_TRUE(s.is_insecure("reg.local:5000"));
    EXPECT_TRUE(s.is_insecure("10.9.8.7:5000"));
    EXPECT_FALSE(s.is_insecure("quay.io"));
    // A registries.conf entry for the host decides.
    s.registries.push_back({"127.0.0.1:5000", "127.0.0.1:5000", false, false, false, {}, "f"});
    EXPECT_FALSE(s.is_insecure("127.0.0.1:5000"));
    EXPECT_TRUE(s.is_insecure("127.0.0.1:5001"));
}

// A config dir and system registries.conf in a temp dir for Settings::load.
class ConfigDir {
public:
    ConfigDir() {
        char tmpl[] = "/tmp/lamina-settings-XXXXXX";
        dir_ = mkdtemp(tmpl);
        setenv("LAMINA_CONFIG_DIR", dir_.c_str(), 1);
        setenv("CONTAINERS_REGISTRIES_CONF", (dir_ + "/system.conf").c_str(), 1);
    }
    ~ConfigDir() {
        unsetenv("LAMINA_CONFIG_DIR");
        unsetenv("CONTAINERS_REGISTRIES_CONF");
        std::filesystem::remove_all(dir_);
    }
    void write(const std::string& name, const std::string& text) const {
        std::filesystem::create_directories(std::filesystem::path(dir_ + "/" + name).parent_path());
        std::ofstream(dir_ + "/" + name) << text;
    }
    const std::string& path() const { return dir_; }

private:
    std::string dir_;
};

TEST(Settings, registries_conf_mirrors_prefixes_and_the_later_file_winning) {
    ConfigDir dir;
    dir.write("system.conf", R"(
unqualified-search-registries = ["quay.io", "docker.io"]
[[registry]]
location = "quay.io"
blocked = true
[[registry]]
prefix = "example.com/team"
location = "internal.example.com:5000/mirrored/team"
[[registry.mirror]]
location = "cache.local/hub"
insecure = true
[aliases]
"tool" = "quay.io/tools/tool"
)");
    dir.write("registries.conf", R"(
[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "quay-cache.local:5000"
)");
    Settings s = Settings::load();
    ASSERT_EQ(s.files_read.size(), 2u);
    EXPECT_EQ(s.search_registries, (std::vector<std::string>{"quay.io", "docker.io"}));

    // Where a pull goes, in order: host, repository there, mirror, insecure. lamina's file
    // replaced the system's quay.io entry (no longer blocked, one mirror); a prefix below the
    // host puts the rest of the name after the mirror's and location's paths; a name not under
    // the prefix goes to the registry as named.
    struct Want {
        std::string host, repository;
        bool mirror = false, insecure = false;
    };
    const std::vector<std::pair<std::string, std::vector<Want>>> cases = {
        {"quay.io/org/app:1", {{"quay-cache.local:5000", "org/app", true}, {"quay.io", "org/app"}}},
        {"example.com/team/app/x:1",
         {{"cache.local", "hub/app/x", true, true},
          {"internal.example.com:5000", "mirrored/team/app/x"}}},
        {"example.com/other/app:1", {{"example.com", "other/app"}}},
    };
    for (const auto& [reference, want] : cases) {
        SCOPED_TRACE(reference);
        auto got = s.pull_endpoints(parse_reference(reference));
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
            EXPECT_EQ(got[i].host, want[i].host);
            EXPECT_EQ(got[i].repository, want[i].repository);
            EXPECT_EQ(got[i].mirror, want[i].mirror);
            EXPECT_EQ(got[i].insecure, want[i].insecure);
            EXPECT_EQ(got[i].name, reference.substr(0, reference.rfind(':')));
        }
    }

    // Short names: an alias, else the search registries in order; qualified names as given.
    auto tool = s.resolve("tool:2");
    ASSERT_EQ(tool.size(), 1u);
    EXPECT_EQ(tool[0].str(), "quay.io/tools/tool:2");
    auto app = s.resolve("app");
    ASSERT_EQ(app.size(), 2u);
    EXPECT_EQ(app[0].str(), "quay.io/app:latest");
    EXPECT_EQ(app[1].str(), "docker.io/library/app:latest");
    EXPECT_EQ(s.resolve("localhost:5000/app")[0].registry, "localhost:5000");
}

TEST(Settings, blocked_registries_and_malformed_files_say_which_file) {
    ConfigDir dir;
    dir.write("registries.conf", "[[registry]]\nlocation = \"bad.example\"\nblocked = true\n");
    Settings s = Settings::load();
    try {
        s.pull_endpoints(parse_reference("bad.example/app"));
        FAIL() << "a blocked registry was used";
    } catch (const RegistryError& e) {
        EXPECT_NE(std::string(e.what()).find("is blocked by " + dir.path()), std::string::npos)
            << e.what();
    }
    for (const char* text :
         {"[[registry]\n", "[[registry]]\ninsecure = \"yes\"\n",
          "[[registry]]\nlocation = \"https://x\"\n", "unqualified-search-registries = [1]\n"}) {
        dir.write("registries.conf", text);
        try {
            Settings::load();
            ADD_FAILURE() << "accepted " << text;
        } catch (const RegistryError& e) {
            EXPECT_NE(std::string(e.what()).find(dir.path() + "/registries.conf"),
                      std::string::npos)
                << e.what();
        }
    }
}

TEST(Settings, certs_d_reads_every_crt_and_pairs_cert_with_key) {
    ConfigDir dir;
    dir.write("certs.d/r.example:5000/myca.crt", "CA ONE\n");
    dir.write("certs.d/r.example:5000/other.crt", "CA TWO\n");
    dir.write("certs.d/r.example:5000/me.cert", "CERT");
    dir.write("certs.d/r.example:5000/me.key", "KEY");
    Settings s = Settings::load();
    TlsOptions t = tls_for(s, "r.example:5000", true);
    EXPECT_NE(t.ca_bundle.find("CA ONE"), std::string::npos);
    EXPECT_NE(t.ca_bundle.find("CA TWO"), std::string::npos);
    EXPECT_EQ(t.client_cert, s.certs_dir("r.example:5000") + "/me.cert");
    EXPECT_EQ(t.client_key, s.certs_dir("r.example:5000") + "/me.key");
    EXPECT_TRUE(tls_for(s, "elsewhere", true).ca_bundle.empty());
    dir.write("certs.d/r.example:5000/lonely.cert", "CERT");
    EXPECT_THROW(tls_for(s, "r.example:5000", true), RegistryError);
}

TEST(Auth, challenges_are_parsed_with_quotes_and_case) {
    Challenge c = parse_challenge(
        R"(Bearer realm="https://auth.example/token",service="reg, \"x\"",scope=repository:a:pull)");
    EXPECT_EQ(c.scheme, "bearer");
    EXPECT_EQ(c.params["realm"], "https://auth.example/token");
    EXPECT_EQ(c.params["service"], "reg, \"x\"");
    EXPECT_EQ(c.params["scope"], "repository:a:pull");
    EXPECT_EQ(parse_challenge("Basic realm=\"r\"").scheme, "basic");
    EXPECT_EQ(basic_authorization({"user", "pw"}), "Basic dXNlcjpwdw==");
}

TEST(Retry, backoff_doubles_and_progress_starts_the_count_again) {
    RetryBudget b(RetryPolicy{});
    std::vector<long> waits;
    for (int i = 0; i < 4; ++i) waits.push_back(b.after_failure(false)->count());
    EXPECT_EQ(waits, (std::vector<long>{500, 1000, 2000, 4000}));
    EXPECT_EQ(b.after_failure(true)->count(), 500);  // progress: the count starts again
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(b.after_failure(false));
    EXPECT_FALSE(b.after_failure(false));  // six in a row without progress
    EXPECT_FALSE(RetryBudget(RetryPolicy::once()).after_failure(false));
    EXPECT_TRUE(is_retryable(HttpResponse{503, {}, ""}, Retry::kAll));
    EXPECT_FALSE(is_retryable(HttpResponse{503, {}, ""}, Retry::kNone));
    EXPECT_FALSE(is_retryable(HttpResponse{429, {}, ""}, Retry::kAll));
    TransportError refused("refused", false, false, true);
    EXPECT_TRUE(is_retryable(refused, Retry::kAll));
    EXPECT_FALSE(is_retryable(refused, Retry::kNotRefused));
    EXPECT_FALSE(is_retryable(TransportError("tls", true, false, false), Retry::kAll));
}

TEST(Credentials, creds_option_splits_at_the_first_colon) {
    EXPECT_EQ(parse_creds_option("me:pa:ss").password, "pa:ss");
    EXPECT_EQ(parse_creds_option("me").username, "me");
    EXPECT_EQ(parse_creds_option("me").password, "");
}

}  // namespace
}  // namespace lamina::registry
