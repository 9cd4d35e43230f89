// Reading the registry settings: config.json, registries.conf, certs.d.
#include "settings.h"
#include "error.h"
#include "json_input.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <cpptoml.h>
#include <nlohmann/json.hpp>

#include "config.h"

namespace lamina::registry {

using nlohmann::json;

namespace {

constexpr size_t kMaxConfigFile = 1 << 20;
constexpr const char* kSystemRegistriesConf = "/etc/containers/registries.conf";
constexpr const char* kSystemRegistriesDir = "/etc/containers/registries.conf.d";
constexpr const char* kSystemCaBundle = "/etc/ssl/certs/ca-certificates.crt";

std::optional<std::string> slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream ss;
    ss << in.rdbuf();
    if (ss.str().size() > kMaxConfigFile)
        throw RegistryError("cannot use " + path + ": over 1 MiB");
    return ss.str();
}

std::string env(const char* name) {
    const char* v = getenv(name);
    return v ? v : "";
}

std::vector<std::string> string_list(const json& j, const char* key, const std::string& file) {
    std::vector<std::string> out;
    if (!j.contains(key)) return out;
    if (!j[key].is_array())
        throw RegistryError("cannot use " + file + ": \"" + key + "\" must be a list");
    for (const auto& v : j[key]) {
        if (!v.is_string())
            throw RegistryError("cannot use " + file + ": \"" + key + "\" must list strings");
        out.push_back(v.get<std::string>());
    }
    return out;
}

// A true/false key of config.json, or fallback when it is absent.
bool boolean_setting(const json& j, const char* key, const std::string& file, bool fallback) {
    if (!j.contains(key)) return fallback;
    if (!j[key].is_boolean())
        throw RegistryError("cannot use " + file + ": \"" + key + "\" must be true or false");
    return j[key].get<bool>();
}

// config.json, daemon.json's registry keys.
void read_config_json(Settings& s, const std::string& file) {
    auto text = slurp(file);
    if (!text) return;
    json j;
    try {
        j = store::parse_json_limited(*text, file, store::kMaxManifestBytes);
    } catch (const store::StoreError& e) {
        throw RegistryError(std::string("cannot parse ") + e.what());
    }
    if (!j.is_object()) throw RegistryError("cannot use " + file + ": not a JSON object");
    s.files_read.push_back(file);
    for (auto& h : string_list(j, "insecure-registries", file)) s.insecure_registries.push_back(h);
    s.registry_mirrors = string_list(j, "registry-mirrors", file);
    for (auto& m : s.registry_mirrors) {
        if (!m.starts_with("https://") && !m.starts_with("http://")) m = "https://" + m;
        while (m.ends_with("/")) m.pop_back();
    }
    s.lazy_background = boolean_setting(j, "lazy-background", file, s.lazy_background);
    s.lazy = boolean_setting(j, "lazy", file, s.lazy);
    if (j.contains("lazy-cache-size")) {
        const json& v = j["lazy-cache-size"];
        if (!v.is_string())
            throw RegistryError("cannot use " + file +
                                ": \"lazy-cache-size\" must be a string such as \"512M\"");
        try {
            s.lazy_cache_size =
                store::parse_byte_size(v.get<std::string>(), file + ": lazy-cache-size");
        } catch (const store::StoreError& e) {
            throw RegistryError(std::string("cannot use ") + e.what());
        }
    }
}

// "docker.io/library/x" and "http://host/" spellings reduced to host[:port][/path].
std::string bare_location(std::string s, const std::string& file) {
    if (s.find("://") != std::string::npos)
        throw RegistryError("cannot use " + file + ": location \"" + s +
                            "\" must not name a scheme (set insecure = true for plain HTTP)");
    while (s.ends_with("/")) s.pop_back();
    return s;
}

template <typename T>
std::optional<T> toml_get(const cpptoml::table& t, const std::string& key, const char* type,
                          const std::string& file) {
    if (!t.contains(key)) return std::nullopt;
    auto v = t.get_as<T>(key);
    if (!v) throw RegistryError("cannot use " + file + ": \"" + key + "\" must be " + type);
    return *v;
}

// registries.conf v2: [[registry]], unqualified-search-registries, [aliases]. A later file's
// entry for the same prefix replaces an earlier one; its search list replaces the list.
void read_registries_conf(Settings& s, const std::string& file) {
    auto text = slurp(file);
    if (!text) return;
    std::shared_ptr<cpptoml::table> root;
    try {
        std::istringstream in(*text);
        cpptoml::parser p(in);
        root = p.parse();
    } catch (const cpptoml::parse_exception& e) {
        throw RegistryError("cannot parse " + file + ": " + e.what());
    }
    s.files_read.push_back(file);
    if (root->contains("unqualified-search-registries")) {
        auto list = root->get_array_of<std::string>("unqualified-search-registries");
        if (!list)
            throw RegistryError("cannot use " + file +
                                ": unqualified-search-registries must list strings");
        s.search_registries = *list;
    }
    if (root->contains("aliases")) {
        auto aliases = root->get_table("aliases");
        if (!aliases) throw RegistryError("cannot use " + file + ": [aliases] must be a table");
        for (const auto& [name, value] : *aliases) {
            auto v = value->as<std::string>();
            if (!v)
                throw RegistryError("cannot use " + file + ": alias " + name + " must be a string");
            s.aliases[name] = v->get();
        }
    }
    if (!root->contains("registry")) return;
    auto tables = root->get_table_array("registry");
    if (!tables)
        throw RegistryError("cannot use " + file + ": registry must be [[registry]] tables");
    for (const auto& t : *tables) {
        RegistryConfig r;
        r.file = file;
        r.location = bare_location(
            toml_get<std::string>(*t, "location", "a string", file).value_or(""), file);
        r.prefix = bare_location(
            toml_get<std::string>(*t, "prefix", "a string", file).value_or(r.location), file);
        if (r.prefix.empty())
            throw RegistryError("cannot use " + file +
                                ": a [[registry]] needs a location or prefix");
        if (r.prefix.starts_with("*.") && !r.location.empty() && r.location != r.prefix)
            throw RegistryError("cannot use " + file + ": wildcard prefix " + r.prefix +
                                " cannot have another location");
        if (r.prefix.starts_with("*.")) r.location.clear();
        r.insecure = toml_get<bool>(*t, "insecure", "true or false", file);
        r.blocked = toml_get<bool>(*t, "blocked", "true or false", file).value_or(false);
        r.mirror_by_digest_only =
            toml_get<bool>(*t, "mirror-by-digest-only", "true or false", file).value_or(false);
        if (t->contains("mirror")) {
            auto mirrors = t->get_table_array("mirror");
            if (!mirrors)
                throw RegistryError("cannot use " + file +
                                    ": mirror must be [[registry.mirror]] tables");
            for (const auto& m : *mirrors) {
                MirrorConfig mc;
                mc.location = bare_location(
                    toml_get<std::string>(*m, "location", "a string", file).value_or(""), file);
                if (mc.location.empty())
                    throw RegistryError("cannot use " + file + ": a mirror of " + r.prefix +
                                        " has no location");
                mc.insecure = toml_get<bool>(*m, "insecure", "true or false", file);
                r.mirrors.push_back(mc);
            }
        }
        auto same = std::find_if(s.registries.begin(), s.registries.end(),
                                 [&](const RegistryConfig& o) { return o.prefix == r.prefix; });
        if (same != s.registries.end())
            *same = r;
        else
            s.registries.push_back(r);
    }
}

std::string host_part(const std::string& location) {
    return location.substr(0, location.find('/'));
}

// "host:port" -> "host", "[::1]:5000" -> "::1".
std::string strip_port(const std::string& host) {
    if (host.starts_with("[")) {
        auto close = host.find(']');
        return close == std::string::npos ? host : host.substr(1, close - 1);
    }
    if (std::count(host.begin(), host.end(), ':') > 1) return host;  // bare IPv6
    return host.substr(0, host.rfind(':'));
}

bool prefix_matches(const std::string& prefix, const std::string& name) {
    if (prefix.starts_with("*.")) {
        std::string host = host_part(name);
        return host.size() > prefix.size() - 1 && host.ends_with(prefix.substr(1));
    }
    return name == prefix || (name.starts_with(prefix) && name[prefix.size()] == '/');
}

bool is_file(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<std::string> files_ending(const std::string& dir, const std::string& suffix) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(dir, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
        if (it->path().filename().string().ends_with(suffix) && is_file(it->path()))
            out.push_back(it->path());
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace

Settings Settings::load_config_json() {
    Settings s;
    if (std::string d = env("LAMINA_CONFIG_DIR"); !d.empty()) {
        s.config_dir = d;
    } else {
        std::string file = store::config_file_path();
        s.config_dir = file.substr(0, file.rfind('/'));
    }
    read_config_json(s, s.config_dir + "/config.json");
    return s;
}

Settings Settings::load() {
    Settings s = load_config_json();
    // As docker: loopback is always insecure.
    s.insecure_registries.push_back("127.0.0.0/8");
    if (std::string named = env("CONTAINERS_REGISTRIES_CONF"); !named.empty()) {
        read_registries_conf(s, named);
    } else {
        read_registries_conf(s, kSystemRegistriesConf);
        for (const auto& f : files_ending(kSystemRegistriesDir, ".conf"))
            read_registries_conf(s, f);
    }
    read_registries_conf(s, s.config_dir + "/registries.conf");
    return s;
}

bool host_in_cidr(const std::string& host, const std::string& cidr) {
    auto slash = cidr.find('/');
    if (slash == std::string::npos) return false;
    std::string net = cidr.substr(0, slash);
    int bits = 0;
    try {
        bits = std::stoi(cidr.substr(slash + 1));
    } catch (const std::exception&) {
        return false;
    }
    std::string ip = strip_port(host);
    if (ip == "localhost") ip = net.find(':') == std::string::npos ? "127.0.0.1" : "::1";
    unsigned char a[16], b[16];
    int family = net.find(':') == std::string::npos ? AF_INET : AF_INET6;
    int len = family == AF_INET ? 4 : 16;
    if (bits < 0 || bits > len * 8 || inet_pton(family, net.c_str(), b) != 1 ||
        inet_pton(family, ip.c_str(), a) != 1)
        return false;
    for (int i = 0; i < len && bits > 0; ++i, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff : static_cast<unsigned char>(0xff << (8 - bits));
        if ((a[i] & mask) != (b[i] & mask)) return false;
    }
    return true;
}

bool Settings::is_insecure(const std::string& host) const {
    // An entry for exactly this host decides, either way.
    for (const auto& r : registries)
        if (r.prefix == host && r.insecure) return *r.insecure;
    std::string bare = strip_port(host);
    for (const auto& h : insecure_registries) {
        if (h == host || h == bare) return true;
        if (h.find('/') != std::string::npos && host_in_cidr(host, h)) return true;
    }
    return false;
}

const RegistryConfig* Settings::registry_for(const std::string& name) const {
    const RegistryConfig* best = nullptr;
    for (const auto& r : registries) {
        if (!prefix_matches(r.prefix, name)) continue;
        // The longest prefix wins; an exact prefix beats a wildcard.
        auto weight = [](const RegistryConfig& c) {
            return c.prefix.starts_with("*.") ? c.prefix.size() : c.prefix.size() + 1000;
        };
        if (!best || weight(r) > weight(*best)) best = &r;
    }
    return best;
}

std::vector<std::string> Settings::certs_dirs(const std::string& host) const {
    std::vector<std::string> out = {certs_dir(host)};
    if (std::string h = env("HOME"); !h.empty() && geteuid() != 0)
        out.push_back(h + "/.config/containers/certs.d/" + host);
    out.push_back("/etc/containers/certs.d/" + host);
    out.push_back("/etc/docker/certs.d/" + host);
    return out;
}

std::string Settings::certs_dir(const std::string& host) const {
    return config_dir + "/certs.d/" + host;
}

namespace {

// An endpoint for "host[:port][/path]" + the rest of the repository.
Endpoint endpoint_at(const Settings& s, const Reference& ref, const std::string& location,
                     const std::string& rest, std::optional<bool> insecure) {
    Endpoint e;
    e.registry = ref.registry;
    e.name = ref.registry + "/" + ref.repository;
    e.host = host_part(location);
    std::string path = location.size() > e.host.size() ? location.substr(e.host.size() + 1) : "";
    e.repository = path.empty() ? rest : rest.empty() ? path : path + "/" + rest;
    e.insecure = insecure.value_or(s.is_insecure(e.host));
    return e;
}

}  // namespace

std::vector<Endpoint> Settings::pull_endpoints(const Reference& ref) const {
    std::vector<Endpoint> out;
    std::string name = ref.registry + "/" + ref.repository;
    const RegistryConfig* r = registry_for(name);
    if (r && r->blocked)
        throw RegistryError(ref.registry + " is blocked by " + r->file + " (registry " + r->prefix +
                            ")");
    // What follows the prefix goes after a mirror's location; a wildcard swaps the host only.
    std::string rest = ref.repository;
    if (r && !r->prefix.starts_with("*."))
        rest = name.size() > r->prefix.size() ? name.substr(r->prefix.size() + 1) : "";
    if (r && (!r->mirror_by_digest_only || !ref.digest.empty())) {
        for (const auto& m : r->mirrors) {
            Endpoint e = endpoint_at(*this, ref, m.location, rest, m.insecure);
            e.mirror = true;
            e.label = m.location;
            out.push_back(e);
        }
    }
    if (ref.registry == kDockerHub) {
        for (const auto& url : registry_mirrors) {
            Endpoint e;
            e.registry = ref.registry;
            e.name = name;
            auto p = url.find("://");
            e.scheme = url.substr(0, p);
            e.host = host_part(url.substr(p + 3));
            e.repository = ref.repository;
            e.insecure = is_insecure(e.host);
            e.mirror = true;
            e.label = url;
            out.push_back(e);
        }
    }
    out.push_back(push_endpoint(ref));
    return out;
}

Endpoint Settings::push_endpoint(const Reference& ref) const {
    std::string name = ref.registry + "/" + ref.repository;
    const RegistryConfig* r = registry_for(name);
    if (r && r->blocked)
        throw RegistryError(ref.registry + " is blocked by " + r->file + " (registry " + r->prefix +
                            ")");
    Endpoint e;
    if (r && !r->location.empty()) {
        std::string rest = name.size() > r->prefix.size() ? name.substr(r->prefix.size() + 1) : "";
        e = endpoint_at(*this, ref, r->location, rest, r->insecure);
    } else {
        e.registry = ref.registry;
        e.name = name;
        e.host = ref.registry;
        e.repository = ref.repository;
        e.insecure = r && r->insecure ? *r->insecure : is_insecure(ref.registry);
    }
    if (e.host == kDockerHub) e.host = "registry-1.docker.io";
    return e;
}

std::vector<Reference> Settings::resolve(const std::string& text) const {
    if (!is_short_name(text)) return {parse_reference(text)};
    // The name without its tag or digest, as aliases are keyed.
    std::string bare = text.substr(0, text.find('@'));
    if (auto colon = bare.find(':'); colon != std::string::npos) bare.resize(colon);
    std::string suffix = text.substr(bare.size());
    if (auto it = aliases.find(bare); it != aliases.end())
        return {parse_reference(it->second + suffix)};
    if (bare.starts_with("library/") && aliases.count(bare.substr(8)))
        return {parse_reference(aliases.at(bare.substr(8)) + suffix)};
    if (search_registries.empty()) return {parse_reference(text)};
    std::vector<Reference> out;
    for (const auto& reg : search_registries) out.push_back(parse_reference(reg + "/" + text));
    return out;
}

TlsOptions tls_for(const Settings& s, const std::string& host, bool verify) {
    TlsOptions t;
    t.verify = verify;
    t.system_ca_file = env("SSL_CERT_FILE");
    t.system_ca_dir = env("SSL_CERT_DIR");
    std::string extra;
    for (const auto& dir : s.certs_dirs(host)) {
        for (const auto& crt : files_ending(dir, ".crt")) {
            auto pem = slurp(crt);
            if (pem) extra += *pem + "\n";
        }
        for (const auto& cert : files_ending(dir, ".cert")) {
            std::string key = cert.substr(0, cert.size() - 5) + ".key";
            if (!is_file(key))
                throw RegistryError("missing key " + key + " for client certificate " + cert);
            if (t.client_cert.empty()) {
                t.client_cert = cert;
                t.client_key = key;
            }
        }
        for (const auto& key : files_ending(dir, ".key")) {
            std::string cert = key.substr(0, key.size() - 4) + ".cert";
            if (!is_file(cert))
                throw RegistryError("missing client certificate " + cert + " for key " + key);
        }
    }
    if (!extra.empty()) {
        // The bundle replaces curl's CA file: the system CAs go in first.
        std::string system = t.system_ca_file.empty() ? kSystemCaBundle : t.system_ca_file;
        t.ca_bundle = slurp(system).value_or("") + "\n" + extra;
    }
    return t;
}

}  // namespace lamina::registry
