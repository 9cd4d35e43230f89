// Registry settings as docker and podman keep them: daemon.json-style insecure registries
// (hosts and CIDR ranges) and Docker Hub mirrors from lamina's config.json, registries.conf v2
// (per-registry insecure, blocked, mirrors, search registries, short-name aliases), and the
// certs.d directories. docs/registry.md lists the files in the order they are read.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "reference.h"
#include "transport.h"

namespace lamina::registry {

struct MirrorConfig {
    std::string location;          // host[:port][/path]
    std::optional<bool> insecure;  // unset: as insecure-registries says for its host
};

// One [[registry]] table of registries.conf.
struct RegistryConfig {
    std::string prefix;    // what it matches: "host[:port][/path]" or "*.domain"
    std::string location;  // what the prefix becomes ("" for a wildcard: the host as named)
    std::optional<bool> insecure;
    bool blocked = false;
    bool mirror_by_digest_only = false;
    std::vector<MirrorConfig> mirrors;
    std::string file;  // where it was read, for messages
};

// Where one pull or push goes: the registry itself or one of its mirrors.
struct Endpoint {
    std::string registry;    // as the reference names it ("docker.io"), for messages and login
    std::string name;        // registry/repository as the reference names it, for messages
    std::string host;        // where requests go ("registry-1.docker.io", "mirror:5000")
    std::string repository;  // the repository there (a mirror's path prefix included)
    std::string scheme;      // "https" or "http" when the setting says; "" to choose (ping)
    bool insecure = false;   // TLS unverified and plain HTTP allowed
    bool mirror = false;
    std::string label;  // a mirror as configured ("https://m:5000", "m:5000/hub")
};

struct Settings {
    std::string config_dir;  // $LAMINA_CONFIG_DIR, else the directory of the store's config file
    std::vector<std::string> insecure_registries;  // hosts, "host:port" or CIDR ranges
    std::vector<std::string> registry_mirrors;     // URLs for docker.io ("https://mirror:5000")
    std::vector<RegistryConfig> registries;        // registries.conf, the later file winning
    std::vector<std::string> search_registries;    // unqualified-search-registries
    std::map<std::string, std::string> aliases;    // short name -> fully qualified name
    std::vector<std::string> files_read;           // the config files found, in order
    // config.json's "lazy-background": `lamina mount` starts the completer of the container's
    // lazy layers, as `pull --lazy --background` does (docs/lazy.md).
    bool lazy_background = false;
    // config.json's "lazy": `lamina pull` pulls eStargz layers lazily without --lazy.
    bool lazy = false;
    // config.json's "lazy-cache-size" ("512M"): what lazy layers not yet complete may keep
    // locally, in bytes; the fetcher evicts beyond it (docs/lazy.md). Unset: no limit.
    std::optional<uint64_t> lazy_cache_size;

    // Reads config.json, then registries.conf (system, its .d dir, then lamina's); a missing
    // file means no settings. Throws RegistryError on a malformed one.
    static Settings load();
    // config.json alone, for a command that needs only lamina's own keys (system df).
    static Settings load_config_json();

    // insecure-registries (and 127.0.0.0/8, as docker has it) say host may be reached over
    // plain HTTP or unverified TLS, unless a registries.conf entry for it says otherwise.
    bool is_insecure(const std::string& host) const;
    // The registries.conf entry whose prefix matches registry/repository best, or nullptr.
    const RegistryConfig* registry_for(const std::string& name) const;
    // certs.d directories for host, in the order they are read.
    std::vector<std::string> certs_dirs(const std::string& host) const;
    // lamina's own certs.d dir for host, whether or not it exists (named in hints).
    std::string certs_dir(const std::string& host) const;
    std::string auth_file() const { return config_dir + "/auth.json"; }

    // Where a pull of ref is tried, in order: registries.conf mirrors, config.json's
    // registry-mirrors (docker.io only), then the registry. Throws RegistryError when
    // registries.conf blocks it.
    std::vector<Endpoint> pull_endpoints(const Reference& ref) const;
    // Where a push (or login) goes: the registry, relocated as registries.conf says.
    Endpoint push_endpoint(const Reference& ref) const;
    // The references a name the user typed may mean, in the order to try them: an alias, the
    // unqualified-search-registries, else Docker's docker.io. A qualified name is itself.
    std::vector<Reference> resolve(const std::string& text) const;
};

// TLS for host: every *.crt in its certs.d dirs as a CA, the first *.cert/*.key pair as the
// client certificate, SSL_CERT_FILE and SSL_CERT_DIR for the system CAs. Throws RegistryError
// for a *.cert without its *.key (or the reverse), as docker does.
TlsOptions tls_for(const Settings& s, const std::string& host, bool verify);

// True when host ("1.2.3.4", "[::1]:5000", "localhost") lies in cidr ("127.0.0.0/8").
bool host_in_cidr(const std::string& host, const std::string& cidr);

}  // namespace lamina::registry
