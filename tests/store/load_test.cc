// Loading images: both archive formats, compression, verification, idempotence, hostile tars.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "store_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

json images_json(const Lamina& lamina) {
    auto r = lamina({"images", "--format", "json"});
    EXPECT_EQ(r.status, 0) << r.err;
    return json::parse(r.out);
}

std::vector<std::string> list(const std::string& dir) {
    auto r = run_command({"sh", "-c", "ls -A '" + dir + "' 2>/dev/null"});
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < r.out.size()) {
        size_t nl = r.out.find('\n', pos);
        if (nl == std::string::npos) nl = r.out.size();
        if (nl > pos) out.push_back(r.out.substr(pos, nl - pos));
        pos = nl + 1;
    }
    return out;
}

TEST(Load, oci_archive_with_gzip_and_zstd_layers_converts_whiteouts) {
    TempDir tmp("lamina-load");
    auto built = write_oci_layout(tmp / "layout", demo_image("zstd"), "demo:1");
    tar_dir(tmp / "layout", tmp / "img.tar");
    Lamina lamina(tmp / "store");
    auto r = lamina({"load", "-i", tmp / "img.tar"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("Loaded image: demo:1"), std::string::npos);
    auto images = images_json(lamina);
    ASSERT_EQ(images.size(), 1u);
    EXPECT_EQ(images[0]["Id"], built.config_digest);
    // Layer two: data/a is a 0/0 char device, keep/ carries the opaque xattr.
    std::string top = images[0]["Layers"][1].get<std::string>().substr(7);
    std::string diff = tmp / ("store/layers/" + top + "/diff");
    struct stat st;
    ASSERT_EQ(lstat((diff + "/data/a").c_str(), &st), 0);
    if (geteuid() == 0) {
        EXPECT_TRUE(S_ISCHR(st.st_mode));
        EXPECT_EQ(st.st_rdev, makedev(0, 0));
        char v[8];
        ASSERT_EQ(getxattr((diff + "/keep").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
        EXPECT_EQ(v[0], 'y');
    }
    EXPECT_FALSE(access((diff + "/keep/.wh..wh..opq").c_str(), F_OK) == 0);
    EXPECT_EQ(read_file(diff + "/keep/new"), "new");
}

TEST(Load, docker_archive_made_by_skopeo_loads_with_its_name) {
    if (!have_program("skopeo")) SKIP_NEEDING("program:skopeo") << "skopeo is not installed";
    TempDir tmp("lamina-load");
    // Docker image manifests cannot name zstd layers, so this image is all gzip.
    auto layers = demo_image("zstd");
    layers[1].compression = "gzip";
    write_oci_layout(tmp / "layout", layers, "demo:1");
    auto s = run_command({"skopeo", "copy", "oci:" + (tmp / "layout") + ":demo:1",
                          "docker-archive:" + (tmp / "img.tar") + ":example.com/demo:2"});
    ASSERT_EQ(s.status, 0) << s.err;
    Lamina lamina(tmp / "store");
    auto r = lamina({"load", "-i", tmp / "img.tar"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto images = images_json(lamina);
    ASSERT_EQ(images.size(), 1u);
    EXPECT_EQ(images[0]["RepoTags"][0], "example.com/demo:2");
    auto h = lamina({"history", "example.com/demo:2"});
    EXPECT_EQ(h.status, 0) << h.err;
    EXPECT_NE(h.out.find("layer 1"), std::string::npos);
}

TEST(Load, oci_layout_directory_loads_and_reloading_writes_nothing) {
    TempDir tmp("lamina-load");
    write_oci_layout(tmp / "layout", demo_image("zstd"), "demo:1");
    Lamina lamina(tmp / "store");
    ASSERT_EQ(lamina({"load", "-i", tmp / "layout"}).status, 0);
    auto layers_before = list(tmp / "store/layers");
    ASSERT_EQ(layers_before.size(), 2u);
    struct stat before;
    ASSERT_EQ(stat((tmp / ("store/layers/" + layers_before[0])).c_str(), &before), 0);
    auto r = lamina({"load", "-i", tmp / "layout"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(list(tmp / "store/layers"), layers_before);
    struct stat after;
    ASSERT_EQ(stat((tmp / ("store/layers/" + layers_before[0])).c_str(), &after), 0);
    EXPECT_EQ(before.st_ino, after.st_ino);
    EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
    EXPECT_TRUE(list(tmp / "store/tmp").empty());
}

TEST(Load, images_sharing_a_base_layer_store_it_once) {
    TempDir tmp("lamina-load");
    auto base = make_tar({file("base", "shared")});
    write_oci_layout(tmp / "a", {{base, "gzip"}, {make_tar({file("a", "a")}), ""}}, "a:1");
    write_oci_layout(tmp / "b", {{base, "gzip"}, {make_tar({file("b", "b")}), ""}}, "b:1");
    Lamina lamina(tmp / "store");
    ASSERT_EQ(lamina({"load", "-i", tmp / "a"}).status, 0);
    ASSERT_EQ(lamina({"load", "-i", tmp / "b"}).status, 0);
    EXPECT_EQ(list(tmp / "store/layers").size(), 3u);
    EXPECT_EQ(images_json(lamina).size(), 2u);
}

TEST(Load, diff_id_mismatch_stores_nothing) {
    TempDir tmp("lamina-load");
    write_oci_layout(tmp / "layout", demo_image("zstd"), "demo:1", 1);
    Lamina lamina(tmp / "store");
    auto r = lamina({"load", "-i", tmp / "layout"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("diffID mismatch"), std::string::npos) << r.err;
    EXPECT_TRUE(images_json(lamina).empty());
    EXPECT_TRUE(list(tmp / "store/layers").empty());
    EXPECT_TRUE(list(tmp / "store/blobs/sha256").empty());
    EXPECT_TRUE(list(tmp / "store/tmp").empty());
}

TEST(Load, tampered_blob_is_refused) {
    TempDir tmp("lamina-load");
    write_oci_layout(tmp / "layout", {{make_tar({file("f", "good")}), ""}}, "demo:1");
    auto blobs = list(tmp / "layout/blobs/sha256");
    // Overwrite the layer blob (the only tar among the blobs) with different content.
    for (const auto& b : blobs) {
        std::string p = tmp / ("layout/blobs/sha256/" + b);
        if (read_file(p).find("good") != std::string::npos)
            write_file(p, make_tar({file("f", "evil")}));
    }
    Lamina lamina(tmp / "store");
    auto r = lamina({"load", "-i", tmp / "layout"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("digest mismatch"), std::string::npos) << r.err;
    EXPECT_TRUE(images_json(lamina).empty());
    EXPECT_TRUE(list(tmp / "store/layers").empty());
}

struct HostileCase {
    const char* name;
    std::function<std::string()> tar;
    const char* error;  // substring of the refusal; "" when the archive is neutralised instead
};

class Hostile : public ::testing::TestWithParam<HostileCase> {};

TEST_P(Hostile, never_writes_outside_the_layer) {
    TempDir tmp("lamina-hostile");
    make_dirs(tmp / "outside");
    write_oci_layout(tmp / "layout", {{GetParam().tar(), ""}}, "evil:1");
    Lamina lamina(tmp / "store");
    auto r = lamina({"load", "-i", tmp / "layout"});
    std::string expected = GetParam().error;
    if (expected.empty()) {
        EXPECT_EQ(r.status, 0) << r.err;
    } else {
        EXPECT_EQ(r.status, 1);
        EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
        EXPECT_TRUE(images_json(lamina).empty());
        EXPECT_TRUE(list(tmp / "store/layers").empty());
    }
    EXPECT_TRUE(list(tmp / "outside").empty()) << "something was written outside the layer";
    EXPECT_FALSE(access((tmp / "pwned").c_str(), F_OK) == 0);
    EXPECT_FALSE(access("/tmp/lamina-pwned", F_OK) == 0);
    EXPECT_TRUE(list(tmp / "store/tmp").empty());
}

INSTANTIATE_TEST_SUITE_P(
    Archives, Hostile,
    ::testing::Values(
        HostileCase{"dotdot", [] { return make_tar({file("../../../../pwned", "x")}); }, "\"..\""},
        HostileCase{"dotdot_inside",
                    [] {
                        return make_tar({dir("a"), file("a/../../pwned", "x")});
                    },
                    "\"..\""},
        HostileCase{"absolute", [] { return make_tar({file("/tmp/lamina-pwned", "x")}); },
                    "absolute path"},
        HostileCase{
            "symlink_then_through_it",
            [] {
                return make_tar({symlink("escape", "/tmp"), file("escape/lamina-pwned", "x")});
            },
            "symlink"},
        HostileCase{"relative_symlink_then_through_it",
                    [] {
                        return make_tar({symlink("up", "../../../../../../../../tmp"),
                                         file("up/lamina-pwned", "x")});
                    },
                    "symlink"},
        HostileCase{
            "symlinked_dir_chain",
            [] {
                return make_tar({dir("d"), symlink("d/s", "/tmp"), dir("d/s/lamina-pwned")});
            },
            "symlink"},
        // The unpacker keeps directories it opened: a later entry replacing one (or its
        // parent) by a symlink must not leave an entry going into the old one, or through the
        // new one.
        HostileCase{"open_directory_replaced_by_symlink",
                    [] {
                        return make_tar({dir("d"), file("d/x", "x"), symlink("d", "/tmp"),
                                         file("d/lamina-pwned", "x")});
                    },
                    "symlink"},
        HostileCase{"open_parent_replaced_by_symlink",
                    [] {
                        return make_tar({dir("a"), dir("a/b"), file("a/b/x", "x"),
                                         symlink("a", "/tmp"), dir("a/b"),
                                         file("a/b/lamina-pwned", "x")});
                    },
                    "symlink"},
        HostileCase{"hardlink_to_outside",
                    [] { return make_tar({hardlink("passwd", "/etc/passwd")}); }, "absolute path"},
        HostileCase{"hardlink_dotdot",
                    [] { return make_tar({hardlink("passwd", "../../../../etc/passwd")}); },
                    "\"..\""},
        HostileCase{"hardlink_through_symlink",
                    [] {
                        return make_tar({symlink("etc", "/etc"), hardlink("passwd", "etc/passwd")});
                    },
                    "symlink"},
        HostileCase{"hardlink_to_missing", [] { return make_tar({hardlink("x", "nothere")}); },
                    "not in this layer"},
        HostileCase{"absurd_size", [] { return make_huge_entry_tar("big", 1ULL << 52); },
                    "exceeds"},
        HostileCase{"truncated_data",
                    [] {
                        std::string full = make_tar({file("f", std::string(100000, 'x'))});
                        return full.substr(0, 20000);
                    },
                    "cannot read"},
        HostileCase{"symlink_replaced_by_file_is_not_followed",
                    [] {
                        return make_tar({symlink("f", "/tmp/lamina-pwned"), file("f", "x")});
                    },
                    ""},
        HostileCase{"duplicate_entries_last_wins",
                    [] {
                        return make_tar(
                            {file("f", "one"), file("f", "two"), dir("d"), file("d", "file now")});
                    },
                    ""}),
    [](const ::testing::TestParamInfo<HostileCase>& p) { return std::string(p.param.name); });

TEST(Load, duplicate_entries_keep_the_last_one) {
    TempDir tmp("lamina-load");
    write_oci_layout(
        tmp / "layout",
        {{make_tar({file("f", "one"), file("f", "two"), symlink("s", "/etc"), file("s", "plain")}),
          ""}},
        "dup:1");
    Lamina lamina(tmp / "store");
    ASSERT_EQ(lamina({"load", "-i", tmp / "layout"}).status, 0);
    auto layers = list(tmp / "store/layers");
    ASSERT_EQ(layers.size(), 1u);
    std::string diff = tmp / ("store/layers/" + layers[0] + "/diff");
    EXPECT_EQ(read_file(diff + "/f"), "two");
    struct stat st;
    ASSERT_EQ(lstat((diff + "/s").c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST(Load, import_makes_a_single_layer_image) {
    TempDir tmp("lamina-load");
    write_file(tmp / "rootfs.tar",
               compress(make_tar({dir("bin"), file("bin/tool", "#!/bin/sh\n", 0755)}), "gzip"));
    Lamina lamina(tmp / "store");
    auto r = lamina({"import", "-m", "from a tarball", tmp / "rootfs.tar", "imported:v1"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto images = images_json(lamina);
    ASSERT_EQ(images.size(), 1u);
    EXPECT_EQ(images[0]["RepoTags"][0], "imported:v1");
    EXPECT_EQ(images[0]["Layers"].size(), 1u);
    auto h = lamina({"history", "imported:v1"});
    EXPECT_NE(h.out.find("from a tarball"), std::string::npos) << h.out;
}

}  // namespace
}  // namespace lamina::test
