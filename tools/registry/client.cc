// The registry client: auth wraps the HTTP exchange, retry wraps auth, and blobs are hashed
// while they stream so nothing unverified is ever handed on.
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "digest.h"
#include "error.h"
#include "json_input.h"
#include "reference.h"

namespace lamina::registry {

using nlohmann::json;

namespace {

constexpr int kAttempts = 6;  // backoff 0.5 + 1 + 2 + 4 + 8 s between them
// A mirror being probed: one attempt, a connect that takes over 2 s counts as dead, and no
// exchange may take over 10 s.
constexpr long kProbeConnectTimeout = 2;
constexpr long kProbeTimeout = 10;

std::chrono::milliseconds backoff(int attempt) {
    return std::chrono::milliseconds(500 << attempt);
}

std::string percent_encode(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// WWW-Authenticate: Bearer realm="...",service="...",scope="..."
std::map<std::string, std::string> challenge_params(const std::string& header,
                                                    std::string& scheme) {
    std::map<std::string, std::string> out;
    size_t sp = header.find(' ');
    scheme = header.substr(0, sp);
    for (auto& c : scheme) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    if (sp == std::string::npos) return out;
    size_t i = sp + 1;
    while (i < header.size()) {
        while (i < header.size() && (header[i] == ' ' || header[i] == ',')) ++i;
        size_t eq = header.find('=', i);
        if (eq == std::string::npos) break;
        std::string key = header.substr(i, eq - i);
        for (auto& c : key) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
        std::string value;
        i = eq + 1;
        if (i < header.size() && header[i] == '"') {
            for (++i; i < header.size() && header[i] != '"'; ++i) {
                if (header[i] == '\\' && i + 1 < header.size()) ++i;
                value += header[i];
            }
            ++i;
        } else {
            size_t end = header.find(',', i);
            value = header.substr(i, end == std::string::npos ? std::string::npos : end - i);
            i = end == std::string::npos ? header.size() : end;
        }
        out[key] = value;
    }
    return out;
}

// The registry's own words from an error body ({"errors":[{"code","message"}]}), or "".
std::string registry_message(const std::string& body) {
    try {
        json j = store::parse_json_limited(body, "error body", store::kMaxManifestBytes);
        if (j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
            const json& e = j["errors"][0];
            std::string msg = e.value("message", "");
            std::string code = e.value("code", "");
            return code.empty() ? msg : code + ": " + msg;
        }
        if (j.contains("details") && j["details"].is_string()) return j["details"];
    } catch (const json::exception&) {
    } catch (const store::StoreError&) {
    }
    return "";
}

// Bytes a download received that cannot be the blob's: its partial file is removed.
class WrongBytes : public RegistryError {
public:
    using RegistryError::RegistryError;
};

// Content-Range "bytes FIRST-LAST/TOTAL": the first byte and total (-1 for "*"), or false.
bool parse_content_range(const std::string& v, int64_t& first, int64_t& total) {
    long long f = 0, l = 0;
    int used = 0;
    if (sscanf(v.c_str(), "bytes %lld-%lld/%n", &f, &l, &used) != 2 || used == 0) return false;
    std::string rest = v.substr(static_cast<size_t>(used));
    first = f;
    total = -1;
    if (rest != "*") {
        char* end = nullptr;
        total = std::strtoll(rest.c_str(), &end, 10);
        if (rest.empty() || *end != '\0') return false;
    }
    return true;
}

// Where the body of a blob reply starts in the blob: 0 for a 200.
int64_t content_range_start(const HttpResponse& reply) {
    int64_t first = 0, total = 0;
    if (reply.status != 206 || !parse_content_range(reply.header("content-range"), first, total))
        return 0;
    return first;
}

// A blob reply that says the registry's blob is not the manifest's (another length), or that
// answers a Range with some other range, is refused.
void check_blob_reply(const Descriptor& d, const HttpResponse& reply, int64_t asked_from) {
    int64_t total = -1;
    if (reply.status == 206) {
        int64_t first = 0;
        std::string range = reply.header("content-range");
        if (!parse_content_range(range, first, total) || (first != asked_from && first != 0))
            throw RegistryError("blob " + d.digest + ": asked for bytes from " +
                                std::to_string(asked_from) + ", the registry sent \"" + range +
                                "\"");
    } else if (std::string len = reply.header("content-length"); !len.empty()) {
        total = std::strtoll(len.c_str(), nullptr, 10);
    }
    if (total >= 0 && total != d.size)
        throw WrongBytes("blob " + d.digest + ": the registry's blob is " + std::to_string(total) +
                         " bytes, the manifest says " + std::to_string(d.size));
}

bool is_file(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

Client::Client(const Settings& settings, const std::string& registry, const std::string& repository,
               const ClientOptions& options, const std::string& endpoint)
    : settings_(settings), registry_(registry), repository_(repository), options_(options) {
    std::string scheme = "https";
    if (endpoint.empty()) {
        host_ = registry == kDockerHub ? "registry-1.docker.io" : registry;
    } else {
        auto p = endpoint.find("://");
        scheme = endpoint.substr(0, p);
        host_ = endpoint.substr(p + 3);
        if (auto slash = host_.find('/'); slash != std::string::npos) host_.resize(slash);
    }
    bool insecure = settings.is_insecure(host_) || settings.is_insecure(registry);
    bool verify = options.tls_verify.value_or(!insecure);
    if (scheme == "http" && verify)
        throw RegistryError("mirror " + endpoint +
                            " is plain HTTP; list it in insecure-registries to use it");
    tls_.verify = verify;
    try_plain_http_ = !verify && scheme == "https";
    base_ = scheme + "://" + host_;
    std::string certs = settings.certs_dir(host_);
    if (is_file(certs + "/ca.crt")) tls_.ca_file = certs + "/ca.crt";
    if (is_file(certs + "/client.cert")) tls_.client_cert = certs + "/client.cert";
    if (is_file(certs + "/client.key")) tls_.client_key = certs + "/client.key";
    credentials_ = find_credentials(settings, host_);
    if (!credentials_ && host_ != registry) credentials_ = find_credentials(settings, registry);
}

std::string Client::describe() const {
    if (registry_ != kDockerHub || host_ == "registry-1.docker.io")
        return registry_ + "/" + repository_;
    return registry_ + "/" + repository_ + " (mirror " + base_ + ")";
}

void Client::ping() {
    HttpRequest req;
    req.url = base_ + "/v2/";
    HttpResponse r;
    // A registry (or mirror) that refuses the connection is reported at once.
    try {
        r = send(req, true, false);
    } catch (const TransportError& e) {
        if (!try_plain_http_) {
            std::string hint = e.tls_failure && tls_.verify
                                   ? " (add its CA as " + settings_.certs_dir(host_) +
                                         "/ca.crt, or use --tls-verify=false if you trust it)"
                                   : "";
            throw RegistryError("cannot reach " + base_ + ": " + e.what() + hint);
        }
        // An insecure registry may not speak TLS at all.
        base_ = "http://" + host_;
        req.url = base_ + "/v2/";
        try {
            r = send(req, true, false);
        } catch (const TransportError& e2) {
            throw RegistryError("cannot reach " + host_ + " over https or http: " + e2.what());
        }
    }
    if (r.status == 404)
        throw RegistryError(base_ + " does not offer the registry API v2 (/v2/ is 404)", 404);
    if (r.status >= 300 && r.status != 401) fail(r, "cannot use " + base_);
}

void Client::check_credentials() {
    std::string used;
    {
        std::lock_guard lk(auth_mu_);
        if (challenge_.scheme == "bearer") {
            extra_scopes_.clear();
            auth_ = "Bearer " + fetch_token();
        } else if (challenge_.scheme == "basic") {
            if (!credentials_)
                throw RegistryError(host_ + ": the registry asks for credentials", 401);
            auth_ = "Basic " + base64_encode(credentials_->username + ":" + credentials_->password);
        }
        used = auth_;
    }
    HttpRequest req;
    req.url = base_ + "/v2/";
    HttpResponse r = send_once(req, used);
    if (r.status == 401)
        throw RegistryError("cannot log in to " + host_ + ": the registry refused the credentials" +
                                (credentials_ ? " for " + credentials_->username : ""),
                            401);
    if (r.status >= 300) fail(r, "cannot log in to " + host_);
}

void Client::add_pull_scope(const std::string& repository) {
    std::lock_guard lk(auth_mu_);
    if (repository != repository_ && extra_scopes_.insert(repository).second &&
        challenge_.scheme == "bearer")
        auth_.clear();  // fetched again with the new scope on the next request
}

std::string Client::fetch_token() {
    std::string u = challenge_.realm;
    u += (u.find('?') == std::string::npos ? "?" : "&");
    u += "service=" + percent_encode(challenge_.service);
    if (!repository_.empty())  // login asks for no repository
        u += "&scope=" +
             percent_encode("repository:" + repository_ + (options_.push ? ":pull,push" : ":pull"));
    for (const auto& r : extra_scopes_)
        u += "&scope=" + percent_encode("repository:" + r + ":pull");
    HttpRequest req;
    req.url = u;
    if (credentials_)
        req.headers.push_back("Authorization: Basic " +
                              base64_encode(credentials_->username + ":" + credentials_->password));
    int attempts = kAttempts;
    if (probing_) {
        attempts = 1;
        req.connect_timeout_s = kProbeConnectTimeout;
        req.timeout_s = kProbeTimeout;
    }
    HttpResponse r;
    for (int attempt = 0;; ++attempt) {
        try {
            r = http_perform(req, tls_);
            if (r.status < 500 || attempt + 1 >= attempts) break;
        } catch (const TransportError& e) {
            if (attempt + 1 >= attempts)
                throw RegistryError("cannot get a token from " + challenge_.realm + ": " +
                                    e.what());
        }
        std::this_thread::sleep_for(backoff(attempt));
    }
    if (r.status == 401 || r.status == 403)
        throw RegistryError(host_ + ": " +
                                (credentials_ ? "the token server refused the credentials for " +
                                                    credentials_->username
                                              : "the token server asks for credentials (lamina "
                                                "login " +
                                                    registry_ + ")"),
                            r.status);
    if (r.status != 200)
        throw RegistryError(
            "cannot get a token from " + challenge_.realm + ": HTTP " + std::to_string(r.status),
            r.status);
    try {
        json j = store::parse_json_limited(r.body, "token reply", store::kMaxManifestBytes);
        std::string t = j.value("token", "");
        if (t.empty()) t = j.value("access_token", "");
        if (t.empty()) throw RegistryError("the token server's reply holds no token");
        return t;
    } catch (const json::exception&) {
        throw RegistryError("the token server's reply is not JSON");
    } catch (const store::StoreError& e) {
        throw RegistryError(std::string("the token server's reply: ") + e.what());
    }
}

std::string Client::auth_header() {
    std::lock_guard lk(auth_mu_);
    if (auth_.empty() && challenge_.scheme == "bearer") auth_ = "Bearer " + fetch_token();
    if (auth_.empty() && challenge_.scheme == "basic" && credentials_)
        auth_ = "Basic " + base64_encode(credentials_->username + ":" + credentials_->password);
    return auth_;
}

void Client::refresh_auth(const HttpResponse& unauthorized, const std::string& used) {
    std::lock_guard lk(auth_mu_);
    if (auth_ != used) return;  // another thread refreshed it already
    std::string header = unauthorized.header("www-authenticate");
    if (!header.empty()) {
        std::string scheme;
        auto params = challenge_params(header, scheme);
        challenge_.scheme = scheme;
        challenge_.realm = params["realm"];
        challenge_.service = params["service"];
    }
    auth_.clear();
    if (challenge_.scheme == "bearer") {
        if (challenge_.realm.empty())
            throw RegistryError(host_ + ": bearer challenge without a realm", 401);
        auth_ = "Bearer " + fetch_token();
    } else if (challenge_.scheme == "basic" && credentials_) {
        auth_ = "Basic " + base64_encode(credentials_->username + ":" + credentials_->password);
    }
}

HttpResponse Client::send_once(HttpRequest& req, const std::string& auth) {
    HttpRequest r = req;
    if (!auth.empty()) r.headers.push_back("Authorization: " + auth);
    return http_perform(r, tls_);
}

HttpResponse Client::send(HttpRequest req, bool retry, bool retry_refused) {
    if (probing_) {
        retry = false;
        req.connect_timeout_s = kProbeConnectTimeout;
        req.timeout_s = kProbeTimeout;
    }
    for (int attempt = 0;; ++attempt) {
        try {
            std::string used = auth_header();
            HttpResponse r = send_once(req, used);
            if (r.status == 401) {
                bool had = !used.empty();
                refresh_auth(r, used);
                std::string now = auth_header();
                // Retry once with new or first credentials; a second 401 is final.
                if (!now.empty() && (now != used || !had)) r = send_once(req, now);
            }
            if (r.status >= 500 && retry && attempt + 1 < kAttempts) {
                std::this_thread::sleep_for(backoff(attempt));
                continue;
            }
            return r;
        } catch (const TransportError& e) {
            if (!retry || e.tls_failure || (e.connection_refused && !retry_refused) ||
                attempt + 1 >= kAttempts)
                throw;
            std::this_thread::sleep_for(backoff(attempt));
        }
    }
}

void Client::fail(const HttpResponse& r, const std::string& what) const {
    std::string msg = registry_message(r.body);
    std::string why;
    switch (r.status) {
        case 401:
            why = credentials_ ? "unauthorized: the registry refused the credentials for " +
                                     credentials_->username
                               : "authentication required (lamina login " + registry_ + ")";
            break;
        case 403:
            why = "access denied";
            break;
        case 404:
            why = "not found";
            break;
        case 429:
            why = "too many requests: the registry is rate-limiting; try again later";
            break;
        default:
            why = "HTTP " + std::to_string(r.status);
            break;
    }
    if (!msg.empty() && r.status != 401) why += " (" + msg + ")";
    throw RegistryError(what + ": " + why, r.status);
}

FetchedManifest Client::get_manifest(const std::string& ref) {
    HttpRequest req;
    req.url = url(repository_ + "/manifests/" + ref);
    req.headers.push_back(manifest_accept_header());
    HttpResponse r = send(req);
    if (r.status != 200)
        fail(r, "manifest " + describe() + (ref.starts_with("sha256:") ? "@" : ":") + ref);
    if (r.body.size() > (4 << 20)) throw RegistryError("manifest for " + ref + " is over 4 MiB");
    FetchedManifest m;
    m.body = r.body;
    m.media_type = r.header("content-type");
    m.digest = store::sha256_digest(m.body);
    if (ref.starts_with("sha256:") && m.digest != ref)
        throw RegistryError("manifest " + ref + ": digest mismatch: the registry sent " + m.digest);
    std::string said = r.header("docker-content-digest");
    if (said.starts_with("sha256:") && said != m.digest)
        throw RegistryError("manifest " + describe() + ":" + ref +
                            ": digest mismatch: the registry says " + said + ", the body is " +
                            m.digest);
    return m;
}

std::string Client::get_blob(const Descriptor& d) {
    if (d.size > (16 << 20)) throw RegistryError("blob " + d.digest + " is too large to read");
    std::string data;
    HttpRequest req;
    req.url = url(repository_ + "/blobs/" + d.digest);
    req.sink = [&](const HttpResponse&, const char* p, size_t n) {
        data.append(p, n);
        if (static_cast<int64_t>(data.size()) > d.size)
            throw RegistryError("blob " + d.digest + ": the registry sent more than its size");
    };
    HttpResponse r = send(req);
    if (r.status != 200) fail(r, "blob " + d.digest);
    std::string got = store::sha256_digest(data);
    if (got != d.digest)
        throw RegistryError("blob " + d.digest + ": digest mismatch: the registry sent " + got);
    if (static_cast<int64_t>(data.size()) != d.size)
        throw RegistryError("blob " + d.digest + ": size mismatch");
    return data;
}

void Client::download_blob(const Descriptor& d, const std::string& path,
                           const std::function<void(int64_t)>& progress,
                           const std::function<void(const std::string&)>& note) {
    // The file is named after the digest: refuse anything the manifest parser should have.
    if (!store::is_sha256_digest(d.digest))
        throw RegistryError("refusing blob with digest \"" + d.digest + "\": not sha256:<64 hex>");
    const std::string partial = path + ".partial";
    int fd = ::open(partial.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) throw RegistryError("cannot create " + partial + ": " + strerror(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    try {
        fetch_blob_into(d, fd, partial, progress, note);
    } catch (const WrongBytes&) {
        ::unlink(partial.c_str());
        throw;
    }
    if (::rename(partial.c_str(), path.c_str()) != 0)
        throw RegistryError("cannot rename " + partial + ": " + strerror(errno));
}

void Client::fetch_blob_into(const Descriptor& d, int fd, const std::string& partial,
                             const std::function<void(int64_t)>& progress,
                             const std::function<void(const std::string&)>& note) {
    auto hash = std::make_unique<store::Sha256>();
    int64_t have = 0;
    auto restart = [&] {
        if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0)
            throw RegistryError("cannot truncate " + partial + ": " + strerror(errno));
        hash = std::make_unique<store::Sha256>();
        have = 0;
    };
    // Bytes an earlier pull left here are hashed again and the rest is asked for.
    std::string buf(1 << 17, '\0');
    for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw RegistryError("cannot read " + partial + ": " + strerror(errno));
        if (n == 0) break;
        hash->update(buf.data(), static_cast<size_t>(n));
        have += n;
    }
    if (have > d.size) restart();
    bool kept = have > 0;  // bytes from an earlier pull, not proven right until the digest is
    if (kept) {
        progress(have);
        note("resuming at byte " + std::to_string(have) + ", where an interrupted pull stopped");
    }
    // Progress is a byte past the furthest yet; fetching again bytes a restart dropped is not.
    int64_t furthest = have;
    int failures = 0;  // attempts in a row that brought no progress
    for (;;) {
        if (have == d.size) {
            std::string got = hash->digest();
            if (got == d.digest) return;
            if (!kept)
                throw WrongBytes("blob " + d.digest + ": digest mismatch: the registry sent " +
                                 got);
            note("the bytes an interrupted pull left do not match the digest; starting over");
            restart();
            kept = false;
            furthest = 0;  // this happens once: kept bytes are only checked once
            continue;
        }
        HttpRequest req;
        req.url = url(repository_ + "/blobs/" + d.digest);
        if (have > 0) req.headers.push_back("Range: bytes=" + std::to_string(have) + "-");
        bool first = true;
        const int64_t asked_from = have;
        req.sink = [&](const HttpResponse& reply, const char* p, size_t n) {
            if (first) {
                first = false;
                check_blob_reply(d, reply, asked_from);
                // A registry may ignore Range and send everything (200, or 206 from 0).
                if (asked_from > 0 && content_range_start(reply) != asked_from) {
                    restart();
                    kept = false;
                }
            }
            if (have + static_cast<int64_t>(n) > d.size)
                throw WrongBytes("blob " + d.digest + ": the registry sent more than the " +
                                 std::to_string(d.size) + " bytes the manifest gives");
            for (size_t done = 0; done < n;) {
                ssize_t w = ::write(fd, p + done, n - done);
                if (w < 0 && errno == EINTR) continue;
                if (w < 0) throw RegistryError("cannot write " + partial + ": " + strerror(errno));
                done += static_cast<size_t>(w);
            }
            hash->update(p, n);
            have += static_cast<int64_t>(n);
            progress(have);
        };
        std::string why;
        try {
            HttpResponse r = send(req, false);
            if (r.status == 200 || r.status == 206) {
                if (have == d.size) continue;
                why = "the reply ended after " + std::to_string(have) + " of " +
                      std::to_string(d.size) + " bytes";
            } else if (r.status == 416) {
                // The registry holds fewer bytes than are here: they are not its blob's.
                why = "the registry cannot send bytes from " + std::to_string(have) + " (HTTP 416)";
                restart();
                kept = false;
            } else if (r.status >= 500) {
                why = "HTTP " + std::to_string(r.status);
            } else {
                fail(r, "blob " + d.digest);  // the partial file stays for the next pull
            }
        } catch (const TransportError& e) {
            if (e.tls_failure) throw RegistryError("blob " + d.digest + ": " + e.what());
            why = e.what();
        }
        if (have > furthest) {
            furthest = have;
            failures = 0;
        }
        if (++failures >= kAttempts)
            throw RegistryError("blob " + d.digest + ": giving up after " +
                                std::to_string(kAttempts) + " attempts without progress: " + why);
        auto wait = backoff(failures - 1);
        note(why + "; " + (have > 0 ? "resuming at byte " + std::to_string(have) : "retrying") +
             " in " + std::to_string(wait.count()) + " ms");
        std::this_thread::sleep_for(wait);
    }
}

bool Client::blob_exists(const std::string& digest) {
    HttpRequest req;
    req.method = "HEAD";
    req.url = url(repository_ + "/blobs/" + digest);
    HttpResponse r = send(req);
    if (r.status == 200) return true;
    if (r.status == 404) return false;
    fail(r, "blob " + digest + " in " + describe());
}

std::string Client::upload_url(const std::string& location) const {
    if (location.empty()) throw RegistryError(describe() + ": upload reply has no Location");
    if (location.starts_with("http://") || location.starts_with("https://")) return location;
    if (location.starts_with("/")) return base_ + location;
    return base_ + "/v2/" + location;
}

bool Client::mount_blob(const std::string& digest, const std::string& from_repository) {
    HttpRequest req;
    req.method = "POST";
    req.url = url(repository_ + "/blobs/uploads/?mount=" + percent_encode(digest) +
                  "&from=" + percent_encode(from_repository));
    HttpResponse r = send(req);
    if (r.status == 201) return true;
    if (r.status == 202) {
        // The registry started a plain upload instead; drop it.
        HttpRequest cancel;
        cancel.method = "DELETE";
        cancel.url = upload_url(r.header("location"));
        try {
            send(cancel, false);
        } catch (const TransportError&) {
        }
        return false;
    }
    fail(r, "cannot push to " + describe());
}

void Client::upload_blob(const std::string& digest, const std::string& path, int64_t size,
                         const std::function<void(int64_t)>& progress) {
    constexpr int64_t kChunk = 16 << 20;  // above this size the blob goes in PATCH chunks
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw RegistryError("cannot open " + path + ": " + strerror(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    for (int attempt = 0;; ++attempt) {
        try {
            HttpRequest start;
            start.method = "POST";
            start.url = url(repository_ + "/blobs/uploads/");
            HttpResponse r = send(start);
            if (r.status != 202) fail(r, "cannot push to " + describe());
            std::string location = upload_url(r.header("location"));
            int64_t sent = 0;
            if (size > kChunk) {
                while (sent < size) {
                    int64_t n = std::min(kChunk, size - sent);
                    HttpRequest patch;
                    patch.method = "PATCH";
                    patch.url = location;
                    patch.headers = {"Content-Type: application/octet-stream",
                                     "Content-Range: " + std::to_string(sent) + "-" +
                                         std::to_string(sent + n - 1)};
                    patch.upload_fd = fd;
                    patch.upload_offset = sent;
                    patch.upload_size = n;
                    HttpResponse pr = send(patch, false);
                    if (pr.status != 202) fail(pr, "blob " + digest + ": chunk upload");
                    location = upload_url(pr.header("location"));
                    sent += n;
                    progress(sent);
                }
            }
            HttpRequest put;
            put.method = "PUT";
            put.url = location + (location.find('?') == std::string::npos ? "?" : "&") +
                      "digest=" + percent_encode(digest);
            put.headers = {"Content-Type: application/octet-stream"};
            if (sent < size) {
                put.upload_fd = fd;
                put.upload_offset = 0;
                put.upload_size = size;
            }
            HttpResponse pr = send(put, false);
            if (pr.status != 201 && pr.status != 204) fail(pr, "blob " + digest + ": upload");
            progress(size);
            return;
        } catch (const TransportError& e) {
            if (e.tls_failure || attempt + 1 >= 3)
                throw RegistryError("blob " + digest + ": upload failed: " + e.what());
            std::this_thread::sleep_for(backoff(attempt));
        }
    }
}

std::string Client::put_manifest(const std::string& ref, const std::string& body,
                                 const std::string& media_type) {
    HttpRequest req;
    req.method = "PUT";
    req.url = url(repository_ + "/manifests/" + ref);
    req.headers = {"Content-Type: " + media_type};
    req.body = body;
    HttpResponse r = send(req);
    if (r.status != 201 && r.status != 200 && r.status != 202)
        fail(r, "manifest " + describe() + ":" + ref);
    return store::sha256_digest(body);
}

}  // namespace lamina::registry
