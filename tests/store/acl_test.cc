// POSIX ACLs in GNU tar's text form (SCHILY.acl.access and SCHILY.acl.default, what
// `tar --acls` writes without --xattrs): applied on unpack as the system.posix_acl_* xattrs, and
// written back in both forms by commit, so `tar --acls -x` of a committed layer restores them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "needs.h"
#include "store_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

std::string getfacl(const std::string& dir, const std::string& paths) {
    auto r = run_shell("cd '" + dir + "' && getfacl -n -R " + paths);
    EXPECT_EQ(r.status, 0) << r.err;
    return r.out;
}

TEST(TarAcls, gnu_tar_text_acls_survive_import_commit_and_save) {
    REQUIRE_FUSE();
    if (!have_program("setfacl") || !have_program("getfacl") || !have_program("tar"))
        SKIP_NEEDING("program:setfacl") << "acl (setfacl, getfacl) and GNU tar build the layer";
    TempDir tmp("lamina-acl");
    std::string src = tmp / "src";
    make_dirs(src + "/d");
    write_file(src + "/d/f", "hi\n");
    auto r = run_shell("setfacl -m u:1234:r-x,g:2345:rw-,m:rwx '" + src +
                       "/d/f' && setfacl -d -m u:1234:rwx '" + src + "/d'");
    if (r.status != 0)
        SKIP_NEEDING("program:setfacl") << "no POSIX ACLs on " << src << ": " << r.err;
    std::string want = getfacl(src, "d");
    ASSERT_NE(want.find("user:1234:r-x"), std::string::npos) << want;
    ASSERT_EQ(run_command({"tar", "--acls", "-C", src, "-cf", tmp / "layer.tar", "."}).status, 0);
    ASSERT_EQ(run_shell("strings '" + (tmp / "layer.tar") + "' | grep -c SCHILY.xattr").out, "0\n")
        << "the text form alone";

    Lamina lamina(tmp / "store");
    auto imported = lamina({"import", tmp / "layer.tar", "acl:1"});
    ASSERT_EQ(imported.status, 0) << imported.err;
    EXPECT_EQ(imported.err, "") << "no ACL reported lost";
    auto layer = json::parse(out_of(lamina({"inspect", "acl:1"})))[0]["Layers"][0]["Path"];
    EXPECT_EQ(getfacl(layer.get<std::string>(), "d"), want);

    // Through the mount, then committed: the copied-up file and a new directory keep theirs.
    out_of(lamina({"create", "--name", "c", "acl:1"}));
    std::string m = out_of(lamina({"mount", "c"}));
    EXPECT_EQ(getfacl(m, "d"), want) << "the mount shows them";
    ASSERT_EQ(run_shell("setfacl -m u:4321:r-- '" + m + "/d/f' && mkdir '" + m +
                        "/new' && setfacl -d -m g:99:rwx '" + m + "/new'")
                  .status,
              0);
    std::string changed = getfacl(m, "d/f new");
    out_of(lamina({"umount", "c"}));
    out_of(lamina({"commit", "c", "acl:2"}));
    out_of(lamina({"save", "-o", tmp / "out.tar", "acl:2"}));
    make_dirs(tmp / "archive");
    ASSERT_EQ(run_command({"tar", "-C", tmp / "archive", "-xf", tmp / "out.tar"}).status, 0);
    auto manifest = json::parse(read_file(tmp / "archive/manifest.json"));
    std::string top = tmp / ("archive/" + manifest[0]["Layers"].back().get<std::string>());
    make_dirs(tmp / "restored");
    r = run_command({"tar", "--acls", "-C", tmp / "restored", "-xpf", top});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(getfacl(tmp / "restored", "d/f new"), changed);
    EXPECT_NE(changed.find("user:4321:r--"), std::string::npos) << changed;
    EXPECT_NE(changed.find("default:group:99:rwx"), std::string::npos) << changed;
}

}  // namespace
}  // namespace lamina::test
