// A client for one repository on one registry (or a mirror of it): the /v2/ ping, bearer and
// basic auth, retries with backoff, manifests, and blobs verified as they stream.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>

#include "http.h"
#include "manifest.h"
#include "settings.h"

namespace lamina::registry {

// A failure the user reads as one line: what, where, why.
class RegistryError : public std::runtime_error {
public:
    RegistryError(const std::string& what, long status = 0)
        : std::runtime_error(what), http_status(status) {}
    long http_status;  // 0 when there was no HTTP reply
};

struct ClientOptions {
    std::optional<bool> tls_verify;  // --tls-verify; unset: verify unless listed insecure
    bool push = false;               // ask for push access as well as pull
};

struct FetchedManifest {
    std::string body;
    std::string media_type;
    std::string digest;  // sha256 of body
};

class Client {
public:
    // endpoint is "" for the registry itself, or a mirror's URL ("https://mirror:5000").
    Client(const Settings& settings, const std::string& registry, const std::string& repository,
           const ClientOptions& options, const std::string& endpoint = "");

    // "127.0.0.1:5000/test/app", or "mirror https://m:5000" for a mirror.
    std::string describe() const;
    const std::string& host() const { return host_; }

    // GET /v2/: chooses https or (for insecure registries) http and learns the auth scheme.
    void ping();
    // While probing (a mirror that has not yet served the manifest) every request gets one
    // attempt, a short connect timeout and a time limit, so a dead mirror is left in seconds.
    void set_probing(bool on) { probing_ = on; }
    // Fetches a token (bearer) or checks the credentials (basic) without touching a repository.
    void check_credentials();
    // Uses these instead of the stored ones (login).
    void set_credentials(const Credentials& c) { credentials_ = c; }
    // Also asks for pull access to another repository (for cross-repository mounts).
    void add_pull_scope(const std::string& repository);

    // ref is a tag or a digest; the body is checked against the digest asked for and against
    // the Docker-Content-Digest header when the registry sends one.
    FetchedManifest get_manifest(const std::string& ref);
    // A small blob (a config) read into memory and verified.
    std::string get_blob(const Descriptor& d);
    // Streams a blob to path + ".partial", hashing on arrival, and renames it to path once its
    // digest checks out. Bytes already in the partial file (an earlier pull's) are hashed and
    // the rest is asked for with Range; so is the rest after a dropped connection. Drops and
    // 5xx are retried with backoff, the count starting again whenever an attempt brought the
    // blob further. The partial file stays when the download fails, unless its bytes are
    // proven wrong (digest or size mismatch, a range the registry cannot satisfy): then it is
    // removed. progress(bytes) runs as data arrives; note(text) reports resumption and retries.
    void download_blob(const Descriptor& d, const std::string& path,
                       const std::function<void(int64_t)>& progress,
                       const std::function<void(const std::string&)>& note);

    bool blob_exists(const std::string& digest);
    // Asks the registry to link a blob from another repository; false if it did not.
    bool mount_blob(const std::string& digest, const std::string& from_repository);
    void upload_blob(const std::string& digest, const std::string& path, int64_t size,
                     const std::function<void(int64_t)>& progress);
    // PUT the manifest under ref (tag or digest); returns its digest.
    std::string put_manifest(const std::string& ref, const std::string& body,
                             const std::string& media_type);

private:
    struct Challenge {
        std::string scheme;  // "bearer", "basic" or "" (none asked)
        std::string realm, service;
    };
    // retry: dropped connections and 5xx are tried again with backoff; retry_refused: also
    // a connection nobody accepts (the ping says at once that a registry is not there).
    HttpResponse send(HttpRequest req, bool retry = true, bool retry_refused = true);
    HttpResponse send_once(HttpRequest& req, const std::string& auth_header);
    std::string auth_header();
    void refresh_auth(const HttpResponse& unauthorized, const std::string& used);
    std::string fetch_token();
    // download_blob's transfer into the open partial file fd; throws WrongBytes (client.cc)
    // when the bytes cannot be the blob's.
    void fetch_blob_into(const Descriptor& d, int fd, const std::string& partial,
                         const std::function<void(int64_t)>& progress,
                         const std::function<void(const std::string&)>& note);
    [[noreturn]] void fail(const HttpResponse& r, const std::string& what) const;
    std::string url(const std::string& path) const { return base_ + "/v2/" + path; }
    std::string upload_url(const std::string& location) const;

    Settings settings_;
    std::string registry_;  // as referenced (docker.io)
    std::string host_;      // where requests go (registry-1.docker.io, a mirror's host)
    std::string repository_;
    ClientOptions options_;
    std::string base_;  // scheme://host
    bool try_plain_http_ = false;
    TlsOptions tls_;
    std::optional<Credentials> credentials_;
    std::set<std::string> extra_scopes_;
    bool probing_ = false;

    std::mutex auth_mu_;
    Challenge challenge_;
    std::string auth_;  // the Authorization header value in use, "" for none
};

}  // namespace lamina::registry
