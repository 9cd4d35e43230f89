// The image format (layerstore/image_format): manifests and indexes, platforms, image configs.
#include <gtest/gtest.h>

#include <cstdio>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "error.h"
#include "image_format.h"

namespace lamina::store {
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
        R"({"schemaVersion":2,"mediaType":")" + std::string(kDockerManifestList) +
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
    auto m = parse_manifest(ok, kOciManifest);
    EXPECT_FALSE(m.is_index);
    ASSERT_EQ(m.layers.size(), 1u);
    EXPECT_EQ(layer_media_type_compression(m.layers[0].media_type), kZstd);
    std::string no_size = R"({"schemaVersion":2,"config":{"digest":")" + d + R"("},"layers":[]})";
    EXPECT_THROW(parse_manifest(no_size, kOciManifest), std::runtime_error);
    // A digest names a file later: a path in its place is refused, whatever its length.
    std::string escape = "sha256:/../../../../../../../../../../../../root/.ssh/authorized_keys///";
    escape.resize(71, '/');
    for (std::string bad :
         {escape, "sha256:" + std::string(64, 'G'), "sha256:" + std::string(64, 'A')}) {
        std::string body = R"({"schemaVersion":2,"config":{"mediaType":"c","digest":")" + d +
                           R"(","size":3},"layers":[{"mediaType":")" + zstd + R"(","digest":")" +
                           bad + R"(","size":9}]})";
        EXPECT_THROW(parse_manifest(body, kOciManifest), std::runtime_error) << bad;
    }
    // What the registry sent is echoed escaped: the error stays one line
    // (tests/fuzz/manifest_corpus/newline-in-digest).
    std::string newline = "sha256:" + std::string(30, 'a') + "\n" + std::string(33, 'a');
    std::string body = R"({"schemaVersion":2,"config":{"mediaType":"c","digest":")" + d +
                       R"(","size":3},"layers":[{"mediaType":"x","digest":")" +
                       json_escape(newline) + R"(","size":9}]})";
    try {
        parse_manifest(body, kOciManifest);
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

// What the store writes (import, commit, eStargz conversion) reads back as pull reads it.
TEST(Manifest, oci_manifest_reads_back_with_parse_manifest) {
    std::string layer = "sha256:" + std::string(64, 'e');
    std::string body = oci_manifest(
        "{}", {{{"mediaType", layer_media_type(kZstd)}, {"digest", layer}, {"size", 5}}});
    Manifest m = parse_manifest(body, "");
    EXPECT_EQ(m.media_type, kOciManifest);
    EXPECT_EQ(m.config.media_type, kOciConfig);
    EXPECT_EQ(m.config.size, 2);
    ASSERT_EQ(m.layers.size(), 1u);
    EXPECT_EQ(m.layers[0].digest, layer);
    EXPECT_EQ(layer_media_type_compression(m.layers[0].media_type), kZstd);
}

// zstd:chunked's annotations, under skopeo 1.9.3's keys or later writers' "io.github." ones;
// a checksum that is no sha256 digest is malformed.
TEST(Manifest, zstd_chunked_annotations_are_read_under_either_key) {
    std::string layer = "sha256:" + std::string(64, 'e');
    std::string sum = "sha256:" + std::string(64, 'f');
    for (std::string prefix : {"io.", "io.github."}) {
        nlohmann::json annotations = {
            {prefix + "containers.zstd-chunked.manifest-checksum", sum},
            {prefix + "containers.zstd-chunked.manifest-position", "10:20:30:1"}};
        std::string body = oci_manifest("{}", {{{"mediaType", layer_media_type(kZstd)},
                                                {"digest", layer},
                                                {"size", 5},
                                                {"annotations", annotations}}});
        Manifest m = parse_manifest(body, "");
        ASSERT_EQ(m.layers.size(), 1u);
        EXPECT_EQ(m.layers[0].zstd_chunked_checksum, sum) << prefix;
        EXPECT_EQ(m.layers[0].zstd_chunked_position, "10:20:30:1") << prefix;
        annotations[prefix + "containers.zstd-chunked.manifest-checksum"] = "md5:x";
        body = oci_manifest("{}", {{{"mediaType", layer_media_type(kZstd)},
                                    {"digest", layer},
                                    {"size", 5},
                                    {"annotations", annotations}}});
        EXPECT_THROW(parse_manifest(body, ""), std::runtime_error) << prefix;
    }
}

// containerd normalises an arm image without a variant to v7, as an arm64 one to v8: an index
// whose arm entry names no variant serves linux/arm/v7 (the registry client once refused it).
TEST(Platform, arm_without_a_variant_is_v7_and_arm64_without_one_v8) {
    EXPECT_TRUE(platform_matches({"linux", "arm", ""}, parse_platform("linux/arm/v7")));
    EXPECT_FALSE(platform_matches({"linux", "arm", ""}, parse_platform("linux/arm/v6")));
    EXPECT_TRUE(platform_matches({"linux", "arm64", ""}, parse_platform("linux/arm64/v8")));
    EXPECT_TRUE(platform_matches({"linux", "arm", "v6"}, parse_platform("linux/arm")));
    EXPECT_FALSE(platform_matches({"windows", "amd64", ""}, parse_platform("linux/amd64")));
    std::string d = "sha256:" + std::string(64, '7');
    auto index =
        parse_manifest(R"({"schemaVersion":2,"manifests":[{"digest":")" + d +
                           R"(","size":1,"platform":{"os":"linux","architecture":"arm"}}]})",
                       "");
    EXPECT_EQ(select_platform(index, parse_platform("linux/arm/v7")).digest, d);
}

TEST(Platform, host_platform_is_linux_in_go_names) {
    Platform host = host_platform();
    EXPECT_EQ(host.os, "linux");
#if defined(__x86_64__)
    EXPECT_EQ(host.str(), "linux/amd64");
#elif defined(__aarch64__)
    EXPECT_EQ(host.str(), "linux/arm64");
#endif
}

TEST(ImageConfig, diff_ids_are_sha256_digests_one_for_each_layer) {
    std::string d = "sha256:" + std::string(64, 'd');
    nlohmann::json cfg = {{"rootfs", {{"type", "layers"}, {"diff_ids", {d, d}}}}};
    EXPECT_EQ(image_config_diff_ids(cfg, 2, "config"), (std::vector<std::string>{d, d}));
    try {
        image_config_diff_ids(cfg, 3, "config x");
        ADD_FAILURE() << "accepted two diff_ids for three layers";
    } catch (const StoreError& e) {
        EXPECT_STREQ(e.what(), "config x lists 2 diff_ids but the image has 3 layers");
    }
    cfg["rootfs"]["diff_ids"][1] = "sha256:abc";
    EXPECT_THROW(image_config_diff_ids(cfg, 2, "config"), StoreError);
    EXPECT_THROW(image_config_diff_ids(nlohmann::json::object(), 0, "config"), StoreError);
    EXPECT_THROW(platform_member({{"os", 1}}, "config"), StoreError);
}

}  // namespace
}  // namespace lamina::store
