// lamina as a docker user scripts it, run for real against stores in temp dirs: help on every
// command, listings sorted, filtered, formatted and quiet, archives through pipes, export.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "needs.h"
#include "script_fixture.h"
#include "usage.h"

namespace lamina::test {
namespace {

using nlohmann::json;

TEST(Help, every_command_and_alias_answers_help_with_its_usage) {
    TempDir tmp("lamina-cli");
    Lamina lamina(tmp / "store");
    for (const auto& c : lamina::cli::command_specs()) {
        std::vector<std::string> names = {c.name};
        names.insert(names.end(), c.aliases.begin(), c.aliases.end());
        for (const auto& name : names) {
            for (const char* flag : {"--help", "-h"}) {
                auto args = words(name);
                args.push_back(flag);
                auto r = lamina(args);
                EXPECT_EQ(r.status, 0) << name << " " << flag << ": " << r.err;
                EXPECT_TRUE(r.out.starts_with("Usage:  lamina " + c.name)) << name << ": " << r.out;
                for (const auto& o : c.options)
                    EXPECT_NE(r.out.find(o.spellings.back()), std::string::npos)
                        << name << " --help does not list " << o.spellings.back();
            }
            auto args = words(name);
            args.insert(args.begin(), "help");
            auto r = lamina(args);
            EXPECT_EQ(r.status, 0) << r.err;
            EXPECT_TRUE(r.out.starts_with("Usage:  lamina " + c.name)) << "help " << name;
        }
    }
    for (const auto& g : lamina::cli::group_specs()) {
        auto r = lamina({g.name, "--help"});
        EXPECT_EQ(r.status, 0) << r.err;
        EXPECT_TRUE(r.out.starts_with("Usage:  lamina " + g.name + " COMMAND")) << r.out;
        EXPECT_EQ(lamina({"help", g.name}).out, r.out);
        auto bare = lamina({g.name});
        EXPECT_EQ(bare.status, 2);
        EXPECT_EQ(bare.err, r.out);
    }
    auto overview = lamina({"--help"});
    EXPECT_EQ(overview.status, 0);
    EXPECT_EQ(lamina({"help"}).out, overview.out);
    EXPECT_NE(overview.out.find("  export "), std::string::npos);
}

TEST(Help, version_and_unknown_options) {
    TempDir tmp("lamina-cli");
    Lamina lamina(tmp / "store");
    std::string version = "lamina version " + std::string(LAMINA_VERSION) + "\n";
    EXPECT_EQ(lamina({"version"}).out, version);
    EXPECT_EQ(lamina({"--version"}).out, version);
    auto r = lamina({"images", "--bogus"});
    EXPECT_EQ(r.status, 2);
    EXPECT_EQ(r.err,
              "lamina: unknown option --bogus for \"lamina images\" (lamina images --help lists "
              "them)\n");
    r = lamina({"tag", "only-one"});
    EXPECT_EQ(r.status, 2);
    EXPECT_EQ(r.err,
              "lamina: usage: lamina tag SOURCE_IMAGE TARGET_IMAGE[:TAG] (lamina tag --help)\n");
    r = lamina({"image", "frob"});
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.err.find("unknown image command \"frob\""), std::string::npos);
}

TEST_F(Script, images_newest_first_in_every_form) {
    EXPECT_EQ(images({}), "base:1\napp:2\napp:1\n<none>:<none>");
    EXPECT_EQ(out_of(lamina({"image", "ls", "--format", "{{.Repository}}"})),
              "base\napp\napp\n<none>");
    auto table = out_of(lamina({"images"}));
    EXPECT_TRUE(table.starts_with("REPOSITORY   TAG      IMAGE ID       CREATED")) << table;
    auto ids = out_of(lamina({"images", "-q"}));
    EXPECT_EQ(ids.size(), 4 * 13 - 1) << ids;
    auto full = out_of(lamina({"images", "-q", "--no-trunc"}));
    EXPECT_EQ(full.substr(0, 7 + 12), "sha256:" + ids.substr(0, 12));
    auto json_ids = json::parse(out_of(lamina({"images", "--format", "json"})));
    ASSERT_EQ(json_ids.size(), 4u);
    EXPECT_EQ(json_ids[0]["Id"], full.substr(0, full.find('\n')));
    EXPECT_EQ(
        out_of(lamina({"images", "--format", "table {{.Repository}}\\t{{.Tag}}"})),
        "REPOSITORY   TAG\nbase         1\napp          2\napp          1\n<none>       <none>");
    EXPECT_EQ(out_of(lamina({"images", "--format", "{{.ID}}\t{{.CreatedAt}}", "base"})),
              ids.substr(0, 12) + "\t2024-03-01 00:00:00 +0000 UTC");
    auto line = json::parse(out_of(lamina({"images", "--format", "{{json .}}", "app:1"})));
    EXPECT_EQ(line["Repository"], "app");
    EXPECT_EQ(line["Tag"], "1");
    EXPECT_EQ(
        out_of(lamina({"images", "--format", "{{lower .Repository}}{{upper .Tag}}", "app:2"})),
        "app2");
}

TEST_F(Script, images_filters_as_docker) {
    EXPECT_EQ(images({"--filter", "reference=app"}), "app:2\napp:1");
    EXPECT_EQ(images({"-f", "reference=ap*:1"}), "app:1");
    EXPECT_EQ(images({"-f", "reference=base", "-f", "reference=app:2"}), "base:1\napp:2");
    EXPECT_EQ(images({"-f", "dangling=true"}), "<none>:<none>");
    EXPECT_EQ(images({"-f", "dangling=false"}), "base:1\napp:2\napp:1");
    EXPECT_EQ(images({"-f", "label=tier"}), "app:2\napp:1");
    EXPECT_EQ(images({"-f", "label=tier=db"}), "app:2");
    EXPECT_EQ(images({"-f", "before=app:2"}), "app:1\n<none>:<none>");
    EXPECT_EQ(images({"-f", "since=app:1"}), "base:1\napp:2");
    EXPECT_EQ(images({"-f", "since=app:1", "-f", "label=tier"}), "app:2");
    for (const char* bad : {"bogus=1", "dangling=maybe", "reference"}) {
        auto r = lamina({"images", "-f", bad});
        EXPECT_EQ(r.status, 2) << bad;
        EXPECT_EQ(r.out, "") << bad;
    }
    EXPECT_EQ(lamina({"images", "-f", "before=nothere:1"}).status, 1);
}

TEST_F(Script, quiet_ids_feed_rmi) {
    auto r = run_shell(lamina_sh(lamina) + " rmi $(" + lamina_sh(lamina) +
                       " images -q --filter reference=app)");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(images({}), "base:1\n<none>:<none>");
}

TEST_F(Script, format_errors_exit_non_zero_and_print_nothing) {
    for (std::vector<std::string> args : {
             std::vector<std::string>{"images", "--format", "{{.Nope}}"},
             {"images", "--format", "yaml"},
             {"images", "--format", "{{.ID"},
             {"images", "--format", "{{printf .ID}}"},
             {"history", "--format", "{{.Name}}", "app:1"},
             {"inspect", "--format", "{{.ID}}", "app:1"},
             {"inspect", "--format", "Id", "app:1"},
             {"volume", "ls", "--format", "{{.Id}}"},
             {"ps", "-a", "--format", "{{.Nope}}"},
             {"system", "df", "--format", "{{.Nope}}"},
             {"diff", "--format", "{{.Path}}", "x"},
         }) {
        auto r = lamina(args);
        EXPECT_EQ(r.status, 2) << args[0] << " " << args[2] << ": " << r.err;
        EXPECT_EQ(r.out, "") << args[0] << " " << args[2];
    }
    auto r = lamina({"images", "--format", "{{.Nope}}"});
    EXPECT_NE(r.err.find("no field .Nope"), std::string::npos) << r.err;
}

std::string file_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

TEST_F(Script, convert_refuses_bad_input_in_one_line_and_stores_nothing) {
    std::string before = images({});
    std::ofstream(tmp / "bad-list") << "etc/name\n../etc\n";
    struct Case {
        std::vector<std::string> args;
        int status;
        std::string says;
    };
    for (const Case& c : std::vector<Case>{
             {{"convert", "--format", "zstd", "app:1", "app:ez"}, 2, "--format"},
             {{"convert", "app:1", "app:ez"}, 2, "--format estargz"},
             {{"push", "--compression-format", "zip", "app:1", "127.0.0.1:9/app:1"},
              2,
              "--compression-format must be estargz or zstd:chunked"},
             {{"push", "--prefetch-list", tmp / "bad-list", "app:1", "127.0.0.1:9/app:1"},
              2,
              "--prefetch-list goes with --compression-format"},
             {{"convert", "--format", "estargz", "app:1"}, 2, "usage"},
             {{"convert", "--format", "estargz", "nope:1", "app:ez"}, 1, "nope"},
             {{"convert", "--format", "estargz", "app:1", "app:2"}, 1, "taken"},
             {{"convert", "--format", "estargz", "--prefetch-list", tmp / "bad-list", "app:1",
               "app:ez"},
              1,
              "line 2"},
             {{"convert", "--format", "estargz", "--prefetch-list", tmp / "absent", "app:1",
               "app:ez"},
              1,
              "absent"},
         }) {
        auto r = lamina(c.args);
        EXPECT_EQ(r.status, c.status) << c.args[2] << ": " << r.err;
        EXPECT_EQ(r.out, "");
        EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
    EXPECT_EQ(images({}), before);

    std::ofstream(tmp / "list") << "etc/name\n";
    auto r = lamina(
        {"convert", "--format", "estargz", "--prefetch-list", tmp / "list", "app:1", "app:ez"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");
    json img = json::parse(out_of(lamina({"inspect", "app:ez"})))[0];
    EXPECT_EQ(r.out, img["Id"].get<std::string>() + "\n");
    std::string layer = img["Layers"][0]["Path"];
    EXPECT_EQ(file_text(layer + "/etc/name"), "app:1\n");
    EXPECT_EQ(file_text(layer + "/.prefetch.landmark"), "\x0f");

    // zstd:chunked: the same files, no landmark (its TOC is no tar entry, it adds no file).
    r = lamina({"convert", "--format", "zstd:chunked", "--prefetch-list", tmp / "list", "app:1",
                "app:zc"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");
    img = json::parse(out_of(lamina({"inspect", "app:zc"})))[0];
    layer = img["Layers"][0]["Path"];
    EXPECT_EQ(file_text(layer + "/etc/name"), "app:1\n");
    EXPECT_NE(access((layer + "/.prefetch.landmark").c_str(), F_OK), 0);
}

TEST_F(Script, inspect_format_renders_each_object) {
    auto id = out_of(lamina({"images", "-q", "--no-trunc", "app:1"}));
    EXPECT_EQ(out_of(lamina({"inspect", "--format", "{{.Id}}", "app:1", "app:2"})).substr(0, 72),
              id + "\n");
    EXPECT_EQ(out_of(lamina({"image", "inspect", "-f", "{{json .Config.config.Labels}}", "app:1"})),
              R"({"tier":"web"})");
    EXPECT_EQ(out_of(lamina({"inspect", "--format", "{{.RepoTags}}", "app:1"})), "[app:1]");
    EXPECT_EQ(
        out_of(lamina({"inspect", "-f", "{{.Config.config.Labels.tier}}", "app:1", "base:1"})),
        "web\n<no value>")
        << "a key missing from a map below the top is Go's <no value>";
    EXPECT_EQ(lamina({"inspect", "-f", "{{.Config.created.x}}", "app:1"}).status, 2)
        << "a field of a string";
    auto r = lamina({"inspect", "nothere"});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err, "lamina: no such image or container: nothere\n");
}

TEST_F(Script, save_pipes_into_load_and_import_reads_stdin) {
    TempDir other("lamina-cli");
    Lamina second(other / "store");
    auto r = run_shell(lamina_sh(lamina) + " save app:1 | " + lamina_sh(second) + " load");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "Loaded image: app:1\n");
    EXPECT_EQ(out_of(second({"images", "-q", "--no-trunc"})),
              out_of(lamina({"images", "-q", "--no-trunc", "app:1"})));
    r = run_shell(lamina_sh(lamina) + " image save --format oci-archive app:2 base:1 > " +
                  shell_quote(tmp / "two.tar") + " && " + lamina_sh(second) + " load < " +
                  shell_quote(tmp / "two.tar"));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(out_of(second({"images", "--format", "{{.Repository}}:{{.Tag}}"})),
              "base:1\napp:2\napp:1");
    r = second({"load", "-i", "-", "-q"});  // stdin is /dev/null
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err, "lamina: stdin is empty: there is no archive to read\n");

    write_file(tmp / "root.tar", make_tar({dir("srv"), file("srv/x", "x")}));
    r = run_shell("cat " + shell_quote(tmp / "root.tar") + " | " + lamina_sh(second) +
                  " import - piped:1");
    ASSERT_EQ(r.status, 0) << r.err;
    auto made = json::parse(out_of(second({"inspect", "piped:1"})));
    EXPECT_EQ(made[0]["Layers"].size(), 1u);
    EXPECT_EQ(read_file(made[0]["Layers"][0]["Path"].get<std::string>() + "/srv/x"), "x");
    EXPECT_EQ(out_of(second({"history", "--format", "{{.CreatedBy}}", "piped:1"})),
              "lamina import -");
    r = run_shell("echo garbage | " + lamina_sh(second) + " load");
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err.find("/proc/"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("cannot load stdin"), std::string::npos) << r.err;
}

TEST_F(Script, archives_never_go_to_or_come_from_a_terminal) {
    if (!have_program("script")) SKIP_NEEDING("program:script") << "script(1) is not installed";
    // script(1) gives the command a terminal for stdin and stdout.
    auto on_terminal = [&](const std::string& args) {
        return run_command({"script", "-qec", lamina_sh(lamina) + " " + args, "/dev/null"});
    };
    auto r = on_terminal("save app:1");
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("refusing to write an archive to a terminal"), std::string::npos) << r.out;
    r = on_terminal("load");
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("give -i FILE"), std::string::npos) << r.out;
    out_of(lamina({"create", "--name", "web", "app:1"}));
    r = on_terminal("export web");
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("refusing to write a tar to a terminal"), std::string::npos) << r.out;
    r = on_terminal("save -o " + shell_quote(tmp / "a.tar") + " app:1");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(out_of(lamina({"load", "-i", tmp / "a.tar"})), "Loaded image: app:1");
}

TEST_F(Script, ps_filters_quiet_and_export) {
    REQUIRE_FUSE();
    std::string c1 = out_of(lamina({"create", "--name", "web", "app:1"}));
    sleep(1);  // ps lists the newest first, by the second
    std::string c2 = out_of(lamina({"container", "create", "--name", "db", "base:1"}));
    std::string merged = out_of(lamina({"mount", "web"}));
    EXPECT_EQ(out_of(lamina({"ps", "-q"})), c1.substr(0, 12));
    EXPECT_EQ(out_of(lamina({"ps", "-q", "--no-trunc"})), c1);
    EXPECT_EQ(out_of(lamina({"container", "ls", "-a", "--format", "{{.Names}} {{.State}}"})),
              "db created\nweb mounted");
    auto names = [&](const std::vector<std::string>& filters) {
        std::vector<std::string> args = {"ps", "-a", "--format", "{{.Names}}"};
        for (const auto& f : filters) args.insert(args.end(), {"--filter", f});
        return out_of(lamina(args));
    };
    EXPECT_EQ(names({"status=created"}), "db");
    EXPECT_EQ(names({"status=mounted"}), "web");
    EXPECT_EQ(names({"name=we"}), "web");
    EXPECT_EQ(names({"ancestor=base:1"}), "db");
    EXPECT_EQ(names({"ancestor=nothere"}), "");
    EXPECT_EQ(names({"id=" + c2.substr(0, 6)}), "db");
    EXPECT_EQ(names({"label=tier"}), "");
    EXPECT_EQ(out_of(lamina({"ps", "--filter", "status=created", "-q"})), c2.substr(0, 12))
        << "a status filter lists unmounted containers without -a";
    EXPECT_EQ(lamina({"ps", "--filter", "status=running"}).status, 2);

    // export: the merged tree, changes included, whiteouts honoured.
    write_file(merged + "/etc/added", "new");
    ASSERT_EQ(unlink((merged + "/data/gone").c_str()), 0);
    auto r = run_shell(lamina_sh(lamina) + " export web | tar -tf - | sort");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "data/\ndata/kept\netc/\netc/added\netc/name\n");
    r = run_shell(lamina_sh(lamina) + " export web | tar -xOf - etc/added");
    EXPECT_EQ(r.out, "new");
    // An unmounted container is mounted for the export and left unmounted.
    out_of(lamina({"container", "export", "-o", tmp / "db.tar", "db"}));
    r = run_command({"tar", "-xOf", tmp / "db.tar", "etc/name"});
    EXPECT_EQ(r.out, "base:1\n");
    EXPECT_EQ(names({"status=mounted"}), "web");
    out_of(lamina({"umount", "web"}));
}

TEST_F(Script, volume_ls_quiet_and_format) {
    out_of(lamina({"volume", "create", "--label", "team=a", "one"}));
    out_of(lamina({"volume", "create", "two"}));
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q"})), "one\ntwo");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "-q", "-f", "label=team"})), "one");
    EXPECT_EQ(out_of(lamina({"volume", "list", "--format", "{{.Name}}={{.Labels}}"})),
              "one=team=a\ntwo=");
    EXPECT_EQ(out_of(lamina({"volume", "inspect", "-f", "{{.Mountpoint}}", "one"})),
              lamina.root() + "/volumes/one/_data");
    EXPECT_EQ(out_of(lamina({"volume", "ls", "--format", "table {{.Name}}\\t{{.Scope}}"})),
              "VOLUME NAME   SCOPE\none           local\ntwo           local");
}

TEST_F(Script, system_prune_asks_first) {
    out_of(lamina({"create", "--name", "idle", "app:1"}));
    auto r = run_shell("echo n | " + lamina_sh(lamina) + " system prune");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("Are you sure you want to continue? [y/N]"), std::string::npos);
    EXPECT_EQ(out_of(lamina({"ps", "-aq"})).size(), 12u) << "n keeps everything";
    r = lamina({"system", "prune", "-f"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(out_of(lamina({"ps", "-a", "-q"})), "");
    EXPECT_EQ(images({}), "base:1\napp:2\napp:1") << "the dangling image went";
}

TEST_F(Script, rmi_by_id_of_an_image_in_two_repositories_needs_force) {
    std::string id = out_of(lamina({"images", "-q", "app:1"}));
    out_of(lamina({"tag", "app:1", "mirror/app:1"}));
    auto r = lamina({"rmi", id});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err, "lamina: image " + id +
                         " is named in several repositories (app, mirror/app): remove the names, "
                         "or use -f\n");
    EXPECT_EQ(images({"-f", "reference=*/app"}), "mirror/app:1");
    out_of(lamina({"tag", "app:2", "app:two"}));
    r = lamina({"rmi", out_of(lamina({"images", "-q", "app:2"}))});
    EXPECT_EQ(r.status, 0) << "two names in one repository: " << r.err;
    r = lamina({"rmi", "-f", id});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(images({}), "base:1\n<none>:<none>");
}

TEST(RoughEdges, a_relative_root_that_makes_a_new_store_says_so) {
    TempDir tmp("lamina-cli");
    std::string cmd = "cd " + shell_quote(tmp.path()) + " && " + shell_quote(lamina_binary()) +
                      " --root relstore images -q";
    auto r = run_shell(cmd);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "lamina: made a new, empty store at " + (tmp / "relstore") +
                         " (--root relstore is relative to the working directory)\n");
    r = run_shell(cmd);
    EXPECT_EQ(r.err, "") << "only the first time";
}

TEST_F(Script, bash_completion_offers_commands_options_and_names) {
    EXPECT_EQ(complete(lamina, {"im"}), "image\nimages\nimport\n");
    EXPECT_EQ(complete(lamina, {"volume", ""}), "create\ninspect\nls\nprune\nrm\n");
    EXPECT_EQ(complete(lamina, {"images", "--f"}), "--filter\n--format\n");
    EXPECT_EQ(complete(lamina, {"rmi", "ap"}), "app:1\napp:2\n");
    EXPECT_EQ(complete(lamina, {"image", "history", "b"}), "base:1\n");
    out_of(lamina({"create", "--name", "web", "app:1"}));
    EXPECT_EQ(complete(lamina, {"container", "export", ""}), "web\n");
    out_of(lamina({"volume", "create", "logs"}));
    EXPECT_EQ(complete(lamina, {"volume", "rm", ""}), "logs\n");
}

}  // namespace
}  // namespace lamina::test
