// Reading credentials from auth files and credential helpers; writing lamina login's file.
#include "credentials.h"
#include "error.h"
#include "json_input.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "reference.h"
#include "transport.h"

extern char** environ;

namespace lamina::registry {

using nlohmann::json;

namespace {

constexpr size_t kMaxAuthFile = 4 << 20;
constexpr size_t kMaxHelperOutput = 1 << 20;
constexpr int kHelperTimeoutMs = 30000;

std::optional<std::string> slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// A missing file is an empty object.
json read_json_file(const std::string& path) {
    auto text = slurp(path);
    if (!text) return json::object();
    if (text->size() > kMaxAuthFile) throw RegistryError("cannot use " + path + ": over 4 MiB");
    try {
        json j = store::parse_json_limited(*text, path, store::kMaxManifestBytes);
        if (!j.is_object()) throw RegistryError("cannot use " + path + ": not a JSON object");
        return j;
    } catch (const store::StoreError& e) {
        throw RegistryError(std::string("cannot parse ") + e.what());
    }
}

// "https://index.docker.io/v1/" -> "docker.io", "http://host:5000/" -> "host:5000".
std::string auth_key_host(std::string key) {
    if (auto p = key.find("://"); p != std::string::npos) key = key.substr(p + 3);
    if (auto p = key.find('/'); p != std::string::npos) key.resize(p);
    return canonical_registry(key);
}

// What a helper is asked for: Docker Hub under its v1 URL, as docker login stored it.
std::string helper_server_url(const std::string& host) {
    return host == kDockerHub ? "https://index.docker.io/v1/" : host;
}

// `docker-credential-NAME get` with the server URL on stdin; nothing when it has none.
std::optional<Credentials> run_helper(const std::string& name, const std::string& host) {
    if (name.empty() || name.find('/') != std::string::npos)
        throw RegistryError("credential helper \"" + name + "\": not a helper name");
    std::string program = "docker-credential-" + name;
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0)
        throw RegistryError("cannot run " + program + ": " + strerror(errno));
    if (pipe2(out, O_CLOEXEC) != 0) {
        int err = errno;
        close(in[0]);
        close(in[1]);
        throw RegistryError("cannot run " + program + ": " + strerror(err));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, out[1], 2);
    const char* argv[] = {program.c_str(), "get", nullptr};
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, program.c_str(), &fa, nullptr, const_cast<char**>(argv), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        throw RegistryError("cannot run credential helper " + program + ": " + strerror(rc));
    }
    std::string url = helper_server_url(host);
    // A helper that exits without reading must not kill lamina with SIGPIPE: the signal is
    // held for this write and taken back if it came. The helper's exit status tells the rest.
    sigset_t pipe_only, old_mask;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask);
    ssize_t w = write(in[1], url.data(), url.size());
    if (w < 0 && errno == EPIPE) {
        timespec none{0, 0};
        sigtimedwait(&pipe_only, nullptr, &none);
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    close(in[1]);
    std::string text;
    char buf[4096];
    bool timed_out = false;
    for (;;) {
        // A helper waiting on a keyring prompt nobody sees would hang the pull.
        pollfd p{out[0], POLLIN, 0};
        int ready = poll(&p, 1, kHelperTimeoutMs);
        if (ready < 0 && errno == EINTR) continue;
        if (ready == 0) {
            timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        ssize_t n = read(out[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (text.size() < kMaxHelperOutput) text.append(buf, static_cast<size_t>(n));
    }
    close(out[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out)
        throw RegistryError("credential helper " + program + " gave no answer for " + host +
                            " within " + std::to_string(kHelperTimeoutMs / 1000) + " s");
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (text.find("credentials not found") != std::string::npos) return std::nullopt;
        if (auto nl = text.find('\n'); nl != std::string::npos) text.resize(nl);
        throw RegistryError(
            "credential helper " + program + " failed for " + host + ": " +
            (text.empty() ? "exit status " + std::to_string(WEXITSTATUS(status)) : text));
    }
    try {
        std::string what = "credential helper " + program + "'s reply";
        json j = store::parse_json_limited(text, what, store::kMaxManifestBytes);
        Credentials c{store::string_member(j, "Username", what, ""),
                      store::string_member(j, "Secret", what, "")};
        if (c.username.empty() && c.password.empty()) return std::nullopt;
        return c;
    } catch (const store::StoreError&) {
        throw RegistryError("credential helper " + program + " gave no JSON for " + host);
    }
}

std::optional<Credentials> from_inline_auths(const json& cfg, const std::string& host) {
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

std::optional<Credentials> from_config(const json& cfg, const std::string& host) {
    if (cfg.contains("credHelpers") && cfg["credHelpers"].is_object()) {
        for (const auto& [key, helper] : cfg["credHelpers"].items())
            if (auth_key_host(key) == host && helper.is_string())
                return run_helper(helper.get<std::string>(), host);
    }
    if (auto c = from_inline_auths(cfg, host)) return c;
    if (cfg.contains("credsStore") && cfg["credsStore"].is_string())
        return run_helper(cfg["credsStore"].get<std::string>(), host);
    return std::nullopt;
}

std::string env(const char* name) {
    const char* v = getenv(name);
    return v ? v : "";
}

void write_private_file(const std::string& path, const std::string& data) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    std::string tmp = path + ".tmp-" + std::to_string(getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw RegistryError("cannot write " + tmp + ": " + strerror(errno));
    ssize_t n = ::write(fd, data.data(), data.size());
    int err = errno;
    if (n != static_cast<ssize_t>(data.size()) || ::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(tmp.c_str());
        throw RegistryError("cannot write " + tmp + ": " + strerror(n < 0 ? err : EIO));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        err = errno;
        ::unlink(tmp.c_str());
        throw RegistryError("cannot replace " + path + ": " + strerror(err));
    }
}

}  // namespace

std::vector<std::string> credential_files(const std::string& lamina_auth_file) {
    std::vector<std::string> out;
    if (std::string f = env("REGISTRY_AUTH_FILE"); !f.empty()) out.push_back(f);
    out.push_back(lamina_auth_file);
    if (std::string d = env("XDG_RUNTIME_DIR"); !d.empty())
        out.push_back(d + "/containers/auth.json");
    if (std::string d = env("XDG_CONFIG_HOME"); !d.empty())
        out.push_back(d + "/containers/auth.json");
    else if (std::string h = env("HOME"); !h.empty())
        out.push_back(h + "/.config/containers/auth.json");
    if (std::string d = env("DOCKER_CONFIG"); !d.empty())
        out.push_back(d + "/config.json");
    else if (std::string h = env("HOME"); !h.empty())
        out.push_back(h + "/.docker/config.json");
    return out;
}

std::optional<Credentials> find_credentials(const std::string& lamina_auth_file,
                                            const std::string& host) {
    for (const auto& file : credential_files(lamina_auth_file))
        if (auto c = from_config(read_json_file(file), host)) return c;
    return std::nullopt;
}

std::string login_auth_file(const std::string& lamina_auth_file) {
    std::string f = env("REGISTRY_AUTH_FILE");
    return f.empty() ? lamina_auth_file : f;
}

void save_credentials(const std::string& file, const std::string& host, const Credentials& c) {
    json j = read_json_file(file);
    if (!j.contains("auths") || !j["auths"].is_object()) j["auths"] = json::object();
    j["auths"][host] = {{"auth", base64_encode(c.username + ":" + c.password)}};
    write_private_file(file, j.dump(2) + "\n");
}

bool remove_credentials(const std::string& file, const std::string& host) {
    json j = read_json_file(file);
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
    if (removed) write_private_file(file, j.dump(2) + "\n");
    return removed;
}

Credentials parse_creds_option(const std::string& text) {
    auto colon = text.find(':');
    if (colon == std::string::npos) return {text, ""};
    return {text.substr(0, colon), text.substr(colon + 1)};
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
