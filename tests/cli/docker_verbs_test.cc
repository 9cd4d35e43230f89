// The docker verbs that make and change image and container metadata, run as a user types them:
// commit and import --change, create -e and --label, rename, image and container prune, and cp
// between a container and the host in both directions.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "needs.h"
#include "script_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

// The "config" object of an image's config, as inspect shows it.
json image_config(Lamina& lamina, const std::string& ref) {
    return json::parse(out_of(lamina({"inspect", "-f", "{{json .Config.config}}", ref})));
}

TEST_F(Script, commit_takes_changes_author_and_the_containers_env_and_labels) {
    out_of(lamina({"create", "--name", "web", "-e", "A=1", "--env", "PATH=/bin", "-l", "tier=web",
                   "--label", "team=ops", "app:1"}));
    auto c = json::parse(out_of(lamina({"container", "inspect", "web"})))[0];
    EXPECT_EQ(c["Config"]["Env"], json({"A=1", "PATH=/bin"}));
    EXPECT_EQ(c["Config"]["Labels"], json({{"team", "ops"}, {"tier", "web"}}));
    EXPECT_EQ(c["Config"]["Image"], "app:1");
    EXPECT_EQ(c["Image"], out_of(lamina({"images", "-q", "--no-trunc", "app:1"})))
        << "the image's ID, never null";
    EXPECT_EQ(out_of(lamina({"ps", "-a", "--filter", "label=tier=web", "--format", "{{.Names}}"})),
              "web");
    EXPECT_EQ(out_of(lamina({"ps", "-a", "--filter", "label=tier=db", "-q"})), "");
    EXPECT_EQ(out_of(lamina({"ps", "-a", "--format", "{{.Labels}}"})), "team=ops,tier=web");

    auto r = lamina({"commit",
                     "-a",
                     "Ann <ann@example.com>",
                     "-m",
                     "with changes",
                     "--change",
                     "ENV B=2 C=\"two words\"",
                     "-c",
                     "ENV PATH /usr/bin:/bin",
                     "-c",
                     "CMD [\"/bin/app\", \"--serve\"]",
                     "-c",
                     "ENTRYPOINT /bin/start now",
                     "-c",
                     "WORKDIR /srv",
                     "-c",
                     "WORKDIR data/../www",
                     "-c",
                     "USER app:staff",
                     "-c",
                     "EXPOSE 80 53/udp 8000-8001",
                     "-c",
                     "LABEL tier=api \"note=a b\"",
                     "-c",
                     "VOLUME [\"/var/log\", \"/cache\"]",
                     "-c",
                     "volume /tmp/x",
                     "web",
                     "app:changed"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto cfg = image_config(lamina, "app:changed");
    EXPECT_EQ(cfg["Env"], json({"A=1", "PATH=/usr/bin:/bin", "B=2", "C=two words"}));
    EXPECT_EQ(cfg["Cmd"], json({"/bin/app", "--serve"})) << "CMD came before ENTRYPOINT";
    EXPECT_EQ(cfg["Entrypoint"], json({"/bin/sh", "-c", "/bin/start now"}));
    EXPECT_EQ(cfg["WorkingDir"], "/srv/www");
    EXPECT_EQ(cfg["User"], "app:staff");
    EXPECT_EQ(cfg["ExposedPorts"], json({{"80/tcp", json::object()},
                                         {"53/udp", json::object()},
                                         {"8000/tcp", json::object()},
                                         {"8001/tcp", json::object()}}));
    EXPECT_EQ(cfg["Labels"], json({{"tier", "api"}, {"team", "ops"}, {"note", "a b"}}));
    EXPECT_EQ(cfg["Volumes"], json({{"/var/log", json::object()},
                                    {"/cache", json::object()},
                                    {"/tmp/x", json::object()}}));
    EXPECT_EQ(out_of(lamina({"inspect", "-f", "{{.Config.author}}", "app:changed"})),
              "Ann <ann@example.com>");
    EXPECT_EQ(out_of(lamina({"history", "--format", "{{.Comment}}", "app:changed"})).substr(0, 12),
              "with changes");

    // ENTRYPOINT alone drops the image's CMD, as in a Dockerfile.
    out_of(lamina({"commit", "-c", "CMD [\"a\"]", "web", "app:cmd"}));
    out_of(lamina({"create", "--name", "second", "app:cmd"}));
    out_of(lamina({"commit", "-c", "ENTRYPOINT [\"/e\"]", "second", "app:entry"}));
    EXPECT_TRUE(image_config(lamina, "app:entry")["Cmd"].is_null());

    auto images_before = out_of(lamina({"images", "-q"}));
    for (const char* bad : {"RUN make", "ENV", "EXPOSE http", "WORKDIR a b", "LABEL =x",
                            "ENV A=\"open", "ONBUILD RUN x"}) {
        r = lamina({"commit", "-c", bad, "web", "app:bad"});
        EXPECT_EQ(r.status, 2) << bad;
        EXPECT_EQ(r.out, "") << bad;
        EXPECT_NE(r.err.find("--change \""), std::string::npos) << bad << ": " << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
    EXPECT_EQ(out_of(lamina({"images", "-q"})), images_before) << "a refused change makes nothing";
}

TEST_F(Script, import_takes_changes_and_a_message) {
    write_file(tmp / "root.tar", make_tar({dir("srv"), file("srv/x", "x")}));
    auto r = lamina({"import", "-m", "from a tarball", "-c", "CMD [\"/srv/x\"]", "-c",
                     "ENV MODE=prod", tmp / "root.tar", "imported:1"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto cfg = image_config(lamina, "imported:1");
    EXPECT_EQ(cfg["Cmd"], json({"/srv/x"}));
    EXPECT_EQ(cfg["Env"], json({"MODE=prod"}));
    EXPECT_EQ(out_of(lamina({"history", "--format", "{{.Comment}}", "imported:1"})),
              "from a tarball");
    r = lamina({"import", "-c", "FROM scratch", tmp / "root.tar", "imported:2"});
    EXPECT_EQ(r.status, 2);
    EXPECT_EQ(lamina({"images", "-q", "imported:2"}).out, "");
}

TEST_F(Script, rename_keeps_the_container_under_its_new_name) {
    std::string id = out_of(lamina({"create", "--name", "old", "app:1"}));
    out_of(lamina({"create", "--name", "taken", "app:1"}));
    EXPECT_EQ(lamina({"rename", "old", "new"}).status, 0);
    EXPECT_EQ(out_of(lamina({"ps", "-aq", "--no-trunc", "--filter", "name=new"})), id);
    EXPECT_EQ(lamina({"ps", "-aq", "--filter", "name=old"}).out, "");
    auto r = lamina({"container", "rename", "new", "taken"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("container name \"taken\" is already in use"), std::string::npos) << r.err;
    r = lamina({"rename", "new", "bad/name"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("invalid container name"), std::string::npos) << r.err;
    EXPECT_EQ(lamina({"rename", "nothere", "x"}).err, "lamina: no such container: nothere\n");
    EXPECT_EQ(complete(lamina, {"rename", ""}), "new\ntaken\n");
    EXPECT_EQ(complete(lamina, {"container", "cp", "ne"}), "new:\n");
}

TEST_F(Script, image_and_container_prune_ask_unless_forced) {
    out_of(lamina({"create", "--name", "idle", "base:1"}));
    auto r = run_shell("echo n | " + lamina_sh(lamina) + " image prune");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("WARNING! This will remove all dangling images."), std::string::npos);
    EXPECT_EQ(images({}), "base:1\napp:2\napp:1\n<none>:<none>");
    auto dangling = out_of(lamina({"images", "-q", "--no-trunc", "-f", "dangling=true"}));
    r = lamina({"image", "prune", "-f"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(r.out.starts_with("Deleted Images:\n" + dangling + "\n\nTotal reclaimed space: "))
        << r.out;
    EXPECT_EQ(images({}), "base:1\napp:2\napp:1");
    r = run_shell("echo y | " + lamina_sh(lamina) + " image prune -a");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(images({}), "base:1") << "named images no container uses went; base:1 is used";

    std::string id = out_of(lamina({"ps", "-aq", "--no-trunc"}));
    r = run_shell("echo n | " + lamina_sh(lamina) + " container prune");
    EXPECT_NE(r.out.find("WARNING! This will remove all unmounted containers."), std::string::npos);
    EXPECT_EQ(out_of(lamina({"ps", "-aq", "--no-trunc"})), id);
    r = lamina({"container", "prune", "--force"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(r.out.starts_with("Deleted Containers:\n" + id + "\n\n")) << r.out;
    EXPECT_EQ(out_of(lamina({"ps", "-aq"})), "");
}

TEST_F(Script, rough_edges_volume_conflicts_and_oci_layout_names) {
    // A -v conflict names the path in the container, not the host's.
    auto r = lamina({"create", "-v", "/tmp:/data", "-v", "/etc:/data", "app:1"});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err, "lamina: duplicate mount point: /data\n");
    // An OCI layout's ref name names the loaded image, said once, without its ID besides.
    write_oci_layout(tmp / "layout", demo_image("gzip"), "example.com/team/tool:v3");
    r = lamina({"load", "-i", tmp / "layout"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "Loaded image: example.com/team/tool:v3\n");
    EXPECT_EQ(images({"example.com/team/tool"}), "example.com/team/tool:v3");
}

// An image whose symlinks point out of it, as a hostile image's would: "esc" -> /etc,
// "hostname" -> /etc/hostname. Inside the container neither leads to the host's files.
class CopyScript : public Script {
protected:
    void SetUp() override {
        Script::SetUp();
        std::string archive = tmp / "links.tar";
        write_docker_archive(
            archive, "links:1", "2024-04-01T00:00:00Z", json::object(),
            {dir("etc"), file("etc/name", "in the image\n"), symlink("esc", "/etc"),
             symlink("hostname", "/etc/hostname"), dir("srv"), file("srv/a", "a"), dir("srv/sub"),
             file("srv/sub/b", "b")});
        out_of(lamina({"load", "-i", archive}));
        out_of(lamina({"create", "--name", "web", "links:1"}));
    }
    std::string status() {
        return out_of(lamina({"ps", "-a", "--filter", "name=web", "--format", "{{.State}}"}));
    }
};

TEST_F(CopyScript, cp_out_of_an_unmounted_container_leaves_it_unmounted) {
    REQUIRE_FUSE();
    std::string out = tmp / "out";
    ASSERT_EQ(mkdir(out.c_str(), 0755), 0);
    EXPECT_EQ(lamina({"cp", "web:/srv", out}).status, 0);
    EXPECT_EQ(read_file(out + "/srv/sub/b"), "b") << "a directory goes in under its own name";
    EXPECT_EQ(lamina({"container", "cp", "web:/srv/.", out + "/flat"}).status, 0);
    EXPECT_EQ(read_file(out + "/flat/a"), "a") << "SRC/. copies what is in it";
    EXPECT_EQ(lamina({"cp", "web:etc/name", out + "/renamed"}).status, 0);
    EXPECT_EQ(read_file(out + "/renamed"), "in the image\n");
    EXPECT_EQ(status(), "created");

    // Symlinks resolve inside the container: esc/name is the image's etc/name, not the host's.
    EXPECT_EQ(lamina({"cp", "web:/esc/name", out + "/via-link"}).status, 0);
    EXPECT_EQ(read_file(out + "/via-link"), "in the image\n");
    auto r = lamina({"cp", "-L", "web:/hostname", out + "/host"});
    EXPECT_EQ(r.status, 1) << "the image has no /etc/hostname; the host's is not reached";
    EXPECT_EQ(access((out + "/host").c_str(), F_OK), -1);
    EXPECT_EQ(lamina({"cp", "web:/hostname", out + "/link"}).status, 0);
    char target[64] = {};
    ASSERT_GT(readlink((out + "/link").c_str(), target, sizeof target - 1), 0);
    EXPECT_STREQ(target, "/etc/hostname") << "without -L a symlink is copied as one";
    r = lamina({"cp", "web:/nothere", out});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err, "lamina: no such file in container web: /nothere\n");
    EXPECT_EQ(status(), "created");
}

TEST_F(CopyScript, cp_into_a_container_lands_in_its_upper_layer) {
    REQUIRE_FUSE();
    write_file(tmp / "note", "from the host");
    make_dirs(tmp / "tree/deep");
    write_file(tmp / "tree/deep/f", "f");
    EXPECT_EQ(lamina({"cp", tmp / "note", "web:/srv/"}).status, 0);
    EXPECT_EQ(lamina({"cp", tmp / "tree", "web:/srv/sub"}).status, 0);
    EXPECT_EQ(lamina({"cp", tmp / "note", "web:/esc/planted"}).status, 0);
    EXPECT_EQ(access("/etc/planted", F_OK), -1) << "the container's /etc, not the host's";
    EXPECT_EQ(status(), "created");
    auto changes = out_of(lamina({"diff", "web"}));
    EXPECT_EQ(changes,
              "C /etc\nA /etc/planted\nC /srv\nA /srv/note\nC /srv/sub\nA /srv/sub/tree\n"
              "A /srv/sub/tree/deep\nA /srv/sub/tree/deep/f");
    std::string merged = out_of(lamina({"mount", "web"}));
    EXPECT_EQ(read_file(merged + "/srv/note"), "from the host");
    EXPECT_EQ(read_file(merged + "/etc/planted"), "from the host");
    // Into a mounted container it stays mounted.
    EXPECT_EQ(lamina({"cp", tmp / "note", "web:/again"}).status, 0);
    EXPECT_EQ(read_file(merged + "/again"), "from the host");
    EXPECT_EQ(status(), "mounted");
    out_of(lamina({"umount", "web"}));

    auto r = lamina({"cp", tmp / "note", tmp / "elsewhere"});
    EXPECT_EQ(r.status, 2) << "two host paths";
    r = lamina({"cp", tmp / "nothere", "web:/x"});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
    r = lamina({"cp", tmp / "note", "web:/no/such/dir/"});
    EXPECT_EQ(r.status, 1);
}

TEST_F(Script, archive_errors_name_the_file_asked_for_and_the_systems_reason) {
    REQUIRE_FUSE();
    if (geteuid() != 0) SKIP_NEEDING("tmpfs") << "mounting a small tmpfs needs root";
    // 200 kB of incompressible data: more than the 64 kB filesystem holds.
    write_file(tmp / "big.tar",
               make_tar({file("big", run_shell("head -c 200000 /dev/urandom").out)}));
    out_of(lamina({"import", tmp / "big.tar", "big:1"}));
    out_of(lamina({"create", "--name", "bigc", "big:1"}));
    make_dirs(tmp / "full");
    ASSERT_EQ(run_command({"mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", tmp / "full"}).status,
              0);
    MountGuard full(tmp / "full");
    auto r = lamina({"save", "-o", tmp / "full/out.tar", "big:1"});
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(r.err.ends_with(" to " + (tmp / "full/out.tar") + ": No space left on device\n"))
        << r.err;
    r = lamina({"export", "-o", tmp / "full/out.tar", "bigc"});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err,
              "lamina: cannot write " + (tmp / "full/out.tar") + ": No space left on device\n");
    EXPECT_EQ(run_shell("ls -A " + shell_quote(tmp / "full")).out, "") << "no partial archive";
    r = lamina({"save", "-o", "/nonexistent/x.tar", "big:1"});
    EXPECT_EQ(r.err, "lamina: cannot create /nonexistent/x.tar: No such file or directory\n");
}

TEST_F(Script, umount_of_a_busy_container_leaves_it_whole_and_says_so) {
    REQUIRE_FUSE();
    out_of(lamina({"create", "--name", "busy", "-v", "/data", "app:1"}));
    std::string m = out_of(lamina({"mount", "busy"}));
    write_file(m + "/data/kept", "in the volume");
    int fd = open((m + "/etc/name").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    auto r = lamina({"umount", "busy"});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err, "lamina: cannot unmount busy: " + m +
                         " is busy (a process has a file or directory open in it); it stays "
                         "mounted\n");
    EXPECT_EQ(read_file(m + "/data/kept"), "in the volume") << "the volume is back up";
    EXPECT_EQ(out_of(lamina({"mount", "busy"})), m);
    close(fd);
    EXPECT_EQ(lamina({"umount", "busy"}).status, 0);
    EXPECT_EQ(out_of(lamina({"ps", "-a", "--format", "{{.State}}"})), "created");
}

TEST_F(CopyScript, cp_streams_tars_out_and_in_and_refuses_entries_that_leave_the_directory) {
    REQUIRE_FUSE();
    auto r = run_shell(lamina_sh(lamina) + " cp web:/srv - | tar -tf - | sort");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "srv/\nsrv/a\nsrv/sub/\nsrv/sub/b\n");
    make_dirs(tmp / "in/pkg");
    write_file(tmp / "in/pkg/f", "packed");
    r = run_shell("tar -C " + shell_quote(tmp / "in") + " -cf - pkg | " + lamina_sh(lamina) +
                  " container cp - web:/srv");
    ASSERT_EQ(r.status, 0) << r.err;
    r = run_shell(lamina_sh(lamina) + " cp web:/srv/pkg/f - | tar -xOf -");
    EXPECT_EQ(r.out, "packed");
    // A symlink to the host's /tmp, then a file through it: refused, nothing on the host.
    std::string bait = tmp / "bait";
    make_dirs(bait);
    write_file(tmp / "evil.tar", make_tar({symlink("esc2", bait), file("esc2/planted", "x")}));
    r = run_shell(lamina_sh(lamina) + " cp - web:/ < " + shell_quote(tmp / "evil.tar"));
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("cannot copy stdin to web:/: esc2/planted: "), std::string::npos) << r.err;
    EXPECT_EQ(access((bait + "/planted").c_str(), F_OK), -1);
    write_file(tmp / "dotdot.tar", make_tar({file("../../up", "x")}));
    r = run_shell(lamina_sh(lamina) + " cp - web:/srv < " + shell_quote(tmp / "dotdot.tar"));
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(status(), "created");
}

}  // namespace
}  // namespace lamina::test
