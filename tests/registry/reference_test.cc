// Reference parsing (Docker's short names), manifest parsing and platform selection.
#include <gtest/gtest.h>

#include <cstdio>
#include <stdexcept>

#include "registry/credentials.h"
#include "registry/manifest.h"
#include "registry/reference.h"
#include "registry/settings.h"

namespace lamina::registry {
namespace {

// s as the inside of a JSON string (quotes, backslashes and control characters escaped).
std::string json_escape(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

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

TEST(Manifest, schema1_is_refused_with_a_clear_message) {
    try {
        parse_manifest(R"({"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]})", "");
        FAIL();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("schema 1"), std::string::npos) << e.what();
    }
}

TEST(Manifest, docker_list_and_platform_selection) {
    std::string d1 = "sha256:" + std::string(64, '1'), d2 = "sha256:" + std::string(64, '2');
    std::string list =
        R"({"schemaVersion":2,"mediaType":")" + std::string(kMediaDockerList) +
        R"(","manifests":[{"mediaType":"x","digest":")" + d1 +
        R"(","size":1,"platform":{"os":"linux","architecture":"arm64"}},)" +
        R"({"mediaType":"x","digest":")" + d2 +
        R"(","size":2,"platform":{"os":"linux","architecture":"arm","variant":"v7"}}]})";
    auto m = parse_manifest(list, "");
    ASSERT_TRUE(m.is_index);
    EXPECT_EQ(select_platform(m, parse_platform("linux/arm64/v8")).digest, d1);
    EXPECT_EQ(select_platform(m, parse_platform("linux/arm/v7")).digest, d2);
    EXPECT_THROW(select_platform(m, parse_platform("linux/arm/v6")), std::runtime_error);
    EXPECT_THROW(parse_platform("linux"), std::invalid_argument);
}

TEST(Manifest, image_manifest_needs_sized_sha256_descriptors) {
    std::string d = "sha256:" + std::string(64, 'c');
    std::string zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    std::string ok = R"({"schemaVersion":2,"config":{"mediaType":"c","digest":")" + d +
                     R"(","size":3},"layers":[{"mediaType":")" + zstd + R"(","digest":")" + d +
                     R"(","size":9}]})";
    auto m = parse_manifest(ok, kMediaOciManifest);
    EXPECT_FALSE(m.is_index);
    ASSERT_EQ(m.layers.size(), 1u);
    EXPECT_TRUE(is_supported_layer(m.layers[0].media_type));
    std::string no_size = R"({"schemaVersion":2,"config":{"digest":")" + d + R"("},"layers":[]})";
    EXPECT_THROW(parse_manifest(no_size, kMediaOciManifest), std::runtime_error);
    // A digest names a file later: a path in its place is refused, whatever its length.
    std::string escape = "sha256:/../../../../../../../../../../../../root/.ssh/authorized_keys///";
    escape.resize(71, '/');
    for (std::string bad :
         {escape, "sha256:" + std::string(64, 'G'), "sha256:" + std::string(64, 'A')}) {
        std::string body = R"({"schemaVersion":2,"config":{"mediaType":"c","digest":")" + d +
                           R"(","size":3},"layers":[{"mediaType":")" + zstd + R"(","digest":")" +
                           bad + R"(","size":9}]})";
        EXPECT_THROW(parse_manifest(body, kMediaOciManifest), std::runtime_error) << bad;
    }
    // What the registry sent is echoed escaped: the error stays one line
    // (tests/fuzz/manifest_corpus/newline-in-digest).
    std::string newline = "sha256:" + std::string(30, 'a') + "\n" + std::string(33, 'a');
    std::string body = R"({"schemaVersion":2,"config":{"mediaType":"c","digest":")" + d +
                       R"(","size":3},"layers":[{"mediaType":"x","digest":")" +
                       json_escape(newline) + R"(","size":9}]})";
    try {
        parse_manifest(body, kMediaOciManifest);
        ADD_FAILURE() << "accepted a digest with a newline";
    } catch (const std::runtime_error& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("\\x0a"), std::string::npos) << e.what();
    }
}

// Fields of the wrong JSON type are a malformed manifest (one line), not a json::type_error
// escaping to the caller; tests/fuzz/manifest_corpus/wrong-type-media-type found it.
TEST(Manifest, fields_of_the_wrong_type_are_malformed) {
    std::string d = "sha256:" + std::string(64, 'a');
    for (std::string body : {
             R"({"schemaVersion":2,"mediaType":[{"digest":")" + d + R"(","size":1}]})",
             std::string(R"({"schemaVersion":"2"})"),
             R"({"schemaVersion":2,"config":{"mediaType":1,"digest":")" + d +
                 R"(","size":1},"layers":[]})",
             R"({"schemaVersion":2,"manifests":[{"digest":")" + d +
                 R"(","size":1,"platform":{"os":["linux"]}}]})",
         }) {
        try {
            parse_manifest(body, "");
            ADD_FAILURE() << "accepted: " << body;
        } catch (const std::runtime_error& e) {
            EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("manifest"), std::string::npos) << e.what();
        }
    }
}

TEST(Settings, base64_round_trip) {
    for (std::string s : {"", "a", "ab", "abc", "user:pässword"})
        EXPECT_EQ(base64_decode(base64_encode(s)), s);
}

}  // namespace
}  // namespace lamina::registry
