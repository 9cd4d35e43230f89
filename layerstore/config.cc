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

// The config file's settings, or an empty object when there is no file.
static nlohmann::json read_config_file(const std::string& cfg) {
    if (!path_exists(cfg)) return nlohmann::json::object();
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(read_file(cfg));
    } catch (const nlohmann::json::exception& e) {
        throw StoreError("cannot parse " + cfg + ": " + e.what());
    }
    if (!j.is_object()) throw StoreError("cannot use " + cfg + ": not a JSON object");
    return j;
}

uint64_t parse_byte_size(const std::string& text, const std::string& what) {
    size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    std::string unit = text.substr(digits);
    int shift = unit.empty() ? 0 : unit == "K" ? 10 : unit == "M" ? 20 : unit == "G" ? 30 : -1;
    if (digits == 0 || digits > 15 || shift < 0)
        throw StoreError(what + ": \"" + text +
                         "\" is not a size (bytes, or a number with K, M or G)");
    return std::stoull(text.substr(0, digits)) << shift;
}

std::optional<uint64_t> resolve_free_space_reserve(const std::string& explicit_value) {
    if (!explicit_value.empty()) return parse_byte_size(explicit_value, "--reserve");
    std::string cfg = config_file_path();
    nlohmann::json j = read_config_file(cfg);
    if (!j.contains("reserve")) return std::nullopt;
    if (!j["reserve"].is_string())
        throw StoreError("cannot use " + cfg + ": \"reserve\" must be a string such as \"512M\"");
    return parse_byte_size(j["reserve"].get<std::string>(), cfg + ": reserve");
}

std::string resolve_store_root(const std::string& explicit_root) {
    if (!explicit_root.empty()) return absolute(explicit_root);
    std::string cfg = config_file_path();
    {
        nlohmann::json j = read_config_file(cfg);
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
