// Registry settings from the config dir: insecure registries, mirrors, certs.d, and the
// credentials `lamina login` keeps (auth.json) or Docker's config.json holds.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace lamina::registry {

struct Credentials {
    std::string username;
    std::string password;
};

struct Settings {
    std::string config_dir;  // $LAMINA_CONFIG_DIR, else the directory of the store's config file
    std::vector<std::string> insecure_registries;  // hosts ("host" or "host:port")
    std::vector<std::string> registry_mirrors;     // URLs for docker.io ("https://mirror:5000")

    // Reads <config dir>/config.json ("insecure-registries", "registry-mirrors"); a missing file
    // means no settings. Throws std::runtime_error on a malformed file.
    static Settings load();

    bool is_insecure(const std::string& host) const;
    // <config dir>/certs.d/<host>, whether or not it exists.
    std::string certs_dir(const std::string& host) const;
    std::string auth_file() const { return config_dir + "/auth.json"; }
};

// Credentials for host: auth.json first, then $DOCKER_CONFIG/config.json (default
// ~/.docker/config.json) "auths".
std::optional<Credentials> find_credentials(const Settings& s, const std::string& host);
// Writes them to auth.json (mode 0600, replaced atomically).
void save_credentials(const Settings& s, const std::string& host, const Credentials& c);
// False when auth.json held nothing for host.
bool remove_credentials(const Settings& s, const std::string& host);

std::string base64_encode(const std::string& data);
std::string base64_decode(const std::string& text);  // throws std::runtime_error when invalid

}  // namespace lamina::registry
