// What goes into the store comes out unchanged: every entry kind and attribute against GNU tar.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "needs.h"
#include "store_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

std::string fidelity_script() {
    const char* src = std::getenv("LAMINA_SOURCE_ROOT");
    return std::string(src ? src : ".") + "/tests/store/layer_fidelity.py";
}

// Builds the every-kind layer tar at path.
void make_fidelity_layer(const std::string& path) {
    auto r = run_command({"python3", fidelity_script(), "make-tar", path});
    ASSERT_EQ(r.status, 0) << r.err;
}

std::string describe_attributes(const std::string& root) {
    auto r = run_command({"python3", fidelity_script(), "describe", root});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.out;
}

// What GNU tar makes of the layer: the oracle every unpack is held to.
std::string gnu_tar_extraction(const std::string& tar, const std::string& dir) {
    make_dirs(dir);
    auto r = run_command(
        {"tar", "-xp", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-f", tar, "-C", dir});
    EXPECT_EQ(r.status, 0) << r.err;
    return describe_attributes(dir);
}

// The diff directory of the store's only layer.
std::string only_layer_diff(const Lamina& lamina) {
    auto r = run_command({"ls", lamina.root() + "/layers"});
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
    return lamina.root() + "/layers/" + r.out.substr(0, r.out.find('\n')) + "/diff";
}

std::string warnings_of(const CommandResult& r) {
    std::string w;
    size_t pos = 0;
    while ((pos = r.err.find("warning:", pos)) != std::string::npos) {
        size_t nl = r.err.find('\n', pos);
        w += r.err.substr(pos, nl - pos) + "\n";
        pos = nl;
    }
    return w;
}

class Fidelity : public ::testing::Test {
protected:
    void SetUp() override {
        if (geteuid() != 0) SKIP_NEEDING("root") << "set-id bits, owners and devices need root";
        if (!have_program("python3") || !have_program("tar"))
            SKIP_NEEDING("program:tar") << "python3 and GNU tar build and check the layer";
        make_fidelity_layer(tmp / "layer.tar");
        oracle = gnu_tar_extraction(tmp / "layer.tar", tmp / "oracle");
        // The oracle must hold what the test is about, or equality proves nothing.
        ASSERT_NE(oracle.find("bin/su mode=104755"), std::string::npos) << oracle;
        ASSERT_NE(oracle.find("xattr:security.capability="), std::string::npos) << oracle;
        ASSERT_NE(oracle.find("xattr:system.posix_acl_default="), std::string::npos) << oracle;
    }
    TempDir tmp{"lamina-fidelity"};
    std::string oracle;
};

TEST_F(Fidelity, load_keeps_set_id_bits_capabilities_acls_owners_devices_and_times) {
    write_oci_layout(tmp / "layout", {{read_file(tmp / "layer.tar"), "gzip"}}, "fidelity:1");
    Lamina lamina(tmp / "store");
    auto r = lamina({"load", "-i", tmp / "layout"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(warnings_of(r), "");
    std::string diff = only_layer_diff(lamina);
    EXPECT_EQ(describe_attributes(diff), oracle);
    auto cap = run_command({"getcap", diff + "/bin/ping"});
    if (cap.status == 0) {
        EXPECT_NE(cap.out.find("cap_net_raw=ep"), std::string::npos) << cap.out;
    }
}

TEST_F(Fidelity, import_keeps_every_attribute) {
    Lamina lamina(tmp / "store");
    auto r = lamina({"import", tmp / "layer.tar", "fidelity:imported"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(warnings_of(r), "");
    EXPECT_EQ(describe_attributes(only_layer_diff(lamina)), oracle);
}

// unpack -> mount -> commit -> save -> skopeo copy -> load into a fresh store -> mount.
TEST_F(Fidelity, round_trip_through_commit_save_skopeo_and_load_keeps_every_attribute) {
    REQUIRE_FUSE();
    if (!have_program("skopeo")) SKIP_NEEDING("program:skopeo") << "skopeo is not installed";
    StoreGuard guard{tmp / "store"};
    StoreGuard guard2{tmp / "fresh"};
    // Docker archives cannot carry zstd layers, so gzip.
    write_oci_layout(tmp / "layout", {{read_file(tmp / "layer.tar"), "gzip"}}, "fidelity:1");
    Lamina lamina(tmp / "store");
    out_of(lamina({"load", "-i", tmp / "layout"}));
    out_of(lamina({"create", "--name", "c", "fidelity:1"}));
    std::string mounted = out_of(lamina({"mount", "c"}));
    EXPECT_EQ(describe_attributes(mounted), oracle) << "mounted over the loaded layer";
    out_of(lamina({"commit", "c", "fidelity:2"}));
    out_of(lamina({"umount", "c"}));
    out_of(lamina({"save", "--format", "oci-archive", "-o", tmp / "saved.tar", "fidelity:2"}));
    auto copy = run_command({"skopeo", "copy", "oci-archive:" + (tmp / "saved.tar"),
                             "docker-archive:" + (tmp / "copied.tar") + ":fidelity:3"});
    ASSERT_EQ(copy.status, 0) << copy.err;

    Lamina fresh(tmp / "fresh");
    auto r = fresh({"load", "-i", tmp / "copied.tar"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(warnings_of(r), "");
    out_of(fresh({"create", "--name", "x", "fidelity:3"}));
    std::string again = out_of(fresh({"mount", "x"}));
    EXPECT_EQ(describe_attributes(again), oracle) << "after the round trip";
    out_of(fresh({"umount", "x"}));
}

// GNU tar --acls stores ACLs as text: the store applies them as the system.posix_acl_access
// xattr (acl_test holds the whole round trip through commit and GNU tar).
TEST_F(Fidelity, acl_in_tar_text_form_is_kept_as_the_acl_xattr) {
    if (!have_program("getfacl")) SKIP_NEEDING("program:getfacl") << "acl (getfacl) reads it";
    auto made = run_command({"python3", fidelity_script(), "make-text-acl-tar", tmp / "acl.tar"});
    ASSERT_EQ(made.status, 0) << made.err;
    Lamina lamina(tmp / "store");
    auto r = lamina({"import", tmp / "acl.tar", "acl:1"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(warnings_of(r), "");
    std::string layer = json::parse(out_of(lamina({"inspect", "acl:1"})))[0]["Layers"][0]["Path"];
    auto acl = run_command({"getfacl", "-n", "-R", layer});
    EXPECT_NE(acl.out.find("user:1001:r--"), std::string::npos) << acl.out;
}

// A store run by an ordinary user keeps modes (set-id included), data, links and times, and says
// in one line per layer what it could not keep.
TEST_F(Fidelity, rootless_store_keeps_what_it_can_and_says_what_it_could_not_once) {
    if (!have_program("setpriv"))
        SKIP_NEEDING("program:setpriv") << "setpriv (util-linux) runs lamina as nobody";
    write_oci_layout(tmp / "layout", {{read_file(tmp / "layer.tar"), "gzip"}}, "fidelity:1");
    make_dirs(tmp / "store");
    ASSERT_EQ(::chown((tmp / "store").c_str(), 65534, 65534), 0);
    ASSERT_EQ(::chmod(tmp.path().c_str(), 0755), 0);
    Lamina lamina(tmp / "store");
    std::vector<std::string> argv = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                     "--inh-caps=-all"};
    for (const auto& a : lamina.argv({"load", "-i", tmp / "layout"})) argv.push_back(a);
    auto r = run_command(argv);
    ASSERT_EQ(r.status, 0) << r.err;
    std::string w = warnings_of(r);
    EXPECT_EQ(std::count(w.begin(), w.end(), '\n'), 1) << w;
    for (const char* lost :
         {"owner of ", "xattr security.capability of 2 entries", "device node of 2 entries"})
        EXPECT_NE(w.find(lost), std::string::npos) << lost << " in " << w;
    std::string diff = only_layer_diff(lamina);
    struct stat st;
    ASSERT_EQ(::lstat((diff + "/bin/su").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 04755u);
    EXPECT_EQ(st.st_nlink, 2u);
    ASSERT_EQ(::lstat((diff + "/tmp").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 01777u);
    EXPECT_EQ(st.st_mtim.tv_sec, 1'500'000'003);
    ASSERT_EQ(::lstat((diff + "/run/initctl").c_str(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode));
    EXPECT_EQ(read_file(diff + "/srv/shared/notes"), "notes\n");
}

}  // namespace
}  // namespace lamina::test
