// One HTTP exchange over libcurl: TLS settings per registry, bodies collected or streamed.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace lamina::registry {

struct TlsOptions {
    bool verify = true;
    std::string ca_file;  // added to the system CAs
    std::string client_cert, client_key;
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
    // throw; the transfer stops and the exception comes out of http_perform.
    std::function<void(const struct HttpResponse& reply, const char*, size_t)> sink;
    bool follow_redirects = true;
    long connect_timeout_s = 15;
    long timeout_s = 0;  // the whole exchange; 0: none (a stall of 30 s still ends it)
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

// Performs one request (following redirects unless told not to). Connections are kept per
// thread and reused. Throws TransportError; an HTTP error status is returned, not thrown.
HttpResponse http_perform(const HttpRequest& req, const TlsOptions& tls);

}  // namespace lamina::registry
