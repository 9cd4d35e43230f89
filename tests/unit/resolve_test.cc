// Resolving beneath a layer root: paths longer than one openat2 call takes are walked a piece at a
// time, and a single name longer than a piece is refused, not cut.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "resolve.h"

namespace lamina {
namespace {

class ResolveTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lamina-resolve.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        root_.reset(::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        ASSERT_TRUE(root_);
    }
    void TearDown() override {
        std::string cmd = "rm -rf '" + dir_ + "'";
        (void)system(cmd.c_str());
    }

    std::string dir_;
    UniqueFd root_;
};

// 20 names of 250 bytes (5,020 bytes in all) made with mkdirat, then opened in one call.
TEST_F(ResolveTest, open_beneath_walks_a_path_longer_than_path_max_in_pieces) {
    std::string rel;
    UniqueFd at(dup(root_.get()));
    for (int i = 0; i < 20; ++i) {
        std::string name(250, static_cast<char>('a' + i));
        ASSERT_EQ(mkdirat(at.get(), name.c_str(), 0755), 0);
        at.reset(openat(at.get(), name.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        ASSERT_TRUE(at);
        rel += (rel.empty() ? "" : "/") + name;
    }
    ASSERT_GT(rel.size(), static_cast<size_t>(PATH_MAX));
    UniqueFd fd(open_beneath(root_.get(), rel, O_PATH | O_DIRECTORY));
    ASSERT_TRUE(fd) << strerror(errno);
    struct stat want, got;
    ASSERT_EQ(fstat(at.get(), &want), 0);
    ASSERT_EQ(fstat(fd.get(), &got), 0);
    EXPECT_EQ(got.st_ino, want.st_ino);
}

// No '/' within a piece's reach: nothing to cut at, so the walk stops with ENAMETOOLONG (the
// name could not exist on any filesystem the kernel mounts).
TEST_F(ResolveTest, open_beneath_refuses_a_name_longer_than_a_piece) {
    ASSERT_EQ(mkdirat(root_.get(), "sub", 0755), 0);
    for (const std::string& rel :
         {std::string(PATH_MAX + 10, 'x'), "sub/" + std::string(PATH_MAX + 10, 'x'),
          "/" + std::string(PATH_MAX + 10, 'x')}) {
        SCOPED_TRACE(rel.substr(0, 8));
        errno = 0;
        EXPECT_EQ(open_beneath(root_.get(), rel, O_PATH), -1);
        EXPECT_EQ(errno, ENAMETOOLONG);
    }
}

// is_joined_path answers what comparing with join_path would, without building the path.
TEST(PathUtil, is_joined_path_agrees_with_join_path) {
    const char* dirs[] = {"", "a", "a/b", "ab"};
    const char* names[] = {"b", "ab", "a/b", "", "x"};
    const char* paths[] = {"b", "a/b", "a/b/a/b", "ab/b", "a/ab", "ab", "a/bx", "x", "a/"};
    for (const char* d : dirs)
        for (const char* n : names)
            for (const char* p : paths)
                EXPECT_EQ(is_joined_path(p, d, n), join_path(d, n) == p)
                    << "'" << p << "' '" << d << "' '" << n << "'";
}

}  // namespace
}  // namespace lamina
