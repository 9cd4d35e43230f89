// The docker-style script fixture the cli tests share: a store with four images a month apart,
// and the shell helpers that drive lamina the way scripts do.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store_fixture.h"

namespace lamina::test {

using nlohmann::json;

inline std::vector<std::string> words(const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

// "lamina --root ROOT" for a shell command line.
inline std::string lamina_sh(const Lamina& lamina) {
    return shell_quote(lamina_binary()) + " --root " + shell_quote(lamina.root());
}

// A docker-archive (docker save's layout) of one image with one layer; no name when name is "".
inline void write_docker_archive(const std::string& path, const std::string& name,
                                 const std::string& created, const json& labels,
                                 const std::vector<TarEntry>& files) {
    std::string layer = make_tar(files);
    json config = {{"architecture", "amd64"},
                   {"os", "linux"},
                   {"created", created},
                   {"config", {{"Labels", labels}}},
                   {"rootfs", {{"type", "layers"}, {"diff_ids", {sha256(layer)}}}},
                   {"history", {{{"created", created}, {"created_by", "made for " + name}}}}};
    json tags = name.empty() ? json(nullptr) : json::array({name});
    json manifest =
        json::array({{{"Config", "config.json"}, {"RepoTags", tags}, {"Layers", {"layer.tar"}}}});
    write_file(path, make_tar({file("config.json", config.dump()), file("layer.tar", layer),
                               file("manifest.json", manifest.dump())}));
}

// Four images, each created a month apart: <none> (oldest), app:1 (tier=web), app:2 (tier=db),
// base:1 (newest).
class Script : public ::testing::Test {
protected:
    void SetUp() override {
        struct Made {
            std::string name, created;
            json labels;
        };
        std::vector<Made> made = {{"", "2023-12-01T00:00:00Z", json::object()},
                                  {"app:1", "2024-01-01T00:00:00Z", {{"tier", "web"}}},
                                  {"app:2", "2024-02-01T00:00:00Z", {{"tier", "db"}}},
                                  {"base:1", "2024-03-01T00:00:00Z", json::object()}};
        int n = 0;
        for (const auto& m : made) {
            std::string archive = tmp / ("img" + std::to_string(n++) + ".tar");
            write_docker_archive(archive, m.name, m.created, m.labels,
                                 {dir("etc"), file("etc/name", m.name + "\n"), dir("data"),
                                  file("data/gone", "x"), file("data/kept", m.created)});
            out_of(lamina({"load", "-i", archive}));
        }
    }

    std::string images(const std::vector<std::string>& extra) {
        std::vector<std::string> args = {"images", "--format", "{{.Repository}}:{{.Tag}}"};
        args.insert(args.end(), extra.begin(), extra.end());
        return out_of(lamina(args));
    }

    TempDir tmp{"lamina-cli"};
    StoreGuard guard{tmp / "store"};
    Lamina lamina{tmp / "store"};
};

// What the bash completion script offers for a command line whose last word is being typed.
inline std::string complete(const Lamina& lamina, const std::vector<std::string>& line) {
    const char* script = std::getenv("LAMINA_COMPLETION");
    if (!script) return "LAMINA_COMPLETION is not set";
    std::string bin_dir = lamina_binary().substr(0, lamina_binary().rfind('/'));
    std::string words = "lamina --root " + shell_quote(lamina.root());
    for (const auto& w : line) words += " " + shell_quote(w);
    auto r = run_command({"bash", "-c",
                          "PATH=" + shell_quote(bin_dir) + ":$PATH; source " + shell_quote(script) +
                              "; COMP_WORDS=(" + words +
                              "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _lamina; printf '%s\\n' "
                              "\"${COMPREPLY[@]}\" | sort"});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.out;
}

}  // namespace lamina::test
