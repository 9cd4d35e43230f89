// The node table: lookup references, FORGET, renames and unhashing.
#include "node.h"

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

}  // namespace
}  // namespace lamina
