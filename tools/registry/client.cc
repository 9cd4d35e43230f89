// The registry client's top layer: the /v2/ ping, manifests, and blobs verified as they stream.
// Auth, retry and logging are the transports below it (client.h).
#include "client.h"
#include "error.h"
#include "json_input.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include <nlohmann/json.hpp>

#include "digest.h"
#include "logging.h"
#include "reference.h"
#include "unique_fd.h"

namespace lamina::registry {

using nlohmann::json;

namespace {

// The Accept header for manifest requests: every kind lamina reads, and schema 1, which it
// refuses by name.
std::string manifest_accept_header() {
    return std::string("Accept: ") + store::kOciManifest + ", " + store::kOciIndex + ", " +
           store::kDockerManifest + ", " + store::kDockerManifestList + ", " +
           store::kDockerSchema1Signed + ", " + store::kDockerSchema1;
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

// n more bytes of a blob's download, written to fd (the partial file) at the end of the `have`
// there, which counts them; a registry that sends more than the manifest's size is refused.
void append_blob_bytes(const store::Descriptor& d, int fd, const std::string& partial,
                       int64_t& have, const char* p, size_t n) {
    if (have + static_cast<int64_t>(n) > d.size)
        throw WrongBytes("blob " + d.digest + ": the registry sent more than the " +
                         std::to_string(d.size) + " bytes the manifest gives");
    for (size_t done = 0; done < n;) {
        ssize_t w = ::write(fd, p + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) throw RegistryError("cannot write " + partial + ": " + strerror(errno));
        done += static_cast<size_t>(w);
    }
    have += static_cast<int64_t>(n);
}

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
void check_blob_reply(const store::Descriptor& d, const HttpResponse& reply, int64_t asked_from) {
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

}  // namespace

Client::Client(const Settings& settings, const Endpoint& endpoint, const ClientOptions& options)
    : settings_(settings), ep_(endpoint), options_(options) {
    bool verify = options.tls_verify.value_or(!ep_.insecure);
    std::string scheme = ep_.scheme.empty() ? "https" : ep_.scheme;
    if (scheme == "http" && verify)
        throw RegistryError("mirror " + ep_.label +
                            " is plain HTTP; list it in insecure-registries to use it");
    try_plain_http_ = !verify && scheme == "https" && ep_.scheme.empty();
    base_ = scheme + "://" + ep_.host;
    std::optional<Credentials> creds = options.credentials;
    if (!creds) creds = find_credentials(settings.auth_file(), canonical_registry(ep_.host));
    if (!creds && ep_.host != ep_.registry && !ep_.mirror)
        creds = find_credentials(settings.auth_file(), ep_.registry);

    auto curl = std::make_unique<CurlTransport>(tls_for(settings, ep_.host, verify));
    curl_ = curl.get();
    auto auth = std::make_unique<AuthTransport>(std::move(curl), ep_.registry, ep_.host, creds,
                                                AuthScope{ep_.repository, options.push});
    auth_ = auth.get();
    auto retry = std::make_unique<RetryTransport>(std::move(auth), policy_);
    retry_ = retry.get();
    stack_ = std::make_unique<LoggingTransport>(std::move(retry));
}

std::string Client::where() const {
    return ep_.mirror ? " at mirror " + ep_.label : "";
}

std::string Client::describe() const {
    return ep_.name + where();
}

void Client::set_probing(bool on) {
    curl_->set_limits(on ? probe_limits() : Limits{});
    retry_->set_policy(on ? RetryPolicy::once() : policy_);
}

std::string Client::tls_hint() {
    // A registry that answers plain HTTP needs insecure-registries, not a CA.
    TlsOptions plain;
    plain.verify = false;
    CurlTransport probe(plain);
    probe.set_limits(probe_limits());
    HttpRequest req;
    req.url = "http://" + ep_.host + "/v2/";
    try {
        // A TLS server answers plain HTTP with a 400; /v2/ of a registry says 200 or 401.
        long status = probe.round_trip(req).status;
        if (status == 200 || status == 401)
            return " (it speaks plain HTTP: list " + ep_.host +
                   " in insecure-registries, or use --tls-verify=false if you trust it)";
    } catch (const TransportError&) {
    }
    return " (add its CA as " + settings_.certs_dir(ep_.host) +
           "/ca.crt, or use --tls-verify=false if you trust it)";
}

void Client::ping() {
    HttpRequest req;
    req.url = base_ + "/v2/";
    req.retry = Retry::kNotRefused;  // a registry (or mirror) that is not there is said at once
    HttpResponse r;
    try {
        r = send(req);
    } catch (const TransportError& e) {
        if (!try_plain_http_) {
            std::string hint = e.tls_failure && curl_->tls().verify ? tls_hint() : "";
            throw RegistryError("cannot reach " + base_ + where() + ": " + e.what() + hint);
        }
        // An insecure registry may not speak TLS at all.
        base_ = "http://" + ep_.host;
        req.url = base_ + "/v2/";
        try {
            r = send(req);
        } catch (const TransportError& e2) {
            throw RegistryError("cannot reach " + ep_.host + " over https or http: " + e2.what());
        }
    }
    if (r.status == 404)
        throw RegistryError(base_ + " does not offer the registry API v2 (/v2/ is 404)", 404);
    if (r.status >= 300 && r.status != 401) fail(r, "cannot use " + base_);
}

void Client::check_credentials() {
    auth_->authenticate_now();
    HttpRequest req;
    req.url = base_ + "/v2/";
    HttpResponse r = send(req);
    const auto& c = auth_->credentials();
    if (r.status == 401)
        throw RegistryError("cannot log in to " + ep_.host +
                                ": the registry refused the credentials" +
                                (c ? " for " + c->username : ""),
                            401);
    if (r.status >= 300) fail(r, "cannot log in to " + ep_.host);
}

void Client::fail(const HttpResponse& r, const std::string& what) const {
    std::string msg = registry_message(r.body);
    std::string why;
    const auto& c = auth_->credentials();
    switch (r.status) {
        case 401:
            why = c ? "unauthorized: the registry refused the credentials for " + c->username
                    : "authentication required (lamina login " + ep_.registry + ")";
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
    req.url = url(ep_.repository + "/manifests/" + ref);
    req.headers.push_back(manifest_accept_header());
    HttpResponse r = send(req);
    if (r.status != 200)
        fail(r, "manifest " + ep_.name + (ref.starts_with("sha256:") ? "@" : ":") + ref + where());
    if (r.body.size() > (4 << 20)) throw RegistryError("manifest for " + ref + " is over 4 MiB");
    FetchedManifest m;
    m.body = r.body;
    m.media_type = r.header("content-type");
    m.digest = store::sha256_digest(m.body);
    if (ref.starts_with("sha256:") && m.digest != ref)
        throw RegistryError("manifest " + ref + ": digest mismatch: the registry sent " + m.digest);
    std::string said = r.header("docker-content-digest");
    if (said.starts_with("sha256:") && said != m.digest)
        throw RegistryError("manifest " + ep_.name + ":" + ref + where() +
                            ": digest mismatch: the registry says " + said + ", the body is " +
                            m.digest);
    return m;
}

std::string Client::get_blob(const store::Descriptor& d) {
    if (d.size > (16 << 20)) throw RegistryError("blob " + d.digest + " is too large to read");
    std::string data;
    HttpRequest req;
    req.url = url(ep_.repository + "/blobs/" + d.digest);
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

std::string Client::get_blob_range(const store::Descriptor& d, int64_t offset, int64_t length) {
    return *read_range(d, offset, length, nullptr);
}

std::optional<std::string> Client::get_blob_range_or_whole(
    const store::Descriptor& d, int64_t offset, int64_t length,
    const std::function<std::string()>& whole_path) {
    return read_range(d, offset, length, &whole_path);
}

std::optional<std::string> Client::read_range(const store::Descriptor& d, int64_t offset,
                                              int64_t length,
                                              const std::function<std::string()>* whole_path) {
    if (offset < 0 || length <= 0 || offset + length > d.size)
        throw RegistryError("blob " + d.digest + ": range " + std::to_string(offset) + "+" +
                            std::to_string(length) + " is outside its " + std::to_string(d.size) +
                            " bytes");
    std::string data;
    HttpRequest req;
    req.url = url(ep_.repository + "/blobs/" + d.digest);
    req.headers.push_back("Range: bytes=" + std::to_string(offset) + "-" +
                          std::to_string(offset + length - 1));
    bool first = true;
    // A 200 taken as the whole blob: streamed to path + ".partial" as download_blob writes it.
    std::string path, partial;
    UniqueFd whole;
    std::unique_ptr<store::Sha256> hash;
    int64_t have = 0;
    req.sink = [&](const HttpResponse& reply, const char* p, size_t n) {
        if (first) {
            first = false;
            int64_t from = 0, total = 0;
            if (reply.status == 200 && whole_path && store::is_sha256_digest(d.digest)) {
                check_blob_reply(d, reply, 0);  // a length that is not the manifest's: refused
                path = (*whole_path)();
                partial = path + ".partial";
                whole.reset(::open(partial.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
                if (!whole)
                    throw RegistryError("cannot create " + partial + ": " + strerror(errno));
                hash = std::make_unique<store::Sha256>();
            } else if (reply.status != 206 ||
                       !parse_content_range(reply.header("content-range"), from, total) ||
                       from != offset || (total >= 0 && total != d.size)) {
                throw RegistryError(
                    "blob " + d.digest + ": asked for bytes " + std::to_string(offset) + "+" +
                    std::to_string(length) + ", the registry answered HTTP " +
                    std::to_string(reply.status) +
                    (reply.header("content-range").empty()
                         ? std::string(" (no Content-Range)")
                         : " (Content-Range \"" + reply.header("content-range") + "\")"));
            }
        }
        if (whole) {
            append_blob_bytes(d, whole.get(), partial, have, p, n);
            hash->update(p, n);
            return;
        }
        if (data.size() + n > static_cast<size_t>(length))
            throw RegistryError("blob " + d.digest + ": the registry sent more than the range");
        data.append(p, n);
    };
    req.retry = Retry::kNone;  // a second attempt would append to the first's bytes
    HttpResponse r = send(req);
    if (whole) {
        whole.reset();
        // Cut short: the partial file stays, and download_blob resumes it.
        if (have != d.size)
            throw RegistryError("blob " + d.digest + ": the registry answered a range with the " +
                                "whole blob (HTTP 200), which ended after " + std::to_string(have) +
                                " of " + std::to_string(d.size) + " bytes");
        if (std::string got = hash->digest(); got != d.digest) {
            ::unlink(partial.c_str());
            throw RegistryError("blob " + d.digest +
                                ": the registry answered a range with the whole blob (HTTP 200), "
                                "and its digest does not match: it sent " +
                                got);
        }
        if (::rename(partial.c_str(), path.c_str()) != 0)
            throw RegistryError("cannot rename " + partial + ": " + strerror(errno));
        return std::nullopt;
    }
    if (r.status != 206) fail(r, "blob " + d.digest);
    if (data.size() != static_cast<size_t>(length))
        throw RegistryError("blob " + d.digest + ": the range reply ended after " +
                            std::to_string(data.size()) + " of " + std::to_string(length) +
                            " bytes");
    return data;
}

void Client::download_blob(const store::Descriptor& d, const std::string& path,
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

void Client::fetch_blob_into(const store::Descriptor& d, int fd, const std::string& partial,
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
        note(have == d.size
                 ? "an interrupted pull left all " + std::to_string(have) + " bytes; verifying them"
                 : "resuming at byte " + std::to_string(have) +
                       ", where an interrupted pull stopped");
    }
    // Progress is a byte past the furthest yet; fetching again bytes a restart dropped is not.
    int64_t furthest = have;
    RetryBudget budget(policy_);
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
        req.url = url(ep_.repository + "/blobs/" + d.digest);
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
            append_blob_bytes(d, fd, partial, have, p, n);
            hash->update(p, n);
            progress(have);
        };
        req.retry = Retry::kNone;  // retried here, resuming where the bytes stopped
        std::string why;
        try {
            HttpResponse r = send(req);
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
        bool progressed = have > furthest;
        furthest = std::max(furthest, have);
        auto wait = budget.after_failure(progressed);
        if (!wait)
            throw RegistryError("blob " + d.digest + ": giving up after " +
                                std::to_string(budget.attempts()) +
                                " attempts without progress: " + why);
        note(why + "; " + (have > 0 ? "resuming at byte " + std::to_string(have) : "retrying") +
             " in " + std::to_string(wait->count()) + " ms");
        std::this_thread::sleep_for(*wait);
    }
}

bool Client::blob_exists(const std::string& digest) {
    HttpRequest req;
    req.method = "HEAD";
    req.url = url(ep_.repository + "/blobs/" + digest);
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
    req.url = url(ep_.repository + "/blobs/uploads/?mount=" + percent_encode(digest) +
                  "&from=" + percent_encode(from_repository));
    HttpResponse r = send(req);
    if (r.status == 201) return true;
    if (r.status == 202) {
        // The registry started a plain upload instead; drop it.
        HttpRequest cancel;
        cancel.method = "DELETE";
        cancel.url = upload_url(r.header("location"));
        cancel.retry = Retry::kNone;
        try {
            send(cancel);
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
    // A failed upload starts again from a new session; the parts are not retried alone.
    RetryBudget budget(policy_);
    for (;;) {
        try {
            HttpRequest start;
            start.method = "POST";
            start.url = url(ep_.repository + "/blobs/uploads/");
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
                    patch.retry = Retry::kNone;
                    HttpResponse pr = send(patch);
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
            put.retry = Retry::kNone;
            HttpResponse pr = send(put);
            if (pr.status != 201 && pr.status != 204) fail(pr, "blob " + digest + ": upload");
            progress(size);
            return;
        } catch (const TransportError& e) {
            auto wait = is_retryable(e, Retry::kAll) ? budget.after_failure(false) : std::nullopt;
            if (!wait) throw RegistryError("blob " + digest + ": upload failed: " + e.what());
            std::this_thread::sleep_for(*wait);
        }
    }
}

std::string Client::put_manifest(const std::string& ref, const std::string& body,
                                 const std::string& media_type) {
    HttpRequest req;
    req.method = "PUT";
    req.url = url(ep_.repository + "/manifests/" + ref);
    req.headers = {"Content-Type: " + media_type};
    req.body = body;
    HttpResponse r = send(req);
    if (r.status != 201 && r.status != 200 && r.status != 202)
        fail(r, "manifest " + ep_.name + ":" + ref + where());
    return store::sha256_digest(body);
}

}  // namespace lamina::registry
