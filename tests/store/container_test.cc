// Containers end to end: mount over loaded layers, diff, commit, save/load round trips,
// concurrent commands and kill -9 in the middle of a load.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "store_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

TEST(Containers, newcomer_flow_load_two_containers_diff_commit_share_layers) {
    REQUIRE_FUSE();
    if (!have_program("skopeo")) SKIP_NEEDING("program:skopeo") << "skopeo is not installed";
    TempDir tmp("lamina-ctr");
    StoreGuard guard{tmp / "store"};
    write_oci_layout(tmp / "layout", demo_image(""), "demo:1");
    auto s = run_command({"skopeo", "copy", "oci:" + (tmp / "layout") + ":demo:1",
                          "docker-archive:" + (tmp / "img.tar") + ":demo:1"});
    ASSERT_EQ(s.status, 0) << s.err;
    Lamina lamina(tmp / "store");
    out_of(lamina({"load", "-i", tmp / "img.tar"}));
    out_of(lamina({"create", "--name", "one", "demo:1"}));
    out_of(lamina({"create", "--name", "two", "demo:1"}));
    std::string m1 = out_of(lamina({"mount", "one"}));
    std::string m2 = out_of(lamina({"mount", "two"}));
    ASSERT_TRUE(is_mountpoint(m1));
    ASSERT_TRUE(is_mountpoint(m2));
    EXPECT_EQ(
        describe_tree(m1),
        "d data\nf data/b b\nd etc\nf etc/motd hello\n\nf etc/two 2\nd keep\nf keep/new new\n");

    write_file(m1 + "/etc/motd", "changed\n");
    ASSERT_EQ(unlink((m1 + "/data/b").c_str()), 0);
    make_dirs(m1 + "/newdir");
    write_file(m1 + "/newdir/f", "f");
    write_file(m2 + "/only-in-two", "2");
    EXPECT_FALSE(access((m2 + "/newdir").c_str(), F_OK) == 0);

    EXPECT_EQ(out_of(lamina({"diff", "one"})),
              "C /data\nD /data/b\nC /etc\nC /etc/motd\nA /newdir\nA /newdir/f");
    EXPECT_EQ(out_of(lamina({"diff", "two"})), "A /only-in-two");

    std::string id = out_of(lamina({"commit", "-m", "first change", "one", "demo:changed"}));
    auto hist = json::parse(out_of(lamina({"history", "--format", "json", "demo:changed"})));
    ASSERT_EQ(hist.size(), 3u);
    EXPECT_EQ(hist[0]["Comment"], "first change");
    auto old_hist = json::parse(out_of(lamina({"history", "--format", "json", "demo:1"})));
    EXPECT_EQ(hist[1]["Layer"], old_hist[0]["Layer"]);
    EXPECT_EQ(hist[2]["Layer"], old_hist[1]["Layer"]);
    auto df = json::parse(out_of(lamina({"system", "df", "--format", "json"})));
    EXPECT_EQ(df["Layers"]["Total"], 3);
    EXPECT_EQ(df["Images"]["Total"], 2);
    EXPECT_EQ(df["Containers"]["Active"], 2);
    auto ps = json::parse(out_of(lamina({"ps", "-a", "-s", "--format", "json"})));
    ASSERT_EQ(ps.size(), 2u);
    for (const auto& c : ps) EXPECT_GT(c["SizeRootFs"].get<int64_t>(), c["SizeRw"].get<int64_t>());

    // A container of the committed image sees the change; the other containers are untouched.
    out_of(lamina({"create", "--name", "three", "demo:changed"}));
    std::string m3 = out_of(lamina({"mount", "three"}));
    EXPECT_EQ(read_file(m3 + "/etc/motd"), "changed\n");
    EXPECT_FALSE(access((m3 + "/data/b").c_str(), F_OK) == 0);
    EXPECT_EQ(read_file(m3 + "/newdir/f"), "f");
    EXPECT_EQ(out_of(lamina({"diff", "three"})), "");

    out_of(lamina({"umount", "one"}));
    EXPECT_FALSE(is_mountpoint(m1));
    auto rmi = lamina({"rmi", "demo:1"});
    EXPECT_EQ(rmi.status, 1);
    EXPECT_NE(rmi.err.find("used by container"), std::string::npos) << rmi.err;
    out_of(lamina({"rm", "one"}));
    out_of(lamina({"rm", "-f", "two"}));
    out_of(lamina({"rm", "-f", "three"}));
    EXPECT_EQ(json::parse(out_of(lamina({"system", "df", "--format", "json"})))["Layers"]["Total"],
              3);
    out_of(lamina({"rmi", "demo:1"}));
    EXPECT_EQ(json::parse(out_of(lamina({"system", "df", "--format", "json"})))["Layers"]["Total"],
              3);
    out_of(lamina({"rmi", "demo:changed"}));
    EXPECT_EQ(json::parse(out_of(lamina({"system", "df", "--format", "json"})))["Layers"]["Total"],
              0);
}

TEST(Containers, commit_save_load_round_trip_keeps_digests_and_tree) {
    REQUIRE_FUSE();
    TempDir tmp("lamina-ctr");
    StoreGuard guard{tmp / "store"};
    StoreGuard guard2{tmp / "other"};
    write_oci_layout(tmp / "layout", demo_image(""), "demo:1");
    Lamina lamina(tmp / "store");
    out_of(lamina({"load", "-i", tmp / "layout"}));
    out_of(lamina({"create", "--name", "c", "demo:1"}));
    std::string m = out_of(lamina({"mount", "c"}));
    write_file(m + "/etc/new", "new");
    ASSERT_EQ(unlink((m + "/etc/motd").c_str()), 0);
    ASSERT_EQ(run_command({"rm", "-rf", m + "/keep"}).status, 0);
    make_dirs(m + "/keep");
    write_file(m + "/keep/again", "again");
    ASSERT_EQ(::symlink("/etc/two", (m + "/link").c_str()), 0);
    std::string tree = describe_tree(m);
    std::string id = out_of(lamina({"commit", "c", "demo:2"}));
    auto inspect = json::parse(out_of(lamina({"inspect", "demo:2"})));
    auto diff_ids = inspect[0]["Config"]["rootfs"]["diff_ids"];

    // The same changes give the same layer digest.
    std::string id2 = out_of(lamina({"commit", "c", "demo:3"}));
    auto inspect2 = json::parse(out_of(lamina({"inspect", "demo:3"})));
    EXPECT_EQ(inspect2[0]["Config"]["rootfs"]["diff_ids"], diff_ids);

    for (std::string format : {"docker-archive", "oci-archive"}) {
        SCOPED_TRACE(format);
        std::string archive = tmp / ("saved-" + format + ".tar");
        out_of(lamina({"save", "--format", format, "-o", archive, "demo:2"}));
        if (have_program("skopeo")) {
            auto s = run_command({"skopeo", "inspect", format + ":" + archive});
            EXPECT_EQ(s.status, 0) << s.err;
        }
        Lamina other(tmp / ("other-" + format));
        StoreGuard g{other.root()};
        out_of(other({"load", "-i", archive}));
        auto again = json::parse(out_of(other({"inspect", "demo:2"})));
        EXPECT_EQ(again[0]["Id"], id);
        EXPECT_EQ(again[0]["Config"]["rootfs"]["diff_ids"], diff_ids);
        if (format == "oci-archive") {
            EXPECT_EQ(again[0]["ManifestDigest"], inspect[0]["ManifestDigest"]);
        }
        out_of(other({"create", "--name", "x", "demo:2"}));
        std::string mx = out_of(other({"mount", "x"}));
        EXPECT_EQ(describe_tree(mx), tree);
        out_of(other({"umount", "x"}));
    }
}

TEST(Containers, diff_reports_whiteouts_opaque_dirs_and_redirects_from_the_upper_dir) {
    TempDir tmp("lamina-ctr");
    write_oci_layout(tmp / "layout", demo_image(""), "demo:1");
    Lamina lamina(tmp / "store");
    out_of(lamina({"load", "-i", tmp / "layout"}));
    std::string id = out_of(lamina({"create", "--name", "c", "demo:1"}));
    std::string upper = tmp / ("store/containers/" + id + "/upper");
    // Written by hand, as the kernel overlay would leave them.
    make_dirs(upper + "/etc");
    ASSERT_EQ(mknod((upper + "/etc/motd").c_str(), S_IFCHR | 0600, 0), 0) << "needs CAP_MKNOD";
    make_dirs(upper + "/data");
    ASSERT_EQ(setxattr((upper + "/data").c_str(), "user.overlay.opaque", "y", 1, 0), 0);
    make_dirs(upper + "/moved");
    ASSERT_EQ(setxattr((upper + "/moved").c_str(), "user.overlay.redirect", "/keep", 5, 0), 0);
    EXPECT_EQ(out_of(lamina({"diff", "c"})),
              "C /data\nD /data/b\nC /etc\nD /etc/motd\nA /moved\nA /moved/new");
}

// An empty file with overlay.whiteout is a whiteout wherever it is: the kernel's lookup honours
// it in a directory not marked 'x' too (only its readdir still lists the name there). diff and
// commit call it a deletion; laminafs and the kernel must not show the file either.
TEST(Containers, xattr_whiteout_in_a_directory_not_marked_x_is_a_deletion_everywhere) {
    REQUIRE_FUSE();
    TempDir tmp("lamina-ctr");
    StoreGuard guard{tmp / "store"};
    write_oci_layout(tmp / "layout", demo_image(""), "demo:1");
    Lamina lamina(tmp / "store");
    out_of(lamina({"load", "-i", tmp / "layout"}));
    std::string id = out_of(lamina({"create", "--name", "c", "demo:1"}));
    std::string upper = tmp / ("store/containers/" + id + "/upper");
    make_dirs(upper + "/etc");  // no overlay.opaque at all
    write_file(upper + "/etc/motd", "");
    ASSERT_EQ(lsetxattr((upper + "/etc/motd").c_str(), "trusted.overlay.whiteout", "y", 1, 0), 0);

    auto expect_no_motd = [](const std::string& root, const char* who) {
        struct stat st;
        errno = 0;
        EXPECT_NE(lstat((root + "/etc/motd").c_str(), &st), 0) << who;
        EXPECT_EQ(errno, ENOENT) << who;
        EXPECT_EQ(read_file(root + "/etc/two"), "2") << who;
    };
    if (can_mount_kernel_overlay()) {
        // Read-only, the upper as the top lower layer over the image layer holding etc/motd.
        std::string base;
        for (const auto& e : std::filesystem::directory_iterator(tmp / "store/l"))
            if (access((e.path().string() + "/etc/motd").c_str(), F_OK) == 0) base = e.path();
        std::string top;
        for (const auto& e : std::filesystem::directory_iterator(tmp / "store/l"))
            if (access((e.path().string() + "/etc/two").c_str(), F_OK) == 0) top = e.path();
        ASSERT_FALSE(base.empty() || top.empty());
        make_dirs(tmp / "kmnt");
        std::string err =
            mount_kernel_overlay("lowerdir=" + upper + ":" + top + ":" + base, tmp / "kmnt");
        ASSERT_TRUE(err.empty()) << err;
        MountGuard kernel(tmp / "kmnt");
        expect_no_motd(tmp / "kmnt", "kernel");
    }
    {
        std::string m = out_of(lamina({"mount", "c"}));
        expect_no_motd(m, "laminafs");
        out_of(lamina({"umount", "c"}));
    }
    EXPECT_EQ(out_of(lamina({"diff", "c"})), "C /etc\nD /etc/motd");
    out_of(lamina({"commit", "c", "demo:2"}));
    out_of(lamina({"create", "--name", "d", "demo:2"}));
    std::string m = out_of(lamina({"mount", "d"}));
    expect_no_motd(m, "committed image");
    out_of(lamina({"umount", "d"}));
    if (!can_mount_kernel_overlay())
        SKIP_NEEDING("overlay") << "diff, commit and laminafs checked; the kernel not";
}

TEST(Containers, two_lamina_processes_at_once_keep_the_store_consistent) {
    TempDir tmp("lamina-ctr");
    auto base = make_tar({file("base", std::string(1 << 20, 'b'))});
    for (int i = 0; i < 4; ++i)
        write_oci_layout(tmp / ("img" + std::to_string(i)),
                         {{base, "gzip"}, {make_tar({file("f" + std::to_string(i), "x")}), ""}},
                         "img:" + std::to_string(i));
    Lamina lamina(tmp / "store");
    out_of(lamina({"info"}));
    std::vector<pid_t> pids;
    for (int i = 0; i < 4; ++i) {
        pid_t pid = fork();
        if (pid == 0) {
            auto argv = lamina.argv({"load", "-i", tmp / ("img" + std::to_string(i))});
            std::vector<char*> a;
            for (auto& s : argv) a.push_back(s.data());
            a.push_back(nullptr);
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            execv(a[0], a.data());
            _exit(127);
        }
        pids.push_back(pid);
    }
    for (pid_t pid : pids) {
        int status;
        waitpid(pid, &status, 0);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    auto images = json::parse(out_of(lamina({"images", "--format", "json"})));
    EXPECT_EQ(images.size(), 4u);
    auto df = json::parse(out_of(lamina({"system", "df", "--format", "json"})));
    EXPECT_EQ(df["Layers"]["Total"], 5);
    EXPECT_EQ(run_command({"sh", "-c", "ls '" + (tmp / "store/layers") + "' | wc -l"}).out, "5\n");
}

TEST(Containers, kill_9_during_load_leaves_a_consistent_store) {
    TempDir tmp("lamina-ctr");
    std::vector<Layer> layers;
    for (int i = 0; i < 6; ++i) {
        std::string big(6 << 20, static_cast<char>('a' + i));
        layers.push_back({make_tar({file("big" + std::to_string(i), big)}), i % 2 ? "gzip" : ""});
    }
    write_oci_layout(tmp / "layout", layers, "big:1");
    tar_dir(tmp / "layout", tmp / "big.tar");
    Lamina lamina(tmp / "store");
    out_of(lamina({"info"}));
    for (int delay_ms : {20, 80, 200, 400}) {
        pid_t pid = fork();
        if (pid == 0) {
            auto argv = lamina.argv({"load", "-i", tmp / "big.tar"});
            std::vector<char*> a;
            for (auto& s : argv) a.push_back(s.data());
            a.push_back(nullptr);
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            dup2(devnull, 2);
            execv(a[0], a.data());
            _exit(127);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        // Whatever point it died at, the store reads back whole: the image is all there or absent.
        auto images = json::parse(out_of(lamina({"images", "--format", "json"})));
        if (!images.empty()) {
            EXPECT_EQ(images[0]["Layers"].size(), 6u);
            break;
        }
    }
    // The next command clears debris and completes the load.
    out_of(lamina({"load", "-i", tmp / "big.tar"}));
    EXPECT_EQ(run_command({"sh", "-c", "ls -A '" + (tmp / "store/tmp") + "' | wc -l"}).out, "0\n");
    EXPECT_EQ(run_command({"sh", "-c", "ls '" + (tmp / "store/layers") + "' | wc -l"}).out, "6\n");
    auto df = json::parse(out_of(lamina({"system", "df", "--format", "json"})));
    EXPECT_EQ(df["Layers"]["Total"], 6);
}

TEST(Containers, images_deeper_than_128_layers_mount_through_a_squashed_base) {
    REQUIRE_FUSE();
    TempDir tmp("lamina-ctr");
    StoreGuard guard{tmp / "store"};
    std::vector<Layer> layers;
    for (int i = 0; i < 140; ++i)
        layers.push_back({make_tar({file("f" + std::to_string(i), std::to_string(i))}), ""});
    layers.push_back({make_tar({whiteout("f0")}), ""});
    write_oci_layout(tmp / "layout", layers, "deep:1");
    Lamina lamina(tmp / "store");
    out_of(lamina({"load", "-i", tmp / "layout"}));
    out_of(lamina({"create", "--name", "d", "deep:1"}));
    std::string m = out_of(lamina({"mount", "d"}));
    EXPECT_FALSE(access((m + "/f0").c_str(), F_OK) == 0);
    EXPECT_EQ(read_file(m + "/f1"), "1");
    EXPECT_EQ(read_file(m + "/f139"), "139");
    out_of(lamina({"umount", "d"}));
    // The squashed base is cached: a second mount reuses it.
    out_of(lamina({"mount", "d"}));
    EXPECT_EQ(run_command({"sh", "-c", "ls '" + (tmp / "store/squash") + "' | wc -l"}).out, "1\n");
}

}  // namespace
}  // namespace lamina::test
