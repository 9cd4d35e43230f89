// The registry client's top: one repository on one registry or mirror, speaking manifests and
// blobs. Below it, as in go-containerregistry, a stack of transports: logging (logging.h)
// wraps retry (retry.h), which wraps auth (auth.h), which wraps one libcurl exchange
// (transport.h). Every blob is hashed while it streams, so nothing unverified is handed on.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "auth.h"
#include "credentials.h"
#include "image_format.h"
#include "retry.h"
#include "settings.h"
#include "transport.h"

namespace lamina::registry {

struct ClientOptions {
    std::optional<bool> tls_verify;          // --tls-verify; unset: verify unless insecure
    bool push = false;                       // ask for push access as well as pull
    std::optional<Credentials> credentials;  // --creds; unset: the stored ones
};

struct FetchedManifest {
    std::string body;
    std::string media_type;
    std::string digest;  // sha256 of body
};

class Client {
public:
    Client(const Settings& settings, const Endpoint& endpoint, const ClientOptions& options);

    // "127.0.0.1:5000/test/app", or "docker.io/library/busybox at mirror https://m:5000".
    std::string describe() const;
    const std::string& host() const { return ep_.host; }

    // GET /v2/: chooses https or (for insecure registries) http and meets the auth challenge.
    void ping();
    // While probing (a mirror that has not yet served the manifest) every request gets one
    // attempt and the probe limits, so a dead mirror is left in seconds.
    void set_probing(bool on);
    // Fetches a token (bearer) or checks the credentials (basic) without touching a repository.
    void check_credentials();
    // Uses these instead of the stored ones (login).
    void set_credentials(const Credentials& c) { auth_->set_credentials(c); }
    // Also asks for pull access to another repository (for cross-repository mounts).
    void add_pull_scope(const std::string& repository) { auth_->add_pull_scope(repository); }

    // ref is a tag or a digest; the body is checked against the digest asked for and against
    // the Docker-Content-Digest header when the registry sends one.
    FetchedManifest get_manifest(const std::string& ref);
    // A small blob (a config) read into memory and verified.
    std::string get_blob(const store::Descriptor& d);
    // Bytes [offset, offset + length) of a blob, with one Range request and one attempt (the
    // caller decides what a failure costs). The reply must be a 206 for exactly that range of a blob of d.size bytes, and no
    // more than length bytes: a registry that ignores Range is refused, not read to the end.
    // The bytes are not verified here: the caller checks them (an eStargz chunk digest).
    std::string get_blob_range(const store::Descriptor& d, int64_t offset, int64_t length);
    // The same, except that a 200 carrying the whole blob (a pull-through cache that does not
    // hold the blob yet answers a Range so) is taken rather than refused: its body (at most
    // d.size bytes, a length other than d.size refused) streams to whole_path() + ".partial",
    // which is checked against the digest and renamed to whole_path(): nullopt then. Cut short,
    // the partial file stays for download_blob to resume; a digest mismatch removes it.
    std::optional<std::string> get_blob_range_or_whole(
        const store::Descriptor& d, int64_t offset, int64_t length,
        const std::function<std::string()>& whole_path);
    // Streams a blob to path + ".partial", hashing on arrival, and renames it to path once its
    // digest checks out. Bytes already in the partial file (an earlier pull's) are hashed and
    // the rest is asked for with Range; so is the rest after a dropped connection, under the
    // retry policy's progress rule (retry.h). The partial file stays when the download fails,
    // unless its bytes are proven wrong (digest or size mismatch, a range the registry cannot
    // satisfy): then it is removed. progress(bytes) runs as data arrives; note(text) reports
    // resumption and retries.
    void download_blob(const store::Descriptor& d, const std::string& path,
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
    HttpResponse send(const HttpRequest& req) { return stack_->round_trip(req); }
    // get_blob_range, and with whole_path get_blob_range_or_whole.
    std::optional<std::string> read_range(const store::Descriptor& d, int64_t offset,
                                          int64_t length,
                                          const std::function<std::string()>* whole_path);
    // download_blob's transfer into the open partial file fd.
    void fetch_blob_into(const store::Descriptor& d, int fd, const std::string& partial,
                         const std::function<void(int64_t)>& progress,
                         const std::function<void(const std::string&)>& note);
    // Why a registry's TLS handshake failed, as a hint for the user.
    std::string tls_hint();
    [[noreturn]] void fail(const HttpResponse& r, const std::string& what) const;
    std::string url(const std::string& path) const { return base_ + "/v2/" + path; }
    std::string upload_url(const std::string& location) const;
    std::string where() const;  // " at mirror ..." or ""

    Settings settings_;
    Endpoint ep_;
    ClientOptions options_;
    std::string base_;  // scheme://host
    bool try_plain_http_ = false;
    RetryPolicy policy_;

    std::unique_ptr<Transport> stack_;  // logging(retry(auth(curl)))
    CurlTransport* curl_ = nullptr;     // layers inside stack_, for their settings
    AuthTransport* auth_ = nullptr;
    RetryTransport* retry_ = nullptr;
};

}  // namespace lamina::registry
