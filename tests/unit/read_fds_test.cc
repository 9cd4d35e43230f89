// The read descriptor pool: bounded, least recently used out first, a borrowed descriptor stays
// open after eviction, and an entry for the other copy of a node is stale.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <vector>

#include "node.h"
#include "read_fds.h"

namespace lamina {
namespace {

UniqueFd open_null() {
    return UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
}

bool is_open(int fd) {
    return fcntl(fd, F_GETFD) != -1;
}

TEST(ReadFdPool, keeps_at_most_its_limit_and_evicts_the_least_recently_used) {
    ReadFdPool pool(2);
    Node a, b, c;
    pool.insert(&a, false, open_null());
    pool.insert(&b, false, open_null());
    ASSERT_NE(pool.find(&a, false), nullptr);  // a is now more recent than b
    pool.insert(&c, false, open_null());
    EXPECT_EQ(pool.stats().entries, 2u);
    EXPECT_EQ(pool.stats().evictions, 1u);
    EXPECT_NE(pool.find(&a, false), nullptr);
    EXPECT_EQ(pool.find(&b, false), nullptr);
    EXPECT_NE(pool.find(&c, false), nullptr);
}

TEST(ReadFdPool, a_borrowed_descriptor_outlives_its_eviction) {
    ReadFdPool pool(1);
    Node a, b;
    ReadFdPool::Fd borrowed = pool.insert(&a, false, open_null());
    int fd = borrowed->get();
    pool.insert(&b, false, open_null());
    EXPECT_EQ(pool.find(&a, false), nullptr);
    EXPECT_TRUE(is_open(fd)) << "evicted while a request still used it";
    borrowed.reset();
    EXPECT_FALSE(is_open(fd)) << "the last borrower did not close it";
}

TEST(ReadFdPool, an_entry_for_the_other_copy_is_stale) {
    ReadFdPool pool(4);
    Node a;
    pool.insert(&a, false, open_null());
    EXPECT_EQ(pool.find(&a, true), nullptr) << "a copy-up must reopen the upper copy";
    EXPECT_EQ(pool.stats().entries, 0u);
    pool.insert(&a, true, open_null());
    EXPECT_NE(pool.find(&a, true), nullptr);
}

TEST(ReadFdPool, the_first_insert_for_a_copy_wins_and_drop_forgets) {
    ReadFdPool pool(4);
    Node a;
    ReadFdPool::Fd first = pool.insert(&a, false, open_null());
    UniqueFd second = open_null();
    int second_fd = second.get();
    ReadFdPool::Fd got = pool.insert(&a, false, std::move(second));
    EXPECT_EQ(got, first);
    EXPECT_FALSE(is_open(second_fd)) << "the losing descriptor leaked";
    pool.drop(&a);
    EXPECT_EQ(pool.find(&a, false), nullptr);
    EXPECT_EQ(pool.stats().entries, 0u);
}

}  // namespace
}  // namespace lamina
