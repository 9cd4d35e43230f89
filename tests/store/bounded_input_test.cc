// Hostile archives and metadata are refused in one line, quickly, and leave the store as it was.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>

#include "needs.h"
#include "store_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

// Every file below the store root with its size, and the database's full contents: what a
// refused command must leave exactly as it found.
std::string store_state(const std::string& root) {
    auto files = run_shell("cd '" + root +
                           "' && find . ! -name 'lamina.db*' \\( -type f -printf '%P f %s\\n' "
                           "-o -printf '%P %y\\n' \\) | sort");
    auto db = run_command({"sqlite3", root + "/lamina.db", ".dump"});
    EXPECT_EQ(db.status, 0) << db.err;
    return files.out + db.out;
}

// A store that already holds one image, so "unchanged" means something.
class BoundedInput : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_program("sqlite3"))
            SKIP_NEEDING("program:sqlite3") << "sqlite3 reads the store's database";
        write_oci_layout(tmp / "base", {{make_tar({file("base", "kept")}), "gzip"}}, "base:1");
        auto r = lamina({"load", "-i", tmp / "base"});
        ASSERT_EQ(r.status, 0) << r.err;
        before = store_state(lamina.root());
    }
    // The refusal: exit status 1 (2 for a bad command line), exactly one line on stderr holding `expected`, nothing on
    // stdout, and the store as it was.
    void expect_refused(const CommandResult& r, const std::string& expected, int status = 1) {
        EXPECT_EQ(r.status, status) << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
        EXPECT_TRUE(r.err.starts_with("lamina: ")) << r.err;
        EXPECT_NE(r.err.find(expected), std::string::npos)
            << "want \"" << expected << "\" in " << r.err;
        EXPECT_EQ(store_state(lamina.root()), before);
    }
    TempDir tmp{"lamina-bounded"};
    Lamina lamina{tmp / "store"};
    std::string before;
};

// A blob written into an OCI layout; returns its digest.
std::string put_layout_blob(const std::string& layout, const std::string& data) {
    std::string digest = sha256(data);
    write_file(layout + "/blobs/sha256/" + digest.substr(7), data);
    return digest;
}

// Rewrites the image config of the layout's only image (and the manifest and index naming it).
void replace_config(const std::string& layout, const std::string& config) {
    auto index = json::parse(read_file(layout + "/index.json"));
    std::string mpath =
        layout + "/blobs/sha256/" + index["manifests"][0]["digest"].get<std::string>().substr(7);
    auto manifest = json::parse(read_file(mpath));
    manifest["config"]["digest"] = put_layout_blob(layout, config);
    manifest["config"]["size"] = config.size();
    std::string m = manifest.dump();
    index["manifests"][0]["digest"] = put_layout_blob(layout, m);
    index["manifests"][0]["size"] = m.size();
    write_file(layout + "/index.json", index.dump());
}

// Rewrites the manifest of the layout's only image with change (and the index naming it).
void replace_manifest(const std::string& layout, const std::function<void(json&)>& change) {
    auto index = json::parse(read_file(layout + "/index.json"));
    std::string mpath =
        layout + "/blobs/sha256/" + index["manifests"][0]["digest"].get<std::string>().substr(7);
    auto manifest = json::parse(read_file(mpath));
    change(manifest);
    std::string m = manifest.dump();
    index["manifests"][0]["digest"] = put_layout_blob(layout, m);
    index["manifests"][0]["size"] = m.size();
    write_file(layout + "/index.json", index.dump());
}

struct Mislabelled {
    const char* name;
    const char* compression;  // what the blob is
    const char* labelled;     // what its media type says
    const char* error;
};

class LayerCompression : public BoundedInput, public ::testing::WithParamInterface<Mislabelled> {};

TEST_P(LayerCompression, must_be_what_the_media_type_names) {
    const auto& c = GetParam();
    write_oci_layout(tmp / "layout",
                     {{make_tar({file("f", std::string(4096, 'x'))}), c.compression, c.labelled}},
                     "mislabelled:1");
    expect_refused(lamina({"load", "-i", tmp / "layout"}), c.error);
}

INSTANTIATE_TEST_SUITE_P(
    Blobs, LayerCompression,
    ::testing::Values(
        Mislabelled{"bzip2_labelled_gzip", "bzip2", "gzip", "layer 1 of 1: cannot read "},
        Mislabelled{"xz_labelled_gzip", "xz", "gzip", "the data is xz, expected gzip"},
        Mislabelled{"gzip_twice", "gzip+gzip", "gzip",
                    "compressed more than once (gzip around gzip)"},
        Mislabelled{"zstd_labelled_tar", "zstd", "none", "the data is zstd, expected uncompressed"},
        Mislabelled{"plain_labelled_zstd", "", "zstd", "the data is uncompressed, expected zstd"}),
    [](const ::testing::TestParamInfo<Mislabelled>& p) { return std::string(p.param.name); });

TEST_F(BoundedInput, bzip2_layer_in_a_docker_archive_is_refused_as_no_media_type_can_name_it) {
    write_file(tmp / "layer.tar.bz2", compress(make_tar({file("f", "x")}), "bzip2"));
    expect_refused(lamina({"import", tmp / "layer.tar.bz2"}),
                   "the data is bzip2, expected uncompressed or gzip or zstd");
}

TEST_F(BoundedInput, compressed_image_archive_is_accepted_once_but_not_twice) {
    write_oci_layout(tmp / "layout", {{make_tar({file("f", "x")}), "gzip"}}, "twice:1");
    tar_dir(tmp / "layout", tmp / "img.tar");
    write_file(tmp / "img.tar.xz.gz", compress(read_file(tmp / "img.tar"), "xz+gzip"));
    expect_refused(lamina({"load", "-i", tmp / "img.tar.xz.gz"}), "compressed more than once");
    write_file(tmp / "img.tar.xz", compress(read_file(tmp / "img.tar"), "xz"));
    auto r = lamina({"load", "-i", tmp / "img.tar.xz"});
    EXPECT_EQ(r.status, 0) << r.err;
}

// Each of these would block a reader that opens it and waits; the refusal must come at once.
TEST_F(BoundedInput, non_regular_sources_are_refused_without_blocking) {
    ASSERT_EQ(::mkfifo((tmp / "fifo").c_str(), 0600), 0);
    auto started = std::chrono::steady_clock::now();
    expect_refused(lamina({"import", "/dev/zero"}, 20), "/dev/zero: not a regular file");
    expect_refused(lamina({"import", tmp / "fifo"}, 20), "fifo: not a regular file");
    expect_refused(lamina({"load", "-i", tmp / "fifo"}, 20), "fifo: not a regular file");
    expect_refused(lamina({"load", "-i", "/dev/zero"}, 20), "/dev/zero: not a regular file");
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
}

TEST_F(BoundedInput, fifo_in_an_oci_layout_never_hangs_load) {
    write_oci_layout(tmp / "layout", {{make_tar({file("f", "x")}), ""}}, "fifo:1");
    auto index = json::parse(read_file(tmp / "layout/index.json"));
    std::string manifest_blob =
        tmp /
        ("layout/blobs/sha256/" + index["manifests"][0]["digest"].get<std::string>().substr(7));
    auto manifest = json::parse(read_file(manifest_blob));
    std::string layer_blob = tmp / ("layout/blobs/sha256/" +
                                    manifest["layers"][0]["digest"].get<std::string>().substr(7));
    ASSERT_EQ(::unlink(layer_blob.c_str()), 0);
    ASSERT_EQ(::mkfifo(layer_blob.c_str(), 0600), 0);
    expect_refused(lamina({"load", "-i", tmp / "layout"}, 20), "not a regular file");
}

TEST_F(BoundedInput, bytes_after_the_end_of_the_tar_are_capped) {
    std::string tar = make_tar({file("f", "x")});
    // A little padding is what tar writers do and stays part of the diffID.
    write_oci_layout(tmp / "padded", {{tar + std::string(64 << 10, '\0'), "gzip"}}, "padded:1");
    auto ok = lamina({"load", "-i", tmp / "padded"});
    ASSERT_EQ(ok.status, 0) << ok.err;
    before = store_state(lamina.root());
    // 64 MiB of zeros gzip to 64 KiB: hashed without end before, refused at 4 MiB now.
    write_oci_layout(tmp / "layout", {{tar + std::string(64 << 20, '\0'), "gzip"}}, "trail:1");
    expect_refused(lamina({"load", "-i", tmp / "layout"}),
                   "more than 4194304 bytes after the end of the tar");
}

TEST_F(BoundedInput, free_space_reserve_is_kept_and_configurable) {
    // A 16 KiB gzip blob holding 16 MiB of zeros: with a reserve larger than the free space
    // there is no room for it, nor for anything else.
    write_oci_layout(tmp / "bomb",
                     {{make_tar({file("zeros", std::string(16 << 20, '\0'))}), "gzip"}}, "bomb:1");
    expect_refused(lamina({"--reserve", "100000G", "load", "-i", tmp / "bomb"}),
                   "layer 1 of 1: cannot read ");
    expect_refused(lamina({"--reserve", "100000G", "load", "-i", tmp / "bomb"}),
                   ") less its reserve (107374182400000)");
    write_oci_layout(tmp / "small", {{make_tar({file("small", "x")}), ""}}, "small:1");
    expect_refused(lamina({"--reserve", "lots", "load", "-i", tmp / "small"}),
                   "--reserve: \"lots\" is not a size");
    auto r = lamina({"--reserve", "0", "load", "-i", tmp / "small"});
    EXPECT_EQ(r.status, 0) << r.err;
}

// A layer declaring more than the store filesystem has free is refused at its header, whatever
// the reserve: the 851-byte blob that expands to 1 GiB.
TEST_F(BoundedInput, entry_larger_than_the_free_space_is_refused_at_its_header) {
    struct statvfs vfs;
    ASSERT_EQ(::statvfs(tmp.path().c_str(), &vfs), 0);
    unsigned long long twice_free = 2ULL * vfs.f_bavail * vfs.f_frsize;
    if (twice_free >= 1ULL << 40) GTEST_SKIP() << "more free space than the 1 TiB entry limit";
    write_oci_layout(tmp / "bomb", {{make_huge_entry_tar("zeros", twice_free), "bzip2", "gzip"}},
                     "bomb:1");
    expect_refused(lamina({"load", "-i", tmp / "bomb"}), "the data is bzip2, expected gzip");
    write_oci_layout(tmp / "bomb2", {{make_huge_entry_tar("zeros", twice_free), "gzip"}}, "bomb:2");
    expect_refused(lamina({"load", "-i", tmp / "bomb2"}),
                   "exceeds the free space of the store filesystem less its reserve");
}

// The layer every JSON case uses, and a valid config for it.
const std::string& one_file_layer() {
    static const std::string tar = make_tar({file("f", "x")});
    return tar;
}
json config_of_one_file_layer() {
    return {{"os", "linux"},
            {"rootfs", {{"type", "layers"}, {"diff_ids", {sha256(one_file_layer())}}}}};
}

TEST_F(BoundedInput, deeply_nested_json_is_refused_at_parse_time) {
    write_oci_layout(tmp / "layout", {{one_file_layer(), ""}}, "deep:1");
    std::string deep = config_of_one_file_layer().dump();
    deep.insert(deep.size() - 1, ",\"x\":" + std::string(100000, '[') + std::string(100000, ']'));
    replace_config(tmp / "layout", deep);
    expect_refused(lamina({"load", "-i", tmp / "layout"}), ": nested more than 64 levels deep");

    write_oci_layout(tmp / "index", {{one_file_layer(), ""}}, "deep:2");
    write_file(tmp / "index/index.json", "{\"schemaVersion\":2,\"manifests\":" +
                                             std::string(5000, '[') + std::string(5000, ']') + "}");
    expect_refused(lamina({"load", "-i", tmp / "index"}),
                   "index.json: nested more than 64 levels deep");
}

TEST_F(BoundedInput, oversized_config_and_index_are_refused) {
    write_oci_layout(tmp / "layout", {{one_file_layer(), ""}}, "big:1");
    json cfg = config_of_one_file_layer();
    cfg["padding"] = std::string(9 << 20, 'x');
    replace_config(tmp / "layout", cfg.dump());
    expect_refused(lamina({"load", "-i", tmp / "layout"}), "is more than the limit of 8388608");
    write_oci_layout(tmp / "index", {{one_file_layer(), ""}}, "big:2");
    write_file(tmp / "index/index.json", std::string(5 << 20, ' ') + "{}");
    expect_refused(lamina({"load", "-i", tmp / "index"}),
                   "index.json: 5242882 bytes is more than the limit of 4194304");
}

TEST_F(BoundedInput, field_of_the_wrong_type_is_named_with_its_file) {
    write_oci_layout(tmp / "layout", {{make_tar({file("f", "x")}), ""}}, "typed:1");
    auto index = json::parse(read_file(tmp / "layout/index.json"));
    index["manifests"][0]["digest"] = 5;
    write_file(tmp / "layout/index.json", index.dump());
    expect_refused(lamina({"load", "-i", tmp / "layout"}),
                   "index.json: \"digest\" must be a string, not number");

    write_oci_layout(tmp / "cfg", {{make_tar({file("f", "x")}), ""}}, "typed:2");
    json cfg = {{"os", "linux"}, {"rootfs", {{"type", "layers"}, {"diff_ids", "sha256:0"}}}};
    replace_config(tmp / "cfg", cfg.dump());
    expect_refused(lamina({"load", "-i", tmp / "cfg"}),
                   "rootfs: \"diff_ids\" must be an array, not string");

    make_dirs(tmp / "docker");
    write_file(tmp / "docker/manifest.json", R"([{"Config":"c.json","Layers":"layer.tar"}])");
    write_file(tmp / "docker/c.json", "{}");
    expect_refused(lamina({"load", "-i", tmp / "docker"}),
                   "docker-archive manifest.json: \"Layers\" must be an array, not string");
}

// A layout's manifests are read by the registry client's rules (image_format's parse_manifest),
// as the OCI spec has them: load once took a layer without a size, any schemaVersion and any
// manifest media type, all of which pull refuses.
TEST_F(BoundedInput, layout_manifests_are_read_by_the_rules_pull_uses) {
    struct Case {
        const char* name;
        std::function<void(json&)> change;
        const char* error;
    };
    const Case cases[] = {
        {"unsized", [](json& m) { m["layers"][0].erase("size"); }, "has no valid size"},
        {"schema1", [](json& m) { m["schemaVersion"] = 1; }, "Docker schema 1 manifest"},
        {"artifact",
         [](json& m) { m["mediaType"] = "application/vnd.oci.artifact.manifest.v1+json"; },
         "unsupported manifest media type"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        write_oci_layout(tmp / c.name, {{one_file_layer(), ""}}, std::string("rules:") + c.name);
        replace_manifest(tmp / c.name, c.change);
        expect_refused(lamina({"load", "-i", tmp / c.name}), c.error);
    }
}

// The distribution grammar, for every way a name comes in: tag, import, an archive's own name
// and pull (refused before any network access). Control characters are never echoed raw.
TEST_F(BoundedInput, references_outside_the_distribution_grammar_are_refused) {
    write_file(tmp / "layer.tar", one_file_layer());
    const std::string long_repo(5000, 'a');
    const std::string escape = "evil\x1b[2J\x07name:1";
    struct Case {
        std::string ref;
        std::string error;
    };
    for (const Case& c : std::vector<Case>{
             {"../../../etc:latest", "invalid reference \"../../../etc:latest\""},
             {long_repo + ":1", "the name is longer than 255 characters"},
             {escape, "invalid reference \"evil\\x1b[2J\\x07name:1\""},
             {"Upper/case:1", "repository names are lowercase"},
             {"app:-tag", "a tag is up to 128"},
             {"a//b:1", "repository names are lowercase"},
         }) {
        SCOPED_TRACE(c.ref.substr(0, 40));
        for (const auto& argv : std::vector<std::vector<std::string>>{
                 {"tag", "base:1", c.ref}, {"import", tmp / "layer.tar", c.ref}, {"pull", c.ref}}) {
            auto r = lamina(argv);
            // pull reads its operand as a command-line reference: a usage error.
            expect_refused(r, c.error, argv[0] == "pull" ? 2 : 1);
            EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << "raw escape echoed";
            EXPECT_LT(r.err.size(), 600u) << "the whole name echoed";
        }
        write_oci_layout(tmp / "named", {{one_file_layer(), ""}}, c.ref);
        expect_refused(lamina({"load", "-i", tmp / "named"}), c.error);
    }
}

}  // namespace
}  // namespace lamina::test
