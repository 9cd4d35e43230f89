// The node table: lookup references, FORGET, renames and unhashing.
#include "node.h"

#include <fcntl.h>

#include "dir_index.h"

#include <gtest/gtest.h>

namespace lamina {
namespace {

std::unique_ptr<Node> dir_node() {
    auto n = std::make_unique<Node>();
    n->type = S_IFDIR;
    return n;
}

TEST(NodeTable, SecondLookupOfANameReturnsTheSameNodeWithAnotherReference) {
    NodeTable t;
    auto fresh = dir_node();
    Node* a = t.find_or_insert(t.root(), "a", fresh);
    EXPECT_EQ(fresh, nullptr);
    auto again = dir_node();
    Node* b = t.find_or_insert(t.root(), "a", again);
    EXPECT_EQ(a, b);
    EXPECT_NE(again, nullptr);  // not consumed
    EXPECT_EQ(a->nlookup, 2u);
}

TEST(NodeTable, ForgetFreesTheNodeAndItsUnusedParents) {
    NodeTable t;
    auto fa = dir_node();
    Node* a = t.find_or_insert(t.root(), "a", fa);
    auto fb = dir_node();
    Node* b = t.find_or_insert(a, "b", fb);
    EXPECT_EQ(t.size(), 3u);
    t.forget(a, 1);  // a stays: b still refers to it
    EXPECT_EQ(t.find(t.root(), "a"), a);
    t.forget(b, 1);
    EXPECT_EQ(t.size(), 1u);
    EXPECT_EQ(t.find(t.root(), "a"), nullptr);
}

TEST(NodeTable, SameNameUnderDifferentParentsAreDifferentNodes) {
    NodeTable t;
    auto fa = dir_node(), fb = dir_node();
    Node* a = t.find_or_insert(t.root(), "a", fa);
    Node* b = t.find_or_insert(t.root(), "b", fb);
    auto f1 = dir_node(), f2 = dir_node();
    EXPECT_NE(t.find_or_insert(a, "x", f1), t.find_or_insert(b, "x", f2));
}

TEST(NodeTable, RenameMovesTheNameAndDropsTheReplacedOne) {
    NodeTable t;
    auto fa = dir_node(), fb = dir_node(), fx = dir_node();
    Node* a = t.find_or_insert(t.root(), "a", fa);
    Node* b = t.find_or_insert(t.root(), "b", fb);
    Node* x = t.find_or_insert(a, "x", fx);
    t.rename(x, b, "y");
    EXPECT_EQ(t.find(a, "x"), nullptr);
    EXPECT_EQ(t.find(b, "y"), x);
    EXPECT_EQ(x->parent, b);
    EXPECT_EQ(x->name, "y");
    // A node renamed over keeps living for the kernel's references but is no longer found.
    auto fz = dir_node();
    Node* z = t.find_or_insert(b, "z", fz);
    t.rename(z, b, "y");
    EXPECT_EQ(t.find(b, "y"), z);
    EXPECT_EQ(x->nlookup, 1u);
    t.forget(x, 1);
    t.forget(z, 1);
}

TEST(NodeTable, UnhashedNodeLivesUntilForgotten) {
    NodeTable t;
    auto fa = dir_node();
    Node* a = t.find_or_insert(t.root(), "a", fa);
    t.unhash(a);
    EXPECT_EQ(t.find(t.root(), "a"), nullptr);
    EXPECT_EQ(t.size(), 2u);
    t.forget(a, 1);
    EXPECT_EQ(t.size(), 1u);
}

TEST(Ino, LayerNumberKeepsInodesOfDifferentLayersApart) {
    EXPECT_NE(make_ino(1, 42), make_ino(2, 42));
    EXPECT_EQ(make_ino(3, 42), make_ino(3, 42));
    EXPECT_EQ(make_ino(0, 42), 42u);
}

TEST(Ino, HugeRealInodesStayInsideTheirLayerRange) {
    uint64_t big = ~uint64_t{0};
    EXPECT_EQ(make_ino(5, big) >> 56, 5u);
    EXPECT_EQ(make_ino(128, big) >> 56, 128u);
}

std::shared_ptr<const DirIndex> index_of(size_t entries) {
    auto index = std::make_shared<DirIndex>();
    for (size_t i = 0; i < entries; ++i) index->entries.emplace_back().name = std::to_string(i);
    return index;
}

TEST(NodeTable, DirIndexCacheEvictsTheLeastRecentlyUsedOverItsLimit) {
    NodeTable t;
    t.set_index_entry_limit(25);  // each index costs its entries plus one
    auto fa = dir_node(), fb = dir_node(), fc = dir_node();
    Node* a = t.find_or_insert(t.root(), "a", fa);
    Node* b = t.find_or_insert(t.root(), "b", fb);
    Node* c = t.find_or_insert(t.root(), "c", fc);
    t.install_index(a, index_of(9));
    t.install_index(b, index_of(9));
    EXPECT_NE(t.cached_index(a), nullptr);  // a is now the most recently used
    auto kept = t.install_index(c, index_of(9));
    EXPECT_NE(kept, nullptr);
    EXPECT_EQ(t.cached_index(b), nullptr);  // evicted: least recently used
    EXPECT_NE(t.cached_index(a), nullptr);
    EXPECT_NE(t.cached_index(c), nullptr);
    auto s = t.stats();
    EXPECT_EQ(s.dir_indexes, 2u);
    EXPECT_EQ(s.dir_index_entries, 20u);
    EXPECT_EQ(s.dir_index_evictions, 1u);
}

TEST(NodeTable, DirIndexOfAForgottenNodeLeavesTheCache) {
    NodeTable t;
    auto fa = dir_node();
    Node* a = t.find_or_insert(t.root(), "a", fa);
    t.install_index(a, index_of(5));
    EXPECT_EQ(t.stats().dir_index_entries, 6u);
    t.forget(a, 1);
    EXPECT_EQ(t.stats().dir_indexes, 0u);
    EXPECT_EQ(t.stats().dir_index_entries, 0u);
}

TEST(NodeTable, ZeroDirIndexLimitCachesNothingButStillAnswers) {
    NodeTable t;
    t.set_index_entry_limit(0);
    auto fa = dir_node();
    Node* a = t.find_or_insert(t.root(), "a", fa);
    auto index = t.install_index(a, index_of(3));
    ASSERT_NE(index, nullptr);
    EXPECT_EQ(index->entries.size(), 3u);
    EXPECT_EQ(t.cached_index(a), nullptr);
}

// File handles: what the kernel forgot stays, up to the limit, and a handle's id brings it back
// with its parents; a retired directory holds no descriptor; the oldest leaf goes first.
TEST(NodeTable, ForgottenNodesAreRetiredUpToTheLimitAndAHandleBringsThemBack) {
    NodeTable t;
    t.set_retired_limit(2);
    auto fd = dir_node();
    Node* d = t.find_or_insert(t.root(), "d", fd);
    auto ff = dir_node();
    ff->type = S_IFREG;
    Node* f = t.find_or_insert(d, "f", ff);
    uint64_t f_id = t.id_of(f);
    UniqueFd held(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(d->upper_dir.set(held));
    t.forget(d, 1);  // f is still active below: d is only kept
    EXPECT_EQ(t.stats().retired_nodes, 0u);
    EXPECT_GE(d->upper_dir.get(), 0);
    t.forget(f, 1);  // f retires, and d with it: nothing active below d now
    EXPECT_EQ(t.stats().retired_nodes, 2u);
    EXPECT_TRUE(d->retired && f->retired);
    EXPECT_EQ(d->upper_dir.get(), -1) << "a retired directory keeps its descriptor";
    EXPECT_EQ(t.size(), 3u);

    // A handle's id: the file comes back, and so does every retired parent of it.
    EXPECT_EQ(t.revive(f_id), f);
    EXPECT_FALSE(d->retired || f->retired);
    EXPECT_EQ(f->nlookup, 1u);
    EXPECT_EQ(t.revive(f_id ^ 0x10), nullptr) << "an id the table never gave";
    t.forget(f, 1);
    EXPECT_EQ(t.stats().retired_nodes, 2u);

    // Past the limit the oldest goes, a leaf first: f (d still has it as a child).
    auto fg = dir_node();
    Node* g = t.find_or_insert(t.root(), "g", fg);
    t.forget(g, 1);
    EXPECT_EQ(t.stats().retired_nodes, 2u);
    EXPECT_EQ(t.find(d, "f"), nullptr);
    EXPECT_EQ(t.revive(f_id), nullptr) << "an evicted node's id";
    EXPECT_TRUE(d->retired && g->retired);

    // No room at all: every retired node goes.
    t.set_retired_limit(0);
    EXPECT_EQ(t.size(), 1u);
}

}  // namespace
}  // namespace lamina
