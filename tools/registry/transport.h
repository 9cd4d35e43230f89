// The bottom layer of the registry client: one HTTP exchange over libcurl, behind the
// Transport interface that auth, retry and logging wrap in turn (see client.h).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace lamina::registry {

// A failure the user reads as one line: what, where, why.
class RegistryError : public std::runtime_error {
public:
    RegistryError(const std::string& what, long status = 0)
        : std::runtime_error(what), http_status(status) {}
    long http_status;  // 0 when there was no HTTP reply
};

struct TlsOptions {
    bool verify = true;
    std::string ca_bundle;  // PEM CAs trusted besides the system's (certs.d), "" for none
    std::string system_ca_file, system_ca_dir;  // SSL_CERT_FILE, SSL_CERT_DIR; "" for curl's
    std::string client_cert, client_key;
};

// Which failures the retry layer (retry.h) may try again.
enum class Retry {
    kAll,         // dropped connections, timeouts and 5xx
    kNotRefused,  // those, but a refused connection is final (the ping: nobody is there)
    kNone,        // one attempt (a blob download, which retries with resume; upload parts)
};

struct HttpRequest {
    std::string method = "GET";
    std::string url;
    std::vector<std::string> headers;  // "Name: value"
    std::string body;                  // sent for POST/PUT/PATCH when upload_fd < 0
    int upload_fd = -1;                // else the body is upload_size bytes of this fd from
    int64_t upload_offset = 0;         // upload_offset
    int64_t upload_size = 0;
    // Receives the body of a 2xx reply as it arrives, with the reply's status and headers so
    // far (other replies are collected in HttpResponse::body for their error message). May
    // throw; the transfer stops and the exception comes out of round_trip.
    std::function<void(const struct HttpResponse& reply, const char*, size_t)> sink;
    bool follow_redirects = true;
    Retry retry = Retry::kAll;
};

struct HttpResponse {
    long status = 0;
    std::map<std::string, std::string> headers;  // lowercase names, of the final reply
    std::string body;
    std::string header(const std::string& name) const {
        auto it = headers.find(name);
        return it == headers.end() ? "" : it->second;
    }
};

// No HTTP reply: refused or dropped connection, timeout, TLS failure.
class TransportError : public std::runtime_error {
public:
    TransportError(const std::string& what, bool tls, bool partial, bool refused)
        : std::runtime_error(what),
          tls_failure(tls),
          partial_transfer(partial),
          connection_refused(refused) {}
    bool tls_failure;
    bool partial_transfer;    // the reply started, then the connection broke
    bool connection_refused;  // nothing listens there (or the host is unknown)
};

// s with everything but RFC 3986's unreserved characters as %XX (query values).
std::string percent_encode(const std::string& s);

// One request, one reply. Throws TransportError when there is no reply; an HTTP error status
// is returned, not thrown. Each layer wraps the one below and passes the request on.
class Transport {
public:
    virtual ~Transport() = default;
    virtual HttpResponse round_trip(const HttpRequest& req) = 0;
};

// The time limits of every exchange, in one place.
struct Limits {
    long connect_timeout_s = 15;
    long total_timeout_s = 0;  // 0: none
    // A transfer slower than stall_bytes_per_s for stall_seconds counts as dropped.
    long stall_bytes_per_s = 1;
    long stall_seconds = 30;
};
// The limits for a mirror being probed: a dead one is left in seconds (see Client).
Limits probe_limits();

// libcurl: one easy handle per thread, reset for each request so connections are reused.
class CurlTransport : public Transport {
public:
    explicit CurlTransport(TlsOptions tls) : tls_(std::move(tls)) {}
    HttpResponse round_trip(const HttpRequest& req) override;
    const TlsOptions& tls() const { return tls_; }
    void set_limits(const Limits& l) { limits_ = l; }

private:
    TlsOptions tls_;
    Limits limits_;
};

}  // namespace lamina::registry
