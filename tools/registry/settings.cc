// Reading and writing the registry settings and credential files.
#include "settings.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "config.h"
#include "error.h"
#include "json_input.h"
#include "reference.h"

namespace lamina::registry {

using nlohmann::json;

namespace {

std::optional<std::string> slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

json read_json_file(const std::string& path) {
    auto text = slurp(path);
    if (!text) return json::object();
    try {
        json j = lamina::store::parse_json_limited(*text, path, lamina::store::kMaxManifestBytes);
        if (!j.is_object()) throw std::runtime_error("cannot use " + path + ": not a JSON object");
        return j;
    } catch (const lamina::store::StoreError& e) {
        throw std::runtime_error(std::string("cannot parse ") + e.what());
    }
}

std::vector<std::string> string_list(const json& j, const char* key, const std::string& file) {
    std::vector<std::string> out;
    if (!j.contains(key)) return out;
    if (!j[key].is_array())
        throw std::runtime_error("cannot use " + file + ": \"" + key + "\" must be a list");
    for (const auto& v : j[key]) {
        if (!v.is_string())
            throw std::runtime_error("cannot use " + file + ": \"" + key + "\" must list strings");
        out.push_back(v.get<std::string>());
    }
    return out;
}

// "https://index.docker.io/v1/" -> "docker.io", "http://host:5000/" -> "host:5000".
std::string auth_key_host(std::string key) {
    if (auto p = key.find("://"); p != std::string::npos) key = key.substr(p + 3);
    if (auto p = key.find('/'); p != std::string::npos) key.resize(p);
    return canonical_registry(key);
}

std::optional<Credentials> from_auths(const json& cfg, const std::string& host) {
    if (!cfg.contains("auths") || !cfg["auths"].is_object()) return std::nullopt;
    for (const auto& [key, entry] : cfg["auths"].items()) {
        if (auth_key_host(key) != host || !entry.is_object()) continue;
        std::string auth = entry.value("auth", "");
        if (auth.empty()) continue;
        std::string plain = base64_decode(auth);
        auto colon = plain.find(':');
        if (colon == std::string::npos) continue;
        return Credentials{plain.substr(0, colon), plain.substr(colon + 1)};
    }
    return std::nullopt;
}

std::string docker_config_file() {
    if (const char* d = getenv("DOCKER_CONFIG"); d && *d) return std::string(d) + "/config.json";
    if (const char* h = getenv("HOME"); h && *h) return std::string(h) + "/.docker/config.json";
    return "";
}

void write_private_file(const std::string& path, const std::string& data) {
    std::error_code ec;
    std::filesystem::create_directories(path.substr(0, path.rfind('/')), ec);
    std::string tmp = path + ".tmp-" + std::to_string(getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot write " + tmp + ": " + strerror(errno));
    ssize_t n = ::write(fd, data.data(), data.size());
    int err = errno;
    if (n != static_cast<ssize_t>(data.size()) || ::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(tmp.c_str());
        throw std::runtime_error("cannot write " + tmp + ": " + strerror(n < 0 ? err : EIO));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        err = errno;
        ::unlink(tmp.c_str());
        throw std::runtime_error("cannot replace " + path + ": " + strerror(err));
    }
}

}  // namespace

Settings Settings::load() {
    Settings s;
    if (const char* d = getenv("LAMINA_CONFIG_DIR"); d && *d) {
        s.config_dir = d;
    } else {
        std::string file = store::config_file_path();
        s.config_dir = file.substr(0, file.rfind('/'));
    }
    std::string file = s.config_dir + "/config.json";
    json j = read_json_file(file);
    s.insecure_registries = string_list(j, "insecure-registries", file);
    s.registry_mirrors = string_list(j, "registry-mirrors", file);
    for (auto& m : s.registry_mirrors) {
        if (!m.starts_with("https://") && !m.starts_with("http://")) m = "https://" + m;
        while (m.ends_with("/")) m.pop_back();
    }
    return s;
}

bool Settings::is_insecure(const std::string& host) const {
    std::string bare = host.substr(0, host.rfind(':'));
    return std::any_of(insecure_registries.begin(), insecure_registries.end(),
                       [&](const std::string& h) { return h == host || h == bare; });
}

std::string Settings::certs_dir(const std::string& host) const {
    return config_dir + "/certs.d/" + host;
}

std::optional<Credentials> find_credentials(const Settings& s, const std::string& host) {
    if (auto c = from_auths(read_json_file(s.auth_file()), host)) return c;
    std::string docker = docker_config_file();
    if (docker.empty()) return std::nullopt;
    return from_auths(read_json_file(docker), host);
}

void save_credentials(const Settings& s, const std::string& host, const Credentials& c) {
    json j = read_json_file(s.auth_file());
    if (!j.contains("auths") || !j["auths"].is_object()) j["auths"] = json::object();
    j["auths"][host] = {{"auth", base64_encode(c.username + ":" + c.password)}};
    write_private_file(s.auth_file(), j.dump(2) + "\n");
}

bool remove_credentials(const Settings& s, const std::string& host) {
    json j = read_json_file(s.auth_file());
    if (!j.contains("auths") || !j["auths"].is_object()) return false;
    bool removed = false;
    for (auto it = j["auths"].begin(); it != j["auths"].end();) {
        if (auth_key_host(it.key()) == host) {
            it = j["auths"].erase(it);
            removed = true;
        } else {
            ++it;
        }
    }
    if (removed) write_private_file(s.auth_file(), j.dump(2) + "\n");
    return removed;
}

std::string base64_encode(const std::string& data) {
    std::string out(4 * ((data.size() + 2) / 3), '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(data.data()),
                            static_cast<int>(data.size()));
    out.resize(static_cast<size_t>(n));
    return out;
}

std::string base64_decode(const std::string& text) {
    if (text.size() % 4 != 0) throw std::runtime_error("invalid base64 in credentials");
    std::string out(text.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(text.data()),
                            static_cast<int>(text.size()));
    if (n < 0) throw std::runtime_error("invalid base64 in credentials");
    size_t len = static_cast<size_t>(n);
    // EVP_DecodeBlock counts the padding as zero bytes.
    if (text.ends_with("=="))
        len -= 2;
    else if (text.ends_with("="))
        len -= 1;
    out.resize(len);
    return out;
}

}  // namespace lamina::registry
