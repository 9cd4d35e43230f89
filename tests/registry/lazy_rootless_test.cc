// Lazy layers without privilege: a plain user's own store pulls an eStargz image lazily, mounts
// it through fusermount3, and reads files whose modes deny the owner writing (0444, 0555), which
// its fetch helper must still fill.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>
#include <string>

#include "needs.h"
#include "registry_fixture.h"
#include "test_user.h"

namespace lamina::test {
namespace {

// Copies of the three programs in a directory the test user may enter (the build directory may
// be under a home it cannot), side by side, so each finds the others as installed ones do.
std::string user_bin_dir(const TempDir& tmp) {
    std::string dir = tmp / "bin";
    make_dirs(dir);
    chmod(dir.c_str(), 0755);
    std::string lamina = lamina_binary();
    std::string tools = lamina.substr(0, lamina.rfind('/'));
    for (const auto& [from, name] : {std::pair{lamina, "lamina"},
                                     {laminafs_binary(), "laminafs"},
                                     {tools + "/lamina-lazy-fetch", "lamina-lazy-fetch"}}) {
        auto r = run_command({"install", "-m", "0755", from, dir + "/" + name});
        EXPECT_EQ(r.status, 0) << from << ": " << r.err;
    }
    return dir;
}

TEST(LazyRootless, a_plain_user_mounts_a_lazy_image_and_reads_files_it_may_not_write) {
    REQUIRE_REGISTRY();
    if (!can_mount_fuse()) SKIP_NEEDING("fuse") << skip_reason();
    if (!test_user()) SKIP_NEEDING("user") << "cannot make the test user " << kTestUser;
    if (!have_program("setpriv")) SKIP_NEEDING("program:setpriv") << "no setpriv";
    if (!have_program("fusermount3")) SKIP_NEEDING("program:fusermount3") << "no fusermount3";
    let_everyone_open_dev_fuse();

    TempDir tmp{"lamina-lazy-rootless"};
    chmod(tmp.path().c_str(), 0755);
    RegistryEnv env;
    Registry reg;
    std::string lazy = push_estargz(reg, tmp,
                                    {{make_tar({dir("ro"), file("ro/readonly", "read only\n", 0444),
                                                file("ro/tool", "#!/bin/sh\necho tool\n", 0555),
                                                file("ro/big", random_bytes(256 << 10, 3), 0444),
                                                dir("rw"), file("rw/plain", "plain\n")}),
                                      "gzip"}},
                                    "test/ro");

    // The user's home: its store, its config; nothing of root's.
    std::string home = tmp / "home";
    make_dirs(home);
    run_command({"chown", "-R",
                 std::to_string(test_user()->uid) + ":" + std::to_string(test_user()->gid), home});
    std::string bin = user_bin_dir(tmp);
    std::string store = home + "/store";
    StoreGuard guard{store};
    std::string script =
        "set -e; export HOME=" + shell_quote(home) +
        " LAMINA_CONFIG_DIR=" + shell_quote(home + "/config") +
        " DOCKER_CONFIG=" + shell_quote(home + "/docker") +
        " CONTAINERS_REGISTRIES_CONF=/dev/null XDG_RUNTIME_DIR=" + shell_quote(home + "/run") +
        "; L() { " + shell_quote(bin + "/lamina") + " --root " + shell_quote(store) +
        " \"$@\"; }; "
        "L pull --lazy --tls-verify=false " +
        shell_quote(lazy) +
        " >/dev/null; "
        "L create --name c " +
        shell_quote(lazy) +
        " >/dev/null; "
        "m=$(L mount c); "
        "cat \"$m/ro/readonly\" \"$m/ro/tool\" \"$m/rw/plain\"; \"$m/ro/tool\"; "
        "sha256sum < \"$m/ro/big\"; stat -c %a \"$m/ro/readonly\" \"$m/ro/tool\"; "
        "L umount c >/dev/null";
    auto r = run_command(
        {"env", "--chdir=/", "setpriv", "--reuid=" + std::to_string(test_user()->uid),
         "--regid=" + std::to_string(test_user()->gid), "--clear-groups", "sh", "-c", script},
        120);
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    std::string big_sum = sha256(random_bytes(256 << 10, 3)).substr(7);
    EXPECT_EQ(r.out, "read only\n#!/bin/sh\necho tool\nplain\ntool\n" + big_sum + "  -\n444\n555\n")
        << r.err;
    // In the layer itself: filled, and the modes as the image has them (the write bit lent for
    // the fill is taken back).
    auto layer = run_command(
        {"sh", "-c",
         "cd " + shell_quote(store) + "/layers/*/diff/ro && stat -c '%a %b' readonly tool big"});
    ASSERT_EQ(layer.status, 0) << layer.err;
    std::istringstream modes(layer.out);
    for (const char* want : {"444", "555", "444"}) {
        std::string mode;
        long blocks = 0;
        modes >> mode >> blocks;
        EXPECT_EQ(mode, want) << layer.out;
        EXPECT_GT(blocks, 0) << layer.out;
    }
}

}  // namespace
}  // namespace lamina::test
