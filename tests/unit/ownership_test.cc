// The override xattr's formats, the id mappings and squash options, and containers/storage's
// spelling of uidmapping=.
#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include "options.h"
#include "ownership.h"

namespace lamina {
namespace {

TEST(Ownership, override_with_type_field_is_read) {
    auto o = parse_override_stat("1000:1011:0644:file");
    ASSERT_TRUE(o);
    EXPECT_EQ(o->uid, 1000u);
    EXPECT_EQ(o->gid, 1011u);
    EXPECT_EQ(o->mode, S_IFREG | 0644u);
    o = parse_override_stat("0:0:4755:file");
    ASSERT_TRUE(o);
    EXPECT_EQ(o->mode & 07777, 04755u);
    o = parse_override_stat("1:2:0600:char-10-11");
    ASSERT_TRUE(o);
    EXPECT_EQ(o->mode, S_IFCHR | 0600u);
    EXPECT_EQ(o->rdev, makedev(10, 11));
    o = parse_override_stat("1:2:0600:block-8-1-option_from_the_future");
    ASSERT_TRUE(o);
    EXPECT_EQ(o->mode, S_IFBLK | 0600u);
    EXPECT_EQ(o->rdev, makedev(8, 1));
    o = parse_override_stat("1:2:0755:dir");
    ASSERT_TRUE(o);
    EXPECT_EQ(o->mode, S_IFDIR | 0755u);
}

TEST(Ownership, override_in_three_field_form_is_read) {
    auto o = parse_override_stat("7:8:0100640");
    ASSERT_TRUE(o);
    EXPECT_EQ(o->uid, 7u);
    EXPECT_EQ(o->mode, S_IFREG | 0640u);
    o = parse_override_stat("0:0:020666");
    ASSERT_TRUE(o);
    EXPECT_EQ(o->mode, S_IFCHR | 0666u);
    o = parse_override_stat("0:0:755");
    ASSERT_TRUE(o);
    EXPECT_EQ(o->mode, 0755u);  // no type: the host file's type stays
}

TEST(Ownership, malformed_override_is_ignored) {
    for (const char* bad : {"", "1:2", "x:2:0644", "1:2:0999", "1:2:0644:disk-1-2",
                            "1:2:0644:char-1", "1:2:0644:char-a-b", "-1:2:0644"}) {
        EXPECT_FALSE(parse_override_stat(bad)) << bad;
    }
}

TEST(Ownership, override_is_written_as_containers_storage_writes_it) {
    EXPECT_EQ(format_override_stat({1000, 1011, S_IFREG | 0644, 0}), "1000:1011:0644:file");
    EXPECT_EQ(format_override_stat({1001, 1012, S_IFDIR | 0755, 0}), "1001:1012:0755:dir");
    EXPECT_EQ(format_override_stat({1012, 1022, S_IFREG | 04755, 0}), "1012:1022:4755:file");
    EXPECT_EQ(format_override_stat({0, 0, S_IFLNK | 0777, 0}), "0:0:0777:symlink");
    // Special files carry their type bits in MODE too, for three-field readers.
    EXPECT_EQ(format_override_stat({1006, 1017, S_IFCHR | 0600, makedev(1, 3)}),
              "1006:1017:020600:char-1-3");
    EXPECT_EQ(format_override_stat({0, 0, S_IFBLK | 0660, makedev(8, 0)}), "0:0:060660:block-8-0");
    EXPECT_EQ(format_override_stat({0, 0, S_IFIFO | 0644, 0}), "0:0:010644:pipe");
    for (StatOverride o : {StatOverride{5, 6, S_IFCHR | 0620, makedev(4, 1)},
                           StatOverride{5, 6, S_IFDIR | 01777, 0}}) {
        auto back = parse_override_stat(format_override_stat(o));
        ASSERT_TRUE(back);
        EXPECT_EQ(back->mode, o.mode);
        EXPECT_EQ(back->rdev, o.rdev);
    }
}

TEST(Ownership, override_makes_a_regular_file_a_device_but_never_changes_dirs) {
    struct stat st {};
    st.st_mode = S_IFREG | 0600;
    st.st_size = 0;
    apply_override({0, 0, S_IFCHR | 0666, makedev(1, 3)}, st);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_EQ(st.st_rdev, makedev(1, 3));
    EXPECT_EQ(st.st_mode & 07777, 0666u);
    st = {};
    st.st_mode = S_IFDIR | 0700;
    apply_override({3, 4, S_IFCHR | 0666, makedev(1, 3)}, st);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_uid, 3u);
    EXPECT_EQ(st.st_mode & 07777, 0666u);
}

MountOptions with(const std::string& optstr) {
    MountOptions opts;
    EXPECT_EQ(apply_mount_options(optstr, opts), "");
    return opts;
}

TEST(Ownership, mapping_shows_disk_ids_as_host_ids_and_writes_them_back) {
    IdShift ids(with("uidmapping=0:1000:1:1:110000:65536,gidmapping=0:2000:1"));
    EXPECT_EQ(ids.shown_uid(0), 1000u);
    EXPECT_EQ(ids.shown_uid(1), 110000u);
    EXPECT_EQ(ids.shown_uid(65536), 175535u);
    EXPECT_EQ(ids.shown_uid(65537), kOverflowId);
    EXPECT_EQ(ids.shown_gid(0), 2000u);
    EXPECT_EQ(ids.shown_gid(1), kOverflowId);
    EXPECT_EQ(ids.disk_uid(1000), 0u);
    EXPECT_EQ(ids.disk_uid(110005), 6u);
    EXPECT_EQ(ids.disk_uid(0), kOverflowId);
    EXPECT_EQ(ids.disk_gid(2000), 0u);
    EXPECT_FALSE(ids.identity());
}

TEST(Ownership, host_ids_from_an_idmapped_lower_are_not_mapped_again) {
    struct stat st {};
    st.st_uid = 100005;
    st.st_gid = 100006;
    st.st_mode = S_IFDIR | 0755;
    st.st_nlink = 4;
    struct stat s = st;
    IdShift(with("uidmapping=0:100000:65536,gidmapping=0:100000:65536")).present(s, true);
    EXPECT_EQ(s.st_uid, 100005u);
    EXPECT_EQ(s.st_gid, 100006u);
    s = st;
    IdShift(with("uidmapping=0:100000:65536,squash_to_gid=7,static_nlink")).present(s, true);
    EXPECT_EQ(s.st_uid, 100005u);
    EXPECT_EQ(s.st_gid, 7u);
    EXPECT_EQ(s.st_nlink, 1u);
}

TEST(Ownership, containers_storage_spelling_of_the_mapping_is_accepted) {
    MountOptions opts = with("uidmapping=:0:1000:1:1:100000:65536,gidmapping=:0:1000:1");
    ASSERT_EQ(opts.uid_map.size(), 2u);
    EXPECT_EQ(opts.uid_map[1].host, 100000u);
    ASSERT_EQ(opts.gid_map.size(), 1u);
    MountOptions bad;
    EXPECT_NE(apply_mount_options("uidmapping=::0:1000:1", bad), "");
    EXPECT_NE(apply_mount_options("uidmapping=:", bad), "");
}

TEST(Ownership, squash_options_and_static_nlink) {
    struct stat st {};
    st.st_uid = 33;
    st.st_gid = 44;
    st.st_mode = S_IFDIR | 0755;
    st.st_nlink = 7;
    struct stat s = st;
    IdShift(with("squash_to_root")).present(s);
    EXPECT_EQ(s.st_uid, 0u);
    EXPECT_EQ(s.st_gid, 0u);
    EXPECT_EQ(s.st_nlink, 7u);
    s = st;
    IdShift(with("squash_to_root,squash_to_gid=9")).present(s);
    EXPECT_EQ(s.st_uid, 0u);
    EXPECT_EQ(s.st_gid, 9u);
    s = st;
    IdShift(with("squash_to_uid=5")).present(s);
    EXPECT_EQ(s.st_uid, 5u);
    EXPECT_EQ(s.st_gid, 44u);
    s = st;
    IdShift(with("static_nlink")).present(s);
    EXPECT_EQ(s.st_nlink, 1u);
    EXPECT_EQ(s.st_uid, 33u);
    s = st;
    s.st_mode = S_IFREG | 0644;
    s.st_nlink = 3;
    IdShift(with("static_nlink")).present(s);
    EXPECT_EQ(s.st_nlink, 3u);
    EXPECT_TRUE(IdShift(MountOptions{}).identity());
}

}  // namespace
}  // namespace lamina
