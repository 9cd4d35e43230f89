// Store-root resolution from flags, the config file and the XDG base directories.
#include "config.h"

#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "error.h"
#include "fsutil.h"

namespace lamina::store {

static std::string home_dir() {
    if (const char* h = getenv("HOME"); h && *h) return h;
    if (struct passwd* pw = getpwuid(getuid())) return pw->pw_dir;
    throw StoreError("cannot find the home directory: HOME is unset");
}

static std::string xdg_dir(const char* var, const char* fallback) {
    if (const char* v = getenv(var); v && *v == '/') return v;
    return home_dir() + "/" + fallback;
}

std::string config_file_path() {
    if (geteuid() == 0) return "/etc/lamina/config.json";
    return xdg_dir("XDG_CONFIG_HOME", ".config") + "/lamina/config.json";
}

// The root in the one spelling /proc/self/mountinfo uses: absolute, with "." and ".." and
// repeated slashes gone and symlinks resolved as far as the path exists. Mount checks compare
// paths as text, so "--root /srv/lamina/" must not look unmounted when "/srv/lamina" is mounted.
static std::string absolute(const std::string& p) {
    std::filesystem::path path(p);
    if (!path.is_absolute()) {
        char* cwd = getcwd(nullptr, 0);
        path = std::filesystem::path(cwd ? cwd : "/") / path;
        free(cwd);
    }
    std::error_code ec;
    std::filesystem::path canon = std::filesystem::weakly_canonical(path, ec);
    std::string out = (ec ? path.lexically_normal() : canon).string();
    while (out.size() > 1 && out.ends_with("/")) out.pop_back();
    return out;
}

std::string resolve_store_root(const std::string& explicit_root) {
    if (!explicit_root.empty()) return absolute(explicit_root);
    std::string cfg = config_file_path();
    if (path_exists(cfg)) {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(read_file(cfg));
        } catch (const nlohmann::json::exception& e) {
            throw StoreError("cannot parse " + cfg + ": " + e.what());
        }
        if (j.contains("root")) {
            if (!j["root"].is_string() || j["root"].get<std::string>().empty())
                throw StoreError("cannot use " + cfg + ": \"root\" must be a non-empty string");
            return absolute(j["root"].get<std::string>());
        }
    }
    if (geteuid() == 0) return absolute("/var/lib/lamina");
    return absolute(xdg_dir("XDG_DATA_HOME", ".local/share") + "/lamina");
}

}  // namespace lamina::store
