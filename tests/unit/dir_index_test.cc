// The merged lower listing of a directory: which names show, from which layer, and what hides them.
#include "dir_index.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "needs.h"

namespace lamina {
namespace {

class DirIndexTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lamina-idx-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        for (int i = 1; i <= 3; ++i) std::filesystem::create_directories(layer(i));
    }
    void TearDown() override { std::filesystem::remove_all(root_); }

    std::string layer(int n) const { return root_ + "/l" + std::to_string(n); }
    void file(int n, const std::string& rel) {
        std::filesystem::create_directories(
            std::filesystem::path(layer(n) + "/" + rel).parent_path());
        std::ofstream(layer(n) + "/" + rel) << rel;
    }
    void dir(int n, const std::string& rel) {
        std::filesystem::create_directories(layer(n) + "/" + rel);
    }
    bool chardev_whiteout(int n, const std::string& rel) {
        return mknod((layer(n) + "/" + rel).c_str(), S_IFCHR, makedev(0, 0)) == 0;
    }

    DirIndex build(const std::string& rel = "") {
        MountOptions opts;
        for (int i = 1; i <= 3; ++i) opts.lowerdirs.push_back(layer(i));
        EXPECT_EQ(stack_.open(opts), "");
        DirIndex idx;
        LowerStack candidates = {{1, rel}, {2, rel}, {3, rel}};
        EXPECT_EQ(build_dir_index(stack_, candidates, RedirectRules{}, idx), 0);
        return idx;
    }
    bool visible(const DirIndex& idx, const std::string& name) {
        const LowerEntry* e = idx.find(name);
        return e && !e->whiteout;
    }

    std::string root_;
    LayerStack stack_;
};

TEST_F(DirIndexTest, TopmostCopyOfAFileWins) {
    file(1, "f");
    file(3, "f");
    auto idx = build();
    ASSERT_TRUE(visible(idx, "f"));
    EXPECT_EQ(idx.find("f")->layer, 1);
}

TEST_F(DirIndexTest, DirectoriesMergeAcrossLayers) {
    dir(1, "d");
    dir(2, "d");
    dir(3, "d");
    auto idx = build();
    ASSERT_TRUE(visible(idx, "d"));
    EXPECT_EQ(idx.find("d")->dir_layers, (std::vector<LayerNo>{1, 2, 3}));
}

TEST_F(DirIndexTest, FileInTheMiddleStopsADirectoryMerge) {
    dir(1, "d");
    file(2, "d");
    dir(3, "d");
    auto idx = build();
    EXPECT_EQ(idx.find("d")->dir_layers, (std::vector<LayerNo>{1}));
}

TEST_F(DirIndexTest, ChardevWhiteoutHidesLowerLayersOnly) {
    file(3, "gone");
    if (!chardev_whiteout(2, "gone")) SKIP_NEEDING("mknod") << "mknod 0/0 not permitted here";
    file(1, "back");
    if (!chardev_whiteout(2, "back")) SKIP_NEEDING("mknod") << "mknod 0/0 not permitted here";
    auto idx = build();
    EXPECT_FALSE(visible(idx, "gone"));
    EXPECT_TRUE(visible(idx, "back"));  // a copy above the whiteout shows
}

TEST_F(DirIndexTest, OciWhiteoutHidesBelowButNotItsOwnLayer) {
    file(3, "a");
    file(2, ".wh.a");
    file(2, "b");
    file(2, ".wh.b");
    file(3, "b");
    auto idx = build();
    EXPECT_FALSE(visible(idx, "a"));
    EXPECT_TRUE(visible(idx, "b"));
    EXPECT_EQ(idx.find("b")->layer, 2);
    EXPECT_FALSE(visible(idx, ".wh.a"));  // the marker never shows
}

TEST_F(DirIndexTest, OciOpaqueMarkerEndsTheMergeBelowItsLayer) {
    file(2, "d/mine");
    file(2, "d/.wh..wh..opq");
    file(3, "d/below");
    auto idx = build("d");
    EXPECT_TRUE(visible(idx, "mine"));
    EXPECT_FALSE(visible(idx, "below"));
    EXPECT_FALSE(visible(idx, ".wh..wh..opq"));
    ASSERT_EQ(idx.stack.size(), 1u);  // layer 1 has no d; layer 3 is cut off
    EXPECT_EQ(idx.stack[0].layer, 2);
}

TEST_F(DirIndexTest, OpaqueXattrEndsTheMergeBelowItsLayer) {
    file(1, "d/top");
    file(3, "d/below");
    std::string d = layer(1) + "/d";
    ASSERT_EQ(lsetxattr(d.c_str(), "user.overlay.opaque", "y", 1, 0), 0);
    auto idx = build("d");
    EXPECT_TRUE(visible(idx, "top"));
    EXPECT_FALSE(visible(idx, "below"));
}

TEST_F(DirIndexTest, XattrWhiteoutCountsOnlyUnderAnXMarkedParent) {
    file(3, "d/f");
    dir(1, "d");
    std::string wh = layer(1) + "/d/f";
    { std::ofstream touch(wh); }
    ASSERT_EQ(lsetxattr(wh.c_str(), "user.overlay.whiteout", "", 0, 0), 0);
    {
        auto idx = build("d");
        EXPECT_TRUE(visible(idx, "f"));  // parent not marked: an ordinary empty file
        EXPECT_EQ(idx.find("f")->layer, 1);
    }
    std::string d = layer(1) + "/d";
    ASSERT_EQ(lsetxattr(d.c_str(), "user.overlay.opaque", "x", 1, 0), 0);
    auto idx = build("d");
    EXPECT_FALSE(visible(idx, "f"));
}

}  // namespace
}  // namespace lamina
