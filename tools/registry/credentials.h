// Registry credentials where docker and podman keep them: auth files, credential helpers,
// and the file `lamina login` writes.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace lamina::registry {

struct Credentials {
    std::string username;
    std::string password;
};

// The files searched for credentials, in order (see docs/registry.md): $REGISTRY_AUTH_FILE,
// lamina's auth.json, ${XDG_RUNTIME_DIR}/containers/auth.json,
// ${XDG_CONFIG_HOME:-~/.config}/containers/auth.json, then Docker's config.json
// ($DOCKER_CONFIG/config.json or ~/.docker/config.json). Missing ones are left out.
std::vector<std::string> credential_files(const std::string& lamina_auth_file);

// Credentials for host (a registry's canonical name, "docker.io" or "host:port") from the
// first file that has some: its credHelpers entry for host (running docker-credential-NAME
// get), else its auths entry, else its credsStore helper. Throws RegistryError when a file is
// malformed or a helper fails other than with "credentials not found".
std::optional<Credentials> find_credentials(const std::string& lamina_auth_file,
                                            const std::string& host);

// The file `lamina login` writes and `logout` edits: $REGISTRY_AUTH_FILE when set, as podman
// does, else lamina's auth.json.
std::string login_auth_file(const std::string& lamina_auth_file);
// Writes host's credentials to file (mode 0600, replaced atomically).
void save_credentials(const std::string& file, const std::string& host, const Credentials& c);
// False when file held nothing for host.
bool remove_credentials(const std::string& file, const std::string& host);

// "USER[:PASSWORD]" as --creds gives it; the password is "" when absent.
Credentials parse_creds_option(const std::string& text);

std::string base64_encode(const std::string& data);
std::string base64_decode(const std::string& text);  // throws std::runtime_error when invalid

}  // namespace lamina::registry
