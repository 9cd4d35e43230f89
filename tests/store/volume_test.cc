// Volumes: lifecycle and listings, bad input, concurrent creates, and (with FUSE) volumes and binds
// mounted inside a container: init-copy, read-only, tmpfs, data outliving its container, fio.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "store_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

// A failure: non-zero status and exactly one line on stderr.
void expect_one_line_error(const CommandResult& r, const std::string& contains) {
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_NE(r.err.find(contains), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

std::string put_blob(const std::string& dir, const std::string& data) {
    std::string digest = sha256(data);
    write_file(dir + "/blobs/sha256/" + digest.substr(7), data);
    return digest;
}

// An OCI layout with one layer tar (made by tar(1) from tree, so owners and xattrs survive) and
// a config whose Volumes are volumes (Dockerfile VOLUME).
void write_image(const std::string& dir, const std::string& tree, const std::string& name,
                 const std::vector<std::string>& volumes = {}) {
    make_dirs(dir + "/blobs/sha256");
    std::string tar_path = dir + ".layer.tar";
    auto t = run_command({"tar", "--xattrs", "--xattrs-include=user.*", "--numeric-owner", "-cf",
                          tar_path, "-C", tree, "."});
    ASSERT_EQ(t.status, 0) << t.err;
    std::string layer = read_file(tar_path);
    std::string layer_digest = put_blob(dir, layer);
    json cfg_volumes = json::object();
    for (const auto& v : volumes) cfg_volumes[v] = json::object();
    json config = {{"architecture", "amd64"},
                   {"os", "linux"},
                   {"created", "2024-01-02T03:04:05Z"},
                   {"config", {{"Cmd", {"/bin/sh"}}, {"Volumes", cfg_volumes}}},
                   {"rootfs", {{"type", "layers"}, {"diff_ids", {layer_digest}}}},
                   {"history", {{{"created", "2024-01-02T03:04:05Z"}, {"created_by", "tar"}}}}};
    std::string cfg = config.dump();
    std::string cfg_digest = put_blob(dir, cfg);
    json manifest = {{"schemaVersion", 2},
                     {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"config",
                      {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                       {"digest", cfg_digest},
                       {"size", cfg.size()}}},
                     {"layers",
                      {{{"mediaType", "application/vnd.oci.image.layer.v1.tar"},
                        {"digest", layer_digest},
                        {"size", layer.size()}}}}};
    std::string m = manifest.dump();
    std::string m_digest = put_blob(dir, m);
    json index = {{"schemaVersion", 2},
                  {"manifests",
                   {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"digest", m_digest},
                     {"size", m.size()},
                     {"annotations", {{"org.opencontainers.image.ref.name", name}}}}}}};
    write_file(dir + "/index.json", index.dump());
    write_file(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
}

// A store with image "app:1": /var/log (uid 124, gid 46, mode 0750), /var/log/boot.log (uid 123,
// gid 45, mode 0640, user.origin=image),
// /var/log/sub/deep, /etc/motd, and a VOLUME at /data holding /data/seed.
struct AppStore {
    TempDir tmp{"lamina-vol"};
    StoreGuard guard{tmp / "store"};
    Lamina lamina{tmp / "store"};

    void load() {
        std::string tree = tmp / "tree";
        make_dirs(tree + "/var/log/sub");
        make_dirs(tree + "/etc");
        make_dirs(tree + "/data");
        write_file(tree + "/var/log/boot.log", "booted\n", 0640);
        write_file(tree + "/var/log/sub/deep", "deep");
        write_file(tree + "/etc/motd", "hello\n");
        write_file(tree + "/data/seed", "seed");
        ASSERT_EQ(chmod((tree + "/var/log/boot.log").c_str(), 0640), 0);
        ASSERT_EQ(chown((tree + "/var/log/boot.log").c_str(), 123, 45), 0);
        ASSERT_EQ(chmod((tree + "/var/log").c_str(), 0750), 0);
        ASSERT_EQ(chown((tree + "/var/log").c_str(), 124, 46), 0);
        has_xattr =
            setxattr((tree + "/var/log/boot.log").c_str(), "user.origin", "image", 5, 0) == 0;
        write_image(tmp / "layout", tree, "app:1", {"/data"});
        out_of(lamina({"load", "-i", tmp / "layout"}));
    }
    std::string path(const std::string& rel) { return tmp / ("store/" + rel); }
    bool has_xattr = false;
};

json inspect(const Lamina& lamina, const std::vector<std::string>& args) {
    auto r = lamina(args);
    EXPECT_EQ(r.status, 0) << r.err;
    return json::parse(r.out);
}

bool exists(const std::string& path) {
    struct stat st;
    return lstat(path.c_str(), &st) == 0;
}

// The optional fields (shared:N, master:N...) of the mount exactly at path; "-" when none.
std::string propagation_of(const std::string& path) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string id, parent, devno, root, mount_point, options, optional;
        fields >> id >> parent >> devno >> root >> mount_point >> options >> optional;
        if (mount_point == path) return optional;
    }
    return "not mounted";
}

dev_t device_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
    return st.st_dev;
}

TEST(Volumes, lifecycle_create_ls_filters_inspect_rm_prune) {
    TempDir tmp("lamina-vol");
    Lamina lamina(tmp / "store");
    EXPECT_EQ(out_of(lamina({"volume", "create", "--label", "tier=db", "--label", "keep", "data"})),
              "data");
    EXPECT_EQ(out_of(lamina({"volume", "create", "--label", "tier=web", "web"})), "web");
    std::string anon = out_of(lamina({"volume", "create"}));
    EXPECT_EQ(anon.size(), 64u);
    EXPECT_EQ(anon.find_first_not_of("0123456789abcdef"), std::string::npos);
    // ls sorts by name; where the random name falls depends on its first digit.
    std::string all = anon < "data" ? anon + "\ndata\nweb" : "data\n" + anon + "\nweb";

    std::string table = out_of(lamina({"volume", "ls"}));
    EXPECT_EQ(table.substr(0, table.find('\n')), "DRIVER   VOLUME NAME");
    EXPECT_NE(table.find("local    data\n"), std::string::npos) << table;
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})), all);
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q", "--filter", "label=tier"})), "data\nweb");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q", "--filter", "label=tier=db"})), "data");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q", "-f", "label=keep", "-f", "label=tier=db"})),
              "data");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q", "--filter", "label=tier=none"})), "");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q", "--filter", "dangling=true"})), all);
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q", "--filter", "dangling=false"})), "");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q", "--filter", "name=we"})), "web");
    expect_one_line_error(lamina({"volume", "ls", "--filter", "colour=red"}), "invalid filter");

    auto j = inspect(lamina, {"volume", "inspect", "data", "web"});
    ASSERT_EQ(j.size(), 2u);
    EXPECT_EQ(j[0]["Name"], "data");
    EXPECT_EQ(j[0]["Driver"], "local");
    EXPECT_EQ(j[0]["Scope"], "local");
    EXPECT_EQ(j[0]["Labels"], json({{"tier", "db"}, {"keep", ""}}));
    EXPECT_EQ(j[0]["Mountpoint"], tmp / "store/volumes/data/_data");
    EXPECT_TRUE(j[0]["Options"].is_null());
    EXPECT_EQ(j[0]["CreatedAt"].get<std::string>().size(), 20u);
    struct stat st;
    EXPECT_EQ(stat((tmp / "store/volumes/data/_data").c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    auto missing = lamina({"volume", "inspect", "data", "nope"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_NE(missing.err.find("no such volume: nope"), std::string::npos);
    EXPECT_EQ(json::parse(missing.out).size(), 1u);

    // Creating an existing name returns it; other options are refused.
    EXPECT_EQ(out_of(lamina({"volume", "create", "data"})), "data");
    expect_one_line_error(lamina({"volume", "create", "--opt", "type=tmpfs", "data"}),
                          "already exists");

    // prune without -f asks, and stdin (/dev/null) does not say yes.
    EXPECT_EQ(lamina({"volume", "prune"}).status, 0);
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})), all);
    std::string pruned = out_of(lamina({"volume", "prune", "-f"}));
    EXPECT_NE(pruned.find("Deleted Volumes:\n" + anon + "\n"), std::string::npos) << pruned;
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})), "data\nweb");
    EXPECT_FALSE(exists(tmp / ("store/volumes/" + anon)));

    EXPECT_EQ(out_of(lamina({"volume", "rm", "web"})), "web");
    expect_one_line_error(lamina({"volume", "rm", "web"}), "no such volume: web");
    EXPECT_EQ(lamina({"volume", "rm", "-f", "web"}).status, 0);
    EXPECT_EQ(out_of(lamina({"volume", "prune", "-a", "-f"})).find("data"), 17u);
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})), "");
    EXPECT_EQ(inspect(lamina, {"system", "df", "--format", "json"})["Volumes"]["Total"], 0);
}

TEST(Volumes, bad_names_and_options_are_one_line_errors_and_make_nothing) {
    TempDir tmp("lamina-vol");
    Lamina lamina(tmp / "store");
    for (std::string bad : {"x", "-x", ".hidden", "a/b", "a b", "a:b", "tab\tname", "é1"})
        expect_one_line_error(lamina({"volume", "create", "--", bad}), "invalid volume name");
    expect_one_line_error(lamina({"volume", "create", "--driver", "nfs", "v1"}), "not supported");
    expect_one_line_error(lamina({"volume", "create", "--opt", "colour=red", "v1"}),
                          "invalid volume option");
    expect_one_line_error(lamina({"volume", "create", "--opt", "type=ext4", "v1"}),
                          "not supported");
    expect_one_line_error(lamina({"volume", "create", "-o", "type=none", "-o", "o=bind", "v1"}),
                          "device=");
    expect_one_line_error(lamina({"volume", "create", "-o", "type=none", "-o", "o=bind", "-o",
                                  "device=" + (tmp / "missing"), "v1"}),
                          "No such file");
    if (geteuid() == 0)
        expect_one_line_error(
            lamina({"volume", "create", "-o", "type=tmpfs", "-o", "o=size=lots", "v1"}),
            "invalid tmpfs volume options");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})), "");

    AppStore app;
    app.load();
    std::string out = app.tmp / "f";
    write_file(out, "x");
    for (std::vector<std::string> flags : {
             std::vector<std::string>{"-v", "./rel:/x"},
             {"-v", "vol:relative"},
             {"-v", "vol:/x:rw,ro"},
             {"-v", "vol:/x:shared"},
             {"-v", "/a:/b:/c:/d"},
             {"-v", "vol:/"},
             {"-v", "vol:/a/../b"},
             {"-v", "/host:/x:nocopy"},
             {"-v", app.tmp / "no-such-dir" + ":/x"},
             {"--mount", "type=tmpfs,dst=/x"},
             {"--mount", "type=bind,src=rel,dst=/x"},
             {"--mount", "type=volume,src=v,dst=/x,colour=red"},
             {"--mount", "type=volume,src=v"},
             {"-v", "vol:/x", "-v", "other:/x"},
         }) {
        std::vector<std::string> args = {"create"};
        args.insert(args.end(), flags.begin(), flags.end());
        args.push_back("app:1");
        auto r = app.lamina(args);
        EXPECT_NE(r.status, 0) << flags[1];
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
    // Nothing half-made: no container, no volume, nothing staged.
    EXPECT_EQ(out_of(app.lamina({"ps", "-a", "--format", "json"})), "[]");
    EXPECT_EQ(out_of(app.lamina({"volume", "ls", "-q"})), "");
    EXPECT_EQ(run_shell("ls -A '" + app.path("volumes") + "' '" + app.path("tmp") + "'").out,
              app.path("tmp") + ":\n\n" + app.path("volumes") + ":\n");
}

TEST(Volumes, concurrent_creates_of_one_name_make_one_volume) {
    TempDir tmp("lamina-vol");
    Lamina lamina(tmp / "store");
    out_of(lamina({"volume", "ls"}));  // the store exists before the race
    std::vector<std::string> argv = lamina.argv({"volume", "create", "--label", "a=b", "shared"});
    std::string cmd;
    for (int i = 0; i < 8; ++i) {
        cmd += "(";
        for (const auto& a : argv) cmd += "'" + a + "' ";
        cmd += "> '" + (tmp / ("out" + std::to_string(i))) + "' 2>&1; echo $? >> '" +
               (tmp / "rcs") + "') & ";
    }
    cmd += "wait";
    ASSERT_EQ(run_shell(cmd).status, 0);
    EXPECT_EQ(read_file(tmp / "rcs"), "0\n0\n0\n0\n0\n0\n0\n0\n");
    for (int i = 0; i < 8; ++i) EXPECT_EQ(read_file(tmp / ("out" + std::to_string(i))), "shared\n");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})), "shared");
    EXPECT_EQ(run_shell("ls -A '" + (tmp / "store/tmp") + "'").out, "");
    EXPECT_EQ(run_shell("ls -A '" + (tmp / "store/volumes") + "'").out, "shared\n");
}

TEST(Volumes, a_store_made_before_volumes_gains_them) {
    if (!have_program("sqlite3")) SKIP_NEEDING("program:sqlite3") << "sqlite3 is not installed";
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    out_of(lamina({"create", "--name", "old", "app:1"}));
    // The schema of a store from before volumes: no volume tables at all.
    auto r = run_command(
        {"sqlite3", app.path("lamina.db"), "DROP TABLE container_mounts; DROP TABLE volumes;"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})), "");
    EXPECT_EQ(inspect(lamina, {"inspect", "old"})[0]["Mounts"], json::array());
    EXPECT_EQ(out_of(lamina({"volume", "create", "v1"})), "v1");
    out_of(lamina({"create", "--name", "new", "-v", "v1:/x", "app:1"}));
    EXPECT_EQ(inspect(lamina, {"inspect", "new"})[0]["Mounts"].size(), 2u);
    out_of(lamina({"rm", "old"}));
    expect_one_line_error(lamina({"volume", "rm", "v1"}), "in use");
}

// Docker's walkthrough: a volume at /var/log outlives its container and shows up in the next.
TEST(Volumes, walkthrough_volume_data_outlives_its_container) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    EXPECT_EQ(out_of(lamina({"volume", "create", "logs"})), "logs");
    out_of(lamina({"create", "--name", "one", "-v", "logs:/var/log", "app:1"}));
    std::string m = out_of(lamina({"mount", "one"}));
    ASSERT_TRUE(is_mountpoint(m + "/var/log"));
    // I/O there goes to the volume's filesystem, not through laminafs.
    EXPECT_NE(device_of(m + "/var/log"), device_of(m));
    EXPECT_EQ(device_of(m + "/var/log"), device_of(app.path("volumes/logs/_data")));
    EXPECT_EQ(propagation_of(m + "/var/log"), "-");  // private: no shared or master peers
    write_file(m + "/var/log/app.log", "written in one\n");
    EXPECT_EQ(out_of(lamina({"diff", "one"})).find("app.log"), std::string::npos);
    auto c = inspect(lamina, {"inspect", "one"});
    ASSERT_EQ(c[0]["Mounts"].size(), 2u);  // logs, and the image's VOLUME /data
    EXPECT_EQ(c[0]["Mounts"][1]["Name"], "logs");
    EXPECT_EQ(c[0]["Mounts"][1]["Destination"], "/var/log");
    EXPECT_EQ(c[0]["Mounts"][1]["Source"], app.path("volumes/logs/_data"));
    EXPECT_EQ(c[0]["Mounts"][1]["RW"], true);
    EXPECT_EQ(c[0]["Mounts"][0]["Destination"], "/data");
    expect_one_line_error(lamina({"volume", "rm", "logs"}), "in use by container");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q", "--filter", "dangling=false"})).find("logs"),
              65u);
    auto df = inspect(lamina, {"system", "df", "--format", "json"});
    EXPECT_EQ(df["Volumes"]["Total"], 2);
    EXPECT_EQ(df["Volumes"]["Active"], 2);
    ASSERT_EQ(df["VolumeDetails"].size(), 2u);
    EXPECT_EQ(df["VolumeDetails"][1]["Name"], "logs");
    EXPECT_EQ(df["VolumeDetails"][1]["Links"], 1);
    // boot.log and sub/deep from the first copy, and app.log
    EXPECT_EQ(df["VolumeDetails"][1]["Size"], 7 + 4 + 15);

    out_of(lamina({"umount", "one"}));
    EXPECT_FALSE(is_mountpoint(m + "/var/log"));
    EXPECT_FALSE(is_mountpoint(m));
    out_of(lamina({"rm", "one"}));
    EXPECT_EQ(read_file(app.path("volumes/logs/_data/app.log")), "written in one\n");
    EXPECT_EQ(read_file(app.path("volumes/logs/_data/boot.log")), "booted\n");

    out_of(lamina(
        {"create", "--name", "two", "--mount", "type=volume,src=logs,dst=/var/log", "app:1"}));
    std::string m2 = out_of(lamina({"mount", "two"}));
    EXPECT_EQ(read_file(m2 + "/var/log/app.log"), "written in one\n");
    out_of(lamina({"umount", "two"}));
    out_of(lamina({"rm", "-v", "two"}));
    // rm -v removed two's anonymous /data volume, never the named one.
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})).find("logs"), 65u);  // one anonymous left
    out_of(lamina({"volume", "prune", "-f"}));
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})), "logs");
    EXPECT_EQ(out_of(lamina({"volume", "rm", "logs"})), "logs");
}

TEST(Volumes, new_volume_gets_the_image_content_once_nocopy_and_binds_do_not) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    std::string host = app.tmp / "host";
    make_dirs(host);
    out_of(lamina({"create", "--name", "c", "-v", "fresh:/var/log", "-v", "bare:/etc:nocopy",
                   "--mount", "type=bind,src=" + host + ",dst=/data", "app:1"}));
    std::string m = out_of(lamina({"mount", "c"}));
    std::string data = app.path("volumes/fresh/_data");
    EXPECT_EQ(read_file(data + "/boot.log"), "booted\n");
    EXPECT_EQ(read_file(data + "/sub/deep"), "deep");
    struct stat st;
    ASSERT_EQ(stat((data + "/boot.log").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 123u);
    EXPECT_EQ(st.st_gid, 45u);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    ASSERT_EQ(stat(data.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0750u);  // the directory's mode and owner come along too
    EXPECT_EQ(st.st_uid, 124u);
    EXPECT_EQ(st.st_gid, 46u);
    if (app.has_xattr) {
        char v[16] = {};
        EXPECT_EQ(getxattr((data + "/boot.log").c_str(), "user.origin", v, sizeof v), 5);
        EXPECT_STREQ(v, "image");
    }
    EXPECT_EQ(run_shell("ls -A '" + app.path("volumes/bare/_data") + "'").out, "");
    EXPECT_EQ(run_shell("ls -A '" + m + "/etc'").out, "");
    // A bind hides what the image has there and copies nothing.
    EXPECT_EQ(run_shell("ls -A '" + m + "/data'").out, "");
    EXPECT_EQ(run_shell("ls -A '" + host + "'").out, "");

    // Emptied, the volume stays empty: the copy is for a new volume only.
    ASSERT_EQ(run_shell("rm -rf '" + m + "'/var/log/*").status, 0);
    out_of(lamina({"umount", "c"}));
    m = out_of(lamina({"mount", "c"}));
    EXPECT_EQ(run_shell("ls -A '" + m + "/var/log'").out, "");
    out_of(lamina({"umount", "c"}));
}

TEST(Volumes, read_only_volumes_and_binds_give_erofs) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    std::string host = app.tmp / "host";
    make_dirs(host);
    write_file(host + "/file", "host file");
    write_file(app.tmp / "single", "one file");
    out_of(lamina({"create", "--name", "c", "-v", "ro1:/var/log:ro", "-v", host + ":/srv:ro",
                   "--mount", "type=volume,src=ro2,dst=/opt/x,readonly", "-v",
                   app.tmp / "single" + ":/etc/single:ro", "-v", "rw1:/rw", "app:1"}));
    std::string m = out_of(lamina({"mount", "c"}));
    for (std::string p : {"/var/log/new", "/srv/new", "/opt/x/new", "/etc/single"}) {
        int fd = open((m + p).c_str(), O_WRONLY | O_CREAT, 0644);
        EXPECT_EQ(fd, -1) << p;
        EXPECT_EQ(errno, EROFS) << p;
        if (fd >= 0) close(fd);
    }
    EXPECT_EQ(read_file(m + "/srv/file"), "host file");
    EXPECT_EQ(read_file(m + "/etc/single"), "one file");
    EXPECT_EQ(read_file(m + "/var/log/boot.log"), "booted\n");  // ro still gets the first copy
    write_file(m + "/rw/ok", "ok");
    write_file(m + "/etc/motd", "the union is still writable\n");
    auto c = inspect(lamina, {"inspect", "c"});
    int read_only = 0;
    for (const auto& mt : c[0]["Mounts"]) read_only += mt["RW"] == false;
    EXPECT_EQ(read_only, 4);
    out_of(lamina({"umount", "c"}));
    EXPECT_EQ(run_shell("grep -c '" + m + "' /proc/self/mountinfo").out, "0\n");
}

TEST(Volumes, tmpfs_and_bind_volume_options) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    std::string device = app.tmp / "device";
    make_dirs(device);
    out_of(lamina({"volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt",
                   "o=size=4m,mode=0700", "scratch"}));
    out_of(lamina({"volume", "create", "-o", "type=none", "-o", "o=bind", "-o", "device=" + device,
                   "hostdir"}));
    auto j = inspect(lamina, {"volume", "inspect", "scratch"});
    EXPECT_EQ(j[0]["Options"],
              json({{"type", "tmpfs"}, {"device", "tmpfs"}, {"o", "size=4m,mode=0700"}}));
    out_of(lamina(
        {"create", "--name", "c", "-v", "scratch:/var/log", "-v", "hostdir:/data", "app:1"}));
    std::string m = out_of(lamina({"mount", "c"}));
    EXPECT_EQ(mount_fstype(m + "/var/log"), "tmpfs");
    struct statvfs sv;
    ASSERT_EQ(statvfs((m + "/var/log").c_str(), &sv), 0);
    EXPECT_EQ(sv.f_blocks * sv.f_frsize, 4u << 20);
    EXPECT_EQ(read_file(m + "/var/log/boot.log"), "booted\n");  // copied into this tmpfs
    write_file(m + "/var/log/gone", "per mount");
    // The bind volume's data is the device directory, filled from the image the first time.
    write_file(m + "/data/via-volume", "v");
    EXPECT_EQ(read_file(device + "/via-volume"), "v");
    EXPECT_EQ(read_file(device + "/seed"), "seed");
    out_of(lamina({"umount", "c"}));
    m = out_of(lamina({"mount", "c"}));
    EXPECT_FALSE(exists(m + "/var/log/gone"));
    EXPECT_EQ(read_file(m + "/data/via-volume"), "v");
    out_of(lamina({"umount", "c"}));
}

TEST(Volumes, a_failed_mount_leaves_nothing_mounted) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    write_file(app.tmp / "file", "a file");
    // The first mount works, the second cannot put a file over the image's directory.
    out_of(lamina(
        {"create", "--name", "c", "-v", "ok:/srv", "-v", app.tmp / "file" + ":/var/log", "app:1"}));
    auto r = lamina({"mount", "c"});
    expect_one_line_error(r, "/var/log");
    EXPECT_EQ(run_shell("grep -c '" + app.path("containers") + "' /proc/self/mountinfo").out,
              "0\n");
    auto ps = inspect(lamina, {"ps", "-a", "--format", "json"});
    EXPECT_EQ(ps[0]["Mounted"], false);
}

TEST(Volumes, rm_v_removes_only_anonymous_volumes_and_rm_keeps_all) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    out_of(lamina({"create", "--name", "a", "-v", "named:/srv", "-v", "/anon", "app:1"}));
    auto mounts = inspect(lamina, {"inspect", "a"})[0]["Mounts"];
    ASSERT_EQ(mounts.size(), 3u);  // parents first, then in the order given; the image's last
    EXPECT_EQ(mounts[0]["Destination"], "/srv");
    EXPECT_EQ(mounts[1]["Destination"], "/anon");
    EXPECT_EQ(mounts[2]["Destination"], "/data");
    std::string anon = mounts[1]["Name"], image_vol = mounts[2]["Name"];
    std::string m = out_of(lamina({"mount", "a"}));
    EXPECT_EQ(read_file(m + "/data/seed"), "seed");
    // A container using a volume keeps it from rm, mounted or not.
    expect_one_line_error(lamina({"volume", "rm", anon}), "in use");
    expect_one_line_error(lamina({"rm", "a"}), "mounted");
    out_of(lamina({"umount", "a"}));
    expect_one_line_error(lamina({"volume", "rm", "named"}), "in use");
    EXPECT_EQ(out_of(lamina({"volume", "prune", "-a", "-f"})), "Total reclaimed space: 0B");
    // Another container attaching a's anonymous volume by name keeps it through rm -v a.
    out_of(lamina({"create", "--name", "b", "-v", anon + ":/shared", "app:1"}));
    out_of(lamina({"rm", "-v", "a"}));
    std::string left = out_of(lamina({"volume", "ls", "-q"}));
    EXPECT_NE(left.find("named"), std::string::npos);
    EXPECT_NE(left.find(anon), std::string::npos);  // b still uses it
    EXPECT_EQ(left.find(image_vol), std::string::npos);
    out_of(lamina({"rm", "b"}));
    left = out_of(lamina({"volume", "ls", "-q"}));
    EXPECT_NE(left.find(anon), std::string::npos);  // rm without -v keeps everything
}

TEST(Volumes, fio_on_a_volume_inside_a_mounted_container) {
    REQUIRE_FUSE();
    if (!have_program("fio")) SKIP_NEEDING("program:fio") << "fio is not installed";
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    out_of(lamina({"create", "--name", "db", "-v", "dbdata:/var/lib/db", "app:1"}));
    std::string m = out_of(lamina({"mount", "db"}));
    auto r = run_command({"fio", "--name=volume-randrw", "--directory=" + m + "/var/lib/db",
                          "--size=8m", "--bs=4k", "--rw=randrw", "--ioengine=psync", "--numjobs=1",
                          "--fsync_on_close=1", "--output-format=json"},
                         60);
    ASSERT_EQ(r.status, 0) << r.err;
    auto report = json::parse(r.out.substr(r.out.find('{')));
    EXPECT_GT(report["jobs"][0]["write"]["io_bytes"].get<int64_t>(), 0);
    // The file went straight to the volume, not to the container's writable layer.
    EXPECT_TRUE(exists(app.path("volumes/dbdata/_data/volume-randrw.0.0")));
    EXPECT_EQ(out_of(lamina({"diff", "db"})).find("volume-randrw"), std::string::npos);
    out_of(lamina({"umount", "db"}));
}

bool can_unshare() {
    return run_command({"unshare", "-Urm", "true"}).status == 0;
}

// Runs script with sh in a user and mount namespace of its own (unshare -Urm), where the shell
// function `lamina` runs the lamina binary against this store.
CommandResult run_in_user_namespace(const Lamina& lamina, const std::string& script) {
    std::string bin;
    for (const auto& a : lamina.argv({})) bin += "'" + a + "' ";
    return run_command(
        {"unshare", "-Urm", "sh", "-c", "lamina() { " + bin + "\"$@\"; }; " + script}, 60);
}

TEST(Volumes, mount_inside_a_user_namespace) {
    REQUIRE_FUSE();
    if (!can_unshare()) SKIP_NEEDING("unshare") << "unshare -Urm is not permitted here";
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    // Paths where the image has nothing: uid 123's files are unreadable to a root that maps
    // only itself (unshare -Ur), inside laminafs as anywhere.
    out_of(
        lamina({"create", "--name", "u", "-v", "uvol:/srv/logs", "-v", "ro:/srv/ro:ro", "app:1"}));
    auto r = run_in_user_namespace(
        lamina,
        "set -e; m=$(lamina mount u); echo inside > \"$m/srv/logs/userns\"; "
        "if touch \"$m/srv/ro/x\" 2>/dev/null; then echo writable; exit 3; fi; "
        // Only this store's mounts: the namespace starts with a copy of every host mount,
        // other stores' (other tests, other users) included.
        "lamina umount u; grep -cF -e \" $m \" -e \" $m/\" /proc/self/mountinfo || true");
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_EQ(r.out, "0\n") << r.err;
    EXPECT_EQ(read_file(app.path("volumes/uvol/_data/userns")), "inside\n");
}

// The mount points at or below path, relative to it ("/" for path itself), one a line, in
// mountinfo's order.
std::string mounts_below(const std::string& path) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line, out;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string id, parent, devno, root, mount_point;
        fields >> id >> parent >> devno >> root >> mount_point;
        if (mount_point == path) out += "/\n";
        if (mount_point.starts_with(path + "/")) out += mount_point.substr(path.size()) + "\n";
    }
    return out;
}

// Container c of AppStore with logs:/var/log (and the image's VOLUME /data), not yet mounted, for
// putting it in the states a killed mount or a failed unmount leaves.
class HalfMount : public ::testing::Test {
protected:
    // A whole mount: the union, then its volumes.
    static constexpr const char* kWhole = "/\n/data\n/var/log\n";

    void SetUp() override {
        REQUIRE_FUSE();
        app.load();
        out_of(lamina({"create", "--name", "c", "-v", "logs:/var/log", "app:1"}));
        m = inspect(lamina, {"inspect", "c"})[0]["MergedDir"];
    }

    // umount leaves nothing at or below merged, whatever state it started from.
    void expect_umount_clears_everything() {
        out_of(lamina({"umount", "c"}));
        EXPECT_EQ(mounts_below(m), "");
    }

    AppStore app;
    Lamina& lamina = app.lamina;
    std::string m;
};

// `lamina umount` of a busy union puts the volumes it took down back. A union without volumes,
// as `kill -9` of `lamina mount` between the two leaves it: the next mount finishes the job
// rather than taking the bare union for a whole mount.
TEST_F(HalfMount, a_union_left_without_its_volumes_gets_them_at_the_next_mount) {
    EXPECT_EQ(out_of(lamina({"mount", "c"})), m);
    EXPECT_EQ(mounts_below(m), kWhole);
    write_file(m + "/var/log/kept", "in the volume");
    {
        int busy = open((m + "/etc/motd").c_str(), O_RDONLY);
        ASSERT_GE(busy, 0);
        EXPECT_NE(lamina({"umount", "c"}).status, 0);
        close(busy);
    }
    ASSERT_EQ(mounts_below(m), kWhole) << "a busy union keeps its volumes";
    // What the killed mount leaves: no record that the volumes are up, and none of them up.
    std::string dir = m.substr(0, m.rfind('/'));
    ASSERT_EQ(unlink((dir + "/volumes-mounted").c_str()), 0);
    for (const char* v : {"/var/log", "/data"})
        ASSERT_EQ(run_command({"umount", m + v}).status, 0) << v;
    ASSERT_EQ(mounts_below(m), "/\n");
    EXPECT_EQ(out_of(lamina({"mount", "c"})), m);
    EXPECT_EQ(mounts_below(m), kWhole);
    EXPECT_EQ(read_file(m + "/var/log/kept"), "in the volume");
    // A whole mount is left alone: mounting again changes nothing.
    EXPECT_EQ(out_of(lamina({"mount", "c"})), m);
    EXPECT_EQ(mounts_below(m), kWhole);
    expect_umount_clears_everything();
}

// A volume mount left on the bare merged directory (its union gone from under it) would be hidden
// by the next union and outlive every unmount; mount and umount both take it down.
TEST_F(HalfMount, a_volume_mount_left_without_its_union_is_taken_down) {
    std::string stray = app.tmp / "stray";
    make_dirs(stray);
    write_file(stray + "/precious", "data");
    make_dirs(m + "/var/log");
    ASSERT_EQ(run_command({"mount", "--bind", stray, m + "/var/log"}).status, 0);
    // Mounted, as far as rm is concerned: it must not delete through the stray mount.
    EXPECT_EQ(inspect(lamina, {"inspect", "c"})[0]["Mounted"], true);
    expect_one_line_error(lamina({"rm", "c"}), "is mounted");
    EXPECT_EQ(read_file(stray + "/precious"), "data");
    expect_umount_clears_everything();

    ASSERT_EQ(run_command({"mount", "--bind", stray, m + "/var/log"}).status, 0);
    EXPECT_EQ(out_of(lamina({"mount", "c"})), m);
    EXPECT_EQ(mounts_below(m), kWhole);
    EXPECT_EQ(read_file(m + "/var/log/boot.log"), "booted\n");
    write_file(m + "/var/log/new", "x");
    EXPECT_FALSE(exists(stray + "/new"));
    expect_umount_clears_everything();
}

// A union whose daemon died answers ENOTCONN; the next mount replaces it, volumes and all.
TEST_F(HalfMount, a_dead_union_is_replaced_by_the_next_mount) {
    EXPECT_EQ(out_of(lamina({"mount", "c"})), m);
    pid_t daemon = laminafs_serving(m);
    ASSERT_GT(daemon, 0);
    ASSERT_EQ(kill(daemon, SIGKILL), 0);
    // The connection is aborted once the daemon's /dev/fuse descriptor closes; statfs always asks.
    // While the kernel is still ending what the daemon's io_uring queues held, a request may
    // fail with ECONNABORTED or ECANCELED first.
    struct statfs sf;
    int err = 0;
    for (int i = 0; i < 200 && err != ENOTCONN; ++i) {
        err = statfs(m.c_str(), &sf) == 0 ? 0 : errno;
        if (err != ENOTCONN) usleep(5000);
    }
    EXPECT_EQ(err, ENOTCONN) << strerror(err);
    EXPECT_EQ(out_of(lamina({"mount", "c"})), m);
    EXPECT_EQ(read_file(m + "/etc/motd"), "hello\n");
    EXPECT_EQ(read_file(m + "/var/log/boot.log"), "booted\n");
    EXPECT_EQ(mounts_below(m), kWhole);
    EXPECT_EQ(mount_fstype(m), "fuse.laminafs");
    expect_umount_clears_everything();
}

// The first copy is staged beside the data (volumes/NAME/_copy, or DEVICE/.lamina-copy) and
// renamed to _copied once whole; a kill leaves one of the two, never a partial copy in the data
// marked populated. Both states, made by hand: the half copy is thrown away and made again, the
// whole one is moved in.
TEST(Volumes, an_interrupted_first_copy_is_redone_and_a_whole_one_moved_in) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    std::string device = app.tmp / "device";
    make_dirs(device);
    out_of(lamina({"volume", "create", "half"}));
    out_of(lamina({"volume", "create", "whole"}));
    out_of(lamina({"volume", "create", "-o", "type=none", "-o", "o=bind", "-o", "device=" + device,
                   "bound"}));
    out_of(lamina({"create", "--name", "c", "-v", "half:/var/log", "-v", "whole:/srv", "-v",
                   "bound:/data", "app:1"}));
    std::string half = app.path("volumes/half");
    make_dirs(half + "/_copy");
    write_file(half + "/_copy/boot.log", "boo");
    std::string whole = app.path("volumes/whole");
    // Killed while moving in: boot.log made it, sub/deep did not.
    write_file(whole + "/_data/boot.log", "booted\n");
    make_dirs(whole + "/_copied/sub");
    write_file(whole + "/_copied/sub/deep", "deep");
    make_dirs(device + "/.lamina-copy");
    write_file(device + "/.lamina-copy/se", "");

    std::string m = out_of(lamina({"mount", "c"}));
    EXPECT_EQ(describe_tree(half + "/_data"), "f boot.log booted\n\nd sub\nf sub/deep deep\n");
    EXPECT_FALSE(exists(half + "/_copy"));
    EXPECT_EQ(describe_tree(device), "f seed seed\n");
    // The image has nothing at /srv: what was staged is moved in, not copied again.
    EXPECT_EQ(describe_tree(whole + "/_data"), "f boot.log booted\n\nd sub\nf sub/deep deep\n");
    EXPECT_FALSE(exists(whole + "/_copied"));
    struct stat st;
    ASSERT_EQ(stat((half + "/_data").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0750u);
    EXPECT_EQ(st.st_uid, 124u);
    out_of(lamina({"umount", "c"}));
    // Done once: emptied, they stay empty.
    ASSERT_EQ(run_shell("rm -rf '" + half + "'/_data/*").status, 0);
    m = out_of(lamina({"mount", "c"}));
    EXPECT_EQ(run_shell("ls -A '" + m + "/var/log'").out, "");
    out_of(lamina({"umount", "c"}));
}

// A tmpfs mounted inside a bind's source comes along (MS_REC) and must be read-only too.
TEST(Volumes, read_only_binds_are_read_only_in_their_submounts) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    std::string host = app.tmp / "host";
    make_dirs(host + "/sub");
    ASSERT_EQ(run_command({"mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", host + "/sub"}).status,
              0);
    MountGuard sub(host + "/sub");
    out_of(lamina({"create", "--name", "c", "-v", host + ":/p:ro", "app:1"}));
    std::string m = out_of(lamina({"mount", "c"}));
    for (std::string p : {"/p/new", "/p/sub/new"}) {
        int fd = open((m + p).c_str(), O_WRONLY | O_CREAT, 0644);
        EXPECT_EQ(fd, -1) << p;
        EXPECT_EQ(errno, EROFS) << p;
        if (fd >= 0) close(fd);
    }
    write_file(host + "/sub/outside", "the source itself stays writable");
    EXPECT_EQ(read_file(m + "/p/sub/outside"), "the source itself stays writable");
    out_of(lamina({"umount", "c"}));
}

TEST(Volumes, read_only_binds_are_read_only_in_their_submounts_inside_a_user_namespace) {
    REQUIRE_FUSE();
    if (!can_unshare()) SKIP_NEEDING("unshare") << "unshare -Urm is not permitted here";
    AppStore app;
    app.load();
    std::string host = app.tmp / "host";
    make_dirs(host + "/sub");
    out_of(app.lamina({"create", "--name", "u", "-v", host + ":/p:ro", "app:1"}));
    auto r = run_in_user_namespace(
        app.lamina, "set -e; mount -t tmpfs tmpfs '" + host +
                        "/sub'; m=$(lamina mount u); for f in p/x p/sub/x; do "
                        "if touch \"$m/$f\" 2>/dev/null; then echo \"$f writable\"; exit 3; fi; "
                        "done; lamina umount u; echo ok");
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_EQ(r.out, "ok\n") << r.err;
}

// o= mixes mount(8)'s generic flags with tmpfs's own options: the flags become mount flags, the
// rest tmpfs data; an o=ro tmpfs still gets its first copy.
TEST(Volumes, tmpfs_o_splits_mount_flags_from_tmpfs_options) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    auto& lamina = app.lamina;
    out_of(lamina({"volume", "create", "-o", "type=tmpfs", "-o",
                   "o=size=10m,noexec,nosuid,uid=1000,nodiratime", "scratch"}));
    out_of(lamina({"volume", "create", "-o", "type=tmpfs", "-o", "o=ro,size=1m", "frozen"}));
    out_of(lamina(
        {"create", "--name", "c", "-v", "scratch:/scratch", "-v", "frozen:/var/log", "app:1"}));
    std::string m = out_of(lamina({"mount", "c"}));
    struct statvfs sv;
    ASSERT_EQ(statvfs((m + "/scratch").c_str(), &sv), 0);
    EXPECT_TRUE(sv.f_flag & ST_NOEXEC);
    EXPECT_TRUE(sv.f_flag & ST_NOSUID);
    EXPECT_TRUE(sv.f_flag & ST_NODIRATIME);
    EXPECT_FALSE(sv.f_flag & ST_RDONLY);
    EXPECT_EQ(sv.f_blocks * sv.f_frsize, 10u << 20);
    auto line = run_shell("grep ' " + m + "/scratch ' /proc/self/mountinfo").out;
    EXPECT_NE(line.find(" - tmpfs tmpfs "), std::string::npos) << line;
    std::string mount_options = line.substr(0, line.find(" - "));
    std::string tmpfs_options = line.substr(line.find(" - "));
    EXPECT_NE(mount_options.find(",noexec"), std::string::npos) << line;
    EXPECT_NE(tmpfs_options.find(",uid=1000"), std::string::npos) << line;
    EXPECT_EQ(tmpfs_options.find("exec"), std::string::npos) << line;
    EXPECT_EQ(read_file(m + "/var/log/boot.log"), "booted\n");
    int fd = open((m + "/var/log/new").c_str(), O_WRONLY | O_CREAT, 0644);
    EXPECT_EQ(fd, -1);
    EXPECT_EQ(errno, EROFS);
    if (fd >= 0) close(fd);
    out_of(lamina({"umount", "c"}));
}

// The store root spelled another way ("ROOT/./", "ROOT//") is the same store: a mounted container
// must still look mounted, so `rm` without -f refuses instead of deleting through the live
// union into its volumes.
TEST(Volumes, another_spelling_of_the_root_still_sees_the_mount) {
    REQUIRE_FUSE();
    AppStore app;
    app.load();
    out_of(app.lamina({"create", "--name", "c", "-v", "keep:/var/log", "app:1"}));
    std::string m = out_of(app.lamina({"mount", "c"}));
    write_file(m + "/var/log/precious", "data\n");
    for (std::string root : {app.lamina.root() + "/./", app.lamina.root() + "//"}) {
        Lamina other(root);
        auto r = other({"rm", "c"});
        EXPECT_NE(r.status, 0) << root << ": rm of a mounted container succeeded";
        EXPECT_TRUE(is_mountpoint(m)) << root;
        EXPECT_EQ(read_file(app.path("volumes/keep/_data/precious")), "data\n") << root;
    }
    out_of(app.lamina({"umount", "c"}));
    out_of(app.lamina({"rm", "c"}));
    EXPECT_EQ(read_file(app.path("volumes/keep/_data/precious")), "data\n");
}

}  // namespace
}  // namespace lamina::test
