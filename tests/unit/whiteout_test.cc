// Recognising whiteouts, opaque markers, redirects and private xattrs in every format.
#include "whiteout.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace lamina {
namespace {

TEST(Whiteout, OciWhiteoutNamesTheHiddenEntry) {
    EXPECT_EQ(oci_whiteout_target(".wh.foo"), "foo");
    EXPECT_EQ(oci_whiteout_target(".wh..hidden"), ".hidden");
}

TEST(Whiteout, OpaqueMarkerAndOrdinaryNamesAreNotWhiteouts) {
    EXPECT_FALSE(oci_whiteout_target(".wh..wh..opq"));
    EXPECT_FALSE(oci_whiteout_target("foo"));
    EXPECT_FALSE(oci_whiteout_target(".wh."));
    EXPECT_FALSE(oci_whiteout_target(".wh.."));
    EXPECT_FALSE(oci_whiteout_target("x.wh.foo"));
}

TEST(Whiteout, ChardevZeroZeroIsAWhiteoutOtherDevicesAreNot) {
    struct stat st {};
    st.st_mode = S_IFCHR | 0;
    st.st_rdev = makedev(0, 0);
    EXPECT_TRUE(is_chardev_whiteout(st));
    st.st_rdev = makedev(1, 3);
    EXPECT_FALSE(is_chardev_whiteout(st));
    st.st_mode = S_IFBLK;
    st.st_rdev = 0;
    EXPECT_FALSE(is_chardev_whiteout(st));
}

TEST(Whiteout, BothOverlayPrefixesArePrivate) {
    EXPECT_TRUE(is_private_xattr("trusted.overlay.opaque"));
    EXPECT_TRUE(is_private_xattr("user.overlay.redirect"));
    EXPECT_FALSE(is_private_xattr("user.overlayfoo"));
    EXPECT_FALSE(is_private_xattr("user.mime_type"));
    EXPECT_FALSE(is_private_xattr("security.selinux"));
}

TEST(Whiteout, WriteSideXattrNamesFollowTheFlavour) {
    EXPECT_EQ(overlay_xattr(XattrFlavour::Trusted, "opaque"), "trusted.overlay.opaque");
    EXPECT_EQ(overlay_xattr(XattrFlavour::User, "redirect"), "user.overlay.redirect");
}

class WhiteoutOnDisk : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lamina-wh-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string dir_;
};

TEST_F(WhiteoutOnDisk, OpaqueValueIsReadFromEitherPrefix) {
    std::string d = dir_ + "/d";
    ASSERT_EQ(mkdir(d.c_str(), 0755), 0);
    EXPECT_EQ(read_opaque(d), 0);
    ASSERT_EQ(lsetxattr(d.c_str(), "user.overlay.opaque", "y", 1, 0), 0);
    EXPECT_EQ(read_opaque(d), 'y');
    if (geteuid() == 0) {
        std::string e = dir_ + "/e";
        ASSERT_EQ(mkdir(e.c_str(), 0755), 0);
        ASSERT_EQ(lsetxattr(e.c_str(), "trusted.overlay.opaque", "x", 1, 0), 0);
        EXPECT_EQ(read_opaque(e), 'x');
    }
}

TEST_F(WhiteoutOnDisk, OtherOpaqueValuesAreIgnored) {
    std::string d = dir_ + "/d";
    ASSERT_EQ(mkdir(d.c_str(), 0755), 0);
    ASSERT_EQ(lsetxattr(d.c_str(), "user.overlay.opaque", "n", 1, 0), 0);
    EXPECT_EQ(read_opaque(d), 0);
}

TEST_F(WhiteoutOnDisk, RedirectIsReadVerbatim) {
    std::string d = dir_ + "/d";
    ASSERT_EQ(mkdir(d.c_str(), 0755), 0);
    EXPECT_FALSE(read_redirect(d));
    ASSERT_EQ(lsetxattr(d.c_str(), "user.overlay.redirect", "/a/b", 4, 0), 0);
    EXPECT_EQ(read_redirect(d), "/a/b");
}

// read_dir_marks lists the xattrs first and reads only the overlay names present; it must agree
// with read_opaque and read_redirect whatever else the directory holds, also when the list is
// too long for its buffer.
TEST_F(WhiteoutOnDisk, DirMarksAgreeWithTheSingleReads) {
    auto make = [&](const std::string& name) {
        std::string d = dir_ + "/" + name;
        EXPECT_EQ(mkdir(d.c_str(), 0755), 0);
        return d;
    };
    auto set = [](const std::string& d, const std::string& name, const std::string& value) {
        ASSERT_EQ(lsetxattr(d.c_str(), name.c_str(), value.data(), value.size(), 0), 0) << name;
    };
    std::string bare = make("bare");
    std::string other = make("other");
    set(other, "user.something", "1");
    std::string opaque = make("opaque");
    set(opaque, "user.overlay.opaque", "y");
    set(opaque, "user.overlay.redirect", "/ignored");
    std::string redirected = make("redirected");
    set(redirected, "user.note", "x");
    set(redirected, "user.overlay.redirect", "/a/b");
    std::string xdir = make("xdir");
    set(xdir, "user.overlay.opaque", "x");
    set(xdir, "user.overlay.redirect", "c");
    std::string crowded = make("crowded");  // a name list over 1 KiB
    for (int i = 0; i < 40; ++i) set(crowded, "user.padding-name-number-" + std::to_string(i), "");
    set(crowded, "user.overlay.opaque", "y");

    for (const auto& d : {bare, other, opaque, redirected, xdir, crowded}) {
        DirMarks marks = read_dir_marks(d, true);
        EXPECT_EQ(marks.opaque, read_opaque(d)) << d;
        std::optional<std::string> want = marks.opaque == 'y' ? std::nullopt : read_redirect(d);
        EXPECT_EQ(marks.redirect, want) << d;
        EXPECT_FALSE(read_dir_marks(d, false).redirect) << d;
    }
    EXPECT_EQ(read_dir_marks(opaque, true).opaque, 'y');
    EXPECT_EQ(read_dir_marks(redirected, true).redirect, "/a/b");
    EXPECT_EQ(read_dir_marks(xdir, true).opaque, 'x');
    EXPECT_EQ(read_dir_marks(xdir, true).redirect, "c");
    EXPECT_EQ(read_dir_marks(crowded, true).opaque, 'y');
}

TEST_F(WhiteoutOnDisk, WhiteoutXattrIsFoundOnAFile) {
    std::string f = dir_ + "/f";
    std::ofstream(f).put('\0');
    EXPECT_FALSE(has_whiteout_xattr(f));
    ASSERT_EQ(lsetxattr(f.c_str(), "user.overlay.whiteout", "", 0, 0), 0);
    EXPECT_TRUE(has_whiteout_xattr(f));
}

// As the kernel's lookup (ovl_path_is_whiteout): the parent's opaque 'x' is not asked for.
TEST_F(WhiteoutOnDisk, EmptyFileWithTheXattrIsAWhiteoutInAnUnmarkedDirectory) {
    std::string f = dir_ + "/gone";
    { std::ofstream out(f); }
    struct stat st;
    ASSERT_EQ(lstat(f.c_str(), &st), 0);
    EXPECT_FALSE(is_whiteout(st, f));
    ASSERT_EQ(lsetxattr(f.c_str(), "user.overlay.whiteout", "", 0, 0), 0);
    EXPECT_TRUE(is_whiteout(st, f));
    EXPECT_EQ(read_opaque(dir_), 0);
}

TEST_F(WhiteoutOnDisk, FileWithContentOrADirectoryIsNoXattrWhiteout) {
    std::string f = dir_ + "/full";
    std::ofstream(f) << "data";
    ASSERT_EQ(lsetxattr(f.c_str(), "user.overlay.whiteout", "", 0, 0), 0);
    struct stat st;
    ASSERT_EQ(lstat(f.c_str(), &st), 0);
    EXPECT_FALSE(is_whiteout(st, f));
    std::string d = dir_ + "/d";
    ASSERT_EQ(mkdir(d.c_str(), 0755), 0);
    ASSERT_EQ(lsetxattr(d.c_str(), "user.overlay.whiteout", "", 0, 0), 0);
    ASSERT_EQ(lstat(d.c_str(), &st), 0);
    EXPECT_FALSE(is_whiteout(st, d));
}

TEST(Whiteout, ReaddirHidesXattrWhiteoutsOnlyInDirectoriesMarkedX) {
    EXPECT_TRUE(readdir_hides_xattr_whiteouts('x'));
    EXPECT_FALSE(readdir_hides_xattr_whiteouts('y'));
    EXPECT_FALSE(readdir_hides_xattr_whiteouts(0));
}

TEST(Whiteout, OciWhiteoutNameAndTargetRoundTrip) {
    EXPECT_EQ(oci_whiteout_name("foo"), ".wh.foo");
    EXPECT_EQ(oci_whiteout_target(oci_whiteout_name("foo")), "foo");
}

TEST(RedirectLowerPath, AbsoluteValuesAreFromTheLayerRoot) {
    EXPECT_EQ(redirect_lower_path("x/y", "/a/b"), "a/b");
    EXPECT_EQ(redirect_lower_path("x", "//a///b/"), "a/b");
    EXPECT_EQ(redirect_lower_path("x", "/"), "");
}

TEST(RedirectLowerPath, RelativeValuesAreNamesInTheParentsLowerDir) {
    EXPECT_EQ(redirect_lower_path("x/y", "old"), "x/y/old");
    EXPECT_EQ(redirect_lower_path("", "old"), "old");
}

// Found by the redirect fuzzer's seeds: these would lead out of the layer or are refused by the
// kernel, so they point nowhere.
TEST(RedirectLowerPath, ValuesLeavingTheLayerOrRefusedByTheKernelPointNowhere) {
    EXPECT_FALSE(redirect_lower_path("x", ""));
    EXPECT_FALSE(redirect_lower_path("x", ".."));
    EXPECT_FALSE(redirect_lower_path("x", "."));
    EXPECT_FALSE(redirect_lower_path("x", "a/b"));
    EXPECT_FALSE(redirect_lower_path("x", "/a/../../etc"));
    EXPECT_FALSE(redirect_lower_path("x", "/./a"));
    EXPECT_FALSE(redirect_lower_path("x", std::string_view("/a\0b", 4)));
    EXPECT_FALSE(redirect_lower_path("x", std::string_view("a\0", 2)));
}

}  // namespace
}  // namespace lamina
