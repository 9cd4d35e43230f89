// eStargz layers: what the writer makes is an ordinary gzip layer; a tree built from its TOC and
// filled chunk by chunk equals a full unpack; bad chunks, TOCs and footers are refused. The same
// for zstd:chunked layers as skopeo writes them, with the same TOC checks, and as lamina's
// writer writes them.
#include "estargz.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "digest.h"
#include "error.h"
#include "fd.h"
#include "needs.h"
#include "store_fixture.h"
#include "unpack.h"
#include "zstd_chunked.h"

namespace lamina::test {
namespace {

namespace ez = store::estargz;
using nlohmann::json;

std::string fidelity_script() {
    const char* src = std::getenv("LAMINA_SOURCE_ROOT");
    return std::string(src ? src : ".") + "/tests/store/layer_fidelity.py";
}

std::string describe(const std::string& root) {
    auto r = run_command({"python3", fidelity_script(), "describe-layer", root});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.out;
}

store::UnpackOptions layer_options() {
    store::UnpackOptions o;
    o.privileged = geteuid() == 0;
    return o;
}

// A blob in memory read through ranges, counting what was asked for.
struct Blob {
    std::string bytes;
    uint64_t served = 0;
    ez::RangeReader reader() {
        return [this](uint64_t off, uint64_t len) {
            if (off + len > bytes.size()) throw store::StoreError("range past the blob");
            served += len;
            return bytes.substr(off, len);
        };
    }
};

// Bytes that do not compress, so chunks have their full size in the blob too.
std::string noise(size_t n) {
    std::string s(n, '\0');
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (auto& c : s) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c = static_cast<char>(x);
    }
    return s;
}

// The layers the tests convert: every entry kind and attribute (layer_fidelity.py), and one with
// whiteouts, an opaque dir, hard links, a file replaced by a later entry and a file of many chunks.
std::string every_kind_layer(const TempDir& tmp) {
    std::string path = tmp / "fidelity.tar";
    auto r = run_command({"python3", fidelity_script(), "make-tar", path});
    EXPECT_EQ(r.status, 0) << r.err;
    return path;
}

std::string overlay_layer(const TempDir& tmp, const std::string& compression) {
    std::string big = noise(300 << 10);
    std::string tar = make_tar({dir("data"), file("data/big", big), file("data/v", "one\n"),
                                hardlink("data/v-old", "data/v"), file("data/v", "two!\n"),
                                hardlink("data/big2", "data/big"), whiteout("data/gone"),
                                dir("keep"), opaque("keep"), file("keep/new", "new\n"),
                                symlink("link", "data/v"), file("empty", "")});
    std::string path = tmp / "overlay.tar" + (compression.empty() ? "" : "." + compression);
    std::ofstream(path, std::ios::binary) << compress(tar, compression);
    return path;
}

std::string read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

// Converts in_path, unpacks the result fully into full/ and lazily into lazy/, fills every
// placeholder and compares the trees. Returns the bytes the TOC cost.
uint64_t check_round_trip(const TempDir& tmp, const std::string& in_path,
                          const ez::WriteOptions& wo = {}) {
    std::string blob_path = tmp / "layer.estargz";
    ez::WrittenLayer w = ez::write_layer(in_path, blob_path, wo);
    Blob blob{read_all(blob_path)};
    EXPECT_EQ(store::sha256_digest(blob.bytes), w.digest);
    EXPECT_EQ(static_cast<int64_t>(blob.bytes.size()), w.size);

    // Any client reads it as gzip, and the diff ID is the digest of what it decompresses to.
    std::string full = tmp / "full", lazy = tmp / "lazy";
    make_dirs(full);
    make_dirs(lazy);
    store::UnpackResult fr = store::unpack_tar(blob_path, full, layer_options());
    EXPECT_EQ(fr.compression, store::kGzip);
    EXPECT_EQ(fr.diff_id, w.diff_id);

    ez::Toc toc = ez::read_toc(blob.reader(), blob.bytes.size(), w.toc_digest);
    EXPECT_EQ(toc.digest, w.toc_digest);
    uint64_t toc_cost = blob.served;
    store::UnpackResult lr;
    auto pending = ez::unpack_toc(toc, lazy, layer_options(), lr);
    EXPECT_FALSE(pending.empty());
    store::Fd root(::open(lazy.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    for (const auto& p : pending) ez::fill_placeholder(root.get(), toc, p, blob.reader());
    EXPECT_EQ(describe(lazy), describe(full));
    // The check a lazy layer's completion makes: the whole blob is what its TOC says.
    EXPECT_EQ(ez::check_blob_against_toc(blob_path, toc), w.diff_id);
    return toc_cost;
}

TEST(Estargz, every_kind_of_entry_survives_conversion_and_lazy_unpack) {
    if (geteuid() != 0) SKIP_NEEDING("root") << "devices, owners and trusted xattrs need root";
    if (!have_program("python3")) SKIP_NEEDING("program:python3") << "builds the layer";
    TempDir tmp("estargz");
    check_round_trip(tmp, every_kind_layer(tmp));
}

TEST(Estargz, whiteouts_hard_links_and_chunks_survive_lazy_unpack) {
    if (!have_program("python3")) SKIP_NEEDING("program:python3") << "describes the trees";
    for (const char* comp : {"", "gzip", "zstd"}) {
        TempDir tmp("estargz");
        ez::WriteOptions wo;
        wo.chunk_bytes = 64 << 10;  // data/big is five chunks
        uint64_t toc_cost = check_round_trip(tmp, overlay_layer(tmp, comp), wo);
        EXPECT_LT(toc_cost, 4096u) << comp;
    }
}

TEST(Estargz, toc_lists_chunks_and_the_landmark) {
    TempDir tmp("estargz");
    ez::WriteOptions wo;
    wo.chunk_bytes = 64 << 10;
    ez::WrittenLayer w = ez::write_layer(overlay_layer(tmp, ""), tmp / "l", wo);
    Blob blob{read_all(tmp / "l")};
    ez::Toc toc = ez::read_toc(blob.reader(), blob.bytes.size(), "");
    ASSERT_FALSE(toc.entries.empty());
    EXPECT_EQ(toc.entries[0].name, ez::kNoPrefetchLandmark);
    const ez::TocEntry* big = nullptr;
    for (const auto& e : toc.entries)
        if (e.name == "data/big") big = &e;
    ASSERT_NE(big, nullptr);
    ASSERT_EQ(big->chunks.size(), 5u);
    EXPECT_EQ(big->chunks[4].file_offset, 4u * (64 << 10));
    EXPECT_EQ(big->chunks[4].size, (300u - 256u) << 10);
    // The footer names the TOC, and the TOC's JSON says version 1.
    EXPECT_EQ(ez::parse_footer(blob.bytes.substr(blob.bytes.size() - 51), blob.bytes.size()),
              toc.toc_offset);
    EXPECT_EQ(json::parse(toc.json)["version"], 1);
    EXPECT_EQ(toc.digest, w.toc_digest);
}

// A full unpack of a layer (tar or eStargz) described, without the files eStargz adds.
std::string unpacked(const TempDir& tmp, const std::string& layer, const std::string& name) {
    std::string dest = tmp / name;
    make_dirs(dest);
    store::unpack_tar(layer, dest, layer_options());
    std::string out, line;
    std::istringstream in(describe(dest));
    while (std::getline(in, line))
        if (!line.starts_with(std::string(ez::kTocName) + " ") &&
            !line.starts_with(std::string(ez::kNoPrefetchLandmark) + " ") &&
            !line.starts_with(std::string(ez::kPrefetchLandmark) + " "))
            out += line + "\n";
    return out;
}

// The entry names of a gzip tar, in their order, as GNU tar lists them.
std::vector<std::string> tar_names(const std::string& path) {
    auto r = run_command({"tar", "-tzf", path});
    EXPECT_EQ(r.status, 0) << r.err;
    std::vector<std::string> out;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
        while (line.size() > 1 && line.ends_with('/')) line.pop_back();
        out.push_back(line);
    }
    return out;
}

std::vector<std::string> toc_names(const ez::Toc& toc) {
    std::vector<std::string> out;
    for (const auto& e : toc.entries) {
        std::string n = e.name;
        while (n.size() > 1 && n.ends_with('/')) n.pop_back();
        out.push_back(n);
    }
    return out;
}

// A layer with files in directories, a hard link and a symlink, and a list naming some of them
// (and one it does not hold).
std::string prefetch_demo_tar(const TempDir& tmp) {
    std::string src = tmp / "src.tar";
    std::ofstream(src, std::ios::binary) << make_tar(
        {dir("etc"), file("etc/hosts", "h\n"), dir("usr"), dir("usr/bin"),
         file("usr/bin/tool", noise(200 << 10), 0755), hardlink("usr/bin/tool2", "usr/bin/tool"),
         file("etc/os-release", "ID=x\n", 0600), symlink("os", "etc/os-release"),
         file("z", "z\n")});
    return src;
}

ez::WriteOptions prefetch_demo_options() {
    ez::WriteOptions wo;
    wo.chunk_bytes = 64 << 10;
    wo.prefetch = {"usr/bin/tool2", "missing/file", "etc/os-release", "os"};
    return wo;
}

TEST(EstargzPrefetch, listed_files_come_first_after_their_parents_then_the_landmark) {
    if (!have_program("python3")) SKIP_NEEDING("program:python3") << "describes the trees";
    if (!have_program("tar")) SKIP_NEEDING("program:tar") << "lists the blob's entries";
    TempDir tmp("estargz");
    std::string src = prefetch_demo_tar(tmp);
    ez::WriteOptions wo = prefetch_demo_options();
    ez::WrittenLayer w = ez::write_layer(src, tmp / "l", wo);
    EXPECT_EQ(w.prioritised, (std::vector<std::string>{"usr/bin/tool2", "etc/os-release", "os"}));
    EXPECT_TRUE(w.kept_in_place.empty());

    // In the TOC and in the tar alike: each listed file after its parents (and a hard link
    // after its target), in the list's order, then the landmark, then the rest in their order.
    std::vector<std::string> want = {"usr",          "usr/bin",
                                     "usr/bin/tool", "usr/bin/tool2",
                                     "etc",          "etc/os-release",
                                     "os",           ".prefetch.landmark",
                                     "etc/hosts",    "z"};
    Blob blob{read_all(tmp / "l")};
    ez::Toc toc = ez::read_toc(blob.reader(), blob.bytes.size(), w.toc_digest);
    EXPECT_EQ(toc_names(toc), want);
    want.push_back(std::string(ez::kTocName));
    EXPECT_EQ(tar_names(tmp / "l"), want);
    // Nothing in it changes what an unpack makes; the lazy tree equals the full one too.
    EXPECT_EQ(unpacked(tmp, tmp / "l", "reordered"), unpacked(tmp, src, "source"));
    check_round_trip(tmp, src, wo);

    // Without a list, or with none of its paths in the layer: the no-prefetch landmark first.
    wo.prefetch = {"missing/file"};
    w = ez::write_layer(src, tmp / "n", wo);
    EXPECT_TRUE(w.prioritised.empty());
    Blob none{read_all(tmp / "n")};
    EXPECT_EQ(ez::read_toc(none.reader(), none.bytes.size(), "").entries[0].name,
              ez::kNoPrefetchLandmark);
}

TEST(EstargzPrefetch, a_file_moving_would_change_stays_in_place_and_unpacks_the_same) {
    if (!have_program("python3")) SKIP_NEEDING("program:python3") << "describes the trees";
    TempDir tmp("estargz");
    // data/v is written twice, data/gone whited out, keep made opaque; data/big2 a hard link.
    std::string src = overlay_layer(tmp, "gzip");
    ez::WriteOptions wo;
    wo.chunk_bytes = 64 << 10;
    wo.prefetch = {"data/v", "data/big2", "keep/new", "data", "link", "data/.wh.gone"};
    ez::WrittenLayer w = ez::write_layer(src, tmp / "l", wo);
    EXPECT_EQ(w.prioritised, (std::vector<std::string>{"data/big2", "keep/new", "link"}));
    std::vector<std::string> kept;
    for (const auto& [path, why] : w.kept_in_place) kept.push_back(path);
    EXPECT_EQ(kept, (std::vector<std::string>{"data/v", "data", "data/.wh.gone"}));
    Blob blob{read_all(tmp / "l")};
    ez::Toc toc = ez::read_toc(blob.reader(), blob.bytes.size(), w.toc_digest);
    std::vector<std::string> names = toc_names(toc);
    std::vector<std::string> head(names.begin(), names.begin() + 7);
    EXPECT_EQ(head, (std::vector<std::string>{"data", "data/big", "data/big2", "keep", "keep/new",
                                              "link", ".prefetch.landmark"}));
    EXPECT_EQ(unpacked(tmp, tmp / "l", "reordered"), unpacked(tmp, src, "source"));
    check_round_trip(tmp, src, wo);
}

TEST(EstargzPrefetch, every_kind_of_entry_listed_in_reverse_unpacks_the_same) {
    if (geteuid() != 0) SKIP_NEEDING("root") << "devices, owners and trusted xattrs need root";
    if (!have_program("python3")) SKIP_NEEDING("program:python3") << "builds the layer";
    if (!have_program("tar")) SKIP_NEEDING("program:tar") << "lists the layer's entries";
    TempDir tmp("estargz");
    std::string src = every_kind_layer(tmp);
    auto r = run_command({"tar", "-tf", src});
    ASSERT_EQ(r.status, 0) << r.err;
    ez::WriteOptions wo;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
        while (line.ends_with('/')) line.pop_back();
        if (line.starts_with("./")) line = line.substr(2);
        if (!line.empty() && line != ".") wo.prefetch.insert(wo.prefetch.begin(), line);
    }
    ASSERT_GT(wo.prefetch.size(), 5u);
    ez::WrittenLayer w = ez::write_layer(src, tmp / "l", wo);
    EXPECT_FALSE(w.prioritised.empty());
    EXPECT_EQ(unpacked(tmp, tmp / "l", "reordered"), unpacked(tmp, src, "source"));
    check_round_trip(tmp, src, wo);
}

TEST(EstargzPrefetch, a_prefetch_list_is_read_as_paths_and_a_bad_one_refused) {
    TempDir tmp("estargz");
    std::ofstream(tmp / "list") << "etc/os-release\n/usr/bin/tool\r\n\n./etc//os-release\nz\n";
    EXPECT_EQ(ez::read_prefetch_list(tmp / "list"),
              (std::vector<std::string>{"etc/os-release", "usr/bin/tool", "z"}));
    std::ofstream(tmp / "bad") << "etc/os-release\n../x\n";
    try {
        ez::read_prefetch_list(tmp / "bad");
        ADD_FAILURE() << "\"../x\" was accepted";
    } catch (const store::StoreError& e) {
        EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
    }
    EXPECT_THROW(ez::read_prefetch_list(tmp / "absent"), store::StoreError);
}

TEST(Estargz, a_corrupt_chunk_gives_no_bytes) {
    TempDir tmp("estargz");
    ez::WriteOptions wo;
    wo.chunk_bytes = 64 << 10;
    wo.level = 0;  // stored blocks: a flipped byte decompresses, only the digest can catch it
    ez::WrittenLayer w = ez::write_layer(overlay_layer(tmp, ""), tmp / "l", wo);
    Blob blob{read_all(tmp / "l")};
    ez::Toc toc = ez::read_toc(blob.reader(), blob.bytes.size(), w.toc_digest);
    for (const auto& e : toc.entries) {
        if (e.name != "data/big") continue;
        blob.bytes[e.chunks[2].offset + 100] ^= 0x55;
        uint64_t written = 0;
        try {
            ez::fetch_file(e, blob.reader(), [&](uint64_t off, std::string_view b) {
                EXPECT_LT(off, e.chunks[2].file_offset);
                written += b.size();
            });
            ADD_FAILURE() << "a corrupt chunk was accepted";
        } catch (const store::StoreError& err) {
            EXPECT_NE(std::string(err.what()).find("chunk digest mismatch"), std::string::npos)
                << err.what();
        }
        EXPECT_EQ(written, 2u * (64 << 10));  // the two good chunks before it, nothing after
        return;
    }
    FAIL() << "no data/big in the TOC";
}

// A completion checks the blob against the TOC its tree came from: a TOC that lies about an
// entry (mode, owner, the bytes a file's chunk holds, the TOC itself) is refused, naming it.
TEST(Estargz, a_blob_that_its_toc_misdescribes_is_refused_at_completion) {
    TempDir tmp("estargz");
    ez::WrittenLayer w = ez::write_layer(overlay_layer(tmp, ""), tmp / "l");
    Blob blob{read_all(tmp / "l")};
    const ez::Toc toc = ez::read_toc(blob.reader(), blob.bytes.size(), w.toc_digest);
    EXPECT_EQ(ez::check_blob_against_toc(tmp / "l", toc), w.diff_id);
    auto refused = [&](const ez::Toc& lie, const std::string& why) {
        try {
            ez::check_blob_against_toc(tmp / "l", lie);
            ADD_FAILURE() << "accepted a TOC that lies: " << why;
        } catch (const store::StoreError& e) {
            EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
        }
    };
    std::vector<size_t> files;  // entries with content
    for (size_t i = 0; i < toc.entries.size(); ++i)
        if (!toc.entries[i].chunks.empty()) files.push_back(i);
    ASSERT_GE(files.size(), 2u);
    size_t a = files[0], b = files[1];
    ez::Toc lie = toc;
    lie.entries[a].mode ^= 0100;
    refused(lie, "in mode");
    lie = toc;
    lie.entries[a].uid += 1;
    refused(lie, "in owner");
    lie = toc;
    std::swap(lie.entries[a].chunks[0].digest, lie.entries[b].chunks[0].digest);
    refused(lie, "does not match its chunk digest");
    lie = toc;
    lie.json += " ";
    refused(lie, "not the TOC");
    // Not gzip at all.
    std::ofstream(tmp / "plain") << "not a blob";
    EXPECT_THROW(ez::check_blob_against_toc(tmp / "plain", toc), store::StoreError);
}

TEST(Estargz, a_toc_that_does_not_match_the_annotation_is_refused) {
    TempDir tmp("estargz");
    ez::write_layer(overlay_layer(tmp, ""), tmp / "l");
    Blob blob{read_all(tmp / "l")};
    EXPECT_THROW(ez::read_toc(blob.reader(), blob.bytes.size(), store::sha256_digest("other")),
                 store::StoreError);
}

TEST(Estargz, hostile_footers_are_refused) {
    std::string good = ez::footer(1000);
    EXPECT_EQ(ez::parse_footer(good, 2000), 1000u);
    EXPECT_THROW(ez::parse_footer(good, 1000), store::StoreError);  // offset past the blob
    EXPECT_THROW(ez::parse_footer(good.substr(1), 2000), store::StoreError);
    std::string bad = good;
    bad[12] = 'X';
    EXPECT_THROW(ez::parse_footer(bad, 2000), store::StoreError);
    bad = good;
    bad[20] = 'g';  // not hex
    EXPECT_THROW(ez::parse_footer(bad, 2000), store::StoreError);
    bad = std::string(51, '\0');
    EXPECT_THROW(ez::parse_footer(bad, 2000), store::StoreError);
}

TEST(Estargz, hostile_tocs_are_refused) {
    std::string d = store::sha256_digest("x");
    auto reg = [&](const std::string& name, int64_t size, int64_t offset) {
        return json{{"name", name},     {"type", "reg"},  {"size", size},
                    {"mode", 0644},     {"uid", 0},       {"gid", 0},
                    {"offset", offset}, {"chunkSize", 0}, {"chunkDigest", d}};
    };
    auto toc = [](json entries) { return json{{"version", 1}, {"entries", entries}}.dump(); };
    // A good one first, so each refusal below is about its one fault.
    EXPECT_NO_THROW(ez::parse_toc_json(toc({reg("a", 10, 0)}), 100));
    // Members in any order, and lists elsewhere in the document, are no entries.
    auto odd = ez::parse_toc_json(
        R"({"other":[{"name":"x","type":"socket"}],"entries":[{"name":"a","type":"dir"}],)"
        R"("version":1,"more":{"entries":[1]}})",
        100);
    ASSERT_EQ(odd.size(), 1u);
    EXPECT_EQ(odd[0].name, "a");
    std::vector<std::pair<std::string, std::string>> bad = {
        {"version 2", json{{"version", 2}, {"entries", json::array()}}.dump()},
        {"not JSON", "{"},
        {"dot-dot", toc({reg("../x", 1, 0)})},
        {"absolute", toc({reg("/etc/x", 1, 0)})},
        {"offset past the TOC", toc({reg("a", 10, 100)})},
        {"negative size", toc({reg("a", -1, 0)})},
        {"bad digest", toc({json{{"name", "a"},
                                 {"type", "reg"},
                                 {"size", 3},
                                 {"offset", 0},
                                 {"chunkDigest", "md5:x"}}})},
        {"unknown type", toc({json{{"name", "a"}, {"type", "socket"}}})},
        {"hard link to nothing",
         toc({json{{"name", "a"}, {"type", "hardlink"}, {"linkName", "b"}}})},
        {"symlink without target", toc({json{{"name", "a"}, {"type", "symlink"}}})},
        {"chunk with no file", toc({json{{"name", "a"},
                                         {"type", "chunk"},
                                         {"offset", 5},
                                         {"chunkOffset", 0},
                                         {"chunkDigest", d}}})},
        {"chunks leave a gap", toc({[&] {
                                        json j = reg("a", 10, 0);
                                        j["chunkSize"] = 4;
                                        return j;
                                    }(),
                                    json{{"name", "a"},
                                         {"type", "chunk"},
                                         {"offset", 5},
                                         {"chunkOffset", 6},
                                         {"chunkDigest", d}}})},
        {"chunks do not cover the file", toc({[&] {
             json j = reg("a", 10, 0);
             j["chunkSize"] = 4;
             return j;
         }()})},
        {"too deep", toc({reg(
                         [] {
                             std::string s = "a";
                             for (int i = 0; i < 300; ++i) s += "/d";
                             return s;
                         }(),
                         1, 0)})},
        {"xattr not base64", toc({[&] {
             json j = reg("a", 10, 0);
             j["xattrs"] = {{"user.x", "!!!"}};
             return j;
         }()})},
        // The entries are read one by one as the parser completes them (parse_toc_json):
        // what the whole document says must still hold.
        {"an entry that is no object", toc({reg("a", 10, 0), "b"})},
        {"an entry that is a list", toc({reg("a", 10, 0), json::array({reg("b", 1, 0)})})},
        {"entries twice", R"({"version":1,"entries":[],"entries":[]})"},
        {"entries not a list", json{{"version", 1}, {"entries", {{"a", reg("a", 1, 0)}}}}.dump()},
        {"no entries", json{{"version", 1}}.dump()},
        {"entries, then something else under that name",
         R"({"version":1,"entries":[{"name":"a","type":"dir"}],"entries":1})"},
        {"version after the entries", R"({"entries":[{"name":"a","type":"dir"}],"version":2})"},
        {"not an object", json::array({reg("a", 10, 0)}).dump()},
    };
    // The limits are the same for both formats' TOCs.
    for (const auto& [why, text] : bad)
        for (auto format : {ez::TocFormat::kEstargz, ez::TocFormat::kZstdChunked})
            EXPECT_THROW(ez::parse_toc_json(text, 100, format), store::StoreError)
                << why << " (" << ez::format_name(format) << ")";
}

// ---- zstd:chunked, as skopeo writes it ---------------------------------------------------------

namespace zc = store::zstd_chunked;

// A layer skopeo rewrote as zstd:chunked, and its manifest's annotations.
struct ZstdChunkedLayer {
    std::string path;
    Blob blob;
    std::string checksum, position;
};

// The tar as a one-layer OCI image, copied by skopeo with --dest-compress-format zstd:chunked.
ZstdChunkedLayer skopeo_zstd_chunked(const TempDir& tmp, const std::string& tar) {
    write_oci_layout(tmp / "in", {{tar, "gzip"}}, "img");
    auto cp = run_command({"skopeo", "copy", "--dest-compress-format", "zstd:chunked",
                           "oci:" + tmp / "in" + ":img", "oci:" + tmp / "out" + ":img"});
    EXPECT_EQ(cp.status, 0) << cp.err;
    std::string blobs = tmp / "out/blobs/sha256/";
    json index = json::parse(read_all(tmp / "out/index.json"));
    std::string m = index["manifests"][0]["digest"];
    json layer = json::parse(read_all(blobs + m.substr(7)))["layers"][0];
    EXPECT_EQ(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd") << layer.dump();
    ZstdChunkedLayer out;
    out.path = blobs + layer["digest"].get<std::string>().substr(7);
    out.blob.bytes = read_all(out.path);
    out.checksum = layer["annotations"].value(std::string(zc::kChecksumAnnotation), "");
    out.position = layer["annotations"].value(std::string(zc::kPositionAnnotation), "");
    return out;
}

// Unpacks the layer fully into full/ and lazily into lazy/ (the TOC found by the annotation, and
// by the footer alone), fills every placeholder and compares the trees. Returns the full unpack.
store::UnpackResult check_zstd_chunked_round_trip(const TempDir& tmp, ZstdChunkedLayer& l) {
    std::string full = tmp / "full", lazy = tmp / "lazy";
    make_dirs(full);
    make_dirs(lazy);
    store::UnpackResult fr = store::unpack_tar(l.path, full, layer_options());
    EXPECT_EQ(fr.compression, store::kZstd);

    ez::Toc toc = zc::read_toc(l.blob.reader(), l.blob.bytes.size(), l.position, l.checksum);
    EXPECT_EQ(toc.format, ez::TocFormat::kZstdChunked);
    EXPECT_LT(l.blob.served, 64u << 10);  // the TOC frame alone
    ez::Toc by_footer = zc::read_toc(l.blob.reader(), l.blob.bytes.size(), "", l.checksum);
    EXPECT_EQ(by_footer.json, toc.json);
    EXPECT_EQ(by_footer.toc_offset, toc.toc_offset);

    store::UnpackResult lr;
    auto pending = ez::unpack_toc(toc, lazy, layer_options(), lr);
    EXPECT_FALSE(pending.empty());
    store::Fd root(::open(lazy.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    for (const auto& p : pending) ez::fill_placeholder(root.get(), toc, p, l.blob.reader());
    // No TOC file in either tree: zstd:chunked's TOC is no tar entry.
    EXPECT_EQ(describe(lazy), describe(full));
    EXPECT_EQ(ez::check_blob_against_toc(l.path, toc), fr.diff_id);
    return fr;
}

bool can_run_skopeo_tests() {
    return have_program("skopeo") && have_program("python3");
}

TEST(ZstdChunked, skopeos_layer_with_whiteouts_hard_links_and_chunks_unpacks_lazily) {
    if (!can_run_skopeo_tests()) SKIP_NEEDING("program:skopeo") << "writes zstd:chunked";
    TempDir tmp("zstd-chunked");
    std::string tar = read_all(overlay_layer(tmp, ""));
    ZstdChunkedLayer l = skopeo_zstd_chunked(tmp, tar);
    ASSERT_TRUE(store::is_sha256_digest(l.checksum)) << l.checksum;
    store::UnpackResult fr = check_zstd_chunked_round_trip(tmp, l);
    // skopeo 1.9.3 keeps the tar stream up to its end-of-archive blocks and drops the zeros
    // after them, yet leaves the config's diff ID as it was: the diff ID holds only for a tar
    // without them (as Go writes), not for make_tar's (libarchive pads to 10 KiB).
    ASSERT_NE(without_record_padding(tar), tar);
    EXPECT_EQ(fr.diff_id, store::sha256_digest(without_record_padding(tar)));
    EXPECT_NE(fr.diff_id, store::sha256_digest(tar));
    // The annotation's checksum is the compressed TOC's, not the JSON's.
    ez::Toc toc = zc::read_toc(l.blob.reader(), l.blob.bytes.size(), l.position, l.checksum);
    EXPECT_NE(toc.digest, l.checksum);
    // data/big (300 KiB of noise) is cut in several chunks, each a frame of its own.
    for (const auto& e : toc.entries)
        if (e.name == "data/big") {
            EXPECT_GT(e.chunks.size(), 1u);
        }
}

TEST(ZstdChunked, every_kind_of_entry_survives_lazy_unpack) {
    if (geteuid() != 0) SKIP_NEEDING("root") << "devices, owners and trusted xattrs need root";
    if (!can_run_skopeo_tests()) SKIP_NEEDING("program:skopeo") << "writes zstd:chunked";
    TempDir tmp("zstd-chunked");
    ZstdChunkedLayer l = skopeo_zstd_chunked(tmp, read_all(every_kind_layer(tmp)));
    check_zstd_chunked_round_trip(tmp, l);
}

TEST(ZstdChunked, a_corrupt_chunk_a_lying_toc_and_a_wrong_checksum_are_refused) {
    if (!can_run_skopeo_tests()) SKIP_NEEDING("program:skopeo") << "writes zstd:chunked";
    TempDir tmp("zstd-chunked");
    ZstdChunkedLayer l = skopeo_zstd_chunked(tmp, read_all(overlay_layer(tmp, "")));
    EXPECT_THROW(zc::read_toc(l.blob.reader(), l.blob.bytes.size(), l.position,
                              store::sha256_digest("other")),
                 store::StoreError);
    const ez::Toc toc = zc::read_toc(l.blob.reader(), l.blob.bytes.size(), l.position, l.checksum);
    std::vector<size_t> files;  // entries with content
    for (size_t i = 0; i < toc.entries.size(); ++i)
        if (!toc.entries[i].chunks.empty()) files.push_back(i);
    ASSERT_GE(files.size(), 2u);

    // A lie about an entry or a chunk is found at completion.
    ez::Toc lie = toc;
    lie.entries[files[0]].mode ^= 0100;
    EXPECT_THROW(ez::check_blob_against_toc(l.path, lie), store::StoreError);
    lie = toc;
    std::swap(lie.entries[files[0]].chunks[0].digest, lie.entries[files[1]].chunks[0].digest);
    EXPECT_THROW(ez::check_blob_against_toc(l.path, lie), store::StoreError);
    std::ofstream(tmp / "plain") << "not a blob";
    EXPECT_THROW(ez::check_blob_against_toc(tmp / "plain", toc), store::StoreError);

    // A flipped byte in a chunk's frame: the chunks before it, none of its bytes or after.
    for (const auto& e : toc.entries) {
        if (e.name != "data/big") continue;
        ASSERT_GE(e.chunks.size(), 2u);
        const ez::Chunk& bad = e.chunks[1];
        l.blob.bytes[bad.offset + (bad.fetch_end - bad.offset) / 2] ^= 0x55;
        uint64_t written = 0;
        EXPECT_THROW(ez::fetch_file(
                         e, l.blob.reader(),
                         [&](uint64_t off, std::string_view b) {
                             EXPECT_LT(off, bad.file_offset);
                             written += b.size();
                         },
                         ez::TocFormat::kZstdChunked),
                     store::StoreError);
        EXPECT_EQ(written, bad.file_offset);

        // Filling the placeholder fails the same way, and leaves its mode and mtime as the
        // tree had them (the chunks before were written): a later fill keeps them.
        std::string lazy = tmp / "lazy";
        make_dirs(lazy);
        store::UnpackResult lr;
        auto pending = ez::unpack_toc(toc, lazy, layer_options(), lr);
        store::Fd root(::open(lazy.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        struct stat before, after;
        ASSERT_EQ(::stat((lazy + "/data/big").c_str(), &before), 0);
        for (const auto& p : pending) {
            if (p.path == "data/big") {
                EXPECT_THROW(ez::fill_placeholder(root.get(), toc, p, l.blob.reader()),
                             store::StoreError);
            }
        }
        ASSERT_EQ(::stat((lazy + "/data/big").c_str(), &after), 0);
        EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
        EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
        EXPECT_EQ(after.st_mode, before.st_mode);
        return;
    }
    FAIL() << "no data/big in the TOC";
}

TEST(ZstdChunked, hostile_positions_and_footers_are_refused) {
    EXPECT_EQ(zc::parse_position("100:50:200:1", 1000).offset, 100u);
    for (const char* bad :
         {"100:50:200", "100:50:200:1:7", "a:50:200:1", "100:50:200:2", "100:0:200:1", "100:50:0:1",
          "990:50:200:1", "-1:50:200:1", "100:50:200:1 ", "100::200:1", "100:99999999999:200:1",
          "100:50:99999999999:1", ""})
        EXPECT_THROW(zc::parse_position(bad, 1000), store::StoreError) << bad;

    auto footer = [](uint64_t off, uint64_t len, uint64_t ulen, uint64_t type) {
        std::string f("\x50\x2a\x4d\x18\x28\0\0\0", 8);
        for (uint64_t v : {off, len, ulen, type})
            for (int i = 0; i < 8; ++i) f += static_cast<char>(v >> (8 * i));
        return f + std::string(zc::kFooterMagic);
    };
    EXPECT_EQ(zc::parse_footer(footer(100, 50, 200, 1), 1000).length, 50u);
    EXPECT_THROW(zc::parse_footer(footer(100, 50, 200, 2), 1000), store::StoreError);
    EXPECT_THROW(zc::parse_footer(footer(960, 50, 200, 1), 1000), store::StoreError);
    EXPECT_THROW(zc::parse_footer(footer(100, 50, uint64_t(1) << 40, 1), 1000), store::StoreError);
    std::string bad = footer(100, 50, 200, 1);
    bad[47] = 'X';
    EXPECT_THROW(zc::parse_footer(bad, 1000), store::StoreError);
    EXPECT_THROW(zc::parse_footer(bad.substr(1), 1000), store::StoreError);
    EXPECT_THROW(zc::parse_footer(std::string(48, '\0'), 1000), store::StoreError);

    // A TOC frame that is not zstd, or decompresses to more than its position says.
    zc::TocPosition pos{0, 10, 5};
    std::string junk = "0123456789";
    EXPECT_THROW(zc::parse_toc_frame(junk, pos, store::sha256_digest(junk)), store::StoreError);
    std::string big = compress(std::string(100, 'x'), "zstd");
    pos.length = big.size();
    EXPECT_THROW(zc::parse_toc_frame(big, pos, store::sha256_digest(big)), store::StoreError);
}

TEST(ZstdChunked, hostile_tocs_are_refused) {
    std::string d = store::sha256_digest("x");
    auto reg = [&](const std::string& name, int64_t size, int64_t offset) {
        return json{{"name", name},     {"type", "reg"}, {"size", size},   {"mode", 0644},
                    {"offset", offset}, {"digest", d},   {"endOffset", 50}};
    };
    auto toc = [](json entries) { return json{{"version", 1}, {"entries", entries}}.dump(); };
    auto parse = [](const std::string& text) {
        return ez::parse_toc_json(text, 100, ez::TocFormat::kZstdChunked);
    };
    // A file in one frame: its "digest" is its only chunk's, endOffset ends the range.
    auto good = parse(toc({reg("a", 10, 20)}));
    ASSERT_EQ(good.size(), 1u);
    ASSERT_EQ(good[0].chunks.size(), 1u);
    EXPECT_EQ(good[0].chunks[0].digest, d);
    EXPECT_EQ(good[0].chunks[0].fetch_end, 50u);
    // eStargz has no such shortcut: chunkDigest is required.
    EXPECT_THROW(ez::parse_toc_json(toc({reg("a", 10, 20)}), 100), store::StoreError);
    std::vector<std::pair<std::string, json>> bad = {
        {"no digest",
         [&] {
             json j = reg("a", 10, 20);
             j.erase("digest");
             return j;
         }()},
        {"endOffset before offset",
         [&] {
             json j = reg("a", 10, 20);
             j["endOffset"] = 20;
             return j;
         }()},
        {"endOffset past the TOC",
         [&] {
             json j = reg("a", 10, 20);
             j["endOffset"] = 101;
             return j;
         }()},
        {"a chunk of zeros",
         [&] {
             json j = reg("a", 10, 20);
             j["chunkType"] = "zeros";
             return j;
         }()},
        {"chunk bigger than 64 MiB",
         [&] {
             json j = reg("a", (int64_t(64) << 20) + 1, 20);
             return j;
         }()},
    };
    for (const auto& [why, entry] : bad)
        EXPECT_THROW(parse(toc({entry})), store::StoreError) << why;
}

// ---- zstd:chunked, as lamina writes it ---------------------------------------------------------

// in_path written as zstd:chunked by lamina's writer, with the annotations it gives the manifest.
ZstdChunkedLayer lamina_zstd_chunked(const TempDir& tmp, const std::string& in_path,
                                     ez::WriteOptions wo, ez::WrittenLayer& w) {
    wo.format = ez::TocFormat::kZstdChunked;
    ZstdChunkedLayer out;
    out.path = tmp / "layer.zstd-chunked";
    w = ez::write_layer(in_path, out.path, wo);
    out.blob.bytes = read_all(out.path);
    EXPECT_EQ(store::sha256_digest(out.blob.bytes), w.digest);
    EXPECT_EQ(static_cast<int64_t>(out.blob.bytes.size()), w.size);
    for (const auto& [key, value] : w.annotations) {
        if (key == zc::kChecksumAnnotation) out.checksum = value;
        if (key == zc::kPositionAnnotation) out.position = value;
    }
    EXPECT_EQ(w.annotations.size(), 2u);
    return out;
}

// What `zstd -d` makes of the blob, when zstd is there: the tar whose digest is the diff ID.
void expect_plain_zstd_gives(const std::string& blob_path, const std::string& diff_id) {
    if (!have_program("zstd")) return;
    auto r = run_command({"zstd", "-dc", blob_path});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(store::sha256_digest(r.out), diff_id);
}

TEST(ZstdChunkedWriter, whiteouts_hard_links_and_chunks_read_back_lazily) {
    if (!have_program("python3")) SKIP_NEEDING("program:python3") << "describes the trees";
    for (const char* comp : {"", "gzip", "zstd"}) {
        TempDir tmp("zstd-chunked");
        std::string src = overlay_layer(tmp, comp);
        ez::WriteOptions wo;
        wo.chunk_bytes = 64 << 10;  // data/big is five chunks
        ez::WrittenLayer w;
        ZstdChunkedLayer l = lamina_zstd_chunked(tmp, src, wo, w);
        // Read back by the annotation and by the footer alone, filled, compared to a full
        // unpack; the whole blob checked against its TOC gives the diff ID.
        store::UnpackResult fr = check_zstd_chunked_round_trip(tmp, l);
        EXPECT_EQ(fr.diff_id, w.diff_id) << comp;
        expect_plain_zstd_gives(l.path, w.diff_id);
        // The tree is the source's: no TOC file, no landmark.
        EXPECT_EQ(unpacked(tmp, l.path, "written"), unpacked(tmp, src, "source")) << comp;
        EXPECT_EQ(describe(tmp / "full"), unpacked(tmp, src, "source2")) << comp;
    }
}

TEST(ZstdChunkedWriter, every_kind_of_entry_survives) {
    if (geteuid() != 0) SKIP_NEEDING("root") << "devices, owners and trusted xattrs need root";
    if (!have_program("python3")) SKIP_NEEDING("program:python3") << "builds the layer";
    TempDir tmp("zstd-chunked");
    std::string src = every_kind_layer(tmp);
    ez::WrittenLayer w;
    ZstdChunkedLayer l = lamina_zstd_chunked(tmp, src, {}, w);
    EXPECT_EQ(check_zstd_chunked_round_trip(tmp, l).diff_id, w.diff_id);
    EXPECT_EQ(describe(tmp / "full"), unpacked(tmp, src, "source"));
}

TEST(ZstdChunkedWriter, toc_frames_and_footer_are_as_skopeo_writes_them) {
    TempDir tmp("zstd-chunked");
    ez::WriteOptions wo;
    wo.chunk_bytes = 64 << 10;
    ez::WrittenLayer w;
    ZstdChunkedLayer l = lamina_zstd_chunked(tmp, overlay_layer(tmp, ""), wo, w);
    const std::string& b = l.blob.bytes;
    // The footer and the annotation name the same frame, which the checksum vouches for.
    zc::TocPosition by_footer = zc::parse_footer(b.substr(b.size() - zc::kFooterSize), b.size());
    zc::TocPosition by_annotation = zc::parse_position(l.position, b.size());
    EXPECT_EQ(by_footer.offset, by_annotation.offset);
    EXPECT_EQ(by_footer.length, by_annotation.length);
    EXPECT_EQ(by_footer.uncompressed_length, by_annotation.uncompressed_length);
    EXPECT_EQ(store::sha256_digest(b.substr(by_footer.offset, by_footer.length)), l.checksum);
    // The TOC frame sits in a skippable frame just before the footer.
    EXPECT_EQ(b.substr(by_footer.offset - 8, 4), std::string("\x50\x2a\x4d\x18", 4));
    EXPECT_EQ(by_footer.offset + by_footer.length, b.size() - zc::kFooterSize);
    ez::Toc toc = zc::read_toc(l.blob.reader(), b.size(), l.position, l.checksum);
    EXPECT_EQ(toc.digest, w.toc_digest);

    json entries = json::parse(toc.json)["entries"];
    std::map<std::string, std::vector<json>> by_name;
    for (const auto& e : entries) {
        by_name[e["name"]].push_back(e);
        EXPECT_LE(e.value("mode", 0), 07777) << e.dump();  // no file-type bits
        EXPECT_FALSE(e.contains("uid")) << e.dump();       // root's: left out
    }
    EXPECT_FALSE(by_name.count(std::string(ez::kTocName)));
    EXPECT_FALSE(by_name.count(std::string(ez::kNoPrefetchLandmark)));
    // A file of one frame: its digest, offset and endOffset, no chunk fields.
    const json& v = by_name["data/v"].back();
    EXPECT_TRUE(v.contains("digest") && v.contains("offset") && v.contains("endOffset"));
    EXPECT_FALSE(v.contains("chunkDigest") || v.contains("chunkSize")) << v.dump();
    // A chunked file: chunks of their real size (the last too), each its own frame, and the
    // file's endOffset where its last frame ends.
    const std::vector<json>& big = by_name["data/big"];
    ASSERT_EQ(big.size(), 5u);
    EXPECT_EQ(big[0]["chunkSize"], 64 << 10);
    EXPECT_EQ(big[4]["type"], "chunk");
    EXPECT_EQ(big[4]["chunkSize"], (300 - 256) << 10);
    uint64_t end = big[0]["endOffset"];
    EXPECT_GT(end, big[4]["offset"].get<uint64_t>());
    std::string last = zc::decompress(
        b.substr(big[4]["offset"].get<uint64_t>(), end - big[4]["offset"].get<uint64_t>()), 1 << 20,
        false, "last chunk");
    EXPECT_EQ(last.size(), size_t((300 - 256) << 10));
    EXPECT_EQ(store::sha256_digest(last), big[4]["chunkDigest"]);
}

TEST(ZstdChunkedWriter, listed_files_come_first_and_the_tree_stays_the_sources) {
    if (!have_program("python3")) SKIP_NEEDING("program:python3") << "describes the trees";
    TempDir tmp("zstd-chunked");
    std::string src = prefetch_demo_tar(tmp);
    ez::WriteOptions wo = prefetch_demo_options();
    ez::WrittenLayer w;
    ZstdChunkedLayer l = lamina_zstd_chunked(tmp, src, wo, w);
    EXPECT_EQ(w.prioritised, (std::vector<std::string>{"usr/bin/tool2", "etc/os-release", "os"}));
    // The same order as eStargz's, without a landmark: zstd:chunked adds no file.
    ez::Toc toc = zc::read_toc(l.blob.reader(), l.blob.bytes.size(), l.position, l.checksum);
    EXPECT_EQ(toc_names(toc),
              (std::vector<std::string>{"usr", "usr/bin", "usr/bin/tool", "usr/bin/tool2", "etc",
                                        "etc/os-release", "os", "etc/hosts", "z"}));
    EXPECT_EQ(unpacked(tmp, l.path, "reordered"), unpacked(tmp, src, "source"));
    EXPECT_EQ(check_zstd_chunked_round_trip(tmp, l).diff_id, w.diff_id);
    expect_plain_zstd_gives(l.path, w.diff_id);
}

}  // namespace
}  // namespace lamina::test
